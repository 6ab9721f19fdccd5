"""Species (or any query) suitability maps: cosine similarity of a query embedding to each cell.

The query is a taxon name (text encoder), a photo (image encoder) or example observations (the
mean of their embeddings through the grid's own encoder). The score of a cell is the cosine
between the query and the cell's embedding, or, with ProM3E (``via_completion``), between the
query and the query modality completed from the cell's visible modalities.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ecomodal.encoders.base import Encoder
from ecomodal.errors import MapError
from ecomodal.maps.cache import (
    DEFAULT_CHUNK_ROWS,
    GridEmbeddings,
    grid_embeddings,
    iter_cell_chunks,
    resolve_encoder,
)
from ecomodal.maps.completion import iter_completions
from ecomodal.maps.grid import Grid
from ecomodal.maps.output import GridMap
from ecomodal.maps.points import points_lat_lon, points_source
from ecomodal.modalities import parse_modalities
from ecomodal.models.factory import load_model
from ecomodal.models.prom3e import ProM3E
from ecomodal.options import check_range

#: Ways ``species_map`` scores points: an SDM (default) or the prototype cosine.
METHODS = ("sdm", "prototype")


@dataclass
class Query:
    """A query embedding [dim] (L2-normalised), its modality and a description for the metadata."""

    vector: np.ndarray
    modality: str
    description: str
    encoder: str


def query_embedding(
    *,
    query: str | None = None,
    image: str | os.PathLike[str] | None = None,
    points: str | os.PathLike[str] | tuple[Sequence[float], Sequence[float]] | None = None,
    encoder: Encoder | str | os.PathLike[str] | None = None,
    points_modality: str = "loc",
    background: str | os.PathLike[str] | tuple[Sequence[float], Sequence[float]] | None = None,
    device: str | None = None,
) -> Query:
    """Embed exactly one query: ``query`` text (text encoder), an ``image`` path (image encoder)
    or ``points`` (an occurrence file, or (lat, lon) arrays) averaged through the
    ``points_modality`` encoder. ``encoder`` is the Encoder or spec to use (default: the
    registry's default for that modality).

    ``background`` points (e.g. every place surveyed) make a presence-versus-background query:
    the mean background embedding is subtracted from the points' mean, so the shared component of
    all embeddings (which otherwise dominates cosine scores) no longer counts.
    """
    _check_one_query(query, image, points)
    if query is not None:
        modality, description = "text", str(query)
        model = resolve_encoder(modality, encoder, device=device)
        vectors = model.encode([str(query)])
    elif image is not None:
        modality, description = "image", str(image)
        if not Path(image).is_file():
            raise FileNotFoundError(f"Query image {image} does not exist.")
        model = resolve_encoder(modality, encoder, device=device)
        vectors = model.encode([str(image)])
    else:
        modality = points_modality
        lat, lon = points_lat_lon(points)
        description = f"mean of {len(lat)} points" + points_source(points)
        model = resolve_encoder(modality, encoder, device=device)
        vectors = model.encode(lat=lat, lon=lon)
    vector = vectors.mean(axis=0)
    if background is not None:
        if points is None:
            raise MapError("background= applies to points queries only.")
        back_lat, back_lon = points_lat_lon(background)
        vector = vector - model.encode(lat=back_lat, lon=back_lon).mean(axis=0)
        description += f" against {len(back_lat)} background points"
    vector = vector / max(float(np.linalg.norm(vector)), 1e-12)
    return Query(vector.astype(np.float32), modality, description, model.id)


def species_map(
    grid: Grid,
    *,
    query: str | None = None,
    image: str | os.PathLike[str] | None = None,
    points: str | os.PathLike[str] | tuple[Sequence[float], Sequence[float]] | None = None,
    background: str | os.PathLike[str] | tuple[Sequence[float], Sequence[float]] | None = None,
    modality: str = "loc",
    encoder: Encoder | str | os.PathLike[str] | None = None,
    query_encoder: Encoder | str | os.PathLike[str] | None = None,
    embeddings: Mapping[str, GridEmbeddings] | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    model: ProM3E | str | os.PathLike[str] | None = None,
    via_completion: bool = False,
    visible: Sequence[str] | str | None = None,
    encoders: Mapping[str, Encoder | str | None] | None = None,
    n_samples: int = 0,
    seed: int = 0,
    method: str = "sdm",
    modalities: Sequence[str] | str | None = None,
    n_background: int | None = None,
    block_deg: float | None = None,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    device: str | None = None,
    show_progress: bool = True,
) -> GridMap:
    """A suitability score per cell of ``grid`` for one query (``query``, ``image`` or ``points``).

    Points (``method="sdm"``, the default): a presence-versus-background SDM over every modality
    given for the cells (``modality``, the keys of ``encoders`` and ``embeddings``, or
    ``modalities``) and, with ``model``, ProM3E's hidden features, each modality's classifier
    and regularisation chosen by spatial-block cross-validation on the points (see
    :func:`~ecomodal.maps.sdm_map.sdm_map`, which does the work). Background: the ``background``
    points, else ``n_background`` grid cells (default 10,000) drawn with ``seed``.

    ``method="prototype"`` (and text or photo queries), direct scoring: cosine between the query embedding and each cell's ``modality`` embedding
    (computed once with ``encoder`` and cached in ``cache_dir``; see :func:`embed_grid`).
    Example points go through the same ``modality`` encoder (with ``background`` points, their
    mean is subtracted: see :func:`query_embedding`); text and photos through
    ``query_encoder``. With ``model`` and ``via_completion=True``: ProM3E completes the query's
    modality from each cell's ``visible`` modalities (default: ``modality``; their encoders from
    ``encoders``), and the score is the cosine of that completion to the query. Cells that cannot
    be scored are NaN. The map has one band, ``suitability``.
    """
    _check_one_query(query, image, points)
    if method not in METHODS:
        raise MapError(f"method must be one of {METHODS}; got {method!r}.")
    check_range(n_samples, "n_samples", minimum=0, integer=True)
    check_range(chunk_rows, "chunk_rows", minimum=1, integer=True)
    if points is not None and method == "sdm" and not via_completion:
        from ecomodal.maps.sdm_map import DEFAULT_N_BACKGROUND, sdm_map

        if modalities is None:
            modalities = list(dict.fromkeys([modality, *(encoders or {}), *(embeddings or {})]))
        grid_map = sdm_map(
            grid,
            points=points,
            background=background,
            modality=modality,
            modalities=modalities,
            model=model,
            visible=visible,
            encoder=encoder,
            embeddings=embeddings,
            encoders=encoders,
            cache_dir=cache_dir,
            n_background=DEFAULT_N_BACKGROUND if n_background is None else n_background,
            block_deg=block_deg,
            seed=seed,
            chunk_rows=chunk_rows,
            device=device,
            show_progress=show_progress,
        )
        grid_map.title = f"Suitability: {grid_map.tags['query']}"
        return grid_map
    parse_modalities([modality])
    visible_names = [modality] if visible is None else parse_modalities(visible)
    for where in (points, background):
        if where is not None:
            points_lat_lon(where)  # bad points are an error before the grid is embedded
    if image is not None and not Path(image).is_file():
        raise FileNotFoundError(f"Query image {image} does not exist.")
    if via_completion and model is None:
        raise MapError("via_completion=True needs model= (a ProM3E checkpoint).")
    all_encoders = dict(encoders or {})
    if encoder is not None:
        all_encoders[modality] = encoder
    cells = grid_embeddings(
        grid,
        visible_names if via_completion else [modality],
        embeddings=embeddings,
        encoders=all_encoders,
        cache_dir=cache_dir,
        device=device,
        show_progress=show_progress,
    )
    point_encoder = (
        encoder if encoder is not None else getattr(cells.get(modality), "encoder", None)
    )
    q = query_embedding(
        query=query,
        image=image,
        points=points,
        encoder=point_encoder if points is not None else query_encoder,
        points_modality=modality,
        background=background,
        device=device,
    )
    scores = np.full(grid.num_cells, np.nan, dtype=np.float32)
    tags: dict[str, Any] = {"query": q.description, "query_modality": q.modality}
    tags["query_encoder"] = q.encoder
    if via_completion:
        if model is None:
            raise MapError("via_completion=True needs model= (a ProM3E checkpoint).")
        prom3e = load_model(model, device=device)
        slot = prom3e.modalities.index(q.modality) if q.modality in prom3e.modalities else -1
        if slot < 0:
            raise MapError(f"The ProM3E model has no {q.modality!r} modality to complete.")
        _check_dim(q, prom3e.config.input_dim, "the ProM3E model")
        for part in iter_completions(
            prom3e, cells, visible=visible_names, n_samples=n_samples, seed=seed,
            chunk_rows=chunk_rows, device=device,
        ):  # fmt: skip
            if part.result is not None:
                completed = part.result.embeddings[:, slot]
                scores[part.start : part.stop][part.ok] = completed @ q.vector
        tags.update(method="prom3e-completion", visible=visible_names, n_samples=n_samples)
    else:
        _check_dim(q, cells[modality].dim, f"the {modality} grid embeddings")
        for start, stop, chunk in iter_cell_chunks(
            {modality: cells[modality]}, chunk_rows=chunk_rows
        ):
            scores[start:stop] = chunk[modality] @ q.vector
        tags.update(method="cosine", grid_modality=modality)
    tags["grid_encoders"] = {name: item.encoder_id for name, item in cells.items()}
    return GridMap(
        grid, scores[None], ["suitability"], tags=tags, title=f"Suitability: {q.description}"
    )


def _check_one_query(query: Any, image: Any, points: Any) -> None:
    given = [
        name
        for name, value in (("query", query), ("image", image), ("points", points))
        if value is not None
    ]
    if len(given) != 1:
        raise MapError(f"Give exactly one of query=, image= or points=; got {given or 'none'}.")


def _check_dim(q: Query, dim: int, what: str) -> None:
    if q.vector.shape[0] != dim:
        raise MapError(
            f"The {q.modality} query ({q.encoder}) has dimension {q.vector.shape[0]} but {what} "
            f"have dimension {dim}; use encoders of one embedding space."
        )
