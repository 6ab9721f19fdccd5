"""Plain ``nn.Module`` models and their losses; no training loop or file formats beyond checkpoints."""

from ecomodal.models.config import ProM3EConfig
from ecomodal.models.factory import load_model
from ecomodal.models.outputs import Completion
from ecomodal.models.prom3e import ProM3E

__all__ = ["Completion", "ProM3E", "ProM3EConfig", "load_model"]
