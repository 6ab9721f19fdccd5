"""Embedding maps: the three leading principal (PCA) or independent (ICA) components of an
embedding over a grid, scaled to [0, 1] and shown as RGB (for ProM3E's hidden states, one map
per register token).

The decomposition is fit on a seeded sample of cells; every cell is then projected chunk by
chunk, so memory stays bounded by the sample and one chunk.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ecomodal.encoders.base import Encoder
from ecomodal.errors import MapError
from ecomodal.maps.cache import (
    DEFAULT_CHUNK_ROWS,
    GridEmbeddings,
    grid_embeddings,
    iter_cell_chunks,
)
from ecomodal.maps.completion import check_visible, complete_cells
from ecomodal.maps.grid import Grid
from ecomodal.maps.output import GridMap
from ecomodal.modalities import parse_modalities
from ecomodal.models.factory import load_model
from ecomodal.models.prom3e import ProM3E
from ecomodal.options import check_range

METHODS = ("pca", "ica")
HIDDEN = "prom3e-hidden"


@dataclass
class Components:
    """A fitted 3-component decomposition and the 1st/99th percentiles that scale it to [0, 1]."""

    decomposition: Any
    low: np.ndarray
    high: np.ndarray
    summary: dict[str, Any]

    def rgb(self, features: np.ndarray) -> np.ndarray:
        """[3, N] in [0, 1]; rows of ``features`` with NaN come back NaN."""
        features = np.asarray(features, dtype=np.float32)
        finite = np.isfinite(features).all(axis=1)
        out = np.full((3, features.shape[0]), np.nan, dtype=np.float32)
        if finite.any():
            projected = self.decomposition.transform(features[finite])
            scaled = (projected - self.low) / np.maximum(self.high - self.low, 1e-12)
            out[:, finite] = np.clip(scaled, 0, 1).T
        return out


def fit_components(features: np.ndarray, *, method: str = "pca", seed: int = 0) -> Components:
    """Fit PCA or FastICA (3 components, seeded) on the finite rows of ``features`` [N, D]."""
    from sklearn.decomposition import PCA, FastICA

    if method not in METHODS:
        raise MapError(f"method must be one of {', '.join(METHODS)}; got {method!r}.")
    features = np.asarray(features, dtype=np.float32)
    features = features[np.isfinite(features).all(axis=1)]
    if features.shape[0] < 4:
        raise MapError(f"Only {features.shape[0]} cells have finite embeddings; need at least 4.")
    if method == "pca":
        decomposition = PCA(n_components=3, random_state=seed)
    else:
        decomposition = FastICA(
            n_components=3, random_state=seed, whiten="unit-variance", max_iter=500
        )
    fitted = decomposition.fit_transform(features)
    low, high = np.percentile(fitted, [1, 99], axis=0)
    summary: dict[str, Any] = {"method": method, "fit_cells": int(features.shape[0]), "seed": seed}
    if method == "pca":
        summary["explained_variance_ratio"] = [
            float(v) for v in decomposition.explained_variance_ratio_
        ]
    return Components(decomposition, low, high, summary)


def components_rgb(
    features: np.ndarray, *, method: str = "pca", sample: int = 20_000, seed: int = 0
) -> tuple[np.ndarray, dict[str, Any]]:
    """The three leading components of in-memory ``features`` [N, D] as [3, N] in [0, 1], fit on
    at most ``sample`` rows drawn with ``seed``; returns the values and the fit's summary."""
    rows = sample_cells(features.shape[0], sample, seed)
    components = fit_components(features[rows], method=method, seed=seed)
    return components.rgb(features), components.summary


def sample_cells(num_cells: int, sample: int, seed: int) -> np.ndarray:
    """Sorted positions of at most ``sample`` cells drawn without replacement with ``seed``."""
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(num_cells, min(sample, num_cells), replace=False))


def embedding_map(
    grid: Grid,
    *,
    modality: str,
    method: str = "pca",
    embeddings: Mapping[str, GridEmbeddings] | None = None,
    encoders: Mapping[str, Encoder | str | None] | None = None,
    model: ProM3E | str | os.PathLike[str] | None = None,
    visible: Sequence[str] | str = ("sat", "loc", "env"),
    cache_dir: str | os.PathLike[str] | None = None,
    sample: int = 20_000,
    seed: int = 0,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    device: str | None = None,
    show_progress: bool = True,
) -> list[GridMap]:
    """RGB maps (bands ``red``, ``green``, ``blue``) of the three leading ``method`` components.

    ``modality`` is a grid modality (``loc``, ``env``, ``sat``: one map of its embeddings) or
    ``prom3e-hidden`` (one map per register token of ``model``'s encoder, run on the cells'
    ``visible`` modalities). The decomposition is fit on ``sample`` cells drawn with ``seed``.
    """
    if method not in METHODS:
        raise MapError(f"method must be one of {', '.join(METHODS)}; got {method!r}.")
    check_range(sample, "sample", minimum=4, integer=True)
    check_range(chunk_rows, "chunk_rows", minimum=1, integer=True)
    if modality != HIDDEN:
        parse_modalities([modality])
    if modality == HIDDEN:
        if model is None:
            raise MapError("modality='prom3e-hidden' needs model= (a ProM3E checkpoint).")
        prom3e = load_model(model, device=device)
        names = parse_modalities(visible, prom3e.modalities)
    else:
        names = [modality]
    cells = grid_embeddings(
        grid, names, embeddings=embeddings, encoders=encoders, cache_dir=cache_dir,
        device=device, show_progress=show_progress,
    )  # fmt: skip
    if modality == HIDDEN:
        check_visible(prom3e, names, cells)
        config = prom3e.config
        labels = [f"register token {i + 1}" for i in range(config.num_register_tokens)]
        first = config.num_cls_tokens

        def features(chunk: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
            ok, result = complete_cells(prom3e, chunk, names, return_hidden=True, device=device)
            out = {
                label: np.full((len(ok), config.embed_dim), np.nan, np.float32) for label in labels
            }
            if result is not None:
                for i, label in enumerate(labels):
                    out[label][ok] = result.hidden[:, first + i]
            return out
    else:
        labels = [f"{modality} embedding"]

        def features(chunk: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
            return {labels[0]: chunk[modality]}

    return _rgb_maps(grid, cells, labels, features, method, sample, seed, chunk_rows)


def _rgb_maps(
    grid: Grid,
    cells: Mapping[str, GridEmbeddings],
    labels: list[str],
    features: Callable[[Mapping[str, np.ndarray]], dict[str, np.ndarray]],
    method: str,
    sample: int,
    seed: int,
    chunk_rows: int,
) -> list[GridMap]:
    """Fit one decomposition per label on sampled cells, then project every chunk of cells."""
    rows = sample_cells(grid.num_cells, sample, seed)
    sampled = features({name: item.take(rows) for name, item in cells.items()})
    fits = {label: fit_components(sampled[label], method=method, seed=seed) for label in labels}
    values = {label: np.full((3, grid.num_cells), np.nan, np.float32) for label in labels}
    for start, stop, chunk in iter_cell_chunks(cells, chunk_rows=chunk_rows):
        for label, block in features(chunk).items():
            values[label][:, start:stop] = fits[label].rgb(block)
    encoder_ids = {name: item.encoder_id for name, item in cells.items()}
    return [
        GridMap(
            grid,
            values[label],
            ["red", "green", "blue"],
            tags={"embedding": label, "grid_encoders": encoder_ids, **fits[label].summary},
            title=f"{label}: {method.upper()} components 1-3 as RGB",
        )
        for label in labels
    ]
