"""Species distribution maps: an :class:`~ecomodal.maps.sdm.EmbeddingSDM` fitted on occurrence
points against background points, then applied to every cell of a grid (elapid's
``apply_model_to_rasters``, on cached grid embeddings instead of covariate rasters).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.base import clone

from ecomodal.encoders.base import Encoder
from ecomodal.errors import InvalidArgumentError, MapError
from ecomodal.io.atomic import check_output_path
from ecomodal.maps.cache import (
    DEFAULT_CHUNK_ROWS,
    GridEmbeddings,
    grid_embeddings,
    iter_cell_chunks,
    resolve_encoder,
)
from ecomodal.maps.completion import check_visible, complete_cells
from ecomodal.maps.embedding import HIDDEN, sample_cells
from ecomodal.maps.grid import Grid, make_grid
from ecomodal.maps.output import GridMap, write_map
from ecomodal.maps.points import Points, points_lat_lon, points_source
from ecomodal.maps.sdm import EmbeddingSDM
from ecomodal.maps.sdm_select import ModalitySDM
from ecomodal.modalities import parse_modalities
from ecomodal.models.factory import load_model
from ecomodal.models.prom3e import ProM3E
from ecomodal.options import check_range

#: Background cells drawn from the grid when no background points are given.
DEFAULT_N_BACKGROUND = 10_000


def sdm_map(
    grid: Grid | Sequence[float] | str,
    *,
    points: Points,
    background: Points | None = None,
    modality: str = "loc",
    modalities: Sequence[str] | str | None = None,
    model: ProM3E | str | os.PathLike[str] | None = None,
    visible: Sequence[str] | str | None = None,
    resolution: float | None = None,
    encoder: Encoder | str | os.PathLike[str] | None = None,
    embeddings: Mapping[str, GridEmbeddings] | None = None,
    encoders: Mapping[str, Encoder | str | None] | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    sdm: Any = None,
    n_background: int = DEFAULT_N_BACKGROUND,
    block_deg: float | None = None,
    seed: int = 0,
    out: str | os.PathLike[str] | None = None,
    preview: str | os.PathLike[str] | None = None,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    device: str | None = None,
    show_progress: bool = True,
) -> GridMap:
    """Habitat suitability in [0, 1] per cell of ``grid`` from an SDM fitted on embeddings.

    The ``points`` (an occurrence CSV/Parquet with lat/lon columns, or (lat, lon) arrays) are
    embedded with the grid's encoders (``encoder`` for ``modality``, else ``encoders[name]``,
    else the registry's default); so are the ``background`` points when given. Without them,
    ``n_background`` grid cells drawn without replacement with ``seed`` are the background (their
    cached embeddings); the rule is recorded in the map's ``background`` tag.

    One modality (``modality``; ``modalities`` and ``model`` not given): ``sdm`` (default
    ``EmbeddingSDM(seed=seed)``; any estimator with ``fit(X_presence, X_background)`` and
    ``predict(X)``) is cloned, fitted and predicts every cell.

    Several modalities (``modalities``, e.g. ``["loc", "env", "sat"]``, and/or ``model``, a ProM3E
    checkpoint whose hidden features from the ``visible`` modalities (default: the others) join as
    ``"prom3e-hidden"``): a :class:`~ecomodal.maps.sdm.ModalitySDM` (or ``sdm``, one like it) fits
    one SDM per modality with its classifier and regularisation chosen by spatial-block
    cross-validation (blocks of ``block_deg`` degrees; default: a tenth of the points' extent, at
    most 10) and averages them. The choices are recorded in the ``sdm_selection`` tag.

    ``grid`` is a :class:`Grid`, or a bounding box (west, south, east, north) or ``"global"``
    with ``resolution`` (land cells only). With ``out`` the map is written as a GeoTIFF (with
    ``preview``, also a PNG). The map has one band, ``suitability``; cells whose features are not
    finite are NaN.
    """
    grid = _as_grid(grid, resolution)
    parse_modalities([modality])
    several = modalities is not None or model is not None
    names = _feature_names(modality, modalities, model)
    if background is None:
        check_range(n_background, "n_background", minimum=1, integer=True)
    check_range(chunk_rows, "chunk_rows", minimum=1, integer=True)
    lat, lon = points_lat_lon(points)  # bad points are an error before the grid is embedded
    if background is not None:
        back_lat, back_lon = points_lat_lon(background)
    for path, name in ((out, "out"), (preview, "preview")):
        if path is not None:
            check_output_path(path, what=name)
    if sdm is not None:
        estimator = clone(sdm)
    else:
        estimator = (
            ModalitySDM(block_deg=block_deg, seed=seed) if several else EmbeddingSDM(seed=seed)
        )
    if isinstance(estimator, EmbeddingSDM):
        estimator._make_classifier()  # an unknown classifier is an error before any work
    if several and not isinstance(estimator, ModalitySDM):
        raise InvalidArgumentError(
            "Several modalities (modalities= or model=) need a ModalitySDM as sdm=; "
            f"got {type(estimator).__name__}."
        )
    features = _Features(names, model, visible, device)
    all_encoders = dict(encoders or {})
    if encoder is not None:
        all_encoders[modality] = encoder
    cells = grid_embeddings(
        grid,
        features.base,
        embeddings=embeddings,
        encoders=all_encoders,
        cache_dir=cache_dir,
        device=device,
        show_progress=show_progress,
    )
    features.check(cells)
    point_encoders = {
        name: resolve_encoder(name, all_encoders.get(name) or cells[name].encoder, device=device)
        for name in features.base
    }
    presence = features(_encode_points(point_encoders, cells, lat, lon))
    if background is None:
        rows = sample_cells(grid.num_cells, int(n_background), seed)
        back = features({name: cells[name].take(rows) for name in features.base})
        back_lat, back_lon = grid.lat[rows], grid.lon[rows]
        rule = f"{len(rows)} grid cells drawn at random without replacement (seed {seed})"
    else:
        back = features(_encode_points(point_encoders, cells, back_lat, back_lon))
        rule = f"{len(back_lat)} background points" + points_source(background)
    keep_presence, keep_back = _finite_rows(presence), _finite_rows(back)
    if not keep_presence.any():
        raise MapError("No presence point has finite features in every modality.")
    presence = {name: values[keep_presence] for name, values in presence.items()}
    back = {name: values[keep_back] for name, values in back.items()}
    if several:
        estimator.fit(
            presence,
            back,
            presence_lat=lat[keep_presence],
            presence_lon=lon[keep_presence],
            background_lat=np.asarray(back_lat)[keep_back],
            background_lon=np.asarray(back_lon)[keep_back],
        )
    else:
        estimator.fit(presence[modality], back[modality])
    scores = np.full(grid.num_cells, np.nan, dtype=np.float32)
    base_cells = {name: cells[name] for name in features.base}
    for start, stop, chunk in iter_cell_chunks(base_cells, chunk_rows=chunk_rows):
        block = features(chunk)
        ok = _finite_rows(block)
        if ok.any():
            rows_ok = {name: values[ok] for name, values in block.items()}
            scores[start:stop][ok] = estimator.predict(rows_ok if several else rows_ok[modality])
    description = f"{len(lat)} points" + points_source(points)
    label = "+".join(names) if several else modality
    tags: dict[str, Any] = {
        "query": description,
        "query_modality": label,
        "query_encoder": point_encoders[features.base[0]].id
        if not several
        else {name: point_encoders[name].id for name in features.base},
        "method": "embedding-sdm",
        "background": rule,
        "n_presence": int(keep_presence.sum()),
        "n_background": int(keep_back.sum()),
        "sdm": f"{type(estimator).__name__} {estimator.get_params()}",
        "seed": seed,
        "grid_modality": label,
        "grid_encoders": {name: cells[name].encoder_id for name in features.base},
    }
    if several:
        tags["sdm_selection"] = estimator.summary()
        if features.model is not None:
            tags["visible"] = features.visible
    grid_map = GridMap(
        grid, scores[None], ["suitability"], tags=tags, title=f"SDM suitability: {description}"
    )
    if out is not None:
        write_map(out, grid_map)
    if preview is not None:
        from ecomodal.maps.preview import preview_png

        preview_png(grid_map, Path(preview))
    return grid_map


def _feature_names(modality: str, modalities: Sequence[str] | str | None, model: Any) -> list[str]:
    """The SDM's feature blocks: the modalities, plus ``prom3e-hidden`` with a model."""
    if modalities is None:
        given = [modality]
    elif isinstance(modalities, str):
        given = [part.strip() for part in modalities.split(",") if part.strip()]
    else:
        given = list(modalities)
    names = parse_modalities([n for n in given if n != HIDDEN]) if set(given) - {HIDDEN} else []
    if (model is not None or HIDDEN in given) and HIDDEN not in names:
        names.append(HIDDEN)
    if not names:
        raise InvalidArgumentError("modalities must name at least one modality.")
    return names


