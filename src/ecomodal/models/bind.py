"""The model of TaxaBind binding (reference §3): the encoder being bound, the binding side's
optional head and the learnable temperature, as plain ``nn.Module``s. Training is
:class:`ecomodal.training.tasks.BindTask`; the entry point :func:`ecomodal.training.bind.train_bind`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ecomodal.errors import InvalidArgumentError
from ecomodal.io.checkpoints import load_state_dict_strict, read_weights, save_checkpoint
from ecomodal.models.heads import ProjectionHead
from ecomodal.models.losses import LOGIT_SCALE_INIT
from ecomodal.models.sinr import SINRResidualMLP

HEADS = ("sinr", "linear", "mlp", "geoclip")


def check_head(head: str) -> str:
    """``head`` if it is one of :data:`HEADS`, else an error naming the choices."""
    if head not in HEADS:
        raise InvalidArgumentError(f"Unknown head {head!r}; expected one of: {', '.join(HEADS)}.")
    return head


class CoordinateInput(nn.Module):
    """Adapts a ``forward(lat, lon)`` location encoder to [N, 2] inputs."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, coords: torch.Tensor) -> torch.Tensor:
        return self.model(coords[:, 0], coords[:, 1])


class BoundEncoder(nn.Module):
    """The encoder being bound, the binding side's head (unlocked tuning only) and the learnable
    log temperature. ``save_pretrained`` writes the encoder in the format its loader reads."""

    def __init__(
        self,
        encoder: nn.Module,
        target_dim: int,
        *,
        head: str,
        unlocked: bool = False,
        save_config: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.encoder = encoder
        self.head = head
        self.save_config = dict(save_config or {})
        self.bind_head: ProjectionHead | None = None
        if unlocked:
            self.bind_head = ProjectionHead(target_dim, target_dim)
            nn.init.eye_(self.bind_head.projection.weight)
        self.logit_scale = nn.Parameter(torch.tensor(LOGIT_SCALE_INIT))

    def embed(self, features: torch.Tensor) -> torch.Tensor:
        """L2-normalised embeddings of the trained modality."""
        return F.normalize(self.encoder(features), dim=-1)

    def embed_bind(self, targets: torch.Tensor) -> torch.Tensor:
        """L2-normalised binding embeddings (through the head when unlocked)."""
        return F.normalize(targets if self.bind_head is None else self.bind_head(targets), dim=-1)

    def save_pretrained(self, folder: str | Path) -> Path:
        """``folder``: the trained encoder (``config.json`` + ``model.safetensors``) and, when
        unlocked, ``folder/bind_head`` (a linear projection in the same format)."""
        folder = Path(folder)
        config = {**self.save_config, "logit_scale": float(self.logit_scale.detach())}
        if self.head == "sinr":
            from ecomodal.encoders.environment import save_environment_encoder

            bands = config.pop("covariate_bands", None)
            save_environment_encoder(self.encoder, folder, covariate_bands=bands, extra=config)
        elif self.head == "geoclip":
            save_checkpoint(self.encoder.model, {"license": "MIT", **config}, folder)
        else:
            save_checkpoint(self.encoder, config, folder)
        if self.bind_head is not None:
            save_checkpoint(
                self.bind_head, {"out_dim": self.bind_head.out_dim}, folder / "bind_head"
            )
        return folder

    def load_encoder_weights(self, folder: str | Path) -> None:
        """Load the trained encoder (and binding head) back from a ``save_pretrained`` folder."""
        folder = Path(folder)
        target = self.encoder.model if self.head == "geoclip" else self.encoder
        parts = [(target, folder)]
        if self.bind_head is not None:
            parts.append((self.bind_head, folder / "bind_head"))
        for module, where in parts:
            weights = where / "model.safetensors"
            load_state_dict_strict(
                module, read_weights(weights), source=str(weights), config_summary=self.head
            )


def build_encoder(
    head: str, in_dim: int, out_dim: int, *, hidden: int = 0, seed: int = 0
) -> nn.Module:
    """A fresh trainable encoder: ``sinr`` (SINR residual MLP over covariates), ``linear`` or
    ``mlp`` (projection heads on cached features; the linear one starts as the offline encoders'
    seeded orthogonal projection) or ``geoclip`` (the packaged pretrained GeoCLIP)."""
    check_head(head)
    if head == "sinr":
        return SINRResidualMLP(num_inputs=in_dim, num_filts=out_dim)
    if head == "linear":
        from ecomodal.encoders.offline import orthogonal_projection

        module = ProjectionHead(in_dim, out_dim)
        module.projection.weight.data.copy_(orthogonal_projection(in_dim, out_dim, seed))
        return module
    if head == "mlp":
        return ProjectionHead(in_dim, out_dim, hidden=hidden or max(out_dim, in_dim))
    from ecomodal.encoders.location import geoclip_package_weights, load_geoclip_module

    return CoordinateInput(load_geoclip_module(geoclip_package_weights()))
