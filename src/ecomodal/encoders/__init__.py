"""Modality encoders: raw observations (places, climate, photos, names, sounds) -> embeddings."""

from ecomodal.encoders.base import (
    Encoder,
    EncodeResult,
    EncoderInfo,
    InvalidInputError,
    RowError,
)
from ecomodal.encoders.registry import (
    list_encoders,
    load_encoder,
    register_encoders,
    unregister_encoder,
)
from ecomodal.encoders.runs import load_encoders, write_run_encoders
from ecomodal.encoders.taxabind import taxabind_config

__all__ = [
    "EncodeResult",
    "Encoder",
    "EncoderInfo",
    "InvalidInputError",
    "RowError",
    "list_encoders",
    "load_encoder",
    "load_encoders",
    "register_encoders",
    "taxabind_config",
    "unregister_encoder",
    "write_run_encoders",
]
