"""Shared plumbing of the evaluation tasks: loading tables, models, splits and fingerprints."""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np

from ecomodal.errors import InvalidEmbeddingsError, TableFormatError
from ecomodal.eval.completion import _normalise as normalise
from ecomodal.io.batch import EmbeddingBatch
from ecomodal.models.prom3e import ProM3E

SPLITS = ("published", "spatial-block", "random")

__all__ = [
    "SPLITS",
    "fingerprint",
    "make_split",
    "model_inputs",
    "normalise",
    "resolve_model",
    "spatial_block_split",
]


def resolve_model(model: Any) -> ProM3E | None:
    """``None``, a :class:`ProM3E`, or a spec for :func:`~ecomodal.models.factory.load_model`."""
    if model is None or isinstance(model, ProM3E):
        return model
    from ecomodal.models.factory import load_model

    return load_model(model)


def model_inputs(batch: EmbeddingBatch, model: ProM3E) -> tuple[np.ndarray, np.ndarray]:
    """Embeddings [N, M, D] and present mask [N, M] in the model's modality order."""
    return batch.stack(list(model.modalities), dim=model.config.input_dim)


def require_model(model: ProM3E | None, task: str) -> ProM3E:
    if model is None:
        raise ValueError(f"{task} needs a ProM3E model (model=PATH or a ProM3E instance).")
    return model


def spatial_block_split(
    lat: np.ndarray,
    lon: np.ndarray,
    *,
    block_deg: float = 10.0,
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
    seed: int = 0,
) -> np.ndarray:
    """``train``/``val``/``test`` per row, whole ``block_deg`` x ``block_deg`` cells at a time.

    Cells are shuffled with ``seed`` and given to test, then val, until each holds about its
    fraction of the rows, so nearby points never fall on both sides of a split.
    """
    from ecomodal.geo.blocks import block_ids

    try:
        block = block_ids(lat, lon, block_deg)
    except ValueError as err:
        raise InvalidEmbeddingsError(f"Spatial split: {err}") from None
    counts = np.bincount(block)
    cells, inverse = np.arange(len(counts)), block
    order = np.random.default_rng(seed).permutation(len(cells))
    cumulative = np.cumsum(counts[order]) / len(lat)
    cell_split = np.full(len(cells), "train", dtype=object)
    test_cells = order[cumulative <= test_fraction]
    if len(test_cells) == 0:
        test_cells = order[:1]
    cell_split[test_cells] = "test"
    rest = order[len(test_cells) :]
    rest_cumulative = np.cumsum(counts[rest]) / len(lat)
    cell_split[rest[rest_cumulative <= val_fraction]] = "val"
    return cell_split[inverse]


def make_split(
    batch: EmbeddingBatch,
    split: str | np.ndarray = "published",
    *,
    seed: int = 0,
    block_deg: float = 10.0,
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
) -> np.ndarray:
    """``train``/``val``/``test`` per row: the table's ``split`` column (``"published"``), whole
    spatial cells (``"spatial-block"``, from the ``lat``/``lon`` columns), a seeded random split
    (``"random"``), or a given array of labels."""
    if not isinstance(split, str):
        labels = np.asarray(split, dtype=object)
        if labels.shape != (len(batch),):
            raise ValueError(f"split array has shape {labels.shape}; expected ({len(batch)},).")
        return labels
    if split == "published":
        labels = np.asarray(batch.column("split"), dtype=object)
        unknown = sorted({str(v) for v in labels} - {"train", "val", "test"})
        if unknown:
            raise TableFormatError(
                f"The 'split' column holds {unknown}; expected only train, val and test."
            )
        return labels
    if split == "spatial-block":
        return spatial_block_split(
            batch.column("lat"),
            batch.column("lon"),
            block_deg=block_deg,
            val_fraction=val_fraction,
            test_fraction=test_fraction,
            seed=seed,
        )
    if split == "random":
        order = np.random.default_rng(seed).permutation(len(batch))
        labels = np.full(len(batch), "train", dtype=object)
        n_test = int(round(test_fraction * len(batch)))
        n_val = int(round(val_fraction * len(batch)))
        labels[order[:n_test]] = "test"
        labels[order[n_test : n_test + n_val]] = "val"
        return labels
    raise ValueError(f"Unknown split {split!r}; expected one of: {', '.join(SPLITS)}.")


def fingerprint(batch: EmbeddingBatch) -> str:
    """A short content hash of a table: ids, embeddings, present masks (same data, same hash)."""
    digest = hashlib.blake2b(digest_size=16)
    digest.update("\0".join(str(i) for i in batch.ids).encode())
    for name in batch.modalities:
        digest.update(name.encode())
        digest.update(np.ascontiguousarray(batch.embeddings[name]).tobytes())
        digest.update(np.ascontiguousarray(batch.present[name]).tobytes())
    return f"blake2b:{digest.hexdigest()}"
