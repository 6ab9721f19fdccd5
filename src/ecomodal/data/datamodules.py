"""Datasets and Lightning data modules over embedding tables."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from ecomodal.data.splits import split_rows
from ecomodal.errors import InvalidEmbeddingsError, TrainingError
from ecomodal.modalities import MODALITIES


class EmbeddingDataset(Dataset):
    """Stacked embeddings [N, M, D] and their present mask [N, M], held in memory.

    Indexing with a list of row indices returns a whole batch as a dict
    ``{"embeddings": [B, M, D], "present": [B, M]}`` (no per-row collation).
    """

    def __init__(self, embeddings: torch.Tensor | np.ndarray, present: torch.Tensor | np.ndarray):
        self.embeddings = torch.as_tensor(embeddings, dtype=torch.float32)
        self.present = torch.as_tensor(present, dtype=torch.bool)
        if self.embeddings.shape[:2] != self.present.shape:
            raise InvalidEmbeddingsError(
                f"present mask {list(self.present.shape)} does not match embeddings "
                f"{list(self.embeddings.shape)}."
            )

    def __len__(self) -> int:
        return self.embeddings.shape[0]

    def __getitem__(self, index) -> dict[str, torch.Tensor]:
        index = torch.as_tensor(index, dtype=torch.long)
        return {"embeddings": self.embeddings[index], "present": self.present[index]}


class EpochShuffleSampler(Sampler[list[int]]):
    """Batches of row indices, shuffled by ``(seed, epoch)`` and sharded by process rank.

    The order depends only on the seed and the epoch, so a run resumed at an epoch boundary sees
    exactly the batches an uninterrupted run would. Every rank gets the same number of batches.
    """

    def __init__(
        self,
        num_rows: int,
        batch_size: int,
        *,
        shuffle: bool = True,
        drop_last: bool = True,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ):
        self.num_rows = num_rows
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.drop_last = drop_last and num_rows >= batch_size * world_size
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.epoch = 0

    @classmethod
    def for_trainer(
        cls, trainer: L.Trainer | None, num_rows: int, batch_size: int, *, train: bool, seed: int
    ) -> EpochShuffleSampler:
        """The sampler of this process in ``trainer``'s run (rank 0 of 1 without a trainer):
        shuffled, full batches for training; in order, last batch kept, otherwise."""
        return cls(
            num_rows,
            batch_size,
            shuffle=train,
            drop_last=train,
            seed=seed,
            rank=trainer.global_rank if trainer is not None else 0,
            world_size=trainer.world_size if trainer is not None else 1,
        )

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _rank_indices(self) -> torch.Tensor:
        if self.shuffle:
            generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
            order = torch.randperm(self.num_rows, generator=generator)
        else:
            order = torch.arange(self.num_rows)
        per_rank = -(-self.num_rows // self.world_size)
        if per_rank * self.world_size > self.num_rows:  # pad by repeating, as DistributedSampler
            order = torch.cat([order, order[: per_rank * self.world_size - self.num_rows]])
        return order[self.rank :: self.world_size]

    def __iter__(self) -> Iterator[list[int]]:
        indices = self._rank_indices()
        for start in range(0, len(indices), self.batch_size):
            batch = indices[start : start + self.batch_size]
            if self.drop_last and len(batch) < self.batch_size:
                return
            yield batch.tolist()

    def __len__(self) -> int:
        per_rank = -(-self.num_rows // self.world_size)
        if self.drop_last:
            return per_rank // self.batch_size
        return -(-per_rank // self.batch_size)


class EmbeddingDataModule(L.LightningDataModule):
    """Train/validation batches from an embedding table (a Parquet path or an EmbeddingBatch).

    The split comes from the table's ``split`` column when it has ``train`` and ``val`` rows,
    otherwise a seeded random ``val_fraction`` of the rows validates.
    """

    def __init__(
        self,
        data,
        *,
        modalities: Sequence[str] = MODALITIES,
        input_dim: int | None = None,
        batch_size: int = 1024,
        val_fraction: float = 0.1,
        split_column: str = "split",
        seed: int = 0,
        num_workers: int = 0,
    ):
        super().__init__()
        from ecomodal.training.trainer import check_training_numbers

        check_training_numbers(batch_size=batch_size, val_fraction=val_fraction, seed=seed)
        self.data = data
        self.modalities = list(modalities)
        self.input_dim = input_dim
        self.batch_size = batch_size
        self.val_fraction = val_fraction
        self.split_column = split_column
        self.seed = seed
        self.num_workers = num_workers
        self.train_dataset: EmbeddingDataset | None = None
        self.val_dataset: EmbeddingDataset | None = None

    def setup(self, stage: str | None = None) -> None:
        if self.train_dataset is not None:
            return
        batch = self.data
        if isinstance(batch, (str, Path)):
            from ecomodal.io.reader import read_embeddings

            table = read_embeddings(batch)
            wanted = [m for m in self.modalities if m in table.modalities]
            extra = [self.split_column] if self.split_column in table.extra_columns else []
            batch = table.load(modalities=wanted, columns=extra)
        embeddings, present = batch.stack(self.modalities, dim=self.input_dim)
        labels = None
        if batch.columns is not None and self.split_column in batch.columns.column_names:
            labels = batch.columns.column(self.split_column).to_numpy(zero_copy_only=False)
        train, val = split_rows(
            len(batch), split_labels=labels, val_fraction=self.val_fraction, seed=self.seed
        )
        if len(train) < 1 or len(val) < 1:
            source = str(self.data) if isinstance(self.data, (str, Path)) else "the batch"
            raise TrainingError(
                f"{source}: training needs at least 1 training and 1 validation row; the table "
                f"has {len(batch)} row(s): {len(train)} to train and {len(val)} to validate "
                f"(val_fraction {self.val_fraction:g}"
                + (f", from its {self.split_column!r} column)." if labels is not None else ").")
            )
        self.train_rows, self.val_rows = train, val
        self.train_dataset = EmbeddingDataset(embeddings[train], present[train])
        self.val_dataset = EmbeddingDataset(embeddings[val], present[val])

    def _loader(self, dataset: EmbeddingDataset, *, train: bool) -> DataLoader:
        sampler = EpochShuffleSampler.for_trainer(
            self.trainer, len(dataset), self.batch_size, train=train, seed=self.seed
        )
        return DataLoader(
            dataset,
            sampler=sampler,
            batch_size=None,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        if self.train_dataset is None:
            raise RuntimeError("EmbeddingDataModule: call setup() before asking for loaders.")
        return self._loader(self.train_dataset, train=True)

    def val_dataloader(self) -> DataLoader:
        if self.val_dataset is None:
            raise RuntimeError("EmbeddingDataModule: call setup() before asking for loaders.")
        return self._loader(self.val_dataset, train=False)
