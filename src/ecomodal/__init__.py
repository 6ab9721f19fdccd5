"""ecomodal: one embedding space for photos, names, places, satellite views, climate and sounds."""

from ecomodal._version import __version__ as __version__
from ecomodal.data.multinat import import_multinat
from ecomodal.embed import embed_records, merge_embeddings
from ecomodal.encoders import (
    Encoder,
    EncoderInfo,
    list_encoders,
    load_encoder,
    load_encoders,
    register_encoders,
)
from ecomodal.errors import (
    CheckpointError,
    EcomodalError,
    InvalidEmbeddingsError,
    ModelNotFoundError,
    RunFolderError,
    TableFormatError,
    UnknownModalityError,
)
from ecomodal.inference import complete_table
from ecomodal.io.batch import EmbeddingBatch
from ecomodal.io.reader import EmbeddingTable, read_embeddings
from ecomodal.io.records import read_records
from ecomodal.io.writer import EmbeddingTableWriter, write_embeddings
from ecomodal.modalities import EMBED_DIM, MODALITIES
from ecomodal.models import Completion, ProM3E, ProM3EConfig, load_model
from ecomodal.training.calibrate import calibrate

__all__ = [
    "EMBED_DIM",
    "MODALITIES",
    "CheckpointError",
    "Completion",
    "EcomodalError",
    "Encoder",
    "EncoderInfo",
    "EmbeddingBatch",
    "EmbeddingTable",
    "EmbeddingTableWriter",
    "InvalidEmbeddingsError",
    "ModelNotFoundError",
    "ProM3E",
    "ProM3EConfig",
    "RunFolderError",
    "TableFormatError",
    "UnknownModalityError",
    "calibrate",
    "complete_table",
    "embed_records",
    "import_multinat",
    "list_encoders",
    "load_encoder",
    "load_encoders",
    "load_model",
    "register_encoders",
    "merge_embeddings",
    "read_embeddings",
    "read_records",
    "write_embeddings",
]
