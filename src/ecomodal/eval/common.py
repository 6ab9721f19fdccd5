"""Shared plumbing of the evaluation tasks: loading models, splits and fingerprints."""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np

from ecomodal.data.splits import SPLITS, make_split, spatial_block_split
from ecomodal.errors import InvalidArgumentError
from ecomodal.io.batch import EmbeddingBatch
from ecomodal.models.prom3e import ProM3E
from ecomodal.vectors import normalise

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
