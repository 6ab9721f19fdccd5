"""Table-level inference: complete every row of an embedding table, streamed, into a new table."""

from __future__ import annotations

import ctypes
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from ecomodal.errors import UnknownModalityError
from ecomodal.io.batch import EmbeddingBatch
from ecomodal.io.reader import read_embeddings
from ecomodal.io.writer import EmbeddingTableWriter
from ecomodal.modalities import parse_modalities
from ecomodal.models.factory import load_model
from ecomodal.models.prom3e import ProM3E
from ecomodal.progress import progress_bar
from ecomodal.seeding import mix_seed

HAT_SUFFIX = "_hat"


@dataclass
class CompleteSummary:
    """What :func:`complete_table` wrote."""

    path: Path
    rows: int
    visible: list[str] | None
    mean_sigma_l1: float


def complete_table(
    model: ProM3E | str | os.PathLike[str],
    data: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    visible: Sequence[str] | str | None = None,
    n_samples: int = 5,
    batch_size: int = 4096,
    seed: int = 0,
    device: str | None = None,
    precision: str = "fp32",
    show_progress: bool = True,
) -> CompleteSummary:
    """Complete every modality of every row of the table ``data`` and write ``out``.

    The output holds the input's ``id`` and every other column unchanged, each completed modality
    as ``<modality>_hat`` and the uncertainty ``sigma_l1``. ``visible=None`` conditions each row on
    whatever it has. The table is streamed in ``batch_size`` rows, so memory stays bounded, and
    ``out`` appears only once complete. ``precision="bf16"`` runs the matrix products in
    bfloat16.
    """
    model = load_model(model, device=device)
    table = read_embeddings(data)
    names = parse_modalities(visible, model.modalities) if visible is not None else None
    needed = names if names is not None else [m for m in model.modalities if m in table.modalities]
    missing = [m for m in needed if m not in table.modalities]
    if missing:
        raise UnknownModalityError(
            f"{table.path}: visible modalities {missing} are not columns of the table "
            f"(it has {', '.join(table.modalities) or 'none'})."
        )
    dims = dict(table.dims)
    dims.update({m + HAT_SUFFIX: model.config.input_dim for m in model.modalities})
    encoders = dict(table.encoders)
    encoders.update({m + HAT_SUFFIX: "prom3e" for m in model.modalities})
    rows = 0
    sigma_sum = 0.0
    with (
        EmbeddingTableWriter(out, dims, encoders=encoders) as writer,
        progress_bar("Completing", total=table.num_rows, enabled=show_progress) as advance,
    ):
        for index, batch in enumerate(table.iter_batches(batch_size=batch_size)):
            result = model.complete(
                batch,
                visible=names,
                n_samples=n_samples,
                seed=mix_seed(seed, index),
                batch_size=min(batch_size, 1024),
                device=device,
                precision=precision,
            )
            writer.write(
                _completed_batch(batch, result.embeddings, result.sigma_l1, model.modalities)
            )
            rows += len(batch)
            _release_freed_memory()
            sigma_sum += float(np.sum(result.sigma_l1, dtype=np.float64))
            advance(len(batch))
    return CompleteSummary(
        path=Path(out),
        rows=rows,
        visible=names,
        mean_sigma_l1=sigma_sum / rows if rows else float("nan"),
    )


def _release_freed_memory() -> None:
    """Hand memory freed by the last batch back to the OS (glibc keeps it otherwise, and with
    several threads allocating, the process grows batch after batch)."""
    global _MALLOC_TRIM
    if _MALLOC_TRIM is None:
        try:
            _MALLOC_TRIM = ctypes.CDLL("libc.so.6").malloc_trim
        except (OSError, AttributeError):
            _MALLOC_TRIM = False
    if _MALLOC_TRIM:
        _MALLOC_TRIM(0)


_MALLOC_TRIM = None


def _completed_batch(
    batch: EmbeddingBatch, completed: np.ndarray, sigma_l1: np.ndarray, modalities: Sequence[str]
) -> EmbeddingBatch:
    """The input rows plus ``<modality>_hat`` columns and ``sigma_l1`` (encoders: the writer's)."""
    embeddings = dict(batch.embeddings)
    present = dict(batch.present)
    for i, name in enumerate(modalities):
        embeddings[name + HAT_SUFFIX] = np.ascontiguousarray(completed[:, i])
        present[name + HAT_SUFFIX] = np.ones(len(batch), dtype=bool)
    sigma = pa.array(sigma_l1.astype(np.float32))
    columns = batch.columns
    if columns is None or columns.num_columns == 0:
        columns = pa.table({"sigma_l1": sigma})
    else:
        columns = columns.append_column("sigma_l1", sigma)
    return EmbeddingBatch(ids=batch.ids, embeddings=embeddings, present=present, columns=columns)
