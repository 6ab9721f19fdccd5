"""Every way ecomodal splits rows: train/val/test labels, training/validation indices and folds.

- :func:`random_split`: seeded random labels by fractions (``"random"``; EcoBench-lite's ``split``).
- :func:`block_ids`: the square lat/lon block of each point (the unit of every spatial split).
- :func:`spatial_block_split`: whole blocks dealt to test, then val, by cumulative share of rows
  (``"spatial-block"``).
- :func:`random_block_split`: each block drawn into a split by its fractions (EcoBench-lite's
  ``split_spatial``).
- :func:`published_split`: a table's own ``split`` column, checked (``"published"``).
- :func:`make_split`: one of the above by name for an embedding batch (what evaluation uses).
- :func:`split_rows`: training and validation row indices for the data modules.
- :func:`random_folds` (stratified) and :func:`spatial_block_folds`: K-fold indices.

Every function is seeded (``seed`` is anything :func:`numpy.random.default_rng` takes) and the same
arguments always give the same split.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from ecomodal.deprecation import renamed_arguments
from ecomodal.errors import (
    InvalidArgumentError,
    InvalidEmbeddingsError,
    InvalidInputError,
    TableFormatError,
)

if TYPE_CHECKING:
    from ecomodal.io.batch import EmbeddingBatch

SPLITS = ("published", "spatial-block", "random")
SPLIT_NAMES = ("train", "val", "test")
Seed = int | Sequence[int]

__all__ = [
    "SPLITS",
    "SPLIT_NAMES",
    "block_ids",
    "check_split",
    "make_split",
    "published_split",
    "random_block_split",
    "random_folds",
    "random_split",
    "spatial_block_folds",
    "spatial_block_split",
    "split_rows",
]


# ---------------------------------------------------------------------------- labels
def random_split(
    n: int,
    *,
    fractions: Mapping[str, float] | None = None,
    rest: str = "train",
    seed: Seed = 0,
) -> np.ndarray:
    """``train``/``val``/``test`` labels [n] (object array) drawn at random with ``seed``.

    The rows are permuted once; the first ``round(fraction * n)`` go to the first split of
    ``fractions``, the next to the second, and so on (in the mapping's order); the rest get
    ``rest``. The default, ``{"test": 0.2, "val": 0.1}`` with the rest ``train``, is evaluation's
    ``"random"`` split.
    """
    if fractions is None:
        fractions = {"test": 0.2, "val": 0.1}
    order = np.random.default_rng(seed).permutation(n)
    labels = np.full(n, rest, dtype=object)
    start = 0
    for name, fraction in fractions.items():
        count = int(round(fraction * n))
        labels[order[start : start + count]] = name
        start += count
    return labels


def block_ids(lat: np.ndarray, lon: np.ndarray, block_size_deg: float) -> np.ndarray:
    """Dense block id [N] in ``[0, n_blocks)`` of each point: points share an id exactly when
    they fall in the same ``block_size_deg`` x ``block_size_deg`` cell anchored at (-90, -180).

    Longitudes are wrapped to [-180, 180); the error names the first bad row.
    """
    lat = np.asarray(lat, dtype=np.float64).reshape(-1)
    lon = np.asarray(lon, dtype=np.float64).reshape(-1)
    if lat.shape != lon.shape:
        raise InvalidInputError(
            f"lat and lon must have the same length; got {lat.shape[0]} and {lon.shape[0]}."
        )
    bad = ~np.isfinite(lat) | ~np.isfinite(lon) | (np.abs(lat) > 90)
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise InvalidInputError(
            f"Row {row}: coordinates must be finite with lat in [-90, 90]; "
            f"got lat={lat[row]}, lon={lon[row]} ({int(bad.sum())} bad rows in all)."
        )
    if not np.isfinite(block_size_deg) or block_size_deg <= 0:
        raise InvalidArgumentError(
            f"block_size_deg must be a positive number of degrees; got {block_size_deg}."
        )
    lon = np.mod(lon + 180.0, 360.0) - 180.0
    row_index = np.floor((lat + 90.0) / block_size_deg).astype(np.int64)
    col_index = np.floor((lon + 180.0) / block_size_deg).astype(np.int64)
    _, block = np.unique(np.stack([row_index, col_index], axis=1), axis=0, return_inverse=True)
    return block.reshape(-1)


def spatial_block_split(
    lat: np.ndarray,
    lon: np.ndarray,
    *,
    block_deg: float = 10.0,
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
    seed: Seed = 0,
) -> np.ndarray:
    """``train``/``val``/``test`` per row, whole ``block_deg`` x ``block_deg`` cells at a time.

    Cells are shuffled with ``seed`` and given to test, then val, until each holds about its
    fraction of the rows, so nearby points never fall on both sides of a split.
    """
    try:
        block = block_ids(lat, lon, block_deg)
    except ValueError as err:
        raise InvalidEmbeddingsError(f"Spatial split: {err}") from None
    counts = np.bincount(block)
    order = np.random.default_rng(seed).permutation(len(counts))
    cumulative = np.cumsum(counts[order]) / len(lat)
    cell_split = np.full(len(counts), "train", dtype=object)
    test_cells = order[cumulative <= test_fraction]
    if len(test_cells) == 0:
        test_cells = order[:1]
    cell_split[test_cells] = "test"
    rest = order[len(test_cells) :]
    rest_cumulative = np.cumsum(counts[rest]) / len(lat)
    cell_split[rest[rest_cumulative <= val_fraction]] = "val"
    return cell_split[block]


def random_block_split(
    lat: np.ndarray,
    lon: np.ndarray,
    *,
    block_deg: float = 5.0,
    fractions: Mapping[str, float] | None = None,
    seed: Seed = 0,
) -> np.ndarray:
    """``train``/``val``/``test`` per row by whole ``block_deg`` blocks: each block draws one
    uniform number (seeded) and falls in the split whose share of [0, 1) it hits (``fractions``
    in order, default train 0.8, val 0.1, test the rest), so no test point shares a block with a
    training point. Splits hold about their fraction of the blocks, not of the rows."""
    if fractions is None:
        fractions = {"train": 0.8, "val": 0.1, "test": 0.1}
    names = list(fractions)
    block = block_ids(lat, lon, block_deg)
    draw = np.random.default_rng(seed).random(int(block.max()) + 1)
    cuts = np.cumsum([fractions[name] for name in names[:-1]])
    labels = np.array(names, dtype=object)[np.searchsorted(cuts, draw, side="right")]
    return labels[block]


def published_split(labels: Any) -> np.ndarray:
    """A table's own ``split`` column as labels, checked to hold only train, val and test."""
    labels = np.asarray(labels, dtype=object)
    unknown = sorted({str(v) for v in labels} - set(SPLIT_NAMES))
    if unknown:
        raise TableFormatError(
            f"The 'split' column holds {unknown}; expected only train, val and test."
        )
    return labels


def check_split(split: Any) -> None:
    """A split name must be one of :data:`SPLITS` (an array of labels is checked by
    :func:`make_split` against the table's length)."""
    if isinstance(split, str) and split not in SPLITS:
        raise InvalidArgumentError(
            f"Unknown split {split!r}; expected one of: {', '.join(SPLITS)}."
        )


def make_split(
    batch: EmbeddingBatch,
    split: str | np.ndarray = "published",
    *,
    seed: Seed = 0,
    block_deg: float = 10.0,
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
) -> np.ndarray:
    """``train``/``val``/``test`` per row of ``batch``: the table's ``split`` column
    (``"published"``), whole spatial cells (``"spatial-block"``, from the ``lat``/``lon``
    columns), a seeded random split (``"random"``), or a given array of labels."""
    check_split(split)
    if not isinstance(split, str):
        labels = np.asarray(split, dtype=object)
        if labels.shape != (len(batch),):
            raise InvalidArgumentError(
                f"split array has shape {labels.shape}; expected ({len(batch)},)."
            )
        return labels
    if split == "published":
        return published_split(batch.column("split"))
    if split == "spatial-block":
        lat, lon = batch.column("lat"), batch.column("lon")
        return spatial_block_split(
            lat,
            lon,
            block_deg=block_deg,
            val_fraction=val_fraction,
            test_fraction=test_fraction,
            seed=seed,
        )
    fractions = {"test": test_fraction, "val": val_fraction}  # "random"
    return random_split(len(batch), fractions=fractions, seed=seed)


# ---------------------------------------------------------------------------- indices
def split_rows(
    num_rows: int,
    *,
    split_labels: Sequence[str] | np.ndarray | None = None,
    val_fraction: float = 0.1,
    seed: Seed = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Indices of the training and validation rows.

    With ``split_labels`` (a ``split`` column), rows labelled ``train`` train and ``val`` validate;
    rows with other labels (``test``) are left out. Without them (or without ``val`` rows), a
    seeded random ``val_fraction`` (at least one row) of the ``train`` rows (or of all rows).
    """
    base = np.arange(num_rows)
    if split_labels is not None:
        labels = np.asarray(split_labels).astype(str)
        train = np.flatnonzero(labels == "train")
        val = np.flatnonzero(labels == "val")
        if len(train) and len(val):
            return train, val
        if len(train):
            base = train
    order = np.random.default_rng(seed).permutation(len(base))
    n_val = max(1, int(round(val_fraction * len(base)))) if val_fraction > 0 else 0
    return np.sort(base[order[n_val:]]), np.sort(base[order[:n_val]])


# ---------------------------------------------------------------------------- folds
def _check_n_folds(n_folds: Any) -> int:
    if int(n_folds) != n_folds or n_folds < 2:
        raise InvalidArgumentError(f"n_folds must be an integer >= 2; got {n_folds}.")
    return int(n_folds)


def random_folds(y: Any, n_folds: int = 5, seed: int = 0) -> np.ndarray:
    """Fold index [N] for stratified random K-fold: each fold keeps the class shares of ``y``
    (scikit-learn's shuffled ``StratifiedKFold`` with ``random_state=seed``)."""
    from sklearn.model_selection import StratifiedKFold

    y = np.asarray(y).reshape(-1)
    n_folds = _check_n_folds(n_folds)
    folds = np.empty(len(y), dtype=np.int64)
    splitter = StratifiedKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    for fold, (_, test) in enumerate(splitter.split(np.zeros((len(y), 1)), y)):
        folds[test] = fold
    return folds


@renamed_arguments(block_size_deg="block_deg")
def spatial_block_folds(
    lat: np.ndarray,
    lon: np.ndarray,
    block_deg: float,
    n_folds: int = 5,
    seed: Seed = 0,
) -> np.ndarray:
    """Fold index in ``[0, n_folds)`` for each point, assigned by spatial block.

    Blocks are square cells of ``block_deg`` degrees anchored at (-90, -180) (:func:`block_ids`).
    They are shuffled with ``seed`` and dealt one at a time to the fold that currently holds the
    fewest points, so folds are roughly balanced in size and the same seed gives the same folds.

    Args:
        lat: latitudes in degrees, [N].
        lon: longitudes in degrees, [N] (wrapped to [-180, 180)).
        block_deg: side of a block in degrees (> 0); ``block_size_deg=`` is its old name.
        n_folds: number of folds (>= 2, at most the number of occupied blocks).
        seed: seed of the block shuffle.

    Returns:
        int64 array [N] of fold indices.
    """
    n_folds = _check_n_folds(n_folds)
    block = block_ids(lat, lon, block_deg)
    counts = np.bincount(block)
    if len(counts) < n_folds:
        raise InvalidArgumentError(
            f"Only {len(counts)} blocks of {block_deg} degrees hold points, fewer than "
            f"n_folds={n_folds}; use smaller blocks or fewer folds."
        )
    order = np.random.default_rng(seed).permutation(len(counts))
    fold_of_block = np.empty(len(counts), dtype=np.int64)
    fold_sizes = np.zeros(n_folds, dtype=np.int64)
    for b in order:
        fold = int(np.argmin(fold_sizes))  # ties go to the lowest fold index
        fold_of_block[b] = fold
        fold_sizes[fold] += counts[b]
    return fold_of_block[block]
