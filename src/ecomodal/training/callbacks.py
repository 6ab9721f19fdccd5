"""Callbacks and checkpoint I/O for ecomodal training runs."""

from __future__ import annotations

import csv
import dataclasses
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.fabric.utilities.data import AttributeDict
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.plugins.io import TorchCheckpointIO
from lightning.pytorch.utilities.exceptions import MisconfigurationException
from lightning.pytorch.utilities.parsing import AttributeDict as LightningAttributeDict

from ecomodal.deprecation import renamed_arguments
from ecomodal.errors import CheckpointError, InvalidArgumentError, TrainingError
from ecomodal.io.atomic import atomic_path
from ecomodal.training.trainer import (
    TrainerOptions,
    check_accelerator_available,
    check_training_numbers,
    resolve_trainer,
)

log = logging.getLogger(__name__)


#: Plain-data classes a Lightning checkpoint holds besides tensors, containers and numbers.
RESUME_STATE_CLASSES = (AttributeDict, LightningAttributeDict)


def load_resume_state(path: str | Path, map_location: Any = "cpu") -> dict[str, Any]:
    """Read a training checkpoint (``RUN/checkpoints/last.ckpt``) without running code from it:
    ``torch.load(weights_only=True)`` passed explicitly, which ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD``
    does not override. A file that needs more than tensors and plain data (a crafted pickle) or
    that is not a checkpoint raises :class:`CheckpointError` naming it."""
    try:
        with torch.serialization.safe_globals(list(RESUME_STATE_CLASSES)):
            state = torch.load(path, map_location=map_location, weights_only=True)
    except OSError:
        raise
    except Exception as err:
        reason = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise CheckpointError(
            f"{path}: not loaded as resume state, because it is not a plain-data training "
            f"checkpoint ({reason}); delete it to start the run again, or pass --no-resume "
            "(resume=False)."
        ) from None
    if not isinstance(state, dict) or "epoch" not in state or "state_dict" not in state:
        raise CheckpointError(
            f"{path}: not a training checkpoint (expected a dict with 'epoch' and 'state_dict'); "
            "delete it to start the run again, or pass --no-resume (resume=False)."
        )
    return state


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning checkpoints written to a temporary name and renamed, so a kill never leaves a
    truncated ``last.ckpt`` behind, and read by :func:`load_resume_state` (no pickle code runs,
    whatever the environment says). A state read ahead with :meth:`preload` is not read again."""

    def __init__(self) -> None:
        super().__init__()
        self._preloaded: dict[str, dict[str, Any]] = {}

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options=None) -> None:
        with atomic_path(path) as tmp:
            torch.save(checkpoint, tmp)

    def preload(self, path: str | Path) -> dict[str, Any]:
        """Read ``path`` now (to check it and see its epoch); Lightning's load then takes it."""
        state = load_resume_state(path)
        self._preloaded[str(path)] = state
        return state

    def load_checkpoint(self, path, map_location: Any = None, weights_only: Any = None):
        state = self._preloaded.pop(str(path), None)
        return state if state is not None else load_resume_state(path, map_location or "cpu")


class ResumeState(L.Callback):
    """Writes the full training state to ``path`` after every finished training epoch (the
    loggers flushed first, so the logs of every epoch a checkpoint counts are on disk); a killed
    run resumes at the next epoch. Written atomically by :class:`AtomicCheckpointIO`."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        for logger in trainer.loggers:
            logger.save()
        trainer.save_checkpoint(self.path, weights_only=False)  # the full state, said so


class PublishedFormatExport(L.Callback):
    """Writes the model in the published format (``config.json`` + ``model.safetensors``):
    ``RUN_DIR/best`` whenever the monitored validation loss improves, ``RUN_DIR/last`` every epoch.
    """

    def __init__(self, run_dir: str | Path, monitor: str = "val/loss"):
        self.run_dir = Path(run_dir)
        self.monitor = monitor
        self.best_score = math.inf
        self.best_epoch = -1

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        score = trainer.callback_metrics.get(self.monitor)
        if score is None or not math.isfinite(float(score)):
            return
        if float(score) < self.best_score:
            self.best_score = float(score)
            self.best_epoch = trainer.current_epoch
            if trainer.is_global_zero:
                pl_module.model.save_pretrained(self.run_dir / "best")

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.is_global_zero:
            pl_module.model.save_pretrained(self.run_dir / "last")

    def state_dict(self) -> dict[str, Any]:
        return {"best_score": self.best_score, "best_epoch": self.best_epoch}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.best_score = float(state_dict["best_score"])
        self.best_epoch = int(state_dict["best_epoch"])


@dataclass
class TrainResult:
    """Where a training run left its outputs, and its best validation loss."""

    run_dir: Path
    best_dir: Path
    last_dir: Path
    metrics_path: Path
    best_val_loss: float
    best_epoch: int
    epochs: int
    #: False in the other processes of a multi-process run (only rank 0 reports).
    is_global_zero: bool = True


def merge_metric_logs(log_root: Path, output: Path) -> Path:
    """Concatenate the CSV logs of every (resumed) segment of a run into one ``metrics.csv``,
    each epoch once: a segment that starts at epoch N (resumed there, or started afresh at 0)
    replaces the earlier segments' rows of epochs N and later (those of a killed attempt)."""
    parts = sorted(
        log_root.glob("version_*/metrics.csv"), key=lambda p: int(p.parent.name.split("_")[-1])
    )
    header: list[str] = []
    rows: list[dict[str, str]] = []
    for part in parts:
        with part.open(newline="") as handle:
            reader = csv.DictReader(handle)
            for name in reader.fieldnames or []:
                if name not in header:
                    header.append(name)
            # a row cut short by a kill (missing fields read as None) is skipped
            segment = [row for row in reader if None not in row and None not in row.values()]
        epochs = [_epoch(row) for row in segment if _epoch(row) is not None]
        if epochs:
            start = min(epochs)
            rows = [row for row in rows if (_epoch(row) if _epoch(row) is not None else -1) < start]
        rows.extend(segment)
    with atomic_path(output) as tmp, tmp.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=header)
        writer.writeheader()
        writer.writerows(rows)
    return output


