"""Web-map tiles (XYZ, Web Mercator, 256 px PNG) drawn from a layer held in memory.

morecantile gives each tile's bounds; each pixel centre is projected back to lat/lon and takes
its raster cell's value (nearest cell), coloured through the layer's colour map and transparent
where there is no data. The maps ecomodal serves are small EPSG:4326 grids already in memory, so
a numpy lookup replaces a per-request GDAL warp (rio-tiler's path): ``benchmarks/serve_load.py``
measures both.
"""

from __future__ import annotations

import io
import threading
from collections import OrderedDict
from functools import cache

import numpy as np

from ecomodal.errors import InvalidArgumentError
from ecomodal.serve.layers import Layer, colormap_lut

TILE_SIZE = 256
MAX_ZOOM = 18
#: Colour of the thresholded view (cells at or above the threshold).
THRESHOLD_RGBA = (214, 39, 40, 210)


@cache
def _tms():
    import morecantile

    return morecantile.tms.get("WebMercatorQuad")


def check_tile(z: int, x: int, y: int) -> None:
    """A 400-class error naming the coordinate when (z, x, y) is not a tile of the world."""
    if not 0 <= z <= MAX_ZOOM:
        raise InvalidArgumentError(f"z must lie in [0, {MAX_ZOOM}]; got {z}.")
    n = 1 << z
    for name, value in (("x", x), ("y", y)):
        if not 0 <= value < n:
            raise InvalidArgumentError(f"{name} must lie in [0, {n - 1}] at zoom {z}; got {value}.")


@cache
def pixel_lat_lon(z: int, x: int, y: int) -> tuple[np.ndarray, np.ndarray]:
    """Latitude [256] of each pixel row and longitude [256] of each column, at pixel centres."""
    import morecantile

    bounds = _tms().xy_bounds(morecantile.Tile(x, y, z))  # metres, Web Mercator
    step_x = (bounds.right - bounds.left) / TILE_SIZE
    step_y = (bounds.top - bounds.bottom) / TILE_SIZE
    xs = bounds.left + (np.arange(TILE_SIZE) + 0.5) * step_x
    ys = bounds.top - (np.arange(TILE_SIZE) + 0.5) * step_y
    radius = 6378137.0
    lon = np.degrees(xs / radius)
    lat = np.degrees(2.0 * np.arctan(np.exp(ys / radius)) - np.pi / 2.0)
    return lat, lon


def tile_values(layer: Layer, z: int, x: int, y: int) -> np.ndarray:
    """The layer's bands under each pixel of a tile: [bands, 256, 256] (NaN outside)."""
    lat, lon = pixel_lat_lon(z, x, y)
    rows = np.floor((layer.north - lat) / layer.resolution_y).astype(np.int64)
    cols = np.floor((lon - layer.west) / layer.resolution_x).astype(np.int64)
    row_ok = (rows >= 0) & (rows < layer.height)
    col_ok = (cols >= 0) & (cols < layer.width)
    values = layer.values
    out = np.full((values.shape[0], TILE_SIZE, TILE_SIZE), np.nan, dtype=np.float32)
    if row_ok.any() and col_ok.any():
        block = values[:, rows[row_ok]][:, :, cols[col_ok]]
        out[:, np.flatnonzero(row_ok)[:, None], np.flatnonzero(col_ok)[None, :]] = block
    return out


def colour_tile(
    layer: Layer,
    values: np.ndarray,
    *,
    vmin: float | None = None,
    vmax: float | None = None,
    colormap: str | None = None,
    threshold: float | None = None,
) -> np.ndarray:
    """RGBA uint8 [256, 256, 4] of a tile's values: the colour map over [vmin, vmax] (or, with
    ``threshold``, one colour where band 0 is at least the threshold), transparent where NaN."""
    low, high = layer.value_range()
    low = low if vmin is None else float(vmin)
    high = high if vmax is None else float(vmax)
    rgba = np.zeros((TILE_SIZE, TILE_SIZE, 4), dtype=np.uint8)
    if layer.is_rgb:
        bands = values[:3]
        valid = np.isfinite(bands).all(axis=0)
        scaled = np.clip((bands - low) / max(high - low, 1e-12), 0.0, 1.0)
        rgba[..., :3] = np.nan_to_num(scaled * 255).round().astype(np.uint8).transpose(1, 2, 0)
        rgba[..., 3] = np.where(valid, 255, 0)
        return rgba
    band = values[0]
    valid = np.isfinite(band)
    if threshold is not None:
        above = valid & (band >= threshold)
        rgba[above] = THRESHOLD_RGBA
        return rgba
    lut = colormap_lut(colormap or layer.colormap)
    scaled = np.clip((np.nan_to_num(band, nan=low) - low) / max(high - low, 1e-12), 0.0, 1.0)
    rgba[:] = lut[(scaled * 255).round().astype(np.int64)]
    rgba[~valid] = 0
    return rgba


def encode_png(rgba: np.ndarray) -> bytes:
    """A PNG of an RGBA image (fast compression: tiles are small and made often)."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(rgba, mode="RGBA").save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


@cache
def empty_png() -> bytes:
    """A fully transparent tile."""
    return encode_png(np.zeros((TILE_SIZE, TILE_SIZE, 4), dtype=np.uint8))


class TileRenderer:
    """Draws tiles as PNG bytes, keeping the last ``max_tiles`` in memory (LRU)."""

    def __init__(self, max_tiles: int = 2048) -> None:
        self.max_tiles = int(max_tiles)
        self._cache: OrderedDict[tuple, bytes] = OrderedDict()
        self._lock = threading.Lock()

    def render(
        self,
        layer: Layer,
        z: int,
        x: int,
        y: int,
        *,
        vmin: float | None = None,
        vmax: float | None = None,
        colormap: str | None = None,
        threshold: float | None = None,
    ) -> bytes:
        check_tile(z, x, y)
        if colormap is not None:
            colormap_lut(colormap)  # an unknown name is the caller's error, before the cache
        key = (layer.id, id(layer), z, x, y, vmin, vmax, colormap, threshold)
        with self._lock:
            cached = self._cache.get(key)
            if cached is not None:
                self._cache.move_to_end(key)
                return cached
        if not _overlaps(layer, z, x, y):
            png = empty_png()
        else:
            values = tile_values(layer, z, x, y)
            rgba = colour_tile(
                layer, values, vmin=vmin, vmax=vmax, colormap=colormap, threshold=threshold
            )
            png = encode_png(rgba) if rgba[..., 3].any() else empty_png()
        with self._lock:
            self._cache[key] = png
            while len(self._cache) > self.max_tiles:
                self._cache.popitem(last=False)
        return png

    def forget(self, layer_id: str) -> None:
        """Drop a layer's tiles (when it is removed)."""
        with self._lock:
            for key in [k for k in self._cache if k[0] == layer_id]:
                del self._cache[key]


def _overlaps(layer: Layer, z: int, x: int, y: int) -> bool:
    lat, lon = pixel_lat_lon(z, x, y)
    west, south, east, north = layer.bounds
    return bool(
        lat.max() >= south and lat.min() <= north and lon.max() >= west and lon.min() <= east
    )
