"""Shared plumbing of the evaluation tasks: loading models, splits and fingerprints."""

from __future__ import annotations

import hashlib
import os
from typing import Any

import numpy as np

from ecomodal.data.splits import SPLITS, check_split, make_split, spatial_block_split
from ecomodal.errors import InvalidArgumentError, InvalidEmbeddingsError
from ecomodal.io.batch import EmbeddingBatch
from ecomodal.io.reader import TableLike, as_batch
from ecomodal.models.prom3e import ProM3E
from ecomodal.options import check_range
from ecomodal.vectors import normalise

__all__ = [
    "SPLITS",
    "check_counts",
    "check_split",
    "eval_table",
    "fingerprint",
    "make_split",
    "model_inputs",
    "normalise",
    "resolve_model",
    "spatial_block_split",
]


def eval_table(data: TableLike, task: str) -> EmbeddingBatch:
    """The rows of ``data`` (see :func:`~ecomodal.io.reader.as_batch`) for ``task``; a table
    without rows is an error (no task can score nothing)."""
    batch = as_batch(data)
    if len(batch) == 0:
        where = f" {data}" if isinstance(data, str | os.PathLike) else ""
        raise InvalidEmbeddingsError(
            f"{task}: the table{where} has no rows; expected at least one row to evaluate."
        )
    return batch


def check_counts(values: Any, name: str, *, minimum: int = 1) -> list[int]:
    """``values`` (a sequence of whole numbers, e.g. ``shots`` or ``ks``) as ints, each checked
    to be ``>= minimum``; an empty sequence is an error too."""
    values = list(values)
    if not values:
        raise InvalidArgumentError(f"{name} must give at least one value; got none.")
    return [int(check_range(v, name, minimum=minimum, integer=True)) for v in values]


def check_optional_count(value: Any, name: str, *, minimum: int = 1) -> int | None:
    """``None``, or a whole number ``>= minimum``."""
    return None if value is None else int(check_range(value, name, minimum=minimum, integer=True))


def check_no_rows(rows: np.ndarray | int, task: str, what: str) -> None:
    """An error naming ``task`` and ``what`` the rows needed when ``rows`` (a mask, or a count)
    selects none."""
    if not np.any(rows):
        raise InvalidEmbeddingsError(f"{task}: no {what}; expected at least one such row.")


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


def fingerprint(batch: EmbeddingBatch) -> str:
    """A short content hash of a table: ids, embeddings, present masks (same data, same hash)."""
    digest = hashlib.blake2b(digest_size=16)
    digest.update("\0".join(str(i) for i in batch.ids).encode())
    for name in batch.modalities:
        digest.update(name.encode())
        digest.update(np.ascontiguousarray(batch.embeddings[name]).tobytes())
        digest.update(np.ascontiguousarray(batch.present[name]).tobytes())
    return f"blake2b:{digest.hexdigest()}"
