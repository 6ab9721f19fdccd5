"""Regular lat/lon grids (EPSG:4326) over a bounding box or the globe, land cells only by default.

A :class:`Grid` is the raster layout (west/north edges, cell size, width x height) plus the cells
that take part (``mask``); per-cell arrays are ordered row-major over those cells (north to south,
west to east), which is how maps are written window by window.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from ecomodal.errors import GridError
from ecomodal.io.atomic import atomic_path

GLOBE = (-180.0, -90.0, 180.0, 90.0)
#: Bump when the land test changes, so that cached masks are recomputed.
LAND_MASK_VERSION = 1


@dataclass(frozen=True, eq=False)
class Grid:
    """A north-up grid of ``height`` x ``width`` cells of ``resolution`` degrees from (west, north).

    ``mask`` [height, width] marks the cells in the grid (all cells, or land cells only).
    """

    west: float
    north: float
    resolution: float
    width: int
    height: int
    land_only: bool
    mask: np.ndarray = field(repr=False)

    # ------------------------------------------------------------------ cells
    @cached_property
    def cell_index(self) -> np.ndarray:
        """Flat indices (row * width + col) of the grid's cells, row-major."""
        return np.flatnonzero(self.mask.ravel())

    @property
    def num_cells(self) -> int:
        return int(self.cell_index.size)

    @property
    def rows(self) -> np.ndarray:
        return self.cell_index // self.width

    @property
    def cols(self) -> np.ndarray:
        return self.cell_index % self.width

    @property
    def lat(self) -> np.ndarray:
        """Latitude of each cell centre (degrees)."""
        return self.north - (self.rows + 0.5) * self.resolution

    @property
    def lon(self) -> np.ndarray:
        """Longitude of each cell centre (degrees)."""
        return self.west + (self.cols + 0.5) * self.resolution

    @property
    def south(self) -> float:
        return self.north - self.height * self.resolution

    @property
    def east(self) -> float:
        return self.west + self.width * self.resolution

    @property
    def bbox(self) -> tuple[float, float, float, float]:
        """(west, south, east, north) of the whole raster."""
        return (self.west, self.south, self.east, self.north)

    def cells_in_rows(self, row_start: int, row_stop: int) -> slice:
        """The slice of per-cell arrays whose cells lie in raster rows [row_start, row_stop)."""
        return slice(
            int(np.searchsorted(self.cell_index, row_start * self.width)),
            int(np.searchsorted(self.cell_index, row_stop * self.width)),
        )

    def cell_of(self, lat: Any, lon: Any) -> np.ndarray:
        """The position in the per-cell arrays of the cell holding each point; -1 where the point
        falls outside the grid or in a cell left out (sea, with ``land_only``)."""
        lat = np.asarray(lat, dtype=np.float64)
        lon = np.mod(np.asarray(lon, dtype=np.float64) + 180.0, 360.0) - 180.0
        col = np.floor((lon - self.west) / self.resolution).astype(np.int64)
        row = np.floor((self.north - lat) / self.resolution).astype(np.int64)
        row = np.where(lat == self.south, self.height - 1, row)  # the southern edge is inside
        inside = (row >= 0) & (row < self.height) & (col >= 0) & (col < self.width)
        flat = np.where(inside, row * self.width + col, -1)
        position = np.searchsorted(self.cell_index, flat)
        found = inside & (position < self.num_cells)
        found[found] = self.cell_index[position[found]] == flat[found]
        return np.where(found, position, -1)

    def to_image(self, values: np.ndarray, fill: float = np.nan) -> np.ndarray:
        """Per-cell values [..., num_cells] as a raster [..., height, width] (``fill`` elsewhere)."""
        values = np.asarray(values)
        out = np.full((*values.shape[:-1], self.height * self.width), fill, dtype=np.float32)
        out[..., self.cell_index] = values
        return out.reshape(*values.shape[:-1], self.height, self.width)

    # ------------------------------------------------------------------ identity
    def definition(self) -> dict[str, Any]:
        """What defines the grid (JSON-ready): the cache key and the map metadata use it."""
        return {
            "crs": "EPSG:4326",
            "west": self.west,
            "north": self.north,
            "resolution": self.resolution,
            "width": self.width,
            "height": self.height,
            "land_only": self.land_only,
            "cells": self.num_cells,
        }

    @cached_property
    def fingerprint(self) -> str:
        """A short hash of the grid's definition and cells."""
        digest = hashlib.sha256(json.dumps(self.definition(), sort_keys=True).encode())
        digest.update(np.packbits(self.mask).tobytes())
        return digest.hexdigest()[:16]


