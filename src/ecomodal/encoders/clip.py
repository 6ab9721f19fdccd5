"""``image`` and ``text``: BioCLIP / TaxaBind towers through open_clip.

The checkpoint is an open_clip folder or hub repo (``open_clip_config.json`` + weights), e.g.
``hf-hub:MVRL/taxabind-vit-b-16``. Photos are preprocessed as TaxaBind trained them (resize
256 x 256, centre-crop 224, ImageNet statistics) unless the entry says otherwise; text is the
taxonomic string, tokenised by open_clip (context 77).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ecomodal.encoders.base import Encoder, EncoderInfo, PixelEncoder, StringEncoder
from ecomodal.encoders.taxabind import taxabind_preprocess
from ecomodal.errors import CheckpointError, InvalidArgumentError, MissingDependencyError
from ecomodal.io.media import CLIP_MEAN, CLIP_STD, ImagePreprocess

OPEN_CLIP_CONFIG = "open_clip_config.json"
OPEN_CLIP_WEIGHTS = (
    "open_clip_model.safetensors",
    "open_clip_pytorch_model.safetensors",
    "open_clip_pytorch_model.bin",
    "open_clip_pytorch_model.pth",
    "model.safetensors",
    "pytorch_model.bin",
)
_CACHE: dict[str, Any] = {}
_LOCK = threading.Lock()


def _require_open_clip():
    try:
        import open_clip
    except ImportError as err:
        raise MissingDependencyError(
            "The image and text encoders need open_clip; install them with "
            "`pip install 'ecomodal[vision]'`."
        ) from err
    return open_clip


def load_open_clip(folder: str | Path) -> tuple[nn.Module, Any]:
    """(model, tokenizer) from an open_clip checkpoint folder, shared between the image and text
    encoders of one process."""
    folder = Path(folder).resolve()
    key = str(folder)
    with _LOCK:
        if key in _CACHE:
            return _CACHE[key]
        open_clip = _require_open_clip()
        config = folder / OPEN_CLIP_CONFIG
        if not config.is_file():
            raise CheckpointError(
                f"{folder} has no {OPEN_CLIP_CONFIG}; it is not an open_clip model."
            )
        weights = [folder / name for name in OPEN_CLIP_WEIGHTS if (folder / name).is_file()]
        if not weights:
            raise CheckpointError(
                f"{folder} has no open_clip weights (expected one of {', '.join(OPEN_CLIP_WEIGHTS)})."
            )
        try:
            model = open_clip.create_model(f"local-dir:{folder}", device="cpu")
        except (RuntimeError, ValueError, KeyError) as err:
            raise CheckpointError(
                f"{folder}: the open_clip weights do not fit the config: {err}"
            ) from err
        tokenizer = open_clip.get_tokenizer(f"local-dir:{folder}")
        _CACHE[key] = (model.eval(), tokenizer)
        return _CACHE[key]


def read_open_clip_config(folder: str | Path) -> dict[str, Any]:
    try:
        return json.loads((Path(folder) / OPEN_CLIP_CONFIG).read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise CheckpointError(
            f"{Path(folder) / OPEN_CLIP_CONFIG} is not readable JSON: {err}"
        ) from err


class _ImageTower(nn.Module):
    def __init__(self, clip: nn.Module) -> None:
        super().__init__()
        self.clip = clip

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.clip.encode_image(pixels)


class _TextTower(nn.Module):
    """The CLIP text tower. Its attention is causal and it pools at the end-of-text token, so
    the padding after the longest text of a batch cannot change the result: it is cut off
    (taxonomic strings use about 20 of the 77 positions), with outputs equal to the full pass."""

    def __init__(self, clip: nn.Module) -> None:
        super().__init__()
        self.clip = clip
        self.can_truncate = (
            getattr(clip, "text_pool_type", None) == "argmax"
            and getattr(clip, "attn_mask", None) is not None
            and hasattr(clip, "positional_embedding")
            and hasattr(clip, "token_embedding")
        )

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        clip = self.clip
        if not self.can_truncate:
            return clip.encode_text(tokens)
        eot = tokens.argmax(dim=-1)
        length = int(eot.max()) + 1
        dtype = clip.transformer.get_cast_dtype()
        x = clip.token_embedding(tokens[:, :length]).to(dtype)
        x = x + clip.positional_embedding[:length].to(dtype)
        x = clip.transformer(x, attn_mask=clip.attn_mask[:length, :length])
        x = clip.ln_final(x)
        x = x[torch.arange(x.shape[0], device=x.device), eot]
        if clip.text_projection is None:
            return x
        if isinstance(clip.text_projection, nn.Linear):
            return clip.text_projection(x)
        return x @ clip.text_projection


class ImageEncoder(PixelEncoder):
    """Photos (paths, bytes or PIL images) -> [N, 512] with the CLIP image tower."""

    input_columns = ("image",)


class TextEncoder(StringEncoder):
    """Taxonomic strings -> [N, 512] with the CLIP text tower (open_clip tokenizer)."""

    def tokenize(self, texts: list[str]) -> torch.Tensor:
        return self.tokenizer(texts)


def image_preprocess(options: Mapping[str, Any]) -> ImagePreprocess:
    """Preprocessing named by a registry entry: ``"taxabind"`` (default) or ``"clip"``."""

    style = options.get("preprocess", "taxabind")
    if style == "clip":
        return ImagePreprocess(
            resize=224, crop=224, mean=CLIP_MEAN, std=CLIP_STD, interpolation="bicubic"
        )
    if style != "taxabind":
        raise InvalidArgumentError(
            f"Unknown image preprocessing {style!r}; expected 'taxabind' or 'clip'."
        )
    return taxabind_preprocess("image")


def load_clip_encoder(
    modality: str,
    folder: str | Path,
    *,
    encoder_id: str,
    licence: str = "unknown",
    device: str | None = None,
    precision: str = "fp32",
    preprocess: str = "taxabind",
) -> Encoder:
    """The ``image`` or ``text`` encoder of an open_clip checkpoint folder."""
    clip, tokenizer = load_open_clip(folder)
    config = read_open_clip_config(folder)
    dim = int(config.get("model_cfg", config).get("embed_dim", 512))
    info = EncoderInfo(
        id=encoder_id,
        modality=modality,
        dim=dim,
        licence=licence,
        source=str(folder),
        description=f"open_clip {modality} tower",
    )
    if modality == "image":
        return ImageEncoder(
            _ImageTower(clip), info, image_preprocess({"preprocess": preprocess}),
            device=device, precision=precision,
        )  # fmt: skip
    return TextEncoder(_TextTower(clip), info, tokenizer, device=device, precision=precision)
