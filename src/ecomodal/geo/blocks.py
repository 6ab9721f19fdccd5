"""Spatial-block fold assignment for cross-validation that respects spatial autocorrelation.

Points are binned into square lat/lon blocks of ``block_size_deg``; whole blocks (never single
points) are dealt to folds, so a test fold never shares a block with its training data.
"""

from __future__ import annotations

import numpy as np


def block_ids(lat: np.ndarray, lon: np.ndarray, block_size_deg: float) -> np.ndarray:
    """Dense block id [N] in ``[0, n_blocks)`` of each point: points share an id exactly when
    they fall in the same ``block_size_deg`` x ``block_size_deg`` cell anchored at (-90, -180).

    Longitudes are wrapped to [-180, 180); the error names the first bad row.
    """
    lat = np.asarray(lat, dtype=np.float64).reshape(-1)
    lon = np.asarray(lon, dtype=np.float64).reshape(-1)
    if lat.shape != lon.shape:
        raise ValueError(
            f"lat and lon must have the same length; got {lat.shape[0]} and {lon.shape[0]}."
        )
    bad = ~np.isfinite(lat) | ~np.isfinite(lon) | (np.abs(lat) > 90)
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise ValueError(
            f"Row {row}: coordinates must be finite with lat in [-90, 90]; "
            f"got lat={lat[row]}, lon={lon[row]} ({int(bad.sum())} bad rows in all)."
        )
    if not np.isfinite(block_size_deg) or block_size_deg <= 0:
        raise ValueError(
            f"block_size_deg must be a positive number of degrees; got {block_size_deg}."
        )
    lon = np.mod(lon + 180.0, 360.0) - 180.0
    row_index = np.floor((lat + 90.0) / block_size_deg).astype(np.int64)
    col_index = np.floor((lon + 180.0) / block_size_deg).astype(np.int64)
    _, block = np.unique(np.stack([row_index, col_index], axis=1), axis=0, return_inverse=True)
    return block.reshape(-1)


def spatial_blocks(
    lat: np.ndarray,
    lon: np.ndarray,
    block_size_deg: float,
    n_folds: int = 5,
    seed: int = 0,
) -> np.ndarray:
    """Fold index in ``[0, n_folds)`` for each point, assigned by spatial block.

    Blocks are square cells of ``block_size_deg`` degrees anchored at (-90, -180). They are
    shuffled with ``seed`` and dealt one at a time to the fold that currently holds the fewest
    points, so folds are roughly balanced in size and the same seed gives the same folds.

    Args:
        lat: latitudes in degrees, [N].
        lon: longitudes in degrees, [N] (wrapped to [-180, 180)).
        block_size_deg: side of a block in degrees (> 0).
        n_folds: number of folds (>= 2, at most the number of occupied blocks).
        seed: seed of the block shuffle.

    Returns:
        int64 array [N] of fold indices.
    """
    if int(n_folds) != n_folds or n_folds < 2:
        raise ValueError(f"n_folds must be an integer >= 2; got {n_folds}.")
    block = block_ids(lat, lon, block_size_deg)
    counts = np.bincount(block)
    if len(counts) < n_folds:
        raise ValueError(
            f"Only {len(counts)} blocks of {block_size_deg} degrees hold points, fewer than "
            f"n_folds={n_folds}; use smaller blocks or fewer folds."
        )
    order = np.random.default_rng(seed).permutation(len(counts))
    fold_of_block = np.empty(len(counts), dtype=np.int64)
    fold_sizes = np.zeros(int(n_folds), dtype=np.int64)
    for b in order:
        fold = int(np.argmin(fold_sizes))  # ties go to the lowest fold index
        fold_of_block[b] = fold
        fold_sizes[fold] += counts[b]
    return fold_of_block[block]