def _finite_rows(features: Mapping[str, np.ndarray]) -> np.ndarray:
    return np.logical_and.reduce([np.isfinite(v).all(axis=1) for v in features.values()])


def _encode_points(
    point_encoders: Mapping[str, Encoder],
    cells: Mapping[str, GridEmbeddings],
    lat: np.ndarray,
    lon: np.ndarray,
) -> dict[str, np.ndarray]:
    """Each modality's embedding of the points, through the grid's own encoder."""
    out = {}
    for name, point_encoder in point_encoders.items():
        out[name] = point_encoder.encode(lat=lat, lon=lon)
        if out[name].shape[1] != cells[name].dim:
            raise MapError(
                f"The points' {name} embeddings ({point_encoder.id}) have dimension "
                f"{out[name].shape[1]} but the grid embeddings have dimension {cells[name].dim}."
            )
    return out


class _Features:
    """Turns {modality: embeddings} of some places into the SDM's feature blocks: the
    modalities themselves and, with a ProM3E model, its hidden features from ``visible``."""

    def __init__(self, names: list[str], model: Any, visible: Any, device: str | None) -> None:
        self.names = names
        self.device = device
        self.model = None if model is None else load_model(model, device=device)
        self.visible: list[str] = []
        if self.model is not None:
            default = [n for n in names if n != HIDDEN and n in self.model.modalities]
            self.visible = parse_modalities(visible if visible is not None else default)
            if not self.visible:
                raise MapError(
                    "prom3e-hidden needs visible modalities the model knows; give visible=."
                )
        elif HIDDEN in names:
            raise MapError("modalities with 'prom3e-hidden' need model= (a ProM3E checkpoint).")
        self.base = list(dict.fromkeys([n for n in names if n != HIDDEN] + self.visible))

    def check(self, cells: Mapping[str, GridEmbeddings]) -> None:
        if self.model is not None:
            check_visible(self.model, self.visible, cells)

    def __call__(self, embeddings: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        out = {name: embeddings[name] for name in self.names if name != HIDDEN}
        if self.model is not None:
            n = len(next(iter(embeddings.values())))
            ok, result = complete_cells(
                self.model, embeddings, self.visible, return_hidden=True, device=self.device
            )
            hidden = np.full((n, 0), np.nan, np.float32)
            if result is not None:
                flat = np.asarray(result.hidden, np.float32).reshape(int(ok.sum()), -1)
                hidden = np.full((n, flat.shape[1]), np.nan, np.float32)
                hidden[ok] = flat
            out[HIDDEN] = hidden
        return out


def _as_grid(grid: Grid | Sequence[float] | str, resolution: float | None) -> Grid:
    if isinstance(grid, Grid):
        return grid
    if resolution is None:
        raise InvalidArgumentError(
            f"grid={grid!r} needs resolution= (degrees); or pass a Grid from make_grid."
        )
    return make_grid(None if grid == "global" else tuple(grid), resolution=resolution)
