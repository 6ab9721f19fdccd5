"""Binding data (TaxaBind, reference §3): the trained encoder's inputs and the binding targets
read from a table, random-location negatives, and the Lightning data module."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import pyarrow as pa
import torch
from torch.utils.data import DataLoader, Dataset

from ecomodal.data.datamodules import EpochShuffleSampler
from ecomodal.data.splits import split_rows
from ecomodal.errors import InvalidEmbeddingsError, TableFormatError, TrainingError
from ecomodal.io.batch import EmbeddingBatch

log = logging.getLogger(__name__)


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
        return data, _with_ids(data), "the batch"
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
            return batch, _with_ids(batch), str(path)
    from ecomodal.io.records import read_records

    return None, read_records(path), str(path)


def _with_ids(batch: EmbeddingBatch) -> pa.Table:
    """The batch's other columns (none: an empty table of its length) with its ``id``."""
    ids = pa.array(batch.ids.astype(str))
    if batch.columns is None or batch.columns.num_columns == 0:
        return pa.table({"id": ids})
    return batch.columns.append_column("id", ids)


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