def _epoch(row: dict[str, str]) -> int | None:
    try:
        return int(float(row.get("epoch") or ""))
    except ValueError:
        return None


@renamed_arguments(progress="show_progress")
def fit_resumably(
    task: L.LightningModule,
    datamodule: L.LightningDataModule,
    out: Path,
    *,
    epochs: int,
    trainer: TrainerOptions | None = None,
    resume: bool | None = None,
    show_progress: bool | None = None,
    **trainer_options: Any,
) -> tuple[L.Trainer, TrainResult]:
    """Fit ``task`` into the run folder ``out`` the way every ecomodal run does: ``best/`` and
    ``last/`` exports, an atomic ``checkpoints/last.ckpt`` after every finished epoch (continued
    from, at the next epoch, when ``trainer.resume``; read without pickle code, see
    :func:`load_resume_state`), CSV logs under ``logs/``. ``trainer`` gives devices, precision and run
    control (:class:`TrainerOptions`; ``resume``, ``show_progress`` and ``trainer_options`` named
    like its fields override it); other ``trainer_options`` go to :class:`lightning.Trainer`
    (accumulate_grad_batches, deterministic ...). The per-segment logs of a resumed run are
    merged into ``metrics.csv`` (on rank 0)."""
    names = [field.name for field in dataclasses.fields(TrainerOptions)]
    given = {name: trainer_options.pop(name) for name in names if name in trainer_options}
    options = resolve_trainer(trainer, resume=resume, show_progress=show_progress, **given)
    check_training_numbers(epochs=epochs)
    check_accelerator_available(options)
    export = PublishedFormatExport(out)
    last_ckpt = out / "checkpoints" / "last.ckpt"
    checkpoint_io = AtomicCheckpointIO()
    ckpt_path = None
    if options.resume and last_ckpt.is_file():
        done = int(checkpoint_io.preload(last_ckpt)["epoch"]) + 1
        ckpt_path = str(last_ckpt)
        if done < epochs:
            log.warning("resuming from epoch %d (epochs 0-%d done in %s)", done, done - 1, out)
        else:
            log.warning("all %d epochs already done in %s; nothing to train", done, out)
    try:
        lightning = L.Trainer(
            default_root_dir=out,
            max_epochs=epochs,
            callbacks=[export, ResumeState(last_ckpt)],
            logger=CSVLogger(save_dir=out, name="logs"),
            plugins=[checkpoint_io],
            enable_checkpointing=False,
            enable_progress_bar=options.show_progress,
            enable_model_summary=False,
            use_distributed_sampler=False,
            num_sanity_val_steps=0,
            log_every_n_steps=1,
            **options.lightning_kwargs(),
            **trainer_options,
        )
    except MisconfigurationException as err:  # devices, strategy ... this machine cannot give
        raise InvalidArgumentError(f"Cannot set up training: {err}") from None
    lightning.fit(task, datamodule=datamodule, ckpt_path=ckpt_path)
    result = TrainResult(
        run_dir=out,
        best_dir=out / "best",
        last_dir=out / "last",
        metrics_path=out / "metrics.csv",
        best_val_loss=export.best_score,
        best_epoch=export.best_epoch,
        epochs=lightning.current_epoch,
        is_global_zero=lightning.is_global_zero,
    )
    if lightning.is_global_zero:
        merge_metric_logs(out / "logs", result.metrics_path)
    return lightning, result


def check_trained(result: TrainResult) -> TrainResult:
    """``result`` if its run wrote a best model, else a :class:`TrainingError`: no epoch ended
    with a finite validation loss, so there is nothing to report as the best."""
    if not (result.best_dir / "model.safetensors").is_file():
        raise TrainingError(
            f"{result.run_dir}: no best model was written: {result.epochs} epoch(s) ran and none "
            "ended with a finite validation loss (check the table's validation rows and values)."
        )
    return result


def adamw_with_restarts(param_groups: Any, hparams: Any) -> dict[str, Any]:
    """The optimiser of every ecomodal training task: fused AdamW (``lr``, ``betas``, ``eps``,
    ``weight_decay`` from ``hparams``) with cosine warm restarts every ``t0`` epochs down to
    ``eta_min``, in Lightning's ``configure_optimizers`` form."""
    optimizer = torch.optim.AdamW(
        param_groups,
        lr=hparams.lr,
        betas=tuple(hparams.betas),
        eps=hparams.eps,
        weight_decay=hparams.weight_decay,
        fused=True,  # one kernel per step over all tensors: CPU and CUDA
    )
    scheduler = torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(
        optimizer, T_0=hparams.t0, eta_min=hparams.eta_min
    )
    return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "epoch"}}
