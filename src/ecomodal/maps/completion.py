"""ProM3E over a grid: each cell's visible modality embeddings, completed chunk by chunk."""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from ecomodal.errors import MapError
from ecomodal.maps.cache import DEFAULT_CHUNK_ROWS, GridEmbeddings, iter_cell_chunks
from ecomodal.modalities import parse_modalities
from ecomodal.models.factory import load_model
from ecomodal.models.prom3e import Completion, ProM3E
from ecomodal.seeding import mix_seed


@dataclass
class CellCompletion:
    """ProM3E's output for the cells [start, stop) of a grid; ``ok`` marks the cells whose
    visible embeddings are all finite (``result`` has one row per such cell)."""

    start: int
    stop: int
    ok: np.ndarray
    result: Completion | None


def check_visible(
    model: ProM3E, visible: Sequence[str] | str, embeddings: Mapping[str, GridEmbeddings]
) -> list[str]:
    """The visible modalities in the model's order, checked against the grid embeddings."""
    names = parse_modalities(visible, model.modalities)
    for name in names:
        if name not in embeddings:
            raise MapError(f"visible modality {name!r} has no grid embeddings.")
        if embeddings[name].dim != model.config.input_dim:
            raise MapError(
                f"The {name} grid embeddings have dimension {embeddings[name].dim} but the ProM3E "
                f"model takes {model.config.input_dim}."
            )
    return names


def iter_completions(
    model: ProM3E | str | os.PathLike[str],
    embeddings: Mapping[str, GridEmbeddings],
    *,
    visible: Sequence[str] | str,
    n_samples: int = 0,
    seed: int = 0,
    return_hidden: bool = False,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    device: str | None = None,
) -> Iterator[CellCompletion]:
    """Complete every cell from its ``visible`` modalities, one chunk of cells at a time.

    ``n_samples=0`` decodes from the latent mean (no noise); otherwise the noise of the chunk
    starting at cell ``start`` is seeded with ``mix_seed(seed, start)``.
    """
    model = load_model(model, device=device)
    names = check_visible(model, visible, embeddings)
    chosen = {name: embeddings[name] for name in names}
    for start, stop, chunk in iter_cell_chunks(chosen, chunk_rows=chunk_rows):
        ok, result = complete_cells(
            model, chunk, names, n_samples=n_samples, seed=mix_seed(seed, start),
            return_hidden=return_hidden, device=device,
        )  # fmt: skip
        yield CellCompletion(start, stop, ok, result)


def complete_cells(
    model: ProM3E,
    chunk: Mapping[str, np.ndarray],
    names: Sequence[str],
    *,
    n_samples: int = 0,
    seed: int = 0,
    return_hidden: bool = False,
    device: str | None = None,
) -> tuple[np.ndarray, Completion | None]:
    """Complete cells from their visible embeddings ``chunk`` ({modality: [n, D]}); returns
    (``ok`` [n]: cells whose visible embeddings are all finite, the completion of those cells)."""
    n = len(next(iter(chunk.values())))
    x = np.zeros((n, len(model.modalities), model.config.input_dim), np.float32)
    ok = np.ones(n, dtype=bool)
    for name in names:
        x[:, model.modalities.index(name)] = chunk[name]
        ok &= np.isfinite(chunk[name]).all(axis=1)
    if not ok.any():
        return ok, None
    x[~ok] = 0.0
    result = model.complete(
        x[ok], visible=list(names), n_samples=n_samples, seed=seed,
        return_hidden=return_hidden, device=device,
    )  # fmt: skip
    return ok, result
