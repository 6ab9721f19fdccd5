"""What ProM3E returns: :class:`Completion` (from :meth:`ProM3E.complete`) and
:class:`EncoderOutput` (from :meth:`ProM3E.encode`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ecomodal.errors import MissingUncertaintyModelError


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
    - ``prom3e_embeddings`` [B, M, D]: ProM3E's own completion, before mixing with neighbours
      (only when neighbours were used; otherwise ``embeddings`` is ProM3E's own).
    - ``expected_error`` [B, M]: the expected ``1 - cosine(completion, truth)`` of each completed
      modality (NaN where visible), from a calibrated model's uncertainty model; and
      :meth:`interval`, the range of that cosine holding with a given probability.
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
    prom3e_embeddings: Any = None
    expected_error_values: Any = field(default=None, repr=False)
    error_model: Any = field(default=None, repr=False)

    @property
    def expected_error(self) -> Any:
        """[B, M] expected ``1 - cosine(completion, truth)``; NaN for visible modalities."""
        if self.expected_error_values is None:
            raise MissingUncertaintyModelError(
                "This model has no uncertainty model, so the completion has no expected_error. "
                "Fit one on rows the model did not train on: `ecomodal calibrate --model DIR "
                "--data TABLE` (Python: ecomodal.calibrate(DIR, TABLE)); it writes "
                "neighbours.safetensors, completion.json and uncertainty.safetensors beside the "
                "weights, and load_model picks them up. (Completing with neighbours=False also "
                "turns it off.)"
            )
        return self.expected_error_values

    def interval(self, coverage: float = 0.9) -> tuple[Any, Any]:
        """Per row and completed modality, the range ``(low, high)`` of cosine(completion, truth)
        that holds with probability ``coverage`` (split-conformal, from the uncertainty model's
        calibration rows); NaN for visible modalities. Arrays [B, M] each."""
        expected = self.expected_error
        values = expected.numpy() if isinstance(expected, torch.Tensor) else np.asarray(expected)
        visible = self.visible.numpy() if isinstance(self.visible, torch.Tensor) else self.visible
        low, high = self.error_model.interval(values, np.asarray(visible), coverage)
        if isinstance(expected, torch.Tensor):
            return torch.as_tensor(low), torch.as_tensor(high)
        return low, high

    def to_numpy(self) -> Completion:
        """The same completion with every tensor as a numpy array (in place; returns self)."""
        for name in (
            "embeddings",
            "mu",
            "logvar",
            "sigma_l1",
            "visible",
            "hidden",
            "hidden_mask",
            "prom3e_embeddings",
            "expected_error_values",
        ):
            value = getattr(self, name)
            if isinstance(value, torch.Tensor):
                setattr(self, name, value.numpy())
        return self


@dataclass
class EncoderOutput:
    """Encoder result for a batch (torch tensors)."""

    mu: torch.Tensor
    logvar: torch.Tensor
    hidden: torch.Tensor | None = None
    hidden_mask: torch.Tensor | None = None
    hidden_slots: list[int] | None = None
