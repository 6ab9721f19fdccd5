"""``sat``: the CLIP ViT-B/16 vision tower with projection (``MVRL/ecosat``), via transformers.

Tiles are preprocessed as TaxaBind trained them: resize 256 x 256, centre-crop 224, ImageNet
statistics; the output is ``image_embeds``.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from ecomodal.encoders.base import EncoderInfo, PixelEncoder
from ecomodal.encoders.hf import load_transformers_model


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

    from ecomodal.encoders.registry import taxabind_preprocess

    model = load_transformers_model(CLIPVisionModelWithProjection, folder)
    preprocess = taxabind_preprocess("sat")
    info = EncoderInfo(
        id=encoder_id,
        modality="sat",
        dim=int(model.config.projection_dim),
        licence=licence,
        source=str(folder),
        description="CLIP vision tower with projection (transformers)",
    )
    return SatelliteEncoder(
        _VisionWithProjection(model), info, preprocess, device=device, precision=precision
    )
