"""Numeric precision of inference: ``"fp32"``, or ``"bf16"`` (bfloat16 matrix products under
autocast, about 2.3x the float32 rate on these CPUs, for every encoder and ProM3E inference)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

PRECISIONS = ("fp32", "bf16")


def check_precision(precision: str) -> str:
    """``precision`` if it is one of :data:`PRECISIONS`, else a ValueError naming the choices."""
    if precision not in PRECISIONS:
        raise ValueError(
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
