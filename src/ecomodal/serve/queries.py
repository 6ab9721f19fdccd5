"""New layers made on request over a grid whose cell embeddings are held in memory.

:class:`GridCells` loads a grid's cached embeddings (``maps/grid-cache``) once, with each
modality's 64 leading principal axes, so that a layer over the global 0.25-degree land grid
(343,895 cells) takes well under a second:

- :func:`points_layer`: presence points (and optional background points, else seeded grid
  cells) -> a presence-vs-background :class:`~ecomodal.maps.sdm.EmbeddingSDM` (logistic, fixed
  C) over the cells' principal components of every modality -> its suitability per cell.
- :func:`similar_layer`: one cell's embeddings -> cosine of every cell to it (mean over modalities).
- :func:`vector_layer`: a query vector in one modality (an uploaded photo through the run's sat
  encoder) -> cosine per cell.
- :func:`text_presences`: a text -> the label value of the run's table it is closest to (offline
  text encoder) -> that label's places, for :func:`points_layer`.

The spatial-block model selection of ``ecomodal map species`` (``ModalitySDM``) is too slow for
an interactive layer; these layers record their method in their tags.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ecomodal.errors import InvalidArgumentError, MapError
from ecomodal.vectors import normalise

#: Principal axes kept per modality for the layer SDM.
N_COMPONENTS = 64
#: Cells sampled to find the principal axes.
PCA_SAMPLE = 20_000
#: Background cells drawn when a points query gives none.
DEFAULT_N_BACKGROUND = 10_000
#: Inverse regularisation of the layer SDM (what spatial-block CV picks most often, see
#: ``benchmarks/map_truth.py``).
LAYER_C = 0.1
#: Label columns a text query is matched against.
TEXT_COLUMNS = ("land_cover", "koppen", "country", "continent")


@dataclass(eq=False)
class GridCells:
    """A grid and its cells' normalised embeddings per modality, with principal components."""

    grid: Any
    embeddings: dict[str, np.ndarray]
    encoder_ids: dict[str, str]
    features: np.ndarray

    @classmethod
    def from_cache(cls, folder: str | os.PathLike[str]) -> GridCells | None:
        """The grid of the cache folder with the most modalities (then the most cells), or None
        when the folder holds no complete store."""
        from ecomodal.errors import GridStoreError
        from ecomodal.io.grids import EmbeddingStore
        from ecomodal.maps.grid import grid_from_definition

        folder = Path(folder)
        if not folder.is_dir():
            return None
        groups: dict[str, dict[str, Any]] = {}
        for path in sorted(folder.glob("*.zarr")):
            try:
                store = EmbeddingStore.open(path)
            except GridStoreError:
                continue
            if not store.complete:
                continue
            key = store.key
            group = groups.setdefault(key["grid_fingerprint"], {"grid": key["grid"], "stores": {}})
            group["stores"].setdefault(key["modality"], (store, key["encoder"]))
        if not groups:
            return None
        best = max(groups.values(), key=lambda g: (len(g["stores"]), g["grid"]["cells"]))
        grid = grid_from_definition(best["grid"])
        embeddings = {
            modality: normalise(store.read().astype(np.float32))
            for modality, (store, _) in sorted(best["stores"].items())
        }
        encoder_ids = {m: enc for m, (_, enc) in best["stores"].items()}
        return cls(grid, embeddings, encoder_ids, principal_features(embeddings))

    def describe(self) -> dict[str, Any]:
        return {**self.grid.definition(), "modalities": sorted(self.embeddings)}

    def cells_of(self, lat: Any, lon: Any, what: str) -> tuple[np.ndarray, int]:
        """Grid cell positions of the points on the grid, and how many fell off it (an error
        naming ``what`` when none is on it)."""
        cells = self.grid.cell_of(lat, lon)
        on = cells[cells >= 0]
        if not len(on):
            raise InvalidArgumentError(
                f"{what}: none of the {len(cells)} points falls on a cell of the "
                f"{self.grid.resolution}-degree {'land ' if self.grid.land_only else ''}grid."
            )
        return on, int((cells < 0).sum())


def principal_features(embeddings: Mapping[str, np.ndarray], seed: int = 0) -> np.ndarray:
    """Each modality projected on its ``N_COMPONENTS`` leading principal axes (found on a seeded
    sample of cells), concatenated: [cells, N_COMPONENTS * modalities] float32."""
    from ecomodal.maps.embedding import sample_cells
    from ecomodal.maps.sdm_select import principal_axes

    parts = []
    for values in embeddings.values():
        sample = values[sample_cells(len(values), PCA_SAMPLE, seed)]
        mean, axes = principal_axes(sample.astype(np.float64), N_COMPONENTS, seed)
        if axes is None:
            parts.append(values - mean.astype(np.float32))
        else:
            parts.append((values - mean.astype(np.float32)) @ axes.astype(np.float32))
    return np.ascontiguousarray(np.concatenate(parts, axis=1), dtype=np.float32)


@dataclass
class LayerValues:
    """A made layer's per-cell values, kind, title, units and tags."""

    values: np.ndarray
    kind: str
    title: str
    units: str
    tags: dict[str, Any]


