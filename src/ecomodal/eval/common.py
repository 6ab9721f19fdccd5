"""Shared plumbing of the evaluation tasks: loading models, the rows a task scores (one table
split by a ``split``, or a training table and a test table), unseen classes and fingerprints."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from ecomodal.data.splits import (
    SPLITS,
    check_split,
    make_split,
    random_split,
    spatial_block_split,
)
from ecomodal.errors import InvalidArgumentError, InvalidEmbeddingsError, TableFormatError
from ecomodal.io.batch import EmbeddingBatch
from ecomodal.io.reader import TableLike, as_batch
from ecomodal.models.prom3e import ProM3E
from ecomodal.options import check_range
from ecomodal.vectors import normalise

__all__ = [
    "SPLITS",
    "EvalRows",
    "check_counts",
    "check_split",
    "eval_rows",
    "eval_table",
    "fingerprint",
    "make_split",
    "model_inputs",
    "normalise",
    "resolve_model",
    "spatial_block_split",
    "unseen_classes",
]


def _table_name(data: Any, role: str = "") -> str:
    """How messages name a table: ``the [role ]table[ PATH]``."""
    where = f" {data}" if isinstance(data, str | os.PathLike) else ""
    return f"the {role + ' ' if role else ''}table{where}"


def eval_table(data: TableLike, task: str, *, role: str = "") -> EmbeddingBatch:
    """The rows of ``data`` (see :func:`~ecomodal.io.reader.as_batch`) for ``task``; a table
    without rows is an error (no task can score nothing). ``role`` (``train``, ``test``) names
    the table in messages."""
    batch = as_batch(data)
    if len(batch) == 0:
        raise InvalidEmbeddingsError(
            f"{task}: {_table_name(data, role)} has no rows; expected at least one row to evaluate."
        )
    return batch


#: The share of a training table's rows kept for calibration (``val``) when it has no ``split``
#: column with ``val`` rows: as in the one-table ``"random"`` split.
VAL_FRACTION = 0.1


@dataclass(frozen=True)
class EvalRows:
    """The rows a task evaluates: one table divided by ``split`` (a name of
    :data:`~ecomodal.data.splits.SPLITS`, labels per row, or ``None`` for tasks that then score
    every row), or (``tables`` set) a training table and a test table in one batch, the training
    rows first, with ``split`` their labels (see :func:`eval_rows`)."""

    batch: EmbeddingBatch
    split: str | np.ndarray | None = "published"
    #: How messages name the training and the test table, in the two-table form.
    tables: tuple[str, str] | None = None

    @property
    def two_tables(self) -> bool:
        """Whether the rows come from a training table and a separate test table."""
        return self.tables is not None

    @property
    def split_name(self) -> str | None:
        """The split as reports name it: its name, ``"given"`` (an array) or ``"train/test"``."""
        if self.two_tables:
            return "train/test"
        return self.split if isinstance(self.split, str) or self.split is None else "given"

    def sides(self, *, seed: Any = 0, block_deg: float = 10.0) -> np.ndarray:
        """``train``/``val``/``test`` per row (see :func:`~ecomodal.data.splits.make_split`)."""
        return make_split(self.batch, self.split, seed=seed, block_deg=block_deg)


def eval_rows(
    data: Any = None,
    train: TableLike | None = None,
    test: TableLike | None = None,
    *,
    task: str,
    split: str | np.ndarray | None = "published",
    columns: Sequence[str] = (),
    seed: Any = 0,
) -> EvalRows:
    """The rows ``task`` evaluates, from either form of its arguments: ``data`` (one table, or
    :class:`EvalRows` already resolved) divided by ``split``, or ``train`` and ``test``.

    Two tables: every row of ``test`` is a test row. The rows of ``train`` fit (probes), serve
    as reference (nearest-neighbour and mean baselines) and calibrate (``val`` rows: those its
    ``split`` column marks ``val``, else a seeded random tenth); its other rows, ``test`` ones
    included, are training rows. Both tables must hold the same embedding columns (same
    dimensions) and every name of ``columns`` (e.g. the label columns); the other extra columns
    are kept where both tables have them. Giving ``data`` with ``train``/``test``, only one of
    ``train`` and ``test``, or a ``split`` other than ``"published"`` with them is an error.
    """
    if isinstance(data, EvalRows) and train is None and test is None:
        return data
    if train is None and test is None:
        if data is None:
            raise InvalidArgumentError(
                f"{task}: give data= (one table divided by split=) or train= and test= "
                "(a training table and a test table)."
            )
        rows = EvalRows(eval_table(data, task), split)
        for name in columns:
            rows.batch.column(name)  # a missing column is an error before any work
        return rows
    if data is not None:
        raise InvalidArgumentError(
            f"{task}: give either data= (one table divided by split=) or train= and test=, "
            "not both."
        )
    if train is None or test is None:
        given, other = ("train", "test") if test is None else ("test", "train")
        raise InvalidArgumentError(
            f"{task}: {given}= needs {other}= too (a training table and a test table)."
        )
    if split is not None and not (isinstance(split, str) and split == "published"):
        shown = repr(split) if isinstance(split, str) else "an array"
        raise InvalidArgumentError(
            f"{task}: split={shown} divides one table; with train= and test= the test table is "
            "the test set, so leave split at 'published'."
        )
    return _two_tables(train, test, task, columns, seed)


def _two_tables(
    train: TableLike, test: TableLike, task: str, columns: Sequence[str], seed: Any
) -> EvalRows:
    names = {"train": _table_name(train, "train"), "test": _table_name(test, "test")}
    batches = {
        "train": eval_table(train, task, role="train"),
        "test": eval_table(test, task, role="test"),
    }
    for role, other in (("test", "train"), ("train", "test")):
        this, that = batches[role], batches[other]
        missing = [m for m in that.modalities if m not in this.embeddings]
        if missing:
            raise InvalidEmbeddingsError(
                f"{task}: {names[role]} has no embedding column {missing[0]!r}, which "
                f"{names[other]} has; both tables must hold the same modalities."
            )
        extra = [c for c in columns if this.columns is None or c not in this.columns.column_names]
        if extra:
            raise TableFormatError(
                f"{task}: {names[role]} has no column {extra[0]!r}; both tables need it."
            )
    for name, dim in batches["train"].dims.items():
        if batches["test"].dims[name] != dim:
            raise InvalidEmbeddingsError(
                f"{task}: the {name!r} embeddings are {dim}-d in {names['train']} but "
                f"{batches['test'].dims[name]}-d in {names['test']}; both tables must match."
            )
    sides = np.concatenate(
        [_training_sides(batches["train"], seed), np.full(len(batches["test"]), "test", object)]
    )
    return EvalRows(
        _joined(batches["train"], batches["test"], sides, names, task),
        sides,
        (names["train"], names["test"]),
    )


def _training_sides(batch: EmbeddingBatch, seed: Any) -> np.ndarray:
    """``train``/``val`` per row of a training table: ``val`` where its ``split`` column says so,
    else (no such column, or no ``val`` row) a seeded random :data:`VAL_FRACTION` of the rows."""
    if batch.columns is not None and "split" in batch.columns.column_names:
        given = np.asarray([str(v) for v in batch.column("split")], dtype=object)
        if (given == "val").any():
            return np.where(given == "val", "val", "train").astype(object)
    return random_split(len(batch), fractions={"val": VAL_FRACTION}, seed=seed)


def _joined(
    train: EmbeddingBatch,
    test: EmbeddingBatch,
    sides: np.ndarray,
    names: dict[str, str],
    task: str,
) -> EmbeddingBatch:
    """The training rows then the test rows in one batch: the extra columns both tables have,
    and ``split`` set to ``sides``."""
    shared = [
        c
        for c in ([] if train.columns is None else train.columns.column_names)
        if c != "split" and test.columns is not None and c in test.columns.column_names
    ]
    halves = []
    for part in (train, test):
        columns = part.columns.select(shared) if shared else None
        halves.append(EmbeddingBatch(part.ids, part.embeddings, part.present, columns=columns,
                                     encoders=part.encoders))  # fmt: skip
    try:
        both = EmbeddingBatch.concat(halves)
    except (TableFormatError, InvalidEmbeddingsError) as err:
        raise TableFormatError(
            f"{task}: cannot join {names['train']} and {names['test']}: {err}"
        ) from None
    split = pa.array(sides.astype(str))
    columns = (
        pa.table({"split": split})
        if both.columns is None
        else both.columns.append_column("split", split)
    )
    return EmbeddingBatch(both.ids, both.embeddings, both.present, columns, both.encoders)


def unseen_classes(
    labels: np.ndarray, train: np.ndarray, test: np.ndarray
) -> tuple[np.ndarray, dict[str, Any]]:
    """The ``test`` rows (a mask over ``labels``) whose class no ``train`` row has, and
    ``{"classes": [...], "rows": N}`` saying which classes and how many rows."""
    dropped = test & ~np.isin(labels, np.unique(labels[train]))
    classes = sorted({str(v) for v in labels[dropped]})
    return dropped, {"classes": classes, "rows": int(dropped.sum())}


def check_counts(values: Any, name: str, *, minimum: int = 1) -> list[int]:
    """``values`` (a sequence of whole numbers, e.g. ``shots`` or ``ks``) as ints, each checked
    to be ``>= minimum``; an empty sequence is an error too."""
    values = list(values)
    if not values:
        raise InvalidArgumentError(f"{name} must give at least one value; got none.")
    return [int(check_range(v, name, minimum=minimum, integer=True)) for v in values]


def check_optional_count(value: Any, name: str, *, minimum: int = 1) -> int | None:
    """``None``, or a whole number ``>= minimum``."""
    return None if value is None else int(check_range(value, name, minimum=minimum, integer=True))


def check_no_rows(rows: np.ndarray | int, task: str, what: str) -> None:
    """An error naming ``task`` and ``what`` the rows needed when ``rows`` (a mask, or a count)
    selects none."""
    if not np.any(rows):
        raise InvalidEmbeddingsError(f"{task}: no {what}; expected at least one such row.")


def resolve_model(model: Any) -> ProM3E | None:
    """``None``, a :class:`ProM3E`, or a spec for :func:`~ecomodal.models.factory.load_model`."""
    if model is None or isinstance(model, ProM3E):
        return model
    from ecomodal.models.factory import load_model

    return load_model(model)


def model_inputs(batch: EmbeddingBatch, model: ProM3E) -> tuple[np.ndarray, np.ndarray]:
    """Embeddings [N, M, D] and present mask [N, M] in the model's modality order."""
    return batch.stack(list(model.modalities), dim=model.config.input_dim)


def require_model(model: ProM3E | None, task: str) -> ProM3E:
    if model is None:
        raise InvalidArgumentError(
            f"{task} needs a ProM3E model (model=PATH or a ProM3E instance)."
        )
    return model


def fingerprint(batch: EmbeddingBatch) -> str:
    """A short content hash of a table: ids, embeddings, present masks (same data, same hash)."""
    digest = hashlib.blake2b(digest_size=16)
    digest.update("\0".join(str(i) for i in batch.ids).encode())
    for name in batch.modalities:
        digest.update(name.encode())
        digest.update(np.ascontiguousarray(batch.embeddings[name]).tobytes())
        digest.update(np.ascontiguousarray(batch.present[name]).tobytes())
    return f"blake2b:{digest.hexdigest()}"
