"""Raster files on a regular lat/lon grid (EPSG:4326): GeoTIFF, NetCDF and TaxaBench ``.npy`` grids.

A :class:`Raster` is a band stack ``values`` [C, H, W] with its grid (``west``, ``north``, cell sizes),
band names and string tags (e.g. z-score statistics). GeoTIFFs are written tiled, compressed and
atomically (temporary name, then rename).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ecomodal.errors import RasterFormatError
from ecomodal.io.atomic import atomic_path


@dataclass
class Raster:
    """Band stack [C, H, W] on a regular grid; row 0 is the northern edge."""

    values: np.ndarray
    west: float
    north: float
    cell_width: float
    cell_height: float
    band_names: list[str]
    tags: dict[str, str] = field(default_factory=dict)
    source: str = ""

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.values.shape)  # type: ignore[return-value]

    @property
    def is_global(self) -> bool:
        """True when the columns span all 360 degrees of longitude (sampling wraps around)."""
        return abs(self.values.shape[2] * self.cell_width - 360.0) < 1e-6 * 360.0


def global_grid(values: np.ndarray, band_names: Sequence[str], **kwargs) -> Raster:
    """A raster covering the globe: columns from -180 eastwards, rows from 90 southwards."""
    _, height, width = values.shape
    return Raster(
        values,
        west=-180.0,
        north=90.0,
        cell_width=360.0 / width,
        cell_height=180.0 / height,
        band_names=list(band_names),
        **kwargs,
    )


def read_raster(path: str | Path, *, band_names: Sequence[str] | None = None) -> Raster:
    """Read a GeoTIFF (``.tif``), NetCDF (``.nc``) or TaxaBench-style ``.npy`` grid [H, W, C]."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Raster file {path} does not exist.")
    suffix = path.suffix.lower()
    if suffix == ".npy":
        raster = _read_npy(path)
    elif suffix in (".tif", ".tiff"):
        raster = _read_geotiff(path)
    elif suffix in (".nc", ".nc4", ".netcdf"):
        raster = _read_netcdf(path)
    else:
        raise RasterFormatError(
            f"{path}: unknown raster format {suffix!r}; expected .tif, .nc or .npy."
        )
    if band_names is not None:
        if len(band_names) != raster.values.shape[0]:
            raise RasterFormatError(
                f"{path} has {raster.values.shape[0]} bands but {len(band_names)} band names "
                "were given."
            )
        raster.band_names = list(band_names)
    return raster


def _read_npy(path: Path) -> Raster:
    try:
        grid = np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError) as err:
        raise RasterFormatError(f"{path} is not a readable .npy array: {err}") from err
    if grid.ndim != 3:
        raise RasterFormatError(
            f"{path} has shape {grid.shape}; expected a global grid [height, width, bands]."
        )
    values = np.moveaxis(grid, -1, 0)  # a view: [C, H, W]
    names = [f"band{i}" for i in range(values.shape[0])]
    if values.shape[0] == 20:  # TaxaBench-8k bioclim_elevation_scaled.npy
        names = ["elevation", *(f"bio{i}" for i in range(1, 20))]
    return global_grid(values, names, tags={"scaled": "true"}, source=str(path))


def _read_geotiff(path: Path) -> Raster:
    import rasterio

    try:
        with rasterio.open(path) as dataset:
            if dataset.crs is not None and dataset.crs.to_epsg() not in (4326, None):
                raise RasterFormatError(
                    f"{path} is in {dataset.crs}; covariate rasters must be in EPSG:4326 (lat/lon)."
                )
            transform = dataset.transform
            if abs(transform.b) > 0 or abs(transform.d) > 0 or transform.e >= 0:
                raise RasterFormatError(f"{path} is rotated or flipped; expected a north-up grid.")
            values = dataset.read(out_dtype="float32", masked=True)
            values = np.ma.filled(values.astype(np.float32), np.nan)
            names = [
                desc or f"band{i + 1}" for i, desc in enumerate(dataset.descriptions or [])
            ] or [f"band{i + 1}" for i in range(dataset.count)]
            tags = {k: str(v) for k, v in dataset.tags().items()}
            return Raster(
                values,
                west=transform.c,
                north=transform.f,
                cell_width=transform.a,
                cell_height=-transform.e,
                band_names=names,
                tags=tags,
                source=str(path),
            )
    except rasterio.errors.RasterioIOError as err:
        raise RasterFormatError(f"{path} is not a readable GeoTIFF: {err}") from err


