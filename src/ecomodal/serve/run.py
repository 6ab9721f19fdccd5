"""What a server serves from one folder: its layers, embedding table, search indexes, model,
encoders and grid embeddings, and the answers built from them (a point's values, embeddings,
completions, searches).

:class:`ServedRun` is plain Python (no web framework): the HTTP layer in :mod:`ecomodal.serve.app`
only validates requests and calls it.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
from collections.abc import Mapping, Sequence
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np

from ecomodal.errors import InvalidArgumentError, RunFolderError, UnknownModalityError
from ecomodal.serve.layers import Layer, LayerCache, discover_layers

#: Scalar columns of a table never shown as labels of an observation.
HIDDEN_COLUMNS = ("split", "split_spatial", "split_random", "land_cover_code")
#: The covariates /api/point reports, in the covariate stack's units.
POINT_COVARIATES = ("elevation", "bio1", "bio12")


def find_table(folder: Path) -> Path | None:
    """The folder's embedding table: ``embeddings.parquet``, else the only top-level Parquet
    file with an ``id`` column."""
    candidate = folder / "embeddings.parquet"
    if candidate.is_file():
        return candidate
    import pyarrow.parquet as pq

    found = [p for p in sorted(folder.glob("*.parquet")) if "id" in pq.read_schema(p).names]
    return found[0] if len(found) == 1 else None


def find_model(folder: Path) -> Path | None:
    """The folder's ProM3E model: ``prom3e/best`` (a quickstart run) or the folder itself."""
    for candidate in (folder / "prom3e" / "best", folder):
        if (candidate / "config.json").is_file() and (candidate / "model.safetensors").is_file():
            return candidate
    return None


class ObservationTable:
    """An embedding table in memory: ids, lat/lon, label columns and normalised embeddings."""

    def __init__(self, path: Path):
        from ecomodal.io.reader import as_batch
        from ecomodal.vectors import normalise

        self.path = path
        batch = as_batch(path)  # the embedding-table format, checked by the I/O layer
        self.ids = batch.ids
        self.embeddings = {name: normalise(v) for name, v in batch.embeddings.items()}
        self.labels: dict[str, list[Any]] = {}
        for name in [] if batch.columns is None else batch.columns.column_names:
            column = batch.columns.column(name)
            if name not in HIDDEN_COLUMNS and _is_scalar(column.type):
                self.labels[name] = column.to_pylist()
        self._row_of: dict[str, int] | None = None

    def __len__(self) -> int:
        return len(self.ids)

    def row_of(self, id_: str) -> int:
        if self._row_of is None:
            self._row_of = {str(v): i for i, v in enumerate(self.ids)}
        row = self._row_of.get(str(id_))
        if row is None:
            raise InvalidArgumentError(f"id {id_!r} is not in {self.path.name}.")
        return row

    def record(self, row: int) -> dict[str, Any]:
        """One row's id and label columns."""
        out: dict[str, Any] = {"id": str(self.ids[row])}
        for name, values in self.labels.items():
            value = values[row]
            out[name] = value.item() if isinstance(value, np.generic) else value
        return out


def _is_scalar(kind: Any) -> bool:
    import pyarrow as pa

    return pa.types.is_string(kind) or pa.types.is_integer(kind) or pa.types.is_floating(kind)


