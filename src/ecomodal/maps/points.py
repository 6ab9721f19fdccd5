"""Occurrence points for maps: read from CSV/Parquet or given as (lat, lon) arrays, checked row by
row."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from ecomodal.encoders.location import check_coordinates
from ecomodal.errors import InputTypeError, TableFormatError

__all__ = ["Points", "points_lat_lon", "points_source", "read_points"]


def read_points(path: str | os.PathLike[str]) -> tuple[np.ndarray, np.ndarray, Any]:
    """(lat, lon, table) from an occurrence CSV/Parquet with ``lat``/``lon`` columns (common
    aliases such as ``decimalLatitude`` are understood); a bad coordinate is an error naming
    its row."""
    from ecomodal.io.records import read_records

    table = read_records(path)
    missing = [name for name in ("lat", "lon") if name not in table.column_names]
    if missing:
        raise TableFormatError(
            f"{path}: occurrences need lat and lon columns; missing {missing} "
            f"(columns: {', '.join(table.column_names)})."
        )
    if table.num_rows == 0:
        raise TableFormatError(f"{path} has no occurrences (a header but no rows).")
    # read_records has refused non-numeric coordinate types and made the rest float (text -> NaN)
    lat, lon = (
        np.asarray(table.column(name).to_numpy(zero_copy_only=False), dtype=np.float64)
        for name in ("lat", "lon")
    )
    _check_points(lat, lon, path)
    return lat, lon, table


def _check_points(lat: np.ndarray, lon: np.ndarray, source: Any) -> None:
    """Coordinates in degrees, one pair per point: an error names the first bad row."""
    if lat.shape != lon.shape or lat.ndim != 1:
        raise TableFormatError(
            f"{source}: lat and lon must be two 1-D sequences of the same length; got shapes "
            f"{lat.shape} and {lon.shape}."
        )
    if lat.size == 0:
        raise TableFormatError(f"{source}: no points; expected at least one (lat, lon).")
    _, _, errors = check_coordinates(lat, lon)
    if errors:
        row, column, reason = errors[0]
        raise TableFormatError(f"{source}: row {row}, column {column!r}: {reason}.")


Points = str | os.PathLike[str] | tuple[Sequence[float], Sequence[float]]


def points_lat_lon(points: Points) -> tuple[np.ndarray, np.ndarray]:
    """(lat, lon) float64 arrays of an occurrence file (see :func:`read_points`) or of
    (lat, lon) sequences."""
    if isinstance(points, str | os.PathLike):
        lat, lon, _ = read_points(points)
        return lat, lon
    try:
        lat, lon = (np.asarray(v, dtype=np.float64) for v in points)
    except (TypeError, ValueError):
        raise InputTypeError(
            "points must be an occurrence file or (lat, lon) sequences of numbers; got "
            f"{type(points).__name__}."
        ) from None
    _check_points(lat, lon, "points")
    return lat, lon


def points_source(points: Points) -> str:
    """`` in PATH`` for points read from a file, else nothing (for descriptions)."""
    return f" in {points}" if isinstance(points, str | os.PathLike) else ""
