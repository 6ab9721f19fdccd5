"""Numeric precision, one vocabulary everywhere: ``"fp32"``, or ``"bf16"`` (bfloat16 matrix
products under autocast, about 2.3x the float32 rate on these CPUs, for every encoder, ProM3E
inference and training). Training maps it to Lightning's names with :func:`lightning_precision`."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

from ecomodal.errors import InvalidArgumentError

PRECISIONS = ("fp32", "bf16")
#: Lightning's names of the same two precisions, still accepted (with a DeprecationWarning).
LIGHTNING_PRECISIONS = {"fp32": "32-true", "bf16": "bf16-mixed"}


def check_precision(precision: str) -> str:
    """``precision`` if it is one of :data:`PRECISIONS`, else an error naming the choices."""
    if precision not in PRECISIONS:
        raise InvalidArgumentError(
            f"Unknown precision {precision!r}; expected one of: {', '.join(PRECISIONS)}."
        )
    return precision


@contextlib.contextmanager
def precision_context(precision: str, device: torch.device) -> Iterator[None]:
    """Inference mode plus, for ``bf16``, bfloat16 autocast on ``device``."""
    check_precision(precision)
    with torch.inference_mode():
        if precision == "bf16":
            with torch.autocast(device_type=device.type, dtype=torch.bfloat16):
                yield
        else:
            yield


def normalise_precision(precision: str) -> str:
    """``"fp32"``/``"bf16"``; Lightning's ``"32-true"``/``"bf16-mixed"`` map to them with a
    DeprecationWarning (they were the training commands' names)."""
    import warnings

    for name, lightning in LIGHTNING_PRECISIONS.items():
        if precision == lightning:
            warnings.warn(
                f"precision {lightning!r} is deprecated; use {name!r}.",
                DeprecationWarning,
                stacklevel=3,
            )
            return name
    return check_precision(precision)


def lightning_precision(precision: str) -> str:
    """Lightning's ``Trainer(precision=...)`` for an ecomodal precision name (or a deprecated
    Lightning name)."""
    return LIGHTNING_PRECISIONS[normalise_precision(precision)]
