"""Numpy helpers on embedding vectors, shared by the I/O layer, data generators and evaluation."""

from __future__ import annotations

import numpy as np


def normalise(x: np.ndarray) -> np.ndarray:
    """Rows (the last axis) scaled to unit L2 norm; a zero row stays zero."""
    norm = np.linalg.norm(x, axis=-1, keepdims=True)
    return x / np.maximum(norm, 1e-12)
