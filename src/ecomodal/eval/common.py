"""Shared plumbing of the evaluation tasks: loading tables, models, splits and fingerprints."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from ecomodal.errors import (
    InvalidArgumentError,
    InvalidEmbeddingsError,
    TableFormatError,
    UnknownModalityError,
)
from ecomodal.eval.completion import _normalise as normalise
from ecomodal.io.tables import EmbeddingBatch, EmbeddingTable, read_embeddings
from ecomodal.models.prom3e import ProM3E

TableLike = str | os.PathLike[str] | EmbeddingTable | EmbeddingBatch
SPLITS = ("published", "spatial-block", "random")

__all__ = [
    "SPLITS",
    "TableLike",
    "as_batch",
    "column",
    "fingerprint",
    "fuse",
    "make_split",
    "model_inputs",
    "normalise",
    "resolve_model",
    "spatial_block_split",
]


def as_batch(table: TableLike) -> EmbeddingBatch:
    """All rows of a table path, an :class:`EmbeddingTable` or an :class:`EmbeddingBatch`."""
    if isinstance(table, EmbeddingBatch):
        return table
    if isinstance(table, EmbeddingTable):
        return table.load()
    return read_embeddings(table).load()


def column(batch: EmbeddingBatch, name: str) -> np.ndarray:
    """The extra column ``name`` as a numpy array; a clear error names the columns there are."""
    names = [] if batch.columns is None else batch.columns.column_names
    if name not in names:
        raise TableFormatError(
            f"The table has no column {name!r}; extra columns: {', '.join(names) or 'none'}."
        )
    return batch.columns.column(name).to_numpy(zero_copy_only=False)


def modality(batch: EmbeddingBatch, name: str) -> np.ndarray:
    """The embeddings of one modality [N, D]; a clear error names the modalities there are."""
    if name not in batch.embeddings:
        raise UnknownModalityError(
            f"The table has no embedding column {name!r}; available: "
            f"{', '.join(batch.modalities) or 'none'}."
        )
    return batch.embeddings[name]


def fuse(batch: EmbeddingBatch, modalities: Sequence[str]) -> np.ndarray:
    """TaxaBind's fusion: the normalised sum of the normalised embeddings of ``modalities``."""
    total = sum(normalise(modality(batch, m)) for m in modalities)
    return normalise(np.asarray(total, dtype=np.float32))


def has_all(batch: EmbeddingBatch, modalities: Sequence[str]) -> np.ndarray:
    """Rows [N] that have every one of ``modalities``."""
    mask = np.ones(len(batch), dtype=bool)
    for m in modalities:
        modality(batch, m)
        mask &= batch.present[m]
    return mask


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
        raise InvalidArgumentError(
            f"{task} needs a ProM3E model (model=PATH or a ProM3E instance)."
        )
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
        labels = np.asarray(column(batch, "split"), dtype=object)
        unknown = sorted({str(v) for v in labels} - {"train", "val", "test"})
        if unknown:
            raise TableFormatError(
                f"The 'split' column holds {unknown}; expected only train, val and test."
            )
        return labels
    if split == "spatial-block":
        return spatial_block_split(
            column(batch, "lat"),
            column(batch, "lon"),
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
