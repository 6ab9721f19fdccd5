"""``sat``: the CLIP ViT-B/16 vision tower with projection (``MVRL/ecosat``), via transformers.

Tiles are preprocessed as TaxaBind trained them: resize 256 x 256, centre-crop 224, ImageNet
statistics; the output is ``image_embeds``.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from ecomodal.encoders.base import PixelEncoder
from ecomodal.encoders.hf import load_projection_model
from ecomodal.encoders.taxabind import taxabind_preprocess


class _VisionWithProjection(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.model(pixel_values=pixels).image_embeds


class SatelliteEncoder(PixelEncoder):
    """Satellite tiles (paths, bytes or PIL images) -> [N, projection_dim]."""

    input_columns = ("sat",)


def load_satellite_encoder(
    folder: str | Path,
    *,
    encoder_id: str,
    licence: str = "unknown",
    device: str | None = None,
    precision: str = "fp32",
) -> SatelliteEncoder:
    """A sat encoder from a transformers ``CLIPVisionModelWithProjection`` folder."""
    from transformers import CLIPVisionModelWithProjection

    model, info = load_projection_model(
        CLIPVisionModelWithProjection, folder, encoder_id=encoder_id, modality="sat",
        licence=licence, description="CLIP vision tower with projection (transformers)",
    )  # fmt: skip
    preprocess = taxabind_preprocess("sat")
    return SatelliteEncoder(
        _VisionWithProjection(model), info, preprocess, device=device, precision=precision
    )
