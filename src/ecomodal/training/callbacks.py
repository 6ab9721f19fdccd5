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
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.plugins.io import TorchCheckpointIO

from ecomodal.deprecation import renamed_arguments
from ecomodal.io.atomic import atomic_path
from ecomodal.training.trainer import TrainerOptions, resolve_trainer

log = logging.getLogger(__name__)


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning checkpoints written to a temporary name and renamed, so a kill never leaves a
    truncated ``last.ckpt`` behind."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options=None) -> None:
        with atomic_path(path) as tmp:
            torch.save(checkpoint, tmp)


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
    """Concatenate the CSV logs of every (resumed) segment of a run into one ``metrics.csv``."""
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
            rows.extend(reader)
    with atomic_path(output) as tmp, tmp.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=header)
        writer.writeheader()
        writer.writerows(rows)
    return output


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
    ``last/`` exports, an atomic ``checkpoints/last.ckpt`` each epoch (continued from when
    ``trainer.resume``), CSV logs under ``logs/``. ``trainer`` gives devices, precision and run
    control (:class:`TrainerOptions`; ``resume``, ``show_progress`` and ``trainer_options`` named
    like its fields override it); other ``trainer_options`` go to :class:`lightning.Trainer`
    (accumulate_grad_batches, deterministic ...). The per-segment logs of a resumed run are
    merged into ``metrics.csv`` (on rank 0)."""
    names = [field.name for field in dataclasses.fields(TrainerOptions)]
    given = {name: trainer_options.pop(name) for name in names if name in trainer_options}
    options = resolve_trainer(trainer, resume=resume, show_progress=show_progress, **given)
    export = PublishedFormatExport(out)
    resume_state = ModelCheckpoint(
        dirpath=out / "checkpoints", filename="last", save_top_k=0, save_last=True
    )
    lightning = L.Trainer(
        default_root_dir=out,
        max_epochs=epochs,
        callbacks=[export, resume_state],
        logger=CSVLogger(save_dir=out, name="logs"),
        plugins=[AtomicCheckpointIO()],
        enable_progress_bar=options.show_progress,
        enable_model_summary=False,
        use_distributed_sampler=False,
        num_sanity_val_steps=0,
        log_every_n_steps=1,
        **options.lightning_kwargs(),
        **trainer_options,
    )
    last_ckpt = out / "checkpoints" / "last.ckpt"
    ckpt_path = str(last_ckpt) if options.resume and last_ckpt.is_file() else None
    if ckpt_path:
        log.info("Resuming from %s", ckpt_path)
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
