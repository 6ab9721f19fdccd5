"""Table-level inference: complete every row of an embedding table, streamed, into a new table."""

from __future__ import annotations

import ctypes
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa

from ecomodal.devices import resolve_device
from ecomodal.errors import TableFormatError, UnknownModalityError
from ecomodal.io.atomic import check_output_path
from ecomodal.io.batch import EmbeddingBatch
from ecomodal.io.reader import read_embeddings
from ecomodal.io.validate import check_normalisable
from ecomodal.io.writer import EmbeddingTableWriter
from ecomodal.modalities import parse_modalities
from ecomodal.models.calibration import has_uncertainty_model
from ecomodal.models.factory import load_model
from ecomodal.models.prom3e import ProM3E
from ecomodal.options import check_range
from ecomodal.precision import check_precision
from ecomodal.progress import progress_bar
from ecomodal.seeding import mix_seed

HAT_SUFFIX = "_hat"
SIGMA_COLUMN = "sigma_l1"
ERROR_SUFFIX = "_expected_error"


@dataclass
class CompleteSummary:
    """What :func:`complete_table` wrote."""

    path: Path
    rows: int
    visible: list[str] | None
    mean_sigma_l1: float
    #: Mean expected error per completed modality (empty without an uncertainty model).
    mean_expected_error: dict[str, float] = field(default_factory=dict)
    #: Whether completions were mixed with the model's neighbours (a calibrated model).
    neighbours: bool = False


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
    neighbours: bool = True,
    show_progress: bool = True,
) -> CompleteSummary:
    """Complete every modality of every row of the table ``data`` and write ``out``.

    The output holds the input's ``id`` and every other column unchanged, each completed modality
    as ``<modality>_hat`` and the uncertainty ``sigma_l1``; a calibrated model (``ecomodal
    calibrate``) also mixes in its neighbours (``neighbours=False``: ProM3E alone) and, with an
    uncertainty model, writes ``<modality>_expected_error`` (the expected ``1 - cosine`` to the
    truth; NaN where the modality was visible). ``visible=None`` conditions each row on
    whatever it has. The table is streamed in ``batch_size`` rows, so memory stays bounded, and
    ``out`` appears only once complete. ``precision="bf16"`` runs the matrix products in
    bfloat16.

    Arguments are checked before any work starts: ``n_samples >= 0``, ``batch_size >= 1``,
    ``precision``, ``device`` (it must exist on this machine) and ``out`` (a file path that can be
    written); a visible vector that cannot be normalised (values so large that its norm
    overflows float32, or so small that it underflows) is an error naming the file, row and column.
    """
    check_range(n_samples, "n_samples", minimum=0, integer=True)
    check_range(batch_size, "batch_size", minimum=1, integer=True)
    check_range(seed, "seed", integer=True)
    check_precision(precision)
    if device is not None:
        resolve_device(device)
    check_output_path(out)
    table = read_embeddings(data)
    model = load_model(model, device=device)
    names = parse_modalities(visible, model.modalities) if visible is not None else None
    needed = names if names is not None else [m for m in model.modalities if m in table.modalities]
    missing = [m for m in needed if m not in table.modalities]
    if missing:
        raise UnknownModalityError(
            f"{table.path}: visible modalities {missing} are not columns of the table "
            f"(it has {', '.join(table.modalities) or 'none'})."
        )
    calibrated = neighbours and model.calibration is not None
    with_error = neighbours and has_uncertainty_model(model)
    _check_output_columns(table, model.modalities, with_error)
    dims = dict(table.dims)
    dims.update({m + HAT_SUFFIX: model.config.input_dim for m in model.modalities})
    encoders = dict(table.encoders)
    encoders.update({m + HAT_SUFFIX: "prom3e" for m in model.modalities})
    rows = 0
    sigma_sum = 0.0
    error_sum = np.zeros(len(model.modalities))
    error_count = np.zeros(len(model.modalities))
    with (
        EmbeddingTableWriter(out, dims, encoders=encoders) as writer,
        progress_bar("Completing", total=table.num_rows, enabled=show_progress) as advance,
    ):
        offset = 0
        for index, batch in enumerate(table.iter_batches(batch_size=batch_size)):
            _check_visible_norms(batch, names, model.modalities, str(table.path), offset)
            offset += len(batch)
            result = model.complete(
                batch,
                visible=names,
                n_samples=n_samples,
                seed=mix_seed(seed, index),
                batch_size=min(batch_size, 1024),
                device=device,
                precision=precision,
                neighbours=None if neighbours else False,
            )
            errors = result.expected_error if with_error else None
            writer.write(_completed_batch(batch, result, errors, model.modalities))
            if errors is not None:
                error_sum += np.nansum(errors, axis=0)
                error_count += np.isfinite(errors).sum(axis=0)
            rows += len(batch)
            _release_freed_memory()
            sigma_sum += float(np.sum(result.sigma_l1, dtype=np.float64))
            advance(len(batch))
    return CompleteSummary(
        path=Path(out),
        rows=rows,
        visible=names,
        mean_sigma_l1=sigma_sum / rows if rows else float("nan"),
        mean_expected_error={
            name: float(error_sum[i] / error_count[i])
            for i, name in enumerate(model.modalities)
            if error_count[i] > 0
        },
        neighbours=calibrated,
    )


def _check_output_columns(table, modalities: Sequence[str], with_error: bool = False) -> None:
    """The columns ``complete`` writes must not be in the input already (a completed table)."""
    written = {m + HAT_SUFFIX for m in modalities} | {SIGMA_COLUMN}
    if with_error:
        written |= {m + ERROR_SUFFIX for m in modalities}
    clash = [n for n in [*table.modalities, *table.extra_columns] if n in written]
    if clash:
        raise TableFormatError(
            f"{table.path} already has column(s) {', '.join(clash)}, which complete writes; "
            "complete the original table, or drop or rename those columns."
        )


def _check_visible_norms(
    batch: EmbeddingBatch,
    visible: Sequence[str] | None,
    modalities: Sequence[str],
    source: str,
    offset: int,
) -> None:
    """Each vector the model will see must normalise to unit length (row and column named)."""
    for name in modalities:
        if name in batch.embeddings and (visible is None or name in visible):
            check_normalisable(
                batch.embeddings[name],
                batch.present[name],
                source=source,
                column=name,
                ids=batch.ids,
                offset=offset,
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
    batch: EmbeddingBatch, result, errors: np.ndarray | None, modalities: Sequence[str]
) -> EmbeddingBatch:
    """The input rows plus ``<modality>_hat`` columns, ``sigma_l1`` and, given ``errors``,
    ``<modality>_expected_error`` columns (encoders: the writer's)."""
    embeddings = dict(batch.embeddings)
    present = dict(batch.present)
    for i, name in enumerate(modalities):
        embeddings[name + HAT_SUFFIX] = np.ascontiguousarray(result.embeddings[:, i])
        present[name + HAT_SUFFIX] = np.ones(len(batch), dtype=bool)
    added = {SIGMA_COLUMN: pa.array(result.sigma_l1.astype(np.float32))}
    if errors is not None:
        for i, name in enumerate(modalities):
            added[name + ERROR_SUFFIX] = pa.array(errors[:, i].astype(np.float32))
    columns = batch.columns
    if columns is None or columns.num_columns == 0:
        columns = pa.table(added)
    else:
        for name, values in added.items():
            columns = columns.append_column(name, values)
    return EmbeddingBatch(ids=batch.ids, embeddings=embeddings, present=present, columns=columns)
