"""A map (per-cell values of a grid, one or more bands) and its GeoTIFF output, written window by
window so that only one block of rows is ever held as a raster."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ecomodal.errors import MapError, UnknownBandError
from ecomodal.io.rasters import GeoTiffLayout, open_geotiff_writer
from ecomodal.maps.grid import Grid


@dataclass
class GridMap:
    """Band values [bands, num_cells] over a grid's cells, band names and metadata tags."""

    grid: Grid
    values: np.ndarray
    band_names: list[str]
    tags: dict[str, Any] = field(default_factory=dict)
    title: str = ""

    def __post_init__(self) -> None:
        self.values = np.asarray(self.values, dtype=np.float32)
        if self.values.ndim == 1:
            self.values = self.values[None]
        if self.values.shape != (len(self.band_names), self.grid.num_cells):
            raise MapError(
                f"map values have shape {self.values.shape}; expected "
                f"({len(self.band_names)} bands, {self.grid.num_cells} cells)."
            )

    def band(self, name: str | int = 0) -> np.ndarray:
        """One band's per-cell values, by name or index."""
        if isinstance(name, str):
            if name not in self.band_names:
                raise UnknownBandError(f"The map has no band {name!r}; it has {self.band_names}.")
            name = self.band_names.index(name)
        return self.values[name]


def write_map(
    path: str | os.PathLike[str],
    grid_map: GridMap,
    *,
    tags: Mapping[str, Any] | None = None,
    block_size: int = 256,
) -> Path:
    """Write ``grid_map`` as a tiled, DEFLATE-compressed EPSG:4326 GeoTIFF (NaN = no data).

    Band descriptions are the band names; the tags hold the map's metadata (query, method,
    encoders, grid) plus ``tags``. Rows are written ``block_size`` at a time, atomically.
    """
    from rasterio.windows import Window

    grid = grid_map.grid
    layout = GeoTiffLayout(
        height=grid.height,
        width=grid.width,
        west=grid.west,
        north=grid.north,
        cell_width=grid.resolution,
        cell_height=grid.resolution,
        band_names=list(grid_map.band_names),
    )
    all_tags = {"grid": grid.definition(), **grid_map.tags, **(tags or {})}
    if grid_map.title:
        all_tags.setdefault("title", grid_map.title)
    count = len(grid_map.band_names)
    with open_geotiff_writer(path, layout, tags=all_tags, block_size=block_size) as dataset:
        for row0 in range(0, grid.height, block_size):
            row1 = min(row0 + block_size, grid.height)
            cells = grid.cells_in_rows(row0, row1)
            block = np.full((count, (row1 - row0) * grid.width), np.nan, dtype=np.float32)
            block[:, grid.cell_index[cells] - row0 * grid.width] = grid_map.values[:, cells]
            window = Window(0, row0, grid.width, row1 - row0)
            dataset.write(block.reshape(count, row1 - row0, grid.width), window=window)
    return Path(path)
