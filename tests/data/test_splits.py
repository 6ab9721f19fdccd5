"""One splits module: every split pinned to the rows it gave before the move, old names kept."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from ecomodal.data import splits
from ecomodal.errors import InvalidArgumentError, InvalidInputError, TableFormatError
from ecomodal.io.tables import EmbeddingBatch

LAT = np.array([10.5, 11.2, -33.0, 48.1, 48.9, 0.2, 60.0, -10.0, 35.0, 36.0, 12.0, -45.0])
LON = np.array([20.0, 21.0, 151.0, 2.3, 2.9, -60.0, 10.0, 120.0, -100.0, -101.0, 190.0, 170.0])
T, V, S = "train", "val", "test"


def _batch(**columns) -> EmbeddingBatch:
    n = len(next(iter(columns.values())))
    stacked = np.zeros((n, 1, 2), np.float32)
    return EmbeddingBatch.from_stacked(
        [f"r{i}" for i in range(n)], stacked, None, ["loc"], columns=pa.table(columns)
    )


def test_splits_give_the_rows_they_gave_before_the_move():
    """Expected arrays computed with the seven functions at their old homes (commit a7522a5)."""
    assert splits.block_ids(LAT, LON, 5.0).tolist() == [5, 5, 1, 8, 8, 3, 9, 2, 7, 6, 4, 0]
    spatial = splits.spatial_block_split(
        LAT, LON, block_deg=5.0, val_fraction=0.2, test_fraction=0.3, seed=1
    )
    assert spatial.tolist() == [T, T, T, S, S, T, T, T, V, T, S, V]
    ecobench_random = splits.random_split(
        12, fractions={"train": 0.8, "val": 0.1}, rest="test", seed=[3, 1]
    )
    assert ecobench_random.tolist() == [T, T, T, S, T, T, V, T, T, T, T, T]
    ecobench_spatial = splits.random_block_split(LAT, LON, block_deg=5.0, seed=[3, 2])
    assert ecobench_spatial.tolist() == [T] * 7 + [V] + [T] * 4
    folds = splits.spatial_block_folds(LAT, LON, 5.0, 3, seed=2)
    assert folds.tolist() == [2, 2, 1, 0, 0, 0, 1, 0, 2, 0, 1, 1]
    train, val = splits.split_rows(12, val_fraction=0.25, seed=4)
    assert (train.tolist(), val.tolist()) == ([2, 3, 4, 5, 6, 7, 9, 10, 11], [0, 1, 8])
    labels = [T] * 9 + [S] * 3
    train, val = splits.split_rows(12, split_labels=labels, val_fraction=0.25, seed=4)
    assert (train.tolist(), val.tolist()) == ([2, 3, 4, 5, 6, 7, 8], [0, 1])
    y = np.r_[np.ones(4, int), np.zeros(8, int)]
    assert splits.random_folds(y, 4, seed=5).tolist() == [0, 1, 2, 3, 1, 2, 1, 3, 0, 0, 3, 2]


def test_old_import_paths_give_the_same_splits():
    from ecomodal.data.datamodules import split_rows
    from ecomodal.data.ecobench import random_split, spatial_split
    from ecomodal.eval import make_split as eval_make_split
    from ecomodal.eval.common import make_split, spatial_block_split
    from ecomodal.geo.blocks import block_ids, spatial_blocks
    from ecomodal.maps.sdm import random_folds

    assert make_split is eval_make_split is splits.make_split
    assert spatial_block_split is splits.spatial_block_split
    assert split_rows is splits.split_rows and random_folds is splits.random_folds
    assert block_ids is splits.block_ids
    rng = np.random.default_rng(0)
    lat, lon = rng.uniform(-80, 80, 3000), rng.uniform(-180, 180, 3000)
    np.testing.assert_array_equal(
        random_split(3000, 7),
        splits.random_split(3000, fractions={"train": 0.8, "val": 0.1}, rest="test", seed=[7, 1]),
    )
    np.testing.assert_array_equal(
        spatial_split(lat, lon, 7), splits.random_block_split(lat, lon, seed=[7, 2])
    )
    with pytest.warns(DeprecationWarning, match="block_size_deg"):
        old = spatial_blocks(lat, lon, block_size_deg=10.0, n_folds=4, seed=1)
    np.testing.assert_array_equal(old, splits.spatial_block_folds(lat, lon, 10.0, 4, seed=1))


def test_make_split_random_and_published():
    batch = _batch(split=[T, V, S, T, T, S, T, V, T, T], lat=[0.0] * 10, lon=[0.0] * 10)
    assert splits.make_split(batch, "published").tolist() == batch.columns["split"].to_pylist()
    labels = splits.make_split(batch, "random", seed=0)
    order = np.random.default_rng(0).permutation(10)
    assert set(labels[order[:2]]) == {S} and labels[order[2]] == V
    assert (labels == T).sum() == 7
    assert splits.make_split(batch, "spatial-block").tolist() == [S] * 10
    with pytest.raises(InvalidArgumentError, match="expected \\(10,\\)"):
        splits.make_split(batch, np.array([T, V]))
    with pytest.raises(TableFormatError, match="no column 'split'"):
        splits.make_split(_batch(lat=[0.0]), "published")
    with pytest.raises(TableFormatError, match="no column 'lon'"):
        splits.make_split(_batch(lat=[0.0]), "spatial-block")


def test_split_errors_are_ecomodal_errors():
    with pytest.raises(InvalidInputError, match="Row 1"):
        splits.block_ids([10, 95], [0, 0], 1.0)
    with pytest.raises(InvalidArgumentError, match="n_folds"):
        splits.random_folds([0, 1, 0, 1], n_folds=1)
    with pytest.raises(InvalidArgumentError, match="Only 1 blocks"):
        splits.spatial_block_folds([10.1, 10.2], [0.1, 0.2], 1.0, 2)