def _read_netcdf(path: Path) -> Raster:
    import xarray as xr

    try:
        dataset = xr.open_dataset(path)
    except Exception as err:  # xarray raises many types for unreadable files
        raise RasterFormatError(f"{path} is not a readable NetCDF file: {err}") from err
    with dataset:
        lat_name = next((n for n in ("lat", "latitude", "y") if n in dataset.coords), None)
        lon_name = next((n for n in ("lon", "longitude", "x") if n in dataset.coords), None)
        if lat_name is None or lon_name is None:
            raise RasterFormatError(f"{path} has no lat/lon coordinates.")
        names, bands = [], []
        for name, variable in dataset.data_vars.items():
            if {lat_name, lon_name} <= set(variable.dims):
                extra = [d for d in variable.dims if d not in (lat_name, lon_name)]
                variable = variable.transpose(*extra, lat_name, lon_name)
                data = np.asarray(variable.values, dtype=np.float32)
                data = data.reshape(-1, *data.shape[-2:])
                for i in range(data.shape[0]):
                    names.append(name if data.shape[0] == 1 else f"{name}_{i + 1}")
                    bands.append(data[i])
        if not bands:
            raise RasterFormatError(f"{path} has no variables on its lat/lon grid.")
        lat = np.asarray(dataset[lat_name].values, dtype=np.float64)
        lon = np.asarray(dataset[lon_name].values, dtype=np.float64)
    values = np.stack(bands)
    if lat[0] < lat[-1]:
        lat, values = lat[::-1], values[:, ::-1]
    lon = np.where(lon >= 180.0, lon - 360.0, lon)
    order = np.argsort(lon, kind="stable")
    lon, values = lon[order], values[:, :, order]
    dx, dy = float(np.median(np.diff(lon))), float(np.median(-np.diff(lat)))
    return Raster(
        np.ascontiguousarray(values),
        west=float(lon[0] - dx / 2),
        north=float(lat[0] + dy / 2),
        cell_width=dx,
        cell_height=dy,
        band_names=names,
        source=str(path),
    )


def write_geotiff(
    path: str | Path,
    raster: Raster,
    *,
    tags: Mapping[str, object] | None = None,
    dtype: str = "float32",
    nodata: float | None = np.nan,
    block_size: int = 256,
) -> Path:
    """Write a tiled, DEFLATE-compressed, georeferenced GeoTIFF with band names, atomically."""
    count, height, width = raster.values.shape
    with open_geotiff_writer(
        path,
        GeoTiffLayout(
            height=height,
            width=width,
            west=raster.west,
            north=raster.north,
            cell_width=raster.cell_width,
            cell_height=raster.cell_height,
            band_names=list(raster.band_names),
        ),
        tags={**raster.tags, **(tags or {})},
        dtype=dtype,
        nodata=nodata,
        block_size=block_size,
    ) as dataset:
        for index in range(count):
            dataset.write(np.asarray(raster.values[index], dtype=dtype), index + 1)
    return Path(path)


@dataclass(frozen=True)
class GeoTiffLayout:
    """Size, georeferencing (EPSG:4326, north-up) and band names of a GeoTIFF to write."""

    height: int
    width: int
    west: float
    north: float
    cell_width: float
    cell_height: float
    band_names: list[str]


@contextlib.contextmanager
def open_geotiff_writer(
    path: str | Path,
    layout: GeoTiffLayout,
    *,
    tags: Mapping[str, object] | None = None,
    dtype: str = "float32",
    nodata: float | None = np.nan,
    block_size: int = 256,
) -> Iterator[Any]:
    """Open a tiled, DEFLATE-compressed, georeferenced GeoTIFF for writing window by window.

    Yields the open rasterio dataset (write with ``dataset.write(array, window=Window(...))``);
    band names and ``tags`` are set, and the file appears at ``path`` only once closed without
    error (atomic rename).
    """
    import rasterio
    from affine import Affine

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    profile = {
        "driver": "GTiff",
        "height": layout.height,
        "width": layout.width,
        "count": len(layout.band_names),
        "dtype": dtype,
        "crs": "EPSG:4326",
        "transform": Affine(
            layout.cell_width, 0.0, layout.west, 0.0, -layout.cell_height, layout.north
        ),
        "tiled": True,
        "blockxsize": block_size,
        "blockysize": block_size,
        "compress": "deflate",
        "predictor": 3 if dtype.startswith("float") else 2,
        "nodata": nodata,
    }
    with atomic_path(path) as tmp, rasterio.open(tmp, "w", **profile) as dataset:
        for index, name in enumerate(layout.band_names):
            dataset.set_band_description(index + 1, name)
        dataset.update_tags(**{k: _tag(v) for k, v in (tags or {}).items()})
        yield dataset


def _tag(value: object) -> str:
    return value if isinstance(value, str) else json.dumps(value)
