"""Lightning modules that train ecomodal models (ProM3E, binding) on one base task. The maths
lives in ``ecomodal.models``."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import lightning as L
import numpy as np
import torch

from ecomodal.errors import InvalidArgumentError, TrainingError
from ecomodal.models.bind import BoundEncoder
from ecomodal.models.config import ProM3EConfig
from ecomodal.models.losses import (
    SYMMETRIC_WEIGHTS,
    clamp_logit_scale_,
    clip_loss,
    prom3e_loss,
    random_negative_loss,
    supervised_contrastive_loss,
)
from ecomodal.models.prom3e import ProM3E
from ecomodal.options import check_range
from ecomodal.seeding import mix_seed
from ecomodal.training.callbacks import adamw_with_restarts

#: The binding losses a :class:`BindTask` trains with (``auto`` is resolved before).
BIND_LOSSES = ("random-negatives", "supcon", "clip")


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


def check_visible(
    counts: Sequence[int], probs: Sequence[float], num_modalities: int, *, flags: bool = False
) -> None:
    """The training mask's ``visible_counts`` (each 1 ... ``num_modalities``; a row shows at most
    the modalities it has, so the published ``(1, 2)`` also stays valid with one modality) and
    ``visible_probs`` (as many, each in [0, 1], summing to 1); else an
    :class:`InvalidArgumentError` saying what was expected and what was given (naming the
    command line flags with ``flags``)."""
    counts, probs = list(counts), list(probs)
    count_name, prob_name = (
        ("--visible-counts", "--visible-probs") if flags else ("visible_counts", "visible_probs")
    )
    if not counts or len(counts) != len(probs):
        raise InvalidArgumentError(
            f"{count_name} and {prob_name} must have the same, non-zero length; got "
            f"{counts} ({len(counts)}) and {probs} ({len(probs)})."
        )
    for count in counts:
        check_range(count, count_name, minimum=1, maximum=max(num_modalities, 2), integer=True)
    for prob in probs:
        check_range(prob, prob_name, minimum=0, maximum=1)
    if abs(sum(probs) - 1.0) > 1e-6:
        raise InvalidArgumentError(f"{prob_name} must sum to 1; got {probs} (sum {sum(probs):g}).")


class TrainingTask(L.LightningModule):
    """What every ecomodal training task does the same way: random draws seeded from
    ``(seed, stage, step, rank)`` so that a resumed run repeats an uninterrupted one exactly, a
    non-finite training loss stopped with the step named, losses logged as ``train/NAME`` and
    ``val/NAME``, and fused AdamW with cosine warm restarts over :meth:`parameter_groups`.

    Subclasses set ``self.model`` and save ``lr``, ``betas``, ``eps``, ``weight_decay``, ``t0``,
    ``eta_min`` and ``seed`` as hyperparameters.
    """

    #: How the non-finite loss message names the run and what to check.
    run_name = "Training"
    inputs_hint = "the inputs"

    def _generator(self, stage: int, step: int) -> torch.Generator:
        return torch.Generator().manual_seed(
            mix_seed(self.hparams.seed, stage, step, self.global_rank)
        )

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        # Dropout draws from the global generator: seed it per step so resumes repeat exactly.
        torch.manual_seed(mix_seed(self.hparams.seed, 1, self.global_step, self.global_rank))

    def check_finite(self, loss: torch.Tensor, batch_idx: int) -> None:
        """Raise :class:`TrainingError` naming the step when ``loss`` is NaN or infinite."""
        if not bool(torch.isfinite(loss)):
            raise TrainingError(
                f"{self.run_name}: non-finite loss ({float(loss.detach())}) at step "
                f"{self.global_step} (epoch {self.current_epoch}, batch {batch_idx}); the weights "
                f"were not updated. Check {self.inputs_hint} for extreme values or lower the "
                "learning rate."
            )

    def log_losses(self, stage: str, losses: Mapping[str, torch.Tensor], batch_size: int) -> None:
        """Log ``stage/NAME`` for every loss (``loss`` on the progress bar; synced in validation)."""
        for name, value in losses.items():
            self.log(
                f"{stage}/{name}",
                value,
                prog_bar=name == "loss",
                batch_size=batch_size,
                sync_dist=stage == "val",
            )

    def parameter_groups(self) -> Any:
        """The optimiser's parameter groups (all parameters by default)."""
        return self.parameters()

    def configure_optimizers(self):
        return adamw_with_restarts(self.parameter_groups(), self.hparams)


class ProM3ETask(TrainingTask):
    """Trains :class:`~ecomodal.models.prom3e.ProM3E` as published (reference §4).

    Masking: per row, 1 visible modality with probability 0.9, else 2 (``visible_counts`` /
    ``visible_probs``), drawn only from the modalities the row has; every modality whose target is
    present is reconstructed (only the hidden ones with ``masked_only``). Loss: contrastive
    reconstruction + ``lambda_kl`` * KL. AdamW with cosine warm restarts (``t0`` epochs).

    Every random draw is seeded from ``(seed, step, rank)``, so a run resumed from a checkpoint
    repeats an uninterrupted one exactly.
    """

    run_name = "ProM3E training"
    inputs_hint = "the input table"

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
        check_visible(visible_counts, visible_probs, config.num_modalities)
        self.model = ProM3E(config)

    @property
    def config(self) -> ProM3EConfig:
        return self.model.config

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

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        losses = self._step(batch, self._generator(0, self.global_step), n_samples=1)
        self.check_finite(losses["loss"], batch_idx)
        self.log_losses("train", losses, batch["embeddings"].shape[0])
        return losses["loss"]

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        # A fixed draw per validation batch, so epochs are compared on the same masks.
        losses = self._step(batch, self._generator(2, batch_idx), n_samples=0)
        self.log_losses("val", losses, batch["embeddings"].shape[0])


