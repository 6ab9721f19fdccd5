"""Callbacks and checkpoint I/O for ecomodal training runs."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

from ecomodal.io.atomic import atomic_path


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
