"""What ProM3E returns: :class:`Completion` (from :meth:`ProM3E.complete`) and
:class:`EncoderOutput` (from :meth:`ProM3E.encode`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch


@dataclass
class Completion:
    """What :meth:`ProM3E.complete` returns. Arrays are numpy if the input was numpy, else torch.

    - ``embeddings`` [B, M, D]: every modality, completed and L2-normalised.
    - ``mu`` [B, E] (L2-normalised), ``logvar`` [B, E], ``sigma_l1`` [B] = sum(exp(logvar / 2)).
    - ``hidden`` [B, T, E]: the token sequence after the encoder (cls_mu, cls_logvar, registers,
      then the visible modalities in canonical order), only with ``return_hidden=True``. Where the
      rows of a batch have different visible sets, the visible slots are the union of those sets
      and ``hidden_mask`` [B, T] marks which tokens a row really has (the others are zero).
    - ``visible`` [B, M]: the visible mask that was used; ``modalities``: the names of axis 1.
    """

    embeddings: Any
    mu: Any
    logvar: Any
    sigma_l1: Any
    visible: Any
    modalities: tuple[str, ...]
    hidden: Any = None
    hidden_mask: Any = None
    hidden_modalities: tuple[str, ...] = field(default=())


@dataclass
class EncoderOutput:
    """Encoder result for a batch (torch tensors)."""

    mu: torch.Tensor
    logvar: torch.Tensor
    hidden: torch.Tensor | None = None
    hidden_mask: torch.Tensor | None = None
    hidden_slots: list[int] | None = None
