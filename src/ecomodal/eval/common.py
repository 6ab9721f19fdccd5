"""Shared plumbing of the evaluation tasks: loading tables, models, splits and fingerprints."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from ecomodal.data.splits import SPLITS, make_split, spatial_block_split
from ecomodal.errors import TableFormatError, UnknownModalityError
from ecomodal.eval.completion import _normalise as normalise
from ecomodal.io.tables import EmbeddingBatch, EmbeddingTable, read_embeddings
from ecomodal.models.prom3e import ProM3E

TableLike = str | os.PathLike[str] | EmbeddingTable | EmbeddingBatch

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
        raise ValueError(f"{task} needs a ProM3E model (model=PATH or a ProM3E instance).")
    return model


def fingerprint(batch: EmbeddingBatch) -> str:
    """A short content hash of a table: ids, embeddings, present masks (same data, same hash)."""
    digest = hashlib.blake2b(digest_size=16)
    digest.update("\0".join(str(i) for i in batch.ids).encode())
    for name in batch.modalities:
        digest.update(name.encode())
        digest.update(np.ascontiguousarray(batch.embeddings[name]).tobytes())
        digest.update(np.ascontiguousarray(batch.present[name]).tobytes())
    return f"blake2b:{digest.hexdigest()}"
