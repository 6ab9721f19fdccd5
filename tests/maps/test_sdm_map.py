"""`sdm_map` / `ecomodal map sdm`: an EmbeddingSDM fitted on points, applied to every grid cell."""

import numpy as np
import pytest
import rasterio
from typer.testing import CliRunner

from ecomodal.cli import app
from ecomodal.errors import InvalidArgumentError, MapError
from ecomodal.maps import EmbeddingSDM, sdm_map
from ecomodal.maps.embedding import sample_cells

POINTS = ([38.6, 38.4, 38.7, 38.5, 39.1], [-121.4, -121.6, -121.5, -121.2, -122.0])


def _points_csv(path, lat, lon):
    rows = "\n".join(f"{a},{o}" for a, o in zip(lat, lon, strict=True))
    path.write_text("decimalLatitude,decimalLongitude\n" + rows + "\n")
    return path


def test_sdm_map_fits_points_against_grid_cells_and_writes_the_geotiff(
    tmp_path, ca_grid, loc_encoder
):
    csv = _points_csv(tmp_path / "occ.csv", *POINTS)
    out = tmp_path / "sdm.tif"
    result = sdm_map(
        ca_grid, points=csv, modality="loc", encoder=loc_encoder, n_background=40, seed=3,
        cache_dir=tmp_path / "cache", out=out, show_progress=False,
    )  # fmt: skip
    cells = loc_encoder.encode(lat=ca_grid.lat, lon=ca_grid.lon)
    rows = sample_cells(ca_grid.num_cells, 40, 3)
    expected = EmbeddingSDM(seed=3).fit(
        loc_encoder.encode(lat=POINTS[0], lon=POINTS[1]), cells[rows]
    )
    np.testing.assert_allclose(result.band("suitability"), expected.predict(cells), atol=1e-4)
    home = ca_grid.cell_of([38.5], [-121.5])[0]
    assert result.band(0)[home] > np.median(result.band(0))  # the points' cell scores high
    with rasterio.open(out) as dataset:
        assert dataset.descriptions == ("suitability",) and dataset.crs.to_epsg() == 4326
        values, tags = dataset.read(1), dataset.tags()
    np.testing.assert_allclose(np.nanmax(values), result.band(0).max(), rtol=1e-6)
    assert np.isfinite(values).sum() == ca_grid.num_cells
    assert ((values[np.isfinite(values)] >= 0) & (values[np.isfinite(values)] <= 1)).all()
    assert tags["method"] == "embedding-sdm" and str(csv) in tags["query"]
    assert tags["background"] == "40 grid cells drawn at random without replacement (seed 3)"
    assert tags["n_background"] == "40" and tags["n_presence"] == "5"
    # Same seed, same map; another seed draws another background.
    again = sdm_map(
        ca_grid, points=csv, encoder=loc_encoder, n_background=40, seed=3,
        cache_dir=tmp_path / "cache", show_progress=False,
    )  # fmt: skip
    np.testing.assert_array_equal(again.values, result.values)


def test_sdm_map_with_background_points_and_a_bbox(tmp_path, ca_grid, loc_encoder):
    back_lat, back_lon = [34.0, 36.5, 40.0, 35.2, 41.0], [-118.2, -119.0, -122.3, -116.0, -123.5]
    background = _points_csv(tmp_path / "background.csv", back_lat, back_lon)
    png = tmp_path / "sdm.png"
    result = sdm_map(
        (-125.0, 32.0, -114.0, 42.0), resolution=1.0, points=POINTS, background=background,
        encoder=loc_encoder, sdm=EmbeddingSDM(classifier="ridge"), cache_dir=tmp_path / "c",
        preview=png, show_progress=False,
    )  # fmt: skip
    assert result.grid.fingerprint == ca_grid.fingerprint and png.stat().st_size > 10_000
    presence = loc_encoder.encode(lat=POINTS[0], lon=POINTS[1])
    back = loc_encoder.encode(lat=back_lat, lon=back_lon)
    expected = EmbeddingSDM(classifier="ridge").fit(presence, back)
    cells = loc_encoder.encode(lat=ca_grid.lat, lon=ca_grid.lon)
    np.testing.assert_allclose(result.band(0), expected.predict(cells), atol=1e-4)
    assert result.tags["background"] == f"5 background points in {background}"
    assert "classifier': 'ridge'" in result.tags["sdm"]


def test_sdm_map_errors(tmp_path, ca_grid, loc_encoder):
    with pytest.raises(InvalidArgumentError, match="resolution="):
        sdm_map((-125.0, 32.0, -114.0, 42.0), points=POINTS, encoder=loc_encoder)
    with pytest.raises(InvalidArgumentError, match="n_background"):
        sdm_map(
            ca_grid, points=POINTS, encoder=loc_encoder, n_background=0,
            cache_dir=tmp_path, show_progress=False,
        )  # fmt: skip
    with pytest.raises(MapError, match="exactly"):
        from ecomodal.maps import species_map

        species_map(ca_grid, cache_dir=tmp_path, encoder=loc_encoder, show_progress=False)


def test_cli_map_sdm_writes_geotiff_and_preview(tmp_path, ca_grid, loc_encoder):
    csv = _points_csv(tmp_path / "occ.csv", *POINTS)
    background = _points_csv(tmp_path / "bg.csv", [34.0, 36.5, 40.0], [-118.2, -119.0, -122.3])
    out, png = tmp_path / "sdm.tif", tmp_path / "sdm.png"
    result = CliRunner().invoke(app, [
        "map", "sdm", "--points", str(csv), "--background", str(background), "--modality", "loc",
        "--grid", "-125,32,-114,42", "--resolution", "1", "--loc-encoder", "geoclip",
        "--cache-dir", str(tmp_path / "cache"), "--out", str(out), "--preview", str(png),
        "--no-progress",
    ])  # fmt: skip
    assert result.exit_code == 0, result.output + repr(result.exception)
    assert f"wrote {out}" in result.output and png.stat().st_size > 10_000
    with rasterio.open(out) as dataset:
        values, tags = dataset.read(1), dataset.tags()
    assert np.isfinite(values).sum() == ca_grid.num_cells
    assert tags["background"] == f"3 background points in {background}"
    assert tags["query_encoder"] == loc_encoder.id
