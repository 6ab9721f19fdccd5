"""``train_bind``: TaxaBind binding (reference §3), aligning one modality's encoder to another's.

The trained modality's encoder maps its *inputs* (covariates for ``env``, cached backbone
features for image-like encoders, latitude/longitude for ``loc``) to the shared space; the binding
modality's embeddings are fixed targets (locked tuning) or pass through a trainable head
initialised to the identity (unlocked tuning). Losses follow TaxaBind: random-location negatives
for ``loc``/``env`` (0.4 / 0.6), supervised contrastive for ``sat``, symmetric CLIP otherwise,
with a learnable temperature (start 1/0.07, capped at 100).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import pyarrow as pa
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset

from ecomodal.data.datamodules import EpochShuffleSampler
from ecomodal.data.splits import split_rows
from ecomodal.errors import InvalidEmbeddingsError, TableFormatError, TrainingError
from ecomodal.io.atomic import atomic_path
from ecomodal.io.batch import EmbeddingBatch
from ecomodal.io.checkpoints import load_state_dict_strict, read_weights, save_checkpoint
from ecomodal.models.heads import ProjectionHead
from ecomodal.models.losses import (
    LOGIT_SCALE_INIT,
    RANDOM_NEGATIVE_WEIGHTS,
    SYMMETRIC_WEIGHTS,
    clamp_logit_scale_,
    clip_loss,
    random_negative_loss,
    supervised_contrastive_loss,
)
from ecomodal.seeding import mix_seed
from ecomodal.training.callbacks import TrainResult, adamw_with_restarts, fit_resumably

log = logging.getLogger(__name__)

LOSSES = ("auto", "random-negatives", "supcon", "clip")
HEADS = ("sinr", "linear", "mlp", "geoclip")
#: Modalities whose published loss appends random-location negatives.
LOCATION_MODALITIES = ("loc", "env")


# ---------------------------------------------------------------------------- data
@dataclass
class BindData:
    """Training rows in memory: the trained encoder's inputs and the binding targets.

    Attributes:
        ids: [N] row ids.
        features: [N, F] float32 inputs of the trained encoder.
        targets: [N, D] float32 embeddings of the binding modality.
        species: [N] int64 species codes; rows without a species have unique negative codes.
        split: [N] labels ``train`` / ``val`` / ``test``.
        feature_names: names of the feature columns (covariate bands), when known.
    """

    ids: np.ndarray
    features: np.ndarray
    targets: np.ndarray
    species: np.ndarray
    split: np.ndarray
    feature_names: list[str] | None = None

    def rows(self, label: str) -> np.ndarray:
        return np.flatnonzero(self.split == label)


def species_codes(values: Sequence[Any] | np.ndarray) -> np.ndarray:
    """Integer codes of species labels; missing labels (None/NaN/"") get unique negative codes,
    so they never count as the same species as another row."""
    values = np.asarray(values, dtype=object)
    missing = np.array([v is None or v != v or v == "" for v in values], dtype=bool)
    codes = np.empty(len(values), dtype=np.int64)
    if (~missing).any():
        _, codes[~missing] = np.unique(values[~missing].astype(str), return_inverse=True)
    codes[missing] = -1 - np.flatnonzero(missing)
    return codes


def _read_input(data: Any) -> tuple[EmbeddingBatch | None, pa.Table, str]:
    """(embedding batch or None, the table's other columns with ``id``, a name for messages)."""
    if isinstance(data, EmbeddingBatch):
        columns = data.columns if data.columns is not None else pa.table({})
        return data, columns.append_column("id", pa.array(data.ids.astype(str))), "the batch"
    path = Path(data)
    if not path.exists():
        raise FileNotFoundError(f"Training data {path} does not exist.")
    if path.suffix.lower() in (".parquet", ".parq", ".pq"):
        from ecomodal.io.reader import read_embeddings

        try:
            table = read_embeddings(path)
        except TableFormatError:  # no id column: an observation table
            table = None
        if table is not None and table.modalities:
            batch = table.load(columns=table.extra_columns)
            columns = batch.columns if batch.columns is not None else pa.table({})
            return batch, columns.append_column("id", pa.array(batch.ids.astype(str))), str(path)
    from ecomodal.io.records import read_records

    return None, read_records(path), str(path)


def _coordinates(records: pa.Table, source: str) -> tuple[np.ndarray, np.ndarray]:
    from ecomodal.encoders.location import check_coordinates

    missing = [c for c in ("lat", "lon") if c not in records.column_names]
    if missing:
        raise TableFormatError(
            f"{source}: computing the trained encoder's inputs needs columns lat and lon; "
            f"missing {missing} (columns: {records.column_names})."
        )
    lat = records.column("lat").to_numpy(zero_copy_only=False)
    lon = records.column("lon").to_numpy(zero_copy_only=False)
    good, wrapped, errors = check_coordinates(lat, lon)
    if errors:
        row, column, reason = errors[0]
        raise InvalidEmbeddingsError(f"{source}: row {row}, column {column!r}: {reason}.")
    return np.asarray(lat, dtype=np.float64), wrapped


def load_bind_data(
    data: Any,
    *,
    modality: str,
    bind_to: str,
    head: str,
    covariates: Any = None,
    bind_to_encoder: str | None = None,
    species_column: str = "species",
    split_column: str = "split",
    val_fraction: float = 0.1,
    seed: int = 0,
) -> BindData:
    """Read ``data`` (an embedding/feature table path, an observation table path or an
    :class:`EmbeddingBatch`) into :class:`BindData`.

    Features: the table's ``modality`` column, else for ``env`` the covariates at ``lat``/``lon``
    and for the ``geoclip`` head the coordinates themselves. Targets: the table's ``bind_to``
    column, else the rows embedded by ``load_encoder(bind_to, bind_to_encoder)``. The split comes
    from ``split_column`` (train/val/test), else a seeded random ``val_fraction`` validates.
    """
    batch, records, source = _read_input(data)
    names: list[str] | None = None
    usable = np.ones(records.num_rows, dtype=bool)
    if head == "geoclip":
        lat, lon = _coordinates(records, source)
        features = np.stack([lat, lon], axis=1).astype(np.float32)
    elif batch is not None and modality in batch.embeddings:
        features, usable = batch.embeddings[modality], usable & batch.present[modality]
    elif modality == "env":
        stack = open_covariates(covariates)
        features, names = stack.sample(*_coordinates(records, source)), stack.band_names
    else:
        raise TableFormatError(
            f"{source} has no {modality!r} feature column; pass a table whose {modality!r} column "
            "holds the encoder's cached backbone features (only env is computed from lat/lon)."
        )
    if batch is not None and bind_to in batch.embeddings:
        targets, usable = batch.embeddings[bind_to], usable & batch.present[bind_to]
    else:
        targets, valid = embed_targets(records, bind_to, bind_to_encoder, source)
        usable &= valid
    if not usable.any():
        raise TrainingError(f"{source}: no row has both {modality!r} inputs and {bind_to!r}.")
    if not usable.all():
        log.warning(
            "%s: %d rows lack %s or %s; left out.", source, (~usable).sum(), modality, bind_to
        )
    labels = None
    if split_column in records.column_names:
        labels = np.asarray(records.column(split_column).to_numpy(zero_copy_only=False)).astype(str)
    train, val = split_rows(len(usable), split_labels=labels, val_fraction=val_fraction, seed=seed)
    split = np.full(len(usable), "test", dtype=object)  # rows labelled neither train nor val
    split[train], split[val] = "train", "val"
    species = (
        species_codes(records.column(species_column).to_numpy(zero_copy_only=False))
        if species_column in records.column_names
        else -1 - np.arange(len(usable), dtype=np.int64)
    )
    ids = np.asarray(records.column("id").to_numpy(zero_copy_only=False), dtype=object)
    out = BindData(
        ids=ids[usable],
        features=np.ascontiguousarray(features[usable], dtype=np.float32),
        targets=np.ascontiguousarray(targets[usable], dtype=np.float32),
        species=species[usable],
        split=split[usable].astype(str),
        feature_names=names,
    )
    if len(out.rows("train")) < 2 or len(out.rows("val")) < 2:
        raise TrainingError(
            f"{source}: binding needs at least 2 training and 2 validation rows; got "
            f"{len(out.rows('train'))} and {len(out.rows('val'))}."
        )
    return out


def embed_targets(
    records: pa.Table, bind_to: str, spec: str | None, source: str
) -> tuple[np.ndarray, np.ndarray]:
    """The binding modality's embeddings of the rows ([N, D], valid [N]) from its encoder."""
    from ecomodal.embed import encoder_inputs
    from ecomodal.encoders import load_encoder

    encoder = load_encoder(bind_to, spec)
    result = encoder.encode_rows(encoder_inputs(encoder, records, None))
    for error in result.errors[:1]:
        log.warning("%s: row %d (%s): %s", source, error.row, error.column, error.reason)
    return result.embeddings, result.valid


def open_covariates(covariates: Any = None):
    """A :class:`~ecomodal.geo.covariates.CovariateStack` from a stack, a raster path, or
    None / ``"default"`` (the offline default stack)."""
    from ecomodal.geo.covariates import CovariateStack

    if isinstance(covariates, CovariateStack):
        return covariates
    return CovariateStack.open(covariates)


class RandomLocations:
    """TaxaBind's random-location negatives: inputs of the trained encoder at points with
    lat ~ U(-90, 90), lon ~ U(-180, 180): covariates from ``stack`` (``env``), or the
    coordinates themselves (``stack=None``, the ``geoclip`` head)."""

    def __init__(self, stack=None) -> None:
        self.stack = stack

    def __call__(self, n: int, generator: torch.Generator) -> torch.Tensor:
        lat = torch.rand(n, generator=generator, dtype=torch.float64) * 180.0 - 90.0
        lon = torch.rand(n, generator=generator, dtype=torch.float64) * 360.0 - 180.0
        if self.stack is None:
            return torch.stack([lat, lon], dim=1).float()
        return torch.from_numpy(self.stack.sample(lat.numpy(), lon.numpy()))


class _RowsDataset(Dataset):
    """Whole batches of rows by index list (no per-row collation)."""

    def __init__(self, data: BindData, rows: np.ndarray) -> None:
        self.features = torch.from_numpy(data.features[rows])
        self.targets = torch.from_numpy(data.targets[rows])
        self.species = torch.from_numpy(data.species[rows])

    def __len__(self) -> int:
        return len(self.features)

    def __getitem__(self, index) -> dict[str, torch.Tensor]:
        index = torch.as_tensor(index, dtype=torch.long)
        return {
            "features": self.features[index],
            "targets": self.targets[index],
            "species": self.species[index],
        }


class BindDataModule(L.LightningDataModule):
    """Train/validation batches of :class:`BindData`, shuffled by (seed, epoch), sharded by rank."""

    def __init__(self, data: BindData, *, batch_size: int, seed: int = 0) -> None:
        super().__init__()
        self.data, self.batch_size, self.seed = data, batch_size, seed

    def _loader(self, label: str, train: bool) -> DataLoader:
        dataset = _RowsDataset(self.data, self.data.rows(label))
        sampler = EpochShuffleSampler.for_trainer(
            self.trainer, len(dataset), self.batch_size, train=train, seed=self.seed
        )
        return DataLoader(dataset, sampler=sampler, batch_size=None)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", False)


# ---------------------------------------------------------------------------- model
class _CoordinateInput(nn.Module):
    """Adapts a ``forward(lat, lon)`` location encoder to [N, 2] inputs."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, coords: torch.Tensor) -> torch.Tensor:
        return self.model(coords[:, 0], coords[:, 1])


class BoundEncoder(nn.Module):
    """The encoder being bound, the binding side's head (unlocked tuning only) and the learnable
    log temperature. ``save_pretrained`` writes the encoder in the format its loader reads."""

    def __init__(
        self,
        encoder: nn.Module,
        target_dim: int,
        *,
        head: str,
        unlocked: bool = False,
        save_config: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.encoder = encoder
        self.head = head
        self.save_config = dict(save_config or {})
        self.bind_head: ProjectionHead | None = None
        if unlocked:
            self.bind_head = ProjectionHead(target_dim, target_dim)
            nn.init.eye_(self.bind_head.projection.weight)
        self.logit_scale = nn.Parameter(torch.tensor(LOGIT_SCALE_INIT))

    def embed(self, features: torch.Tensor) -> torch.Tensor:
        """L2-normalised embeddings of the trained modality."""
        return F.normalize(self.encoder(features), dim=-1)

    def embed_bind(self, targets: torch.Tensor) -> torch.Tensor:
        """L2-normalised binding embeddings (through the head when unlocked)."""
        return F.normalize(targets if self.bind_head is None else self.bind_head(targets), dim=-1)

    def save_pretrained(self, folder: str | Path) -> Path:
        """``folder``: the trained encoder (``config.json`` + ``model.safetensors``) and, when
        unlocked, ``folder/bind_head`` (a linear projection in the same format)."""
        folder = Path(folder)
        config = {**self.save_config, "logit_scale": float(self.logit_scale.detach())}
        if self.head == "sinr":
            from ecomodal.encoders.environment import save_environment_encoder

            bands = config.pop("covariate_bands", None)
            save_environment_encoder(self.encoder, folder, covariate_bands=bands, extra=config)
        elif self.head == "geoclip":
            save_checkpoint(self.encoder.model, {"license": "MIT", **config}, folder)
        else:
            save_checkpoint(self.encoder, config, folder)
        if self.bind_head is not None:
            save_checkpoint(
                self.bind_head, {"out_dim": self.bind_head.out_dim}, folder / "bind_head"
            )
        return folder

    def load_encoder_weights(self, folder: str | Path) -> None:
        """Load the trained encoder (and binding head) back from a ``save_pretrained`` folder."""
        folder = Path(folder)
        target = self.encoder.model if self.head == "geoclip" else self.encoder
        parts = [(target, folder)]
        if self.bind_head is not None:
            parts.append((self.bind_head, folder / "bind_head"))
        for module, where in parts:
            weights = where / "model.safetensors"
            load_state_dict_strict(
                module, read_weights(weights), source=str(weights), config_summary=self.head
            )


def build_encoder(
    head: str, in_dim: int, out_dim: int, *, hidden: int = 0, seed: int = 0
) -> nn.Module:
    """A fresh trainable encoder: ``sinr`` (SINR residual MLP over covariates), ``linear`` or
    ``mlp`` (projection heads on cached features; the linear one starts as the offline encoders'
    seeded orthogonal projection) or ``geoclip`` (the packaged pretrained GeoCLIP)."""
    if head == "sinr":
        from ecomodal.models.sinr import SINRResidualMLP

        return SINRResidualMLP(num_inputs=in_dim, num_filts=out_dim)
    if head == "linear":
        from ecomodal.encoders.offline import orthogonal_projection

        module = ProjectionHead(in_dim, out_dim)
        module.projection.weight.data.copy_(orthogonal_projection(in_dim, out_dim, seed))
        return module
    if head == "mlp":
        return ProjectionHead(in_dim, out_dim, hidden=hidden or max(out_dim, in_dim))
    if head == "geoclip":
        from ecomodal.encoders.location import geoclip_package_weights, load_geoclip_module

        return _CoordinateInput(load_geoclip_module(geoclip_package_weights()))
    raise ValueError(f"Unknown head {head!r}; expected one of: {', '.join(HEADS)}.")


# ---------------------------------------------------------------------------- Lightning
class BindTask(L.LightningModule):
    """Trains a :class:`BoundEncoder` with TaxaBind's losses (reference §3).

    ``loss``: ``random-negatives`` (``negatives`` gives the trained encoder's inputs at random
    locations, ``num_negatives`` per batch, default the batch size), ``supcon`` or ``clip``.
    AdamW (betas 0.9/0.98, eps 1e-6) with cosine warm restarts (``t0`` epochs); the log
    temperature is clamped to log(100) after every step. Under DDP every process gathers the
    others' embeddings (and negatives) so the loss sees the global batch; the gradient equals
    that of one process with the whole batch. Every random draw is seeded from
    ``(seed, step, rank)``, so a resumed run repeats an uninterrupted one exactly.
    """

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
        if loss not in LOSSES[1:]:
            raise ValueError(f"Unknown loss {loss!r}; expected one of: {', '.join(LOSSES[1:])}.")
        self.model = model
        self.negatives = negatives
        self._val: list[tuple[torch.Tensor, torch.Tensor]] = []

    def _generator(self, stage: int, step: int) -> torch.Generator:
        return torch.Generator().manual_seed(
            mix_seed(self.hparams.seed, stage, step, self.global_rank)
        )

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

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        # Dropout draws from the global generator: seed it per step so resumes repeat exactly.
        torch.manual_seed(mix_seed(self.hparams.seed, 1, self.global_step, self.global_rank))

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss, _, _ = self._loss(batch, self._generator(0, self.global_step), gather=True)
        if not bool(torch.isfinite(loss)):
            raise TrainingError(
                f"Binding: non-finite loss ({float(loss.detach())}) at step {self.global_step} "
                f"(epoch {self.current_epoch}, batch {batch_idx}); the weights were not updated. "
                "Check the inputs for extreme values or lower the learning rate."
            )
        size = len(batch["features"])
        self.log("train/loss", loss, prog_bar=True, batch_size=size)
        self.log("train/temperature", self.model.logit_scale.detach().exp(), batch_size=size)
        # Each process holds the gradient of its own rows; DDP averages them, so scale back up.
        return loss * self.trainer.world_size

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        clamp_logit_scale_(self.model.logit_scale)

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        loss, bind, other = self._loss(batch, self._generator(2, batch_idx), gather=False)
        size = len(batch["features"])
        self.log("val/loss", loss, prog_bar=True, batch_size=size, sync_dist=True)
        self._val.append((other.detach().cpu(), bind.detach().cpu()))

    def on_validation_epoch_end(self) -> None:
        if not self._val:
            return
        queries = torch.cat([q for q, _ in self._val]).numpy()
        gallery = torch.cat([g for _, g in self._val]).numpy()
        self._val.clear()
        for name, value in retrieval_metrics(queries, gallery).items():
            self.log(f"val/{name}", value, sync_dist=True)

    def configure_optimizers(self):
        scale = [self.model.logit_scale]
        rest = [p for n, p in self.model.named_parameters() if n != "logit_scale"]
        groups = [{"params": rest}, {"params": scale, "weight_decay": 0.0}]
        return adamw_with_restarts(groups, self.hparams)


def retrieval_metrics(
    queries: np.ndarray, gallery: np.ndarray, ks: Sequence[int] = (1, 10)
) -> dict[str, float]:
    """Query i's match is gallery item i: R@k, MRR and the chance level k / len(gallery)."""
    from ecomodal.eval.retrieval import rank_metrics, ranks_of_truth

    out = rank_metrics(ranks_of_truth(queries, gallery), ks)
    out.update({f"chance_R@{k}": min(1.0, k / len(gallery)) for k in ks})
    return out


# ---------------------------------------------------------------------------- API
@dataclass
class BindResult(TrainResult):
    """Where a binding run left its outputs, and its held-out retrieval figures.

    ``metrics`` holds, on the test rows (the validation rows when there are none), retrieval
    modality -> bind_to: ``R@1``, ``R@10``, ``MRR``, the chance levels, ``n_gallery``, and the
    same figures for the untrained encoder under ``untrained``.
    """

    metrics: dict[str, Any] = field(default_factory=dict)


def resolve_loss(loss: str, modality: str) -> str:
    """``auto``: random-location negatives for ``loc``/``env``, supervised contrastive for
    ``sat``, symmetric CLIP otherwise."""
    if loss not in LOSSES:
        raise ValueError(f"Unknown loss {loss!r}; expected one of: {', '.join(LOSSES)}.")
    if loss != "auto":
        return loss
    if modality in LOCATION_MODALITIES:
        return "random-negatives"
    return "supcon" if modality == "sat" else "clip"


def _held_out(model: BoundEncoder, data: BindData) -> dict[str, Any]:
    label = "test" if len(data.rows("test")) >= 2 else "val"
    rows = data.rows(label)
    was_training = model.training
    model.eval()
    with torch.no_grad():
        queries = model.embed(torch.from_numpy(data.features[rows])).numpy()
        gallery = model.embed_bind(torch.from_numpy(data.targets[rows])).numpy()
    model.train(was_training)
    return {"split": label, "n_gallery": len(rows), **retrieval_metrics(queries, gallery)}


def train_bind(
    data: Any,
    out: str | Path,
    *,
    modality: str = "env",
    bind_to: str = "image",
    head: str | None = None,
    hidden: int = 0,
    locked: bool = True,
    loss: str = "auto",
    direction_weights: tuple[float, float] | None = None,
    num_negatives: int | None = None,
    covariates: Any = None,
    bind_to_encoder: str | None = None,
    species_column: str = "species",
    split_column: str = "split",
    val_fraction: float = 0.1,
    epochs: int = 20,
    batch_size: int = 512,
    lr: float = 1e-4,
    weight_decay: float = 0.01,
    t0: int = 20,
    accumulate: int = 1,
    seed: int = 0,
    accelerator: str = "cpu",
    devices: int | str = 1,
    num_nodes: int = 1,
    strategy: str = "auto",
    precision: str = "32-true",
    resume: bool = True,
    progress: bool = True,
) -> BindResult:
    """Bind ``modality``'s encoder to ``bind_to`` (TaxaBind §3) on ``data``; outputs go to ``out``.

    ``data``: an embedding/feature table (``io/tables.py`` format; its ``modality`` column holds the
    trained encoder's inputs (covariates for ``env``, cached backbone features otherwise) and its
    ``bind_to`` column the target embeddings), an observation table (CSV/Parquet with ``lat``,
    ``lon`` and media; env covariates and the targets are computed with ``covariates`` and
    ``load_encoder(bind_to, bind_to_encoder)``), or an :class:`EmbeddingBatch`. Optional columns:
    ``species`` (same-species rows are positives / never negatives), ``split`` (train/val/test).

    ``head``: ``sinr`` (default for ``env``: the whole SINR env encoder, saved so that
    ``load_encoder("env", "local-dir:RUN/best", covariates=...)`` loads it), ``linear`` (default
    otherwise: the fast path, a projection on cached features saved in the ``projection=PATH``
    format of the offline encoders), ``mlp`` (``hidden`` units) or ``geoclip`` (fine-tune the
    packaged GeoCLIP on ``lat``/``lon``). ``locked=False`` also trains a linear head on the
    binding side (initialised to the identity, saved in ``best/bind_head``).

    ``out`` receives ``best/`` (lowest validation loss), ``last/``, ``metrics.csv``,
    ``checkpoints/last.ckpt`` (resumes exactly with ``resume=True``) and ``run.json``. A
    non-finite loss raises :class:`TrainingError` naming the step, before any weight changes.
    Published settings: lr 1e-4, 20 epochs, batch 512 (loc, env) or 256, ``accumulate=8``.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    head = head or ("sinr" if modality == "env" else "linear")
    if head not in HEADS:
        raise ValueError(f"Unknown head {head!r}; expected one of: {', '.join(HEADS)}.")
    kind = resolve_loss(loss, modality)
    stack = None
    if modality == "env" and (kind == "random-negatives" or head == "sinr"):
        stack = open_covariates(covariates)
    rows = load_bind_data(
        data,
        modality=modality,
        bind_to=bind_to,
        head=head,
        covariates=stack,
        bind_to_encoder=bind_to_encoder,
        species_column=species_column,
        split_column=split_column,
        val_fraction=val_fraction,
        seed=seed,
    )
    negatives = None
    if kind == "random-negatives":
        if head == "geoclip":
            negatives = RandomLocations()
        elif stack is not None:
            if rows.features.shape[1] != stack.num_bands:
                raise TrainingError(
                    f"The {modality!r} inputs have {rows.features.shape[1]} values but the "
                    f"covariate stack has {stack.num_bands} bands; random-location negatives "
                    "need the same covariates (pass covariates=PATH)."
                )
            negatives = RandomLocations(stack)
        else:
            log.warning("No way to draw random-location negatives for %s; none are used.", modality)
    save_config = {"modality": modality, "bind_to": bind_to, "trained_by": "ecomodal train bind"}
    if head == "sinr" and stack is not None:
        save_config["covariate_bands"] = stack.band_names
        if stack.raster.source and Path(stack.raster.source).resolve() != _default_stack_path():
            save_config["covariates"] = str(stack.raster.source)
    elif head in ("linear", "mlp"):
        save_config.update(in_dim=rows.features.shape[1], out_dim=rows.targets.shape[1])
        save_config["hidden"] = hidden
    L.seed_everything(seed, workers=True, verbose=False)
    encoder = build_encoder(
        head, rows.features.shape[1], rows.targets.shape[1], hidden=hidden, seed=seed
    )
    model = BoundEncoder(
        encoder, rows.targets.shape[1], head=head, unlocked=not locked, save_config=save_config
    )
    untrained = _held_out(model, rows)
    weights = direction_weights or (
        RANDOM_NEGATIVE_WEIGHTS if kind == "random-negatives" else SYMMETRIC_WEIGHTS
    )
    task = BindTask(
        model,
        loss=kind,
        weights=tuple(weights),
        negatives=negatives,
        num_negatives=num_negatives,
        lr=lr,
        weight_decay=weight_decay,
        t0=t0,
        seed=seed,
    )
    trainer, trained = fit_resumably(
        task,
        BindDataModule(rows, batch_size=batch_size, seed=seed),
        out,
        epochs=epochs,
        resume=resume,
        progress=progress,
        accelerator=accelerator,
        devices=devices,
        num_nodes=num_nodes,
        strategy=strategy,
        precision=precision,
        accumulate_grad_batches=accumulate,
    )
    result = BindResult(**vars(trained))
    if trainer.is_global_zero:
        model = model.cpu()
        if (result.best_dir / "model.safetensors").is_file():
            model.load_encoder_weights(result.best_dir)
        result.metrics = {**_held_out(model, rows), "untrained": untrained}
        summary = {
            "modality": modality,
            "bind_to": bind_to,
            "head": head,
            "loss": kind,
            "direction_weights": list(weights),
            "locked": locked,
            "best_val_loss": result.best_val_loss,
            "best_epoch": result.best_epoch,
            "epochs": result.epochs,
            "seed": seed,
            "batch_size": batch_size,
            "lr": lr,
            "rows": {s: len(rows.rows(s)) for s in ("train", "val", "test")},
            "held_out": result.metrics,
        }
        with atomic_path(out / "run.json") as tmp:
            tmp.write_text(json.dumps(summary, indent=2) + "\n")
    return result


def _default_stack_path() -> Path:
    from ecomodal.geo.covariates import default_covariates_path

    return default_covariates_path().resolve()