class BindTask(TrainingTask):
    """Trains a :class:`BoundEncoder` with TaxaBind's losses (reference §3).

    ``loss``: ``random-negatives`` (``negatives`` gives the trained encoder's inputs at random
    locations, ``num_negatives`` per batch, default the batch size), ``supcon`` or ``clip``.
    AdamW (betas 0.9/0.98, eps 1e-6) with cosine warm restarts (``t0`` epochs); the log
    temperature is clamped to log(100) after every step. Under DDP every process gathers the
    others' embeddings (and negatives) so the loss sees the global batch; the gradient equals
    that of one process with the whole batch. Every random draw is seeded from
    ``(seed, step, rank)``, so a resumed run repeats an uninterrupted one exactly.
    """

    run_name = "Binding"

    def __init__(
        self,
        model: BoundEncoder,
        *,
        loss: str = "clip",
        weights: tuple[float, float] = SYMMETRIC_WEIGHTS,
        negatives: Callable[[int, torch.Generator], torch.Tensor] | None = None,
        num_negatives: int | None = None,
        lr: float = 1e-4,
        betas: tuple[float, float] = (0.9, 0.98),
        eps: float = 1e-6,
        weight_decay: float = 0.01,
        t0: int = 20,
        eta_min: float = 1e-6,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["model", "negatives"])
        if loss not in BIND_LOSSES:
            raise InvalidArgumentError(
                f"Unknown loss {loss!r}; expected one of: {', '.join(BIND_LOSSES)}."
            )
        self.model = model
        self.negatives = negatives
        self._val: list[tuple[torch.Tensor, torch.Tensor]] = []

    def _gather(self, x: torch.Tensor | None) -> torch.Tensor | None:
        """The global batch: other processes' rows (no gradient) and this one's (with)."""
        if x is None or self.trainer.world_size == 1:
            return x
        parts = list(self.all_gather(x.detach()).unbind(0))
        parts[self.global_rank] = x
        return torch.cat(parts)

    def _loss(self, batch: dict[str, torch.Tensor], generator: torch.Generator, gather: bool):
        other = self.model.embed(batch["features"])
        bind = self.model.embed_bind(batch["targets"])
        species = batch["species"]
        negatives = None
        if self.hparams.loss == "random-negatives" and self.negatives is not None:
            count = self.hparams.num_negatives or len(other)
            negatives = self.model.embed(self.negatives(count, generator).to(self.device))
        if gather:
            bind, other, species, negatives = map(self._gather, (bind, other, species, negatives))
            self.log("train/global_batch", float(len(other)), batch_size=len(other))
        kind, scale, weights = self.hparams.loss, self.model.logit_scale, self.hparams.weights
        if gather and self.trainer.world_size > 1:
            # Every process sees every logit through the temperature: keep its gradient once.
            world = self.trainer.world_size
            scale = scale / world + (scale - scale / world).detach()
        if kind == "random-negatives":
            value = random_negative_loss(bind, other, negatives, scale, species, weights)
        elif kind == "supcon":
            value = supervised_contrastive_loss(bind, other, scale, species, weights)
        else:
            value = clip_loss(bind, other, scale, weights)
        return value, bind, other

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss, _, _ = self._loss(batch, self._generator(0, self.global_step), gather=True)
        self.check_finite(loss, batch_idx)
        size = len(batch["features"])
        self.log_losses("train", {"loss": loss}, size)
        self.log("train/temperature", self.model.logit_scale.detach().exp(), batch_size=size)
        # Each process holds the gradient of its own rows; DDP averages them, so scale back up.
        return loss * self.trainer.world_size

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        clamp_logit_scale_(self.model.logit_scale)

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        loss, bind, other = self._loss(batch, self._generator(2, batch_idx), gather=False)
        self.log_losses("val", {"loss": loss}, len(batch["features"]))
        self._val.append((other.detach().cpu(), bind.detach().cpu()))

    def on_validation_epoch_end(self) -> None:
        if not self._val:
            return
        queries = torch.cat([q for q, _ in self._val]).numpy()
        gallery = torch.cat([g for _, g in self._val]).numpy()
        self._val.clear()
        for name, value in retrieval_metrics(queries, gallery).items():
            self.log(f"val/{name}", value, sync_dist=True)

    def parameter_groups(self) -> list[dict[str, Any]]:
        # The temperature takes no weight decay.
        scale = [self.model.logit_scale]
        rest = [p for n, p in self.model.named_parameters() if n != "logit_scale"]
        return [{"params": rest}, {"params": scale, "weight_decay": 0.0}]


def retrieval_metrics(
    queries: np.ndarray, gallery: np.ndarray, ks: Sequence[int] = (1, 10)
) -> dict[str, float]:
    """Query i's match is gallery item i: R@k, MRR and the chance level k / len(gallery)."""
    from ecomodal.eval.retrieval import rank_metrics, ranks_of_truth

    out = rank_metrics(ranks_of_truth(queries, gallery), ks)
    out.update({f"chance_R@{k}": min(1.0, k / len(gallery)) for k in ks})
    return out
