"""Lightning modules that train ecomodal models. The maths lives in ``ecomodal.models``."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import lightning as L
import torch

from ecomodal.errors import TrainingError
from ecomodal.models.losses import prom3e_loss
from ecomodal.models.prom3e import ProM3E, ProM3EConfig
from ecomodal.seeding import mix_seed
from ecomodal.training.callbacks import adamw_with_restarts


def draw_visible(
    present: torch.Tensor,
    counts: Sequence[int] = (1, 2),
    probs: Sequence[float] = (0.9, 0.1),
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Per row, draw how many modalities stay visible (``counts`` with ``probs``), then which ones,
    uniformly among the modalities the row has. Returns a [B, M] boolean mask.

    A row never shows more modalities than it has, and every row with data shows at least one.
    """
    batch, n_mod = present.shape
    device = present.device
    choice = torch.multinomial(
        torch.as_tensor(probs, dtype=torch.float32).expand(batch, -1),
        1,
        generator=generator,
    ).squeeze(1)
    k = torch.as_tensor(counts, dtype=torch.long)[choice].to(device)
    k = torch.minimum(k, present.sum(1))
    scores = torch.rand(batch, n_mod, generator=generator).to(device)
    scores = scores.masked_fill(~present, -1.0)
    order = scores.argsort(dim=1, descending=True)
    rank = torch.empty_like(order)
    rank.scatter_(1, order, torch.arange(n_mod, device=device).expand(batch, -1))
    return (rank < k.unsqueeze(1)) & present


class ProM3ETask(L.LightningModule):
    """Trains :class:`~ecomodal.models.prom3e.ProM3E` as published (reference §4).

    Masking: per row, 1 visible modality with probability 0.9, else 2 (``visible_counts`` /
    ``visible_probs``), drawn only from the modalities the row has; every modality whose target is
    present is reconstructed (only the hidden ones with ``masked_only``). Loss: contrastive
    reconstruction + ``lambda_kl`` * KL. AdamW with cosine warm restarts (``t0`` epochs).

    Every random draw is seeded from ``(seed, step, rank)``, so a run resumed from a checkpoint
    repeats an uninterrupted one exactly.
    """

    def __init__(
        self,
        model_config: Mapping[str, Any] | None = None,
        *,
        lr: float = 1e-4,
        betas: tuple[float, float] = (0.9, 0.98),
        eps: float = 1e-6,
        weight_decay: float = 0.01,
        t0: int = 20,
        eta_min: float = 1e-6,
        visible_counts: Sequence[int] = (1, 2),
        visible_probs: Sequence[float] = (0.9, 0.1),
        seed: int = 0,
    ):
        super().__init__()
        self.save_hyperparameters()
        config = ProM3EConfig.from_dict(dict(model_config or {}))
        self.model = ProM3E(config)
        if len(visible_counts) != len(visible_probs) or min(visible_counts) < 1:
            raise ValueError(
                "visible_counts and visible_probs must have the same length and counts must be "
                f">= 1; got {list(visible_counts)} and {list(visible_probs)}."
            )

    @property
    def config(self) -> ProM3EConfig:
        return self.model.config

    def _generator(self, stage: int, step: int) -> torch.Generator:
        return torch.Generator().manual_seed(
            mix_seed(self.hparams.seed, stage, step, self.global_rank)
        )

    def _step(self, batch: dict[str, torch.Tensor], generator: torch.Generator, n_samples: int):
        embeddings, present = batch["embeddings"], batch["present"]
        visible = draw_visible(
            present, self.hparams.visible_counts, self.hparams.visible_probs, generator
        )
        keep = visible.any(1)
        if not bool(keep.all()):  # rows with no data at all take no part
            embeddings, present, visible = embeddings[keep], present[keep], visible[keep]
        outputs = self.model(embeddings, visible, n_samples=n_samples, generator=generator)
        anchors = ~visible if self.config.masked_only else None
        return prom3e_loss(
            outputs,
            embeddings,
            present,
            self.model.negative_scale,
            self.model.negative_shift,
            self.config.lambda_kl,
            anchors,
        )

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        # Dropout draws from the global generator: seed it per step so resumes repeat exactly.
        torch.manual_seed(mix_seed(self.hparams.seed, 1, self.global_step, self.global_rank))

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        losses = self._step(batch, self._generator(0, self.global_step), n_samples=1)
        if not bool(torch.isfinite(losses["loss"])):
            raise TrainingError(
                f"ProM3E training: non-finite loss ({float(losses['loss'].detach())}) at step "
                f"{self.global_step} (epoch {self.current_epoch}, batch {batch_idx}); the weights "
                "were not updated. Check the input table for extreme values or lower the "
                "learning rate."
            )
        size = batch["embeddings"].shape[0]
        for name, value in losses.items():
            self.log(f"train/{name}", value, prog_bar=name == "loss", batch_size=size)
        return losses["loss"]

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        # A fixed draw per validation batch, so epochs are compared on the same masks.
        losses = self._step(batch, self._generator(2, batch_idx), n_samples=0)
        size = batch["embeddings"].shape[0]
        for name, value in losses.items():
            self.log(f"val/{name}", value, prog_bar=name == "loss", batch_size=size, sync_dist=True)

    def configure_optimizers(self):
        return adamw_with_restarts(self.parameters(), self.hparams)
