import numpy as np
import pytest
import rasterio
import xarray as xr

from ecomodal.geo.covariates import (
    DEFAULT_BANDS,
    MONTHLY_BIOCLIM,
    CovariateStack,
    bioclim_from_monthly,
)
from ecomodal.io.rasters import Raster, RasterFormatError, global_grid, read_raster, write_geotiff


def test_bioclim_from_monthly_by_hand():
    temperature = np.array([0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11], dtype=float)[:, None]
    precipitation = np.array([10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 50, 40], dtype=float)[:, None]
    bio = bioclim_from_monthly(temperature, precipitation)
    assert set(bio) == set(MONTHLY_BIOCLIM)
    assert bio["bio1"][0] == pytest.approx(5.5)
    assert bio["bio4"][0] == pytest.approx(np.std(np.arange(12), ddof=1) * 100, rel=1e-6)
    # Wettest quarter: Nov-Dec-Jan (50 + 40 + 10 = 100 mm), mean temperature (10 + 11 + 0) / 3.
    assert bio["bio16"][0] == pytest.approx(100.0)
    assert bio["bio8"][0] == pytest.approx(7.0)
    # Warmest quarter: Oct-Nov-Dec (mean 10), precipitation 0 + 50 + 40.
    assert bio["bio10"][0] == pytest.approx(10.0)
    assert bio["bio18"][0] == pytest.approx(90.0)
    # Coldest quarter: Jan-Feb-Mar (mean 1), precipitation 10.
    assert bio["bio11"][0] == pytest.approx(1.0)
    assert bio["bio19"][0] == pytest.approx(10.0)
    assert bio["bio12"][0] == 100 and bio["bio13"][0] == 50 and bio["bio14"][0] == 0
    p1 = precipitation[:, 0] + 1
    assert bio["bio15"][0] == pytest.approx(np.std(p1, ddof=1) / p1.mean() * 100, rel=1e-5)
    assert bio["bio17"][0] == 0.0  # a dry quarter exists
    with pytest.raises(ValueError, match="monthly"):
        bioclim_from_monthly(temperature[:11], precipitation[:11])


def _grid() -> Raster:
    """A global 4 x 8 grid (45 degree cells): band 0 = column index, band 1 = row index."""
    cols, rows = np.meshgrid(np.arange(8, dtype=np.float32), np.arange(4, dtype=np.float32))
    return global_grid(np.stack([cols, rows]), ["col", "row"])


def test_nearest_sampling_follows_the_published_index_rule():
    stack = CovariateStack(_grid(), mean=[0, 0], std=[1, 1])
    lat = np.array([89.0, -89.0, 0.1, -0.1, 44.0])
    lon = np.array([-179.0, 179.0, 0.0, -0.1, 200.0])
    raw = stack.sample_raw(lat, lon)
    # x = int((lon + 180) * W / 360), y = int((90 - lat) * H / 180), longitude wrapped.
    expected_col = np.floor((np.mod(lon + 180, 360)) * 8 / 360)
    expected_row = np.floor((90 - lat) * 4 / 180)
    np.testing.assert_array_equal(raw[:, 0], expected_col)
    np.testing.assert_array_equal(raw[:, 1], expected_row)


def test_bilinear_sampling_interpolates_and_skips_nan():
    raster = _grid()
    stack = CovariateStack(raster, mean=[0, 0], std=[1, 1], method="bilinear")
    # Halfway between the centres of columns 3 and 4 (lon -22.5 and 22.5), on row 1's centre.
    value = stack.sample_raw(np.array([22.5]), np.array([0.0]))
    np.testing.assert_allclose(value, [[3.5, 1.0]], atol=1e-6)
    raster.values[0, 1, 4] = np.nan
    value = stack.sample_raw(np.array([22.5]), np.array([0.0]))
    np.testing.assert_allclose(value[0, 0], 3.0, atol=1e-6)  # only the valid neighbour counts


def test_zscore_and_missing_values_become_zero():
    raster = _grid()
    raster.values[0, 0, 0] = np.nan
    stack = CovariateStack(raster)  # statistics computed from the valid cells
    assert stack.mean[0] == pytest.approx(np.nanmean(raster.values[0]))
    out = stack.sample(np.array([80.0, 80.0]), np.array([-170.0, -120.0]))
    assert out[0, 0] == 0.0  # NaN cell -> 0 (the band mean)
    assert out[1, 0] == pytest.approx((1 - stack.mean[0]) / stack.std[0])


def test_geotiff_round_trip_keeps_grid_names_and_tags(tmp_path):
    raster = _grid()
    path = write_geotiff(tmp_path / "stack.tif", raster, tags={"note": {"a": 1}})
    with rasterio.open(path) as dataset:
        assert dataset.crs.to_epsg() == 4326
        assert dataset.profile["tiled"] and dataset.profile["compress"] == "deflate"
        assert dataset.descriptions == ("col", "row")
    back = read_raster(path)
    assert back.band_names == ["col", "row"] and back.tags["note"] == '{"a": 1}'
    np.testing.assert_array_equal(back.values, raster.values)
    assert (back.west, back.north, back.cell_width) == (-180.0, 90.0, 45.0)
    assert not list(tmp_path.glob(".*tmp"))


