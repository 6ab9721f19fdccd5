"""The embedding pass over a grid: each cell's embedding computed once, cached in zarr chunks.

The cache key is the grid's definition plus the encoder's id and a fingerprint of its weights
(and, for encoders that sample covariate rasters, of those rasters' bands and statistics), so a
second query over the same grid only reads the cache, and a changed encoder never reuses it.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ecomodal.encoders.base import Encoder
from ecomodal.errors import MapError
from ecomodal.io.grids import EmbeddingStore
from ecomodal.maps.grid import Grid, default_cache_dir
from ecomodal.modalities import check_modality
from ecomodal.progress import progress_bars

#: Cells per zarr chunk (and per resumable step) of the embedding pass.
DEFAULT_CHUNK_ROWS = 32_768


@dataclass
class GridEmbeddings:
    """One modality's embeddings [num_cells, dim] of a grid, on disk (read chunk by chunk)."""

    grid: Grid
    modality: str
    encoder_id: str
    store: EmbeddingStore
    #: The encoder that made them (when known): queries by example points go through it.
    encoder: Encoder | None = None

    @property
    def dim(self) -> int:
        return self.store.dim

    @property
    def path(self) -> Path:
        return self.store.path

    def iter_chunks(self) -> Iterator[tuple[int, int, np.ndarray]]:
        """(start, stop, embeddings [stop - start, dim]) over the grid's cells, in order."""
        return self.store.iter_chunks()

    def read(self, start: int = 0, stop: int | None = None) -> np.ndarray:
        """Embeddings of cells [start, stop)."""
        return self.store.read(start, stop)

    def take(self, cells: np.ndarray) -> np.ndarray:
        """Embeddings of the cells at the sorted positions ``cells``."""
        return self.store.take(cells)


def encoder_fingerprint(encoder: Encoder) -> str:
    """A short hash of what determines an encoder's outputs: id, modality, precision, weights and
    (for env) its covariate bands, statistics and sampling method."""
    digest = hashlib.sha256(
        f"{encoder.id}|{encoder.modality}|{encoder.dim}|{encoder.precision}".encode()
    )
    for name, tensor in sorted(encoder.model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy())
    covariates = getattr(encoder, "covariates", None)
    if covariates is not None:
        digest.update(repr((covariates.raster.source, covariates.band_names)).encode())
        digest.update(covariates.mean.tobytes() + covariates.std.tobytes())
        digest.update(covariates.method.encode())
    return digest.hexdigest()[:16]


def resolve_encoder(
    modality: str,
    encoder: Encoder | str | os.PathLike[str] | None,
    *,
    device: str | None = None,
    precision: str = "fp32",
    options: Mapping[str, Any] | None = None,
) -> Encoder:
    """``encoder`` as an :class:`Encoder`: an instance as is, else ``load_encoder(modality, spec)``."""
    if isinstance(encoder, Encoder):
        if encoder.modality != modality:
            raise MapError(
                f"The {modality} grid pass got a {encoder.modality} encoder ({encoder.id})."
            )
        return encoder
    from ecomodal.encoders import load_encoder

    return load_encoder(
        modality, encoder, device=device, precision=precision, **dict(options or {})
    )