def make_grid(
    bbox: Sequence[float] | None = None,
    *,
    resolution: float,
    land_only: bool = True,
) -> Grid:
    """A grid of ``resolution``-degree cells over ``bbox`` = (west, south, east, north) in degrees,
    or the globe when ``bbox`` is None.

    The grid starts at the box's north-west corner and covers the whole box (the last row and
    column may reach past its south and east edges). ``land_only`` keeps the cells whose centre
    is on land according to the offline ``global_land_mask`` package.
    """
    if not np.isfinite(resolution) or resolution <= 0 or resolution > 180:
        raise GridError(f"resolution must be in (0, 180] degrees; got {resolution!r}.")
    west, south, east, north = (float(v) for v in (GLOBE if bbox is None else bbox))
    if not (-180.0 <= west < east <= 180.0) or not (-90.0 <= south < north <= 90.0):
        raise GridError(
            f"bbox must be (west, south, east, north) with -180 <= west < east <= 180 and "
            f"-90 <= south < north <= 90; got {tuple(bbox or GLOBE)}."
        )
    tolerance = 1e-9 * max(1.0, 1 / resolution)
    width = max(1, int(np.ceil((east - west) / resolution - tolerance)))
    height = max(1, int(np.ceil((north - south) / resolution - tolerance)))
    if width * height > 2**31:
        raise GridError(f"a {width} x {height} grid is too large; choose a coarser resolution.")
    mask = np.ones((height, width), dtype=bool)
    if land_only:
        mask = _cached_land_mask(west, north, float(resolution), width, height)
        if not mask.any():
            raise GridError(
                f"The bbox {tuple(bbox or GLOBE)} has no land cells at {resolution} degrees; "
                "pass land_only=False to map sea cells too."
            )
    return Grid(west, north, float(resolution), width, height, bool(land_only), mask)


def grid_from_definition(definition: Mapping[str, Any]) -> Grid:
    """The grid that :meth:`Grid.definition` describes (e.g. in a grid cache's key); a
    GridStoreError when rebuilding it no longer gives its cells."""
    from ecomodal.errors import GridStoreError

    west, north = float(definition["west"]), float(definition["north"])
    res = float(definition["resolution"])
    bbox = (west, north - definition["height"] * res, west + definition["width"] * res, north)
    grid = make_grid(bbox, resolution=res, land_only=bool(definition["land_only"]))
    if grid.num_cells != definition["cells"]:
        raise GridStoreError(
            f"the cached grid has {definition['cells']} cells but rebuilding it gives "
            f"{grid.num_cells}; delete the grid cache."
        )
    return grid


def default_cache_dir() -> Path:
    """``$ECOMODAL_CACHE_DIR/grids`` (or the user cache folder): grid masks and embeddings."""
    from ecomodal.geo.covariates import cache_dir

    return cache_dir() / "grids"


def _cached_land_mask(
    west: float, north: float, resolution: float, width: int, height: int
) -> np.ndarray:
    """The land mask of a grid, computed once and kept (bit-packed) in the cache folder: the
    1 km mask of ``global_land_mask`` takes seconds and about 1 GB to load."""
    key = json.dumps([west, north, resolution, width, height, LAND_MASK_VERSION]).encode()
    path = default_cache_dir() / f"land-{hashlib.sha256(key).hexdigest()[:16]}.npy"
    if path.is_file():
        with contextlib.suppress(OSError, ValueError):
            packed = np.load(path, allow_pickle=False)
            return np.unpackbits(packed, count=width * height).astype(bool).reshape(height, width)
    mask = _land_mask(west, north, resolution, width, height)
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        np.save(handle, np.packbits(mask.ravel()))
    return mask


def _land_mask(west: float, north: float, resolution: float, width: int, height: int) -> np.ndarray:
    """True where a cell centre is on land (row by row block, so memory stays bounded)."""
    from global_land_mask import globe

    lon = west + (np.arange(width) + 0.5) * resolution
    lon = np.mod(lon + 180.0, 360.0) - 180.0
    mask = np.zeros((height, width), dtype=bool)
    step = max(1, 2_000_000 // width)
    for start in range(0, height, step):
        stop = min(start + step, height)
        lat = north - (np.arange(start, stop) + 0.5) * resolution
        lat = np.clip(lat, -90.0, 90.0)
        grid_lat, grid_lon = np.meshgrid(lat, lon, indexing="ij")
        mask[start:stop] = globe.is_land(grid_lat, grid_lon)
    return mask
