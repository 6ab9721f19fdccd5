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
from ecomodal.maps.embedding import sample_cells
from ecomodal.maps.grid import Grid, make_grid
from ecomodal.maps.output import GridMap, write_map
from ecomodal.maps.sdm import EmbeddingSDM
from ecomodal.maps.species import Points, points_lat_lon, points_source
from ecomodal.modalities import parse_modalities
from ecomodal.options import check_range

#: Background cells drawn from the grid when no background points are given.
DEFAULT_N_BACKGROUND = 10_000


def sdm_map(
    grid: Grid | Sequence[float] | str,
    *,
    points: Points,
    background: Points | None = None,
    modality: str = "loc",
    resolution: float | None = None,
    encoder: Encoder | str | os.PathLike[str] | None = None,
    embeddings: Mapping[str, GridEmbeddings] | None = None,
    encoders: Mapping[str, Encoder | str | None] | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    sdm: Any = None,
    n_background: int = DEFAULT_N_BACKGROUND,
    seed: int = 0,
    out: str | os.PathLike[str] | None = None,
    preview: str | os.PathLike[str] | None = None,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    device: str | None = None,
    show_progress: bool = True,
) -> GridMap:
    """Habitat suitability in [0, 1] per cell of ``grid`` from an SDM fitted on embeddings.

    The ``points`` (an occurrence CSV/Parquet with lat/lon columns, or (lat, lon) arrays) are
    embedded with the grid's ``modality`` encoder (``encoder``, else ``encoders[modality]``, else
    the registry's default); so are the ``background`` points when given. Without them,
    ``n_background`` grid cells drawn without replacement with ``seed`` are the background (their
    cached embeddings). ``sdm`` (default ``EmbeddingSDM(seed=seed)``; any estimator with
    ``fit(X_presence, X_background)`` and ``predict(X)``) is cloned, fitted, and predicts every
    cell from the cached grid embeddings (:func:`~ecomodal.maps.cache.embed_grid`).

    ``grid`` is a :class:`Grid`, or a bounding box (west, south, east, north) or ``"global"``
    with ``resolution`` (land cells only). With ``out`` the map is written as a GeoTIFF (with
    ``preview``, also a PNG); the tags hold the query, the background rule and the estimator. The
    map has one band, ``suitability``; cells whose embedding is not finite are NaN.
    """
    grid = _as_grid(grid, resolution)
    parse_modalities([modality])
    if background is None:
        check_range(n_background, "n_background", minimum=1, integer=True)
    check_range(chunk_rows, "chunk_rows", minimum=1, integer=True)
    lat, lon = points_lat_lon(points)  # bad points are an error before the grid is embedded
    if background is not None:
        back_lat, back_lon = points_lat_lon(background)
    for path, name in ((out, "out"), (preview, "preview")):
        if path is not None:
            check_output_path(path, what=name)
    model = clone(sdm) if sdm is not None else EmbeddingSDM(seed=seed)
    if isinstance(model, EmbeddingSDM):
        model._make_classifier()  # an unknown classifier is an error before any work
    all_encoders = dict(encoders or {})
    if encoder is not None:
        all_encoders[modality] = encoder
    cells = grid_embeddings(
        grid,
        [modality],
        embeddings=embeddings,
        encoders=all_encoders,
        cache_dir=cache_dir,
        device=device,
        show_progress=show_progress,
    )[modality]
    point_encoder = resolve_encoder(
        modality, encoder if encoder is not None else cells.encoder, device=device
    )
    presence = point_encoder.encode(lat=lat, lon=lon)
    if background is None:
        rows = sample_cells(grid.num_cells, int(n_background), seed)
        back = cells.take(rows)
        rule = f"{len(rows)} grid cells drawn at random without replacement (seed {seed})"
    else:
        back = point_encoder.encode(lat=back_lat, lon=back_lon)
        rule = f"{len(back_lat)} background points" + points_source(background)
    if presence.shape[1] != cells.dim:
        raise MapError(
            f"The points' {modality} embeddings ({point_encoder.id}) have dimension "
            f"{presence.shape[1]} but the grid embeddings have dimension {cells.dim}."
        )
    back = back[np.isfinite(back).all(axis=1)]
    model.fit(presence, back)
    scores = np.full(grid.num_cells, np.nan, dtype=np.float32)
    for start, stop, chunk in iter_cell_chunks({modality: cells}, chunk_rows=chunk_rows):
        ok = np.isfinite(chunk[modality]).all(axis=1)
        if ok.any():
            scores[start:stop][ok] = model.predict(chunk[modality][ok])
    description = f"{len(lat)} points" + points_source(points)
    tags: dict[str, Any] = {
        "query": description,
        "query_modality": modality,
        "query_encoder": point_encoder.id,
        "method": "embedding-sdm",
        "background": rule,
        "n_presence": len(presence),
        "n_background": len(back),
        "sdm": f"{type(model).__name__} {model.get_params()}",
        "seed": seed,
        "grid_modality": modality,
        "grid_encoders": {modality: cells.encoder_id},
    }
    grid_map = GridMap(
        grid, scores[None], ["suitability"], tags=tags, title=f"SDM suitability: {description}"
    )
    if out is not None:
        write_map(out, grid_map)
    if preview is not None:
        from ecomodal.maps.preview import preview_png

        preview_png(grid_map, Path(preview))
    return grid_map


def _as_grid(grid: Grid | Sequence[float] | str, resolution: float | None) -> Grid:
    if isinstance(grid, Grid):
        return grid
    if resolution is None:
        raise InvalidArgumentError(
            f"grid={grid!r} needs resolution= (degrees); or pass a Grid from make_grid."
        )
    return make_grid(None if grid == "global" else tuple(grid), resolution=resolution)
