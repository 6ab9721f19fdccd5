"""Compute devices: one check of a ``device`` argument for every part of ecomodal."""

from __future__ import annotations

import torch

from ecomodal.errors import InvalidArgumentError


def resolve_device(device: str | torch.device) -> torch.device:
    """``device`` as a :class:`torch.device` this machine has; otherwise an
    :class:`~ecomodal.errors.InvalidArgumentError` saying what was asked and what there is."""
    expected = "expected a torch device such as cpu, cuda, cuda:N or mps"
    try:
        parsed = device if isinstance(device, torch.device) else torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise InvalidArgumentError(f"Unknown device {device!r}; {expected}.") from None
    if parsed.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if not count:
            raise InvalidArgumentError(
                f"Device {device!r} asked for, but this machine has no usable CUDA GPU; use cpu."
            )
        if parsed.index is not None and parsed.index >= count:
            raise InvalidArgumentError(
                f"Device {device!r} asked for, but this machine has {count} CUDA GPU(s): "
                f"cuda:0 to cuda:{count - 1}."
            )
    elif parsed.type == "mps":
        if not torch.backends.mps.is_available():
            raise InvalidArgumentError(f"Device {device!r} asked for, but MPS is not available.")
    elif parsed.type != "cpu":
        raise InvalidArgumentError(f"Unsupported device {device!r}; {expected}.")
    return parsed