def test_taxabench_npy_grid_and_netcdf(tmp_path):
    grid = np.random.default_rng(0).normal(size=(6, 12, 20)).astype(np.float16)
    np.save(tmp_path / "bioclim_elevation_scaled.npy", grid)
    stack = CovariateStack.open(tmp_path / "bioclim_elevation_scaled.npy")
    assert stack.band_names[0] == "elevation" and stack.band_names[-1] == "bio19"
    lat, lon = np.array([50.0]), np.array([-100.0])
    x, y = int((lon[0] + 180) * 12 / 360), int((90 - lat[0]) * 6 / 180)
    np.testing.assert_allclose(stack.sample(lat, lon)[0], grid[y, x].astype(np.float32))

    lats = np.array([67.5, 22.5, -22.5, -67.5])  # ascending order is flipped on read
    lons = np.arange(0, 360, 45.0) + 22.5  # 0..360 longitudes are wrapped
    values = np.arange(32, dtype=np.float32).reshape(4, 8)
    xr.Dataset({"tmean": (("lat", "lon"), values)}, coords={"lat": lats, "lon": lons}).to_netcdf(
        tmp_path / "stack.nc"
    )
    nc = read_raster(tmp_path / "stack.nc")
    assert nc.band_names == ["tmean"] and nc.west == pytest.approx(-180.0)
    sampled = CovariateStack(nc, mean=[0], std=[1]).sample_raw(np.array([67.5]), np.array([22.5]))
    assert sampled[0, 0] == values[0, 0]  # lon 22.5, lat 67.5


def test_unreadable_rasters_name_the_file(tmp_path):
    bad = tmp_path / "bad.tif"
    bad.write_bytes(b"garbage")
    with pytest.raises(RasterFormatError, match="bad.tif"):
        read_raster(bad)
    (tmp_path / "x.csv").write_text("a")
    with pytest.raises(RasterFormatError, match="unknown raster format"):
        read_raster(tmp_path / "x.csv")
    with pytest.raises(FileNotFoundError, match="missing.tif"):
        read_raster(tmp_path / "missing.tif")


def test_default_stack_holds_real_climate(default_covariates):
    stack = CovariateStack.open(default_covariates)
    assert stack.band_names == list(DEFAULT_BANDS)
    with rasterio.open(default_covariates) as dataset:
        assert dataset.width == 1440 and dataset.height == 721
        assert "ecomodal_zscore" in dataset.tags()
    names = ["Everest", "Sahara", "Amazon", "Greenland", "London"]
    lat = np.array([27.99, 23.0, -3.0, 72.0, 51.5])
    lon = np.array([86.93, 10.0, -60.0, -40.0, -0.1])
    raw = {
        n: dict(zip(stack.band_names, row, strict=True))
        for n, row in zip(names, stack.sample_raw(lat, lon), strict=True)
    }
    assert raw["Everest"]["elevation"] > 4000
    assert raw["Sahara"]["bio12"] < 100 < 1500 < raw["Amazon"]["bio12"]
    assert raw["Greenland"]["bio1"] < -10 < 5 < raw["London"]["bio1"] < 15 < raw["Amazon"]["bio1"]
    assert raw["Greenland"]["bio10"] > raw["Greenland"]["bio11"]
    # The stored statistics z-score the stack to mean 0.
    z = stack.sample(np.random.default_rng(0).uniform(-90, 90, 5000), np.zeros(5000))
    assert np.abs(z.mean(0)).max() < 1.0


def test_default_stack_is_built_once(default_covariates):
    from ecomodal.geo.covariates import build_default_covariates

    mtime = default_covariates.stat().st_mtime_ns
    assert build_default_covariates() == default_covariates
    assert default_covariates.stat().st_mtime_ns == mtime


def test_select_bands_by_name():
    stack = CovariateStack(_grid(), mean=[1, 2], std=[3, 4])
    picked = stack.select(["row"])
    assert picked.band_names == ["row"] and picked.mean.tolist() == [2.0]
    with pytest.raises(ValueError, match="lacks bands"):
        stack.select(["bio1"])


def test_raster_in_other_crs_is_refused(tmp_path):
    from affine import Affine

    path = tmp_path / "utm.tif"
    with rasterio.open(
        path, "w", driver="GTiff", width=2, height=2, count=1, dtype="float32",
        crs="EPSG:32610", transform=Affine(1000, 0, 500000, 0, -1000, 4000000),
    ) as dataset:  # fmt: skip
        dataset.write(np.zeros((1, 2, 2), dtype=np.float32))
    with pytest.raises(RasterFormatError, match="EPSG:4326"):
        read_raster(path)
