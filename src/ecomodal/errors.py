"""Exceptions raised by ecomodal. Each subclasses the builtin a caller would naturally catch."""

from __future__ import annotations


class EcomodalError(Exception):
    """Base class of every ecomodal error."""


class UnknownModalityError(EcomodalError, ValueError):
    """A modality name that is not known to the table or model."""


class InvalidEmbeddingsError(EcomodalError, ValueError):
    """Embeddings with the wrong shape, NaN/inf values, duplicate ids or rows with no modality."""


class TableFormatError(EcomodalError, ValueError):
    """A file that is not a readable ecomodal embedding table (corrupt, wrong schema)."""


class CheckpointError(EcomodalError, ValueError):
    """A checkpoint that is missing, corrupt, or whose config does not match its tensors."""


class ModelNotFoundError(EcomodalError, FileNotFoundError):
    """A model spec that names no local folder and cannot be fetched from the hub."""


class TrainingError(EcomodalError, FloatingPointError):
    """Training cannot go on: a non-finite loss (named by its step) or unusable training data."""
