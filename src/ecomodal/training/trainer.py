"""``TrainerOptions``: where and how a training run runs, one set for every training entry point
(``train_prom3e``, ``train_bind``, ``cluster_sweep``, ``fit_resumably``) and command."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from ecomodal.precision import lightning_precision, normalise_precision


@dataclass(frozen=True)
class TrainerOptions:
    """Devices, precision and run control of a training run.

    Attributes:
        accelerator: ``cpu``, ``gpu``, ``auto`` ... (Lightning's names).
        devices: devices per node, a count or ``"auto"``.
        num_nodes: number of nodes (Lightning detects SLURM).
        strategy: Lightning strategy, ``auto``, ``ddp`` ...
        precision: ``"fp32"`` or ``"bf16"`` (bfloat16 autocast); Lightning's ``"32-true"`` /
            ``"bf16-mixed"`` are still accepted, with a DeprecationWarning.
        resume: continue from the run folder's last checkpoint (or finished parts).
        show_progress: show a progress bar.
    """

    accelerator: str = "cpu"
    devices: int | str = 1
    num_nodes: int = 1
    strategy: str = "auto"
    precision: str = "fp32"
    resume: bool = True
    show_progress: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "precision", normalise_precision(self.precision))

    def lightning_kwargs(self) -> dict[str, Any]:
        """The ``lightning.Trainer`` arguments: accelerator, devices, num_nodes, strategy and
        precision (in Lightning's names)."""
        return {
            "accelerator": self.accelerator,
            "devices": self.devices,
            "num_nodes": self.num_nodes,
            "strategy": self.strategy,
            "precision": lightning_precision(self.precision),
        }


def resolve_trainer(
    trainer: TrainerOptions | None, default: TrainerOptions | None = None, **given: Any
) -> TrainerOptions:
    """``trainer`` (else ``default``, else ``TrainerOptions()``) with the keyword arguments that
    were given (those not None): an entry point's old keywords override its ``trainer=``."""
    base = trainer or default or TrainerOptions()
    changes = {name: value for name, value in given.items() if value is not None}
    return dataclasses.replace(base, **changes) if changes else base


def trainer_from_keywords(
    trainer: TrainerOptions | None,
    keywords: dict[str, Any],
    *,
    function: str,
    default: TrainerOptions | None = None,
) -> TrainerOptions:
    """The options of an entry point called with ``trainer=`` and/or the keywords it took before
    :class:`TrainerOptions` (``accelerator=``, ``precision=`` ...: they still work and win)."""
    names = {field.name for field in dataclasses.fields(TrainerOptions)}
    unknown = sorted(set(keywords) - names)
    if unknown:
        raise TypeError(f"{function}() got an unexpected keyword argument {unknown[0]!r}")
    return resolve_trainer(trainer, default, **keywords)
