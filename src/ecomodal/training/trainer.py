"""``TrainerOptions``: where and how a training run runs, one set for every training entry point
(``train_prom3e``, ``train_bind``, ``cluster_sweep``, ``fit_resumably``) and command."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from ecomodal.errors import InvalidArgumentError
from ecomodal.options import check_range
from ecomodal.precision import lightning_precision, normalise_precision

#: The accelerators a training run may ask for (Lightning's names).
ACCELERATORS = ("cpu", "gpu", "cuda", "mps", "tpu", "auto")

_COUNT = {"minimum": 1, "integer": True}
_FRACTION = {"minimum": 0, "maximum": 1, "exclusive_minimum": True, "exclusive_maximum": True}
#: The allowed range of every numeric training option, by its keyword name (the command line
#: flag is the same name with dashes): one table for the Python API and the commands.
TRAINING_RANGES: dict[str, dict[str, Any]] = {
    "epochs": _COUNT,
    "batch_size": _COUNT,
    "accumulate": _COUNT,
    "t0": _COUNT,
    "num_nodes": _COUNT,
    "num_negatives": _COUNT,
    "niter": _COUNT,
    "shots": _COUNT,
    "repeats": _COUNT,
    "depth": _COUNT,
    "heads": _COUNT,
    "embed_dim": _COUNT,
    "mlp_dim": _COUNT,
    "input_dim": _COUNT,
    "hidden": {"minimum": 0, "integer": True},
    "num_workers": {"minimum": 0, "integer": True},
    "seed": {"minimum": 0, "maximum": 2**32 - 1, "integer": True},
    "lr": {"minimum": 0, "exclusive_minimum": True},
    "weight_decay": {"minimum": 0},
    "lambda_kl": {"minimum": 0},
    "val_fraction": _FRACTION,
    "dropout": {"minimum": 0, "maximum": 1, "exclusive_maximum": True},
    "margin": {"minimum": 0},
    "scale": {"minimum": 0, "exclusive_minimum": True},
}


def check_training_numbers(*, flags: bool = False, **values: Any) -> None:
    """Check each given option (None: not given, skipped) against :data:`TRAINING_RANGES`; an
    :class:`InvalidArgumentError` names it as the keyword (``batch_size``) or, with ``flags``,
    as the command line flag (``--batch-size``), with what it expects and what it got."""
    for name, value in values.items():
        if value is not None:
            label = "--" + name.replace("_", "-") if flags else name
            check_range(value, label, **TRAINING_RANGES[name])


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
        if self.accelerator not in ACCELERATORS:
            raise InvalidArgumentError(
                f"Unknown accelerator {self.accelerator!r}; expected one of: "
                f"{', '.join(ACCELERATORS)}."
            )
        object.__setattr__(self, "devices", check_devices(self.devices))
        check_training_numbers(num_nodes=self.num_nodes)
        if not isinstance(self.strategy, str) or not self.strategy:
            raise InvalidArgumentError(
                f"strategy must be a Lightning strategy name; got {self.strategy!r}."
            )

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


def check_devices(devices: Any) -> int | str | list[int]:
    """``devices`` as Lightning takes it: a count >= 1, -1 (all), ``"auto"``, or device indices
    (``"0,1"`` or a list); anything else is an :class:`InvalidArgumentError`."""
    if isinstance(devices, str):
        text = devices.strip()
        if text == "auto":
            return text
        if text.lstrip("-").isdigit():
            devices = int(text)
        else:
            parts = [part.strip() for part in text.split(",")]
            if parts and all(part.isdigit() for part in parts if part) and any(parts):
                return text
    elif (
        isinstance(devices, (list, tuple))
        and devices
        and all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in devices)
    ):
        return list(devices)
    if (
        isinstance(devices, int)
        and not isinstance(devices, bool)
        and (devices >= 1 or devices == -1)
    ):
        return devices
    raise InvalidArgumentError(
        "devices must be a count >= 1, -1 (all), 'auto' or device indices such as '0,1'; "
        f"got {devices!r}."
    )


def check_accelerator_available(options: TrainerOptions) -> None:
    """An :class:`InvalidArgumentError` when ``options.accelerator`` names hardware this machine
    does not have (``gpu``/``cuda`` without a GPU ...), before any work starts."""
    from lightning.pytorch.accelerators import CUDAAccelerator, MPSAccelerator, XLAAccelerator

    available = {
        "cuda": CUDAAccelerator.is_available,
        "gpu": lambda: CUDAAccelerator.is_available() or MPSAccelerator.is_available(),
        "mps": MPSAccelerator.is_available,
        "tpu": XLAAccelerator.is_available,
    }
    if options.accelerator in available and not available[options.accelerator]():
        raise InvalidArgumentError(
            f"accelerator {options.accelerator!r} is not available on this machine (no such "
            "device found); use accelerator 'cpu' or 'auto'."
        )


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