class ServedRun:
    """A folder ready to serve (see :func:`ecomodal.serve.create_app`).

    Args:
        folder: the folder served; only files inside it are ever read on a client's behalf.
        model: a ProM3E model folder (default: the folder's own, if any).
        data: an embedding table (default: the folder's ``embeddings.parquet``).
        grid_cache: a folder of grid embedding stores for new layers (default:
            ``maps/grid-cache`` inside the folder).
        max_layers: layers made on request kept at once (the oldest is dropped).
        warm: load the encoders, indexes and grid embeddings now rather than on first use.
    """

    def __init__(
        self,
        folder: str | os.PathLike[str],
        *,
        model: str | os.PathLike[str] | None = None,
        data: str | os.PathLike[str] | None = None,
        grid_cache: str | os.PathLike[str] | None = None,
        max_layers: int = 16,
        device: str | None = None,
        warm: bool = False,
    ) -> None:
        self.folder = Path(folder).resolve()
        if not self.folder.is_dir():
            raise RunFolderError(f"{folder} is not a folder to serve.")
        self.device = device
        self.layers, self.skipped = discover_layers(self.folder)
        self.made = LayerCache(max_layers)
        self.scratch = Path(tempfile.mkdtemp(prefix="ecomodal-serve-"))
        table_path = Path(data) if data is not None else find_table(self.folder)
        if table_path is not None and not table_path.is_file():
            raise RunFolderError(f"--data {data} is not a file.")
        self.table = ObservationTable(table_path) if table_path is not None else None
        model_path = Path(model) if model is not None else find_model(self.folder)
        self.model = None
        if model_path is not None:
            from ecomodal.models.factory import load_model

            self.model = load_model(model_path, device=device)
        self.model_path = model_path
        self.grid_cache = (
            Path(grid_cache) if grid_cache is not None else self.folder / "maps" / "grid-cache"
        )
        self._encoders: dict[str, Any] | None = None
        self._cells: Any = None
        self._text_encoder: Any = None
        self._lock = threading.RLock()
        if warm:  # everything a first click needs: encoders, grid, rasters, countries
            self.cells  # noqa: B018
            self.point(48.0, 11.0)

    def close(self) -> None:
        """Delete the made layers' files."""
        shutil.rmtree(self.scratch, ignore_errors=True)

    # ------------------------------------------------------------------ parts, loaded once
    @property
    def encoders(self) -> dict[str, Any]:
        """The run's encoders by modality ({} when the folder records none)."""
        with self._lock:
            if self._encoders is None:
                from ecomodal.encoders.runs import load_encoders

                try:
                    self._encoders = load_encoders(self.folder, device=self.device)
                except RunFolderError:
                    self._encoders = {}
            return self._encoders

    @property
    def text_encoder(self) -> Any:
        """The run's text encoder, else the offline MiniLM (for matching text to labels, where
        its untrained projection, an orthogonal map, changes no cosine)."""
        with self._lock:
            if self._text_encoder is None:
                self._text_encoder = self.encoders.get("text")
            if self._text_encoder is None:
                import warnings

                from ecomodal.encoders.offline import UntrainedProjectionWarning
                from ecomodal.encoders.registry import load_encoder

                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", UntrainedProjectionWarning)
                    self._text_encoder = load_encoder("text", "minilm", device=self.device)
            return self._text_encoder

    @property
    def cells(self) -> Any:
        """The grid embeddings new layers are made on (None when the folder has none)."""
        with self._lock:
            if self._cells is None:
                from ecomodal.serve.queries import GridCells

                self._cells = GridCells.from_cache(self.grid_cache) or False
            return self._cells or None

    def info(self) -> dict[str, Any]:
        """What the server has: folder name, layers, table, model, encoders, grid."""
        from ecomodal.models.calibration import has_uncertainty_model

        cells = self.cells
        return {
            "folder": self.folder.name,
            "layers": len(self.all_layers()),
            "skipped_files": self.skipped,
            "table": None
            if self.table is None
            else {
                "file": self.table.path.name,
                "rows": len(self.table),
                "modalities": list(self.table.embeddings),
                "labels": list(self.table.labels),
            },
            "model": None
            if self.model is None
            else {
                "modalities": list(self.model.modalities),
                "expected_error": has_uncertainty_model(self.model),
            },
            "encoders": {m: e.id for m, e in self.encoders.items()},
            "grid": None if cells is None else cells.describe(),
        }

    # ------------------------------------------------------------------ layers
    def layer(self, layer_id: str) -> Layer:
        """A layer by id (folder or made); an error naming the id otherwise."""
        layer = self.layers.get(layer_id) or self.made.get(layer_id)
        if layer is None:
            raise UnknownLayerError(
                f"layer {layer_id!r} does not exist; GET /api/layers lists them."
            )
        return layer

    def all_layers(self) -> list[Layer]:
        return [*self.layers.values(), *self.made.all()]

    def safe_path(self, relative: str) -> Path:
        """A file inside the served folder (or the scratch folder of made layers); anything
        resolving outside them is refused."""
        if "\x00" in relative:
            raise UnknownLayerError(f"{relative!r} is not a file name.")
        for root in (self.folder, self.scratch):
            candidate = (root / relative).resolve()
            if candidate.is_relative_to(root) and candidate.is_file():
                return candidate
        raise UnknownLayerError(f"{relative!r} is not a file inside the served folder.")

    # ------------------------------------------------------------------ answers
    def embed(
        self, lat: Sequence[float], lon: Sequence[float], modalities: Sequence[str] | None = None
    ) -> dict[str, np.ndarray]:
        """The run's embeddings of places: {modality: [N, dim]}."""
        encoders = self.encoders
        if not encoders:
            raise RunFolderError(
                f"{self.folder.name} records no encoders (no encoders.json), so it cannot embed "
                "places."
            )
        names = list(encoders) if modalities is None else list(modalities)
        for name in names:
            if name not in encoders:
                raise UnknownModalityError(
                    f"modalities: the run has no {name!r} encoder; it has {sorted(encoders)}."
                )
        lat_arr = np.asarray(lat, dtype=np.float64)
        lon_arr = np.asarray(lon, dtype=np.float64)
        with self._lock:  # one model at a time: two cores gain nothing from parallel passes
            return {name: encoders[name].encode(lat=lat_arr, lon=lon_arr) for name in names}

    def complete(
        self,
        embeddings: Mapping[str, np.ndarray],
        *,
        visible: Sequence[str] | None = None,
        n_samples: int = 0,
        seed: int = 0,
    ) -> dict[str, Any]:
        """ProM3E completion of rows given as {modality: [N, dim]} (NaN rows = missing)."""
        if self.model is None:
            raise RunFolderError(f"{self.folder.name} has no ProM3E model; serve it with --model.")
        model = self.model
        rows = len(next(iter(embeddings.values())))
        stacked = np.full((rows, len(model.modalities), model.config.input_dim), np.nan, np.float32)
        for name, values in embeddings.items():
            if name not in model.modalities:
                raise UnknownModalityError(
                    f"embeddings: the model has no {name!r} modality; it has {model.modalities}."
                )
            stacked[:, model.modalities.index(name)] = values
        with self._lock:
            out = model.complete(stacked, visible=visible, n_samples=n_samples, seed=seed)
        result: dict[str, Any] = {
            "modalities": list(model.modalities),
            "embeddings": np.asarray(out.embeddings),
            "visible": np.asarray(out.visible),
            "sigma_l1": np.asarray(out.sigma_l1),
            "expected_error": None,
        }
        if out.expected_error_values is not None:
            result["expected_error"] = np.asarray(out.expected_error)
        return result

    def point_embeddings(self, lat: float, lon: float) -> tuple[dict[str, np.ndarray], dict]:
        """The run's embedding of a place per modality ({modality: [dim]}) and where each came
        from: the encoder at the exact place, except imagery (sat), which is read from the grid
        cell holding the place when the grid has it (one EfficientNet pass per click saved)."""
        vectors: dict[str, np.ndarray] = {}
        sources: dict[str, str] = {}
        cells = self.cells
        cell = -1 if cells is None else int(cells.grid.cell_of([lat], [lon])[0])
        for name in self.encoders:
            if name == "sat" and cell >= 0 and name in cells.embeddings:
                vectors[name] = cells.embeddings[name][cell]
                sources[name] = f"grid cell ({cells.grid.resolution} degrees)"
            else:
                vectors[name] = self.embed([lat], [lon], [name])[name][0]
                sources[name] = "encoder"
        return vectors, sources

    def expected_errors(self, vectors: Mapping[str, np.ndarray]) -> dict[str, float] | None:
        """Expected completion error of each modality from the others ({modality: [dim]}
        vectors of one place), or None without a calibrated model or with one modality."""
        from ecomodal.models.calibration import has_uncertainty_model

        if not has_uncertainty_model(self.model):
            return None
        names = [m for m in self.model.modalities if m in vectors]
        if len(names) < 2:
            return None
        rows = {name: np.repeat(vectors[name][None], len(names), axis=0) for name in names}
        for i, name in enumerate(names):
            rows[name][i] = np.nan  # row i hides modality i
        error = self.complete(rows)["expected_error"]
        slots = [self.model.modalities.index(n) for n in names]
        return {
            name: _finite(error[i, slot])
            for i, (name, slot) in enumerate(zip(names, slots, strict=True))
        }

    def nearest(
        self, vector: np.ndarray, modality: str, k: int, where: Mapping[str, Any] | None = None
    ) -> list[dict[str, Any]]:
        """The k rows of the table most similar (cosine) to ``vector`` in ``modality``."""
        table = self._table_with(modality)
        from ecomodal.serve.queries import unit_query

        gallery = table.embeddings[modality]
        vector = unit_query(
            vector, gallery.shape[1], f"the table's {modality} embeddings", "vector"
        )
        scores = gallery @ vector
        allowed = np.ones(len(table), dtype=bool)
        for column, wanted in (where or {}).items():
            if column not in table.labels:
                raise InvalidArgumentError(
                    f"where: the table has no column {column!r}; it has {sorted(table.labels)}."
                )
            values = np.asarray(table.labels[column], dtype=object)
            options = wanted if isinstance(wanted, list) else [wanted]
            allowed &= np.isin(values.astype(str), [str(v) for v in options])
        candidates = np.flatnonzero(allowed)
        order = candidates[np.argsort(-scores[candidates], kind="stable")[:k]]
        return [
            {**table.record(int(row)), "score": float(scores[row]), "rank": rank + 1}
            for rank, row in enumerate(order)
        ]

    def table_vector(self, id_: str, modality: str) -> np.ndarray:
        table = self._table_with(modality)
        return table.embeddings[modality][table.row_of(id_)]

    def _table_with(self, modality: str) -> ObservationTable:
        if self.table is None:
            raise RunFolderError(
                f"{self.folder.name} has no embedding table; serve it with --data."
            )
        if modality not in self.table.embeddings:
            raise UnknownModalityError(
                f"modality: the table has no {modality!r} embeddings; it has "
                f"{sorted(self.table.embeddings)}."
            )
        return self.table

    def point(self, lat: float, lon: float, *, k: int = 5) -> dict[str, Any]:
        """Everything known at a place: each layer's value, covariates, climate zone, land cover,
        country, expected completion error and the k nearest observations."""
        from ecomodal.geo.labels import country_and_continent, koppen_zone, land_cover

        lat_a, lon_a = np.array([lat]), np.array([lon])
        values = {}
        for layer in self.all_layers():
            sampled = layer.sample(lat, lon)
            values[layer.id] = (
                sampled[0]
                if len(sampled) == 1
                else dict(zip(layer.band_names, sampled, strict=False))
            )
        stack = _covariates()
        raw = stack.sample_raw(lat_a, lon_a)[0]
        covariates = {
            name: _finite(raw[stack.band_names.index(name)])
            for name in POINT_COVARIATES
            if name in stack.band_names
        }
        country, continent = (str(v[0]) for v in country_and_continent(lat_a, lon_a))
        result: dict[str, Any] = {
            "lat": lat,
            "lon": lon,
            "values": values,
            "covariates": covariates,
            "koppen": str(koppen_zone(lat_a, lon_a)[0]),
            "land_cover": str(land_cover(lat_a, lon_a)[1][0]),
            "country": country,
            "continent": continent,
            "expected_error": None,
            "nearest": [],
        }
        if self.encoders:
            vectors, sources = self.point_embeddings(lat, lon)
            result["embedded_by"] = sources
            result["expected_error"] = self.expected_errors(vectors)
            if self.table is not None:
                modality = next((m for m in self.table.embeddings if m in vectors), None)
                if modality is not None:
                    result["nearest"] = self.nearest(vectors[modality], modality, k)
                    result["nearest_modality"] = modality
        return result


@cache
def _covariates():
    """The default covariate stack, opened once per process."""
    from ecomodal.geo.covariates import CovariateStack

    return CovariateStack.open()


def _finite(value: Any) -> float | None:
    value = float(value)
    return value if np.isfinite(value) else None


class UnknownLayerError(InvalidArgumentError):
    """A layer or file the server does not have (HTTP 404)."""
