"""The ProM3E configuration: the published hyper-parameters, checked field by field."""

from __future__ import annotations

import dataclasses
import numbers
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from ecomodal.errors import CheckpointError, InvalidArgumentError
from ecomodal.modalities import MODALITIES

#: Whole-number fields of :class:`ProM3EConfig` and their least value.
_COUNT_FIELDS = {
    "input_dim": 1,
    "embed_dim": 1,
    "num_modalities": 1,
    "depth": 1,
    "heads": 1,
    "mlp_dim": 1,
    "num_register_tokens": 0,
    "num_cls_tokens": 0,
}

#: The latent noise of :meth:`ProM3E.sample_latent`: one scalar per row for every latent dimension
#: (published) or one independent draw per dimension.
NOISE_KINDS = ("per-row", "per-dimension")


def check_noise(noise: Any, name: str = "noise") -> str:
    """``noise`` if it is one of :data:`NOISE_KINDS`, else an :class:`InvalidArgumentError` naming
    ``name`` (a keyword or a command line flag) and the choices."""
    if noise not in NOISE_KINDS:
        raise InvalidArgumentError(
            f"Unknown {name} {noise!r}; expected one of: {', '.join(NOISE_KINDS)}."
        )
    return noise


@dataclass
class ProM3EConfig:
    """Constructor arguments of :class:`ProM3E`; stored as ``config.json`` beside the weights.

    The defaults are the published model (27.33 M parameters). ``noise`` (not in published
    configs, which load as ``"per-row"``) is the kind of latent noise, see :data:`NOISE_KINDS`.
    """

    input_dim: int = 512
    embed_dim: int = 1024
    num_modalities: int = 6
    depth: int = 1
    heads: int = 8
    mlp_dim: int = 2048
    num_register_tokens: int = 4
    num_cls_tokens: int = 2
    masked_only: bool = False
    dropout: float = 0.1
    lambda_kl: float = 1e-3
    modalities: tuple[str, ...] = MODALITIES
    noise: str = "per-row"

    def __post_init__(self) -> None:
        self._check_types()
        self.modalities = tuple(self.modalities)
        if len(self.modalities) != self.num_modalities:
            if self.num_modalities == len(MODALITIES) or self.modalities != MODALITIES:
                raise CheckpointError(
                    f"ProM3E config: num_modalities={self.num_modalities} but modalities has "
                    f"{len(self.modalities)} names {list(self.modalities)}."
                )
            self.modalities = tuple(f"m{i}" for i in range(self.num_modalities))
        if len(set(self.modalities)) != len(self.modalities):
            raise CheckpointError(f"ProM3E config: duplicate modality names {self.modalities}.")
        if self.num_cls_tokens != 2:
            raise CheckpointError(
                f"ProM3E config: num_cls_tokens must be 2 (mu and logvar); got {self.num_cls_tokens}."
            )
        if self.embed_dim % self.heads:
            raise CheckpointError(
                f"ProM3E config: embed_dim={self.embed_dim} is not divisible by heads={self.heads}."
            )

    def _check_types(self) -> None:
        """Each field of the kind and range it needs; the message names the key."""

        def fail(name: str, expected: str) -> None:
            raise CheckpointError(
                f"ProM3E config: {name!r} must be {expected}; got {getattr(self, name)!r}."
            )

        for name, least in _COUNT_FIELDS.items():
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < least:
                fail(name, f"a whole number >= {least}")
        for name, top, bounds in (("dropout", 1.0, "in [0, 1)"), ("lambda_kl", np.inf, ">= 0")):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Real):
                fail(name, f"a number {bounds}")
            if not 0 <= value < top:
                fail(name, f"a finite number {bounds}")
        if not isinstance(self.masked_only, bool):
            fail("masked_only", "true or false")
        if self.noise not in NOISE_KINDS:
            fail("noise", f"one of {', '.join(NOISE_KINDS)}")
        names = self.modalities
        if (
            isinstance(names, (str, bytes))
            or not isinstance(names, (list, tuple))
            or not all(isinstance(n, str) and n for n in names)
        ):
            fail("modalities", "a list of modality names")

    @property
    def num_special_tokens(self) -> int:
        """cls tokens + register tokens: the tokens every row starts with."""
        return self.num_cls_tokens + self.num_register_tokens

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["modalities"] = list(self.modalities)
        if self.noise == "per-row":  # the published config.json has no such key
            del out["noise"]
        return out

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> ProM3EConfig:
        """Build from a ``config.json`` dict; keys that are not constructor arguments are ignored."""
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in known})
