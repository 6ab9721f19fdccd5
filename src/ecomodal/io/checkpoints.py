"""Reading and writing model checkpoints: ``config.json`` plus safe weight files.

Weights load from safetensors, or from PyTorch files with ``torch.load(weights_only=True)``; nothing
is ever unpickled. Every failure is a :class:`CheckpointError` naming the file and what is wrong.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ecomodal.errors import CheckpointError
from ecomodal.io.atomic import atomic_path

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
TORCH_WEIGHTS_NAMES = ("pytorch_model.bin", "model.pth", "model.pt")


def read_config(path: str | Path) -> dict[str, Any]:
    """A JSON object from ``path``; errors name the file."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"Checkpoint folder {path.parent} has no {path.name}.")
    try:
        values = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CheckpointError(f"{path} is not valid JSON: {err}") from err
    if not isinstance(values, dict):
        raise CheckpointError(f"{path} must hold a JSON object of constructor arguments.")
    return values


def read_weights(path: str | Path, *, map_location: str = "cpu") -> dict[str, torch.Tensor]:
    """Tensors from a safetensors file, or a PyTorch state dict loaded with ``weights_only=True``."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"Weights file {path} does not exist.")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path), device=map_location)
        except (SafetensorError, OSError, ValueError) as err:
            raise CheckpointError(f"{path} is not a readable safetensors file: {err}") from err
    try:
        loaded = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # torch raises many types for corrupt or unsafe files
        raise CheckpointError(
            f"{path} is not a readable PyTorch weights file (only plain state dicts are "
            f"accepted): {err}"
        ) from err
    if isinstance(loaded, Mapping) and "state_dict" in loaded:
        loaded = loaded["state_dict"]
    if not isinstance(loaded, Mapping) or not all(
        isinstance(v, torch.Tensor) for v in loaded.values()
    ):
        raise CheckpointError(f"{path} does not hold a state dict of tensors.")
    return dict(loaded)


def find_weights(folder: str | Path) -> Path:
    """The weights file of a checkpoint folder: ``model.safetensors``, else a PyTorch state dict."""
    folder = Path(folder)
    for name in (WEIGHTS_NAME, *TORCH_WEIGHTS_NAMES):
        if (folder / name).is_file():
            return folder / name
    raise CheckpointError(
        f"Checkpoint folder {folder} has no weights file; expected {WEIGHTS_NAME} "
        f"(or one of {', '.join(TORCH_WEIGHTS_NAMES)})."
    )


def strip_prefix(
    tensors: Mapping[str, torch.Tensor], expected: set[str]
) -> dict[str, torch.Tensor]:
    """Drop one common key prefix (``model.``, ``location_encoder.``, ...) when that makes the
    names match ``expected``; otherwise return the tensors unchanged."""
    if set(tensors) & expected or not tensors:
        return dict(tensors)
    first = next(iter(tensors))
    parts = first.split(".")
    for cut in range(1, len(parts)):
        prefix = ".".join(parts[:cut]) + "."
        if all(key.startswith(prefix) for key in tensors):
            renamed = {key[len(prefix) :]: value for key, value in tensors.items()}
            if set(renamed) & expected:
                return renamed
    return dict(tensors)


def check_state_dict(
    expected: Mapping[str, torch.Tensor],
    tensors: Mapping[str, torch.Tensor],
    *,
    source: str,
    target: str = "the config",
) -> None:
    """Raise :class:`CheckpointError` unless ``tensors`` (from ``source``) have exactly the names
    and shapes of ``expected`` (what ``target`` needs); the message names the mismatch."""
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    if missing or unexpected:
        raise CheckpointError(
            f"{source} does not match {target}: missing tensors {missing[:8]}"
            f"{' ...' if len(missing) > 8 else ''}, unexpected tensors {unexpected[:8]}"
            f"{' ...' if len(unexpected) > 8 else ''}."
        )
    for name, tensor in tensors.items():
        if tuple(tensor.shape) != tuple(expected[name].shape):
            raise CheckpointError(
                f"{source}: tensor {name!r} has shape {list(tensor.shape)} but "
                f"{target} needs {list(expected[name].shape)}."
            )


def check_finite(tensors: Mapping[str, torch.Tensor], *, source: str) -> None:
    """Raise :class:`CheckpointError` naming ``source`` and the first floating-point tensor that
    holds NaN or inf values (a corrupt file, or weights saved from a diverged run)."""
    for name, tensor in tensors.items():
        if not (tensor.is_floating_point() or tensor.is_complex()):
            continue
        finite = torch.isfinite(tensor)
        if not bool(finite.all()):
            bad = int((~finite).sum())
            raise CheckpointError(
                f"{source}: tensor {name!r} has {bad} NaN or inf value(s) of {tensor.numel()}; "
                "the checkpoint is corrupt or was saved from a diverged run."
            )


def load_state_dict_strict(
    module: nn.Module,
    tensors: Mapping[str, torch.Tensor],
    *,
    source: str,
    config_summary: str = "the config",
) -> None:
    """Load ``tensors`` into ``module`` strictly, with errors that name the mismatch."""
    check_state_dict(module.state_dict(), tensors, source=source, target=config_summary)
    module.load_state_dict(dict(tensors), strict=True)


def save_checkpoint(module: nn.Module, config: Mapping[str, Any], directory: str | Path) -> Path:
    """Write ``config.json`` and ``model.safetensors`` into ``directory`` atomically."""
    from safetensors.torch import save_file

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}
    with atomic_path(directory / WEIGHTS_NAME) as tmp:
        save_file(tensors, str(tmp), metadata={"format": "pt"})
    with atomic_path(directory / CONFIG_NAME) as tmp:
        tmp.write_text(json.dumps(dict(config), indent=2) + "\n")
    return directory