def points_layer(
    cells: GridCells,
    lat: Sequence[float],
    lon: Sequence[float],
    *,
    background_lat: Sequence[float] | None = None,
    background_lon: Sequence[float] | None = None,
    n_background: int = DEFAULT_N_BACKGROUND,
    seed: int = 0,
    description: str = "",
) -> LayerValues:
    """Suitability from presence points: a logistic presence-vs-background SDM (C =
    ``LAYER_C``) over the cells' principal components of every modality."""
    from scipy.special import expit

    from ecomodal.maps.embedding import sample_cells
    from ecomodal.maps.sdm import EmbeddingSDM

    presence, off_grid = cells.cells_of(lat, lon, "points")
    if background_lat is not None:
        background, _ = cells.cells_of(background_lat, background_lon, "background")
        rule = f"{len(background)} given background points"
    else:
        background = sample_cells(cells.grid.num_cells, n_background, seed)
        rule = f"{len(background)} grid cells drawn at random without replacement (seed {seed})"
    if len(np.setdiff1d(background, presence)) == 0:
        raise MapError("background: every background point lies in a presence cell.")
    sdm = EmbeddingSDM(classifier="logistic", C=LAYER_C, seed=seed)
    sdm.fit(cells.features[presence], cells.features[background])
    w, b = sdm.linear_weights()
    values = expit(cells.features @ w.astype(np.float32) + np.float32(b)).astype(np.float32)
    modalities = "+".join(cells.embeddings)
    tags = {
        "kind": "suitability",
        "method": "embedding-sdm",
        "sdm": f"logistic, C={LAYER_C}, {N_COMPONENTS} principal components per modality",
        "grid_modality": modalities,
        "n_presence": int(len(presence)),
        "presence_off_grid": off_grid,
        "n_background": int(len(background)),
        "background": rule,
        "seed": seed,
        "query": description or f"{len(presence)} points",
    }
    return LayerValues(
        values, "suitability", f"Suitability: {tags['query']}", "probability of presence", tags
    )


def similar_layer(cells: GridCells, lat: float, lon: float) -> LayerValues:
    """Cosine of every cell to the cell at (lat, lon), averaged over the grid's modalities."""
    cell, _ = cells.cells_of([lat], [lon], "lat/lon")
    total = np.zeros(cells.grid.num_cells, dtype=np.float32)
    for values in cells.embeddings.values():
        total += values @ values[cell[0]]
    values = total / len(cells.embeddings)
    tags = {
        "kind": "similarity",
        "method": "cosine-to-cell",
        "query": f"places like {lat:.3f}, {lon:.3f}",
        "lat": lat,
        "lon": lon,
        "grid_modality": "+".join(cells.embeddings),
    }
    return LayerValues(
        values, "similarity", f"Similar to {lat:.2f}, {lon:.2f}", _cosine(cells), tags
    )


def vector_layer(
    cells: GridCells, vector: np.ndarray, modality: str, description: str
) -> LayerValues:
    """Cosine of every cell's ``modality`` embedding to ``vector``."""
    if modality not in cells.embeddings:
        raise InvalidArgumentError(
            f"the grid has no {modality} embeddings (it has {sorted(cells.embeddings)})."
        )
    gallery = cells.embeddings[modality]
    vector = unit_query(vector, gallery.shape[1], f"the grid's {modality} embeddings", "query")
    tags = {"kind": "similarity", "method": "cosine", "grid_modality": modality}
    tags["query"] = description
    return LayerValues(
        gallery @ vector,
        "similarity",
        f"Like {description}",
        f"cosine similarity ({modality})",
        tags,
    )


def unit_query(vector: Any, dim: int, against: str, field: str) -> np.ndarray:
    """A query vector as float32 [dim] of unit length; an error naming ``field`` when its size
    is not that of ``against``."""
    vector = np.asarray(vector, dtype=np.float32).ravel()
    if vector.shape[0] != dim:
        raise InvalidArgumentError(f"{field}: {vector.shape[0]} values; {against} have {dim}.")
    return normalise(vector)


def _cosine(cells: GridCells) -> str:
    return f"cosine similarity (mean over {', '.join(cells.embeddings)})"


@dataclass
class TextMatch:
    """The label value a text query matched, with its cosine and its rows' places."""

    column: str
    value: str
    cosine: float
    lat: np.ndarray
    lon: np.ndarray


def text_presences(table: Any, text: str, encoder: Any) -> TextMatch:
    """The label value of ``table`` (land cover, Koppen zone, country, continent) closest to
    ``text`` in the offline text encoder's space, with the places of its rows."""
    from ecomodal.geo.labels import KOPPEN_DESCRIPTIONS

    if "lat" not in table.labels or "lon" not in table.labels:
        raise InvalidArgumentError("text: the run's table has no lat/lon columns to map.")
    choices: list[tuple[str, str, str]] = []
    for column in TEXT_COLUMNS:
        if column in table.labels:
            for value in sorted({str(v) for v in table.labels[column] if v is not None}):
                if value in ("none", "no data", ""):
                    continue
                phrase = KOPPEN_DESCRIPTIONS.get(value, value) if column == "koppen" else value
                choices.append((column, value, phrase))
    if not choices:
        raise InvalidArgumentError(
            f"text: the run's table has none of the label columns {TEXT_COLUMNS} to match."
        )
    phrases = encoder.encode([c[2] for c in choices])
    query = encoder.encode([text])[0]
    scores = phrases @ query
    best = int(np.argmax(scores))
    column, value, _ = choices[best]
    rows = np.flatnonzero(np.asarray(table.labels[column], dtype=object).astype(str) == value)
    lat = np.asarray(table.labels["lat"], dtype=np.float64)[rows]
    lon = np.asarray(table.labels["lon"], dtype=np.float64)[rows]
    return TextMatch(column, value, float(scores[best]), lat, lon)
