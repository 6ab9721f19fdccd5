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


class OutputPathError(EcomodalError, OSError):
    """An output path that cannot be written: a folder, under a file, or in a read-only folder."""

    def __str__(self) -> str:  # OSError would format (errno, strerror)
        return str(self.args[0]) if self.args else ""


class ModelNotFoundError(EcomodalError, FileNotFoundError):
    """A model spec that names no local folder and cannot be fetched from the hub."""


class TrainingError(EcomodalError, FloatingPointError):
    """Training cannot go on: a non-finite loss (named by its step) or unusable training data."""


class MapError(EcomodalError, ValueError):
    """Map inputs that do not fit together (query, encoders, model, grid embeddings)."""


class GridError(MapError):
    """A grid definition that cannot be built (bad bounding box or resolution)."""


class ResumeMismatchError(EcomodalError, ValueError):
    """Unfinished parts from a run with different records, modalities, encoders or shards."""


class RasterFormatError(EcomodalError, ValueError):
    """A raster file that cannot be read as a lat/lon band stack."""


class MediaError(EcomodalError, ValueError):
    """A photo or sound that cannot be read or decoded."""


class GridStoreError(EcomodalError, ValueError):
    """A cached grid store that does not match what was asked for, or that is unreadable."""


class InvalidInputError(EcomodalError, ValueError):
    """An input row an encoder cannot encode (the message names the row and the reason)."""


class InvalidArgumentError(EcomodalError, ValueError):
    """An argument or option whose value cannot be used (the message names it and says why)."""


class OptionFormatError(InvalidArgumentError):
    """A textual option (``KEY=VALUE`` pairs, number lists) that does not parse."""


class MissingColumnError(EcomodalError, ValueError):
    """A table or records file without a column the operation needs (the message names both)."""


class UnknownEncoderError(EcomodalError, ValueError):
    """An encoder spec that names no registered encoder, folder or hub id."""


class MissingDependencyError(EcomodalError, ImportError):
    """An optional dependency that is not installed (the message names the extra to install)."""


class UnknownBandError(MapError, KeyError):
    """A map band name that the map does not have."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class InputTypeError(EcomodalError, TypeError):
    """Inputs of the wrong kind for a call (the message says what it takes)."""


class MissingUncertaintyModelError(EcomodalError, AttributeError):
    """A completion's expected error was asked of a model without an uncertainty model."""


class RunFolderError(EcomodalError, ValueError):
    """A folder that is not a run folder ecomodal wrote, or whose ``encoders.json`` is unusable."""