def embed_grid(
    grid: Grid,
    *,
    modality: str,
    encoder: Encoder | str | os.PathLike[str] | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    batch_size: int | None = None,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    device: str | None = None,
    precision: str = "fp32",
    encoder_options: Mapping[str, Any] | None = None,
    show_progress: bool = True,
) -> GridEmbeddings:
    """Embed every cell centre of ``grid`` with the ``modality`` encoder, cached on disk.

    ``encoder`` is an :class:`Encoder` taking ``lat=``/``lon=`` (loc, env, and sat encoders that
    read imagery at a point) or a spec for ``load_encoder(modality, spec, **encoder_options)``.
    The embeddings land in ``cache_dir`` (default :func:`default_cache_dir`) as a zarr store named
    by the grid and encoder fingerprints; finished chunks are kept, so a second call only opens
    the cache and a killed pass resumes at the first missing chunk. Cells the encoder cannot
    embed are NaN.
    """
    check_modality(modality)
    encoder = resolve_encoder(
        modality, encoder, device=device, precision=precision, options=encoder_options
    )
    if tuple(encoder.input_columns) != ("lat", "lon"):
        raise MapError(
            f"The {modality} encoder {encoder.id} takes {', '.join(encoder.input_columns)}; a grid "
            "pass needs an encoder of lat=/lon= (points)."
        )
    fingerprint = encoder_fingerprint(encoder)
    key = {
        "grid": grid.definition(),
        "grid_fingerprint": grid.fingerprint,
        "modality": modality,
        "encoder": encoder.id,
        "encoder_fingerprint": fingerprint,
    }
    folder = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    store = EmbeddingStore.open_or_create(
        folder / f"{modality}-{grid.fingerprint}-{fingerprint}.zarr",
        rows=grid.num_cells,
        dim=encoder.dim,
        chunk_rows=chunk_rows,
        key=key,
    )
    missing = store.missing_chunks
    if missing:
        lat, lon = grid.lat, grid.lon
        label = f"{modality} grid ({encoder.id})"
        todo = sum(stop - start for start, stop in map(store.chunk_range, missing))
        with progress_bars(
            {label: grid.num_cells}, enabled=show_progress, completed={label: grid.num_cells - todo}
        ) as advance:
            for index in missing:
                start, stop = store.chunk_range(index)
                result = encoder.encode_rows(
                    lat=lat[start:stop], lon=lon[start:stop], batch_size=batch_size, device=device
                )
                store.write_chunk(index, result.embeddings)
                advance[label](stop - start)
    return GridEmbeddings(grid, modality, encoder.id, store, encoder)


def grid_embeddings(
    grid: Grid,
    modalities: list[str] | tuple[str, ...],
    *,
    embeddings: Mapping[str, GridEmbeddings] | None = None,
    encoders: Mapping[str, Encoder | str | os.PathLike[str] | None] | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    encoder_options: Mapping[str, Mapping[str, Any]] | None = None,
    device: str | None = None,
    show_progress: bool = True,
) -> dict[str, GridEmbeddings]:
    """The grid embeddings of each of ``modalities``: taken from ``embeddings`` where given, else
    computed (or read from the cache) with ``encoders[modality]`` (default: the registry's)."""
    out: dict[str, GridEmbeddings] = {}
    for modality in modalities:
        given = (embeddings or {}).get(modality)
        if given is None:
            given = embed_grid(
                grid,
                modality=modality,
                encoder=(encoders or {}).get(modality),
                cache_dir=cache_dir,
                device=device,
                encoder_options=(encoder_options or {}).get(modality),
                show_progress=show_progress,
            )
        elif given.grid.fingerprint != grid.fingerprint:
            raise MapError(
                f"The {modality} embeddings in {given.path} belong to another grid "
                f"({given.grid.definition()}) than the map's ({grid.definition()})."
            )
        out[modality] = given
    return out


def iter_cell_chunks(
    embeddings: Mapping[str, GridEmbeddings], *, chunk_rows: int = DEFAULT_CHUNK_ROWS
) -> Iterator[tuple[int, int, dict[str, np.ndarray]]]:
    """(start, stop, {modality: embeddings of cells [start, stop)}) over several modalities of
    one grid, so that only one chunk of each is in memory."""
    stores = dict(embeddings)
    if not stores:
        raise MapError("No grid embeddings given.")
    num_cells = next(iter(stores.values())).grid.num_cells
    for item in stores.values():
        item.store.check_complete()
    for start in range(0, num_cells, chunk_rows):
        stop = min(start + chunk_rows, num_cells)
        yield start, stop, {name: item.read(start, stop) for name, item in stores.items()}
