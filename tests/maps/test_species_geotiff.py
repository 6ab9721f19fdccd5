import json

import numpy as np
import pytest
import rasterio
from PIL import Image

from ecomodal.encoders import load_encoder
from ecomodal.errors import TableFormatError
from ecomodal.maps import embed_grid, preview_png, species_map, write_map


def _points_csv(path, lat, lon):
    rows = "\n".join(f"{a},{o}" for a, o in zip(lat, lon, strict=True))
    path.write_text("decimalLatitude,decimalLongitude\n" + rows + "\n")
    return path


def test_points_query_scores_cosine_to_the_mean_point_embedding(tmp_path, ca_grid, loc_encoder):
    lat, lon = np.array([38.6, 38.4, 38.7]), np.array([-121.4, -121.6, -121.5])
    csv = _points_csv(tmp_path / "occurrences.csv", lat, lon)
    result = species_map(
        ca_grid, points=csv, modality="loc", encoder=loc_encoder, cache_dir=tmp_path / "cache",
        show_progress=False, method="prototype",
    )  # fmt: skip
    query = loc_encoder.encode(lat=lat, lon=lon).mean(0)
    query /= np.linalg.norm(query)
    cells = loc_encoder.encode(lat=ca_grid.lat, lon=ca_grid.lon)
    np.testing.assert_allclose(result.band("suitability"), cells @ query, atol=1e-5)
    best = int(np.argmax(result.band(0)))
    assert best == ca_grid.cell_of([38.5], [-121.5])[0]  # the cell holding the points wins
    assert result.tags["method"] == "cosine" and "3 points" in result.tags["query"]


def test_background_points_subtract_their_mean_embedding(tmp_path, ca_grid, loc_encoder):
    lat, lon = np.array([38.6, 38.4]), np.array([-121.4, -121.6])
    back_lat, back_lon = np.array([34.0, 36.5, 40.0]), np.array([-118.2, -119.0, -122.3])
    background = _points_csv(tmp_path / "background.csv", back_lat, back_lon)
    result = species_map(
        ca_grid, points=(lat, lon), background=background, modality="loc", encoder=loc_encoder,
        cache_dir=tmp_path / "cache", show_progress=False, method="prototype",
    )  # fmt: skip
    query = loc_encoder.encode(lat=lat, lon=lon).mean(0)
    query -= loc_encoder.encode(lat=back_lat, lon=back_lon).mean(0)
    query /= np.linalg.norm(query)
    cells = loc_encoder.encode(lat=ca_grid.lat, lon=ca_grid.lon)
    np.testing.assert_allclose(result.band("suitability"), cells @ query, atol=1e-5)
    assert "against 3 background points" in result.tags["query"]


def test_bad_occurrence_file_names_the_row(tmp_path, ca_grid, loc_encoder):
    csv = _points_csv(tmp_path / "bad.csv", [38.0, 95.0], [-121.0, -120.0])
    with pytest.raises(TableFormatError, match="row 1, column 'lat'"):
        species_map(ca_grid, points=csv, encoder=loc_encoder, cache_dir=tmp_path)
    (tmp_path / "nolat.csv").write_text("x,y\n1,2\n")
    with pytest.raises(TableFormatError, match="missing"):
        species_map(ca_grid, points=tmp_path / "nolat.csv", encoder=loc_encoder, cache_dir=tmp_path)


def test_text_query_against_env_grid(tmp_path, ca_grid, tiny_clip, env_encoder_16, loc_encoder):
    folder, _ = tiny_clip
    text = load_encoder("text", f"local-dir:{folder}")
    result = species_map(
        ca_grid, query="Quercus alba", modality="env", encoder=env_encoder_16,
        query_encoder=text, cache_dir=tmp_path, show_progress=False,
    )  # fmt: skip
    expected = (
        env_encoder_16.encode(lat=ca_grid.lat, lon=ca_grid.lon) @ text.encode(["Quercus alba"])[0]
    )
    np.testing.assert_allclose(result.band(0), expected, atol=1e-5)
    assert result.tags["query"] == "Quercus alba" and result.tags["query_modality"] == "text"
    with pytest.raises(ValueError, match="dimension 16 but the loc grid embeddings"):
        species_map(
            ca_grid, query="Quercus alba", encoder=loc_encoder, query_encoder=text,
            cache_dir=tmp_path, show_progress=False,
        )  # fmt: skip


def test_completion_scores_the_completed_query_modality(
    tmp_path, ca_grid, loc_encoder, small_prom3e
):
    cells = embed_grid(ca_grid, modality="loc", encoder=loc_encoder, cache_dir=tmp_path)
    lat, lon = [36.0, 37.0], [-119.0, -120.0]
    result = species_map(
        ca_grid, points=(lat, lon), modality="loc", embeddings={"loc": cells},
        model=small_prom3e, via_completion=True, visible="loc", chunk_rows=16,
    )  # fmt: skip
    query = loc_encoder.encode(lat=lat, lon=lon).mean(0)
    query /= np.linalg.norm(query)
    x = np.zeros((ca_grid.num_cells, 6, 512), np.float32)
    x[:, 2] = cells.read()
    completed = small_prom3e.complete(x, visible=["loc"], n_samples=0).embeddings[:, 2]
    np.testing.assert_allclose(result.band(0), completed @ query, atol=1e-5)
    assert result.tags["method"] == "prom3e-completion"


def test_geotiff_is_tiled_compressed_georeferenced_with_metadata(tmp_path, ca_grid, loc_encoder):
    result = species_map(
        ca_grid, points=([38.5], [-121.5]), encoder=loc_encoder, cache_dir=tmp_path,
        show_progress=False,
    )  # fmt: skip
    path = write_map(tmp_path / "out" / "map.tif", result, block_size=16)
    assert not list(path.parent.glob(".*tmp"))  # written atomically: no temporary left
    with rasterio.open(path) as dataset:
        assert dataset.crs.to_epsg() == 4326
        assert dataset.transform.c == -125.0 and dataset.transform.f == 42.0
        assert dataset.transform.a == 1.0 and dataset.transform.e == -1.0
        assert dataset.descriptions == ("suitability",)
        assert dataset.profile["tiled"] and dataset.block_shapes == [(16, 16)]
        assert dataset.compression.name.lower() == "deflate"
        tags = dataset.tags()
        values = dataset.read(1)
        row, col = dataset.index(-121.5, 38.5)
        sea_row, sea_col = dataset.index(-124.5, 35.5)
    assert "38.5" not in tags["query"] and "1 points" in tags["query"]
    assert json.loads(tags["grid"])["land_only"] is True
    cell = ca_grid.cell_of([38.5], [-121.5])[0]
    assert values[row, col] == pytest.approx(result.band(0)[cell])
    assert np.isnan(values[sea_row, sea_col])
    np.testing.assert_allclose(values, ca_grid.to_image(result.band(0)), equal_nan=True)


def test_preview_png_draws_map_borders_colourbar(tmp_path, ca_grid, loc_encoder):
    result = species_map(
        ca_grid, points=([38.5], [-121.5]), encoder=loc_encoder, cache_dir=tmp_path,
        show_progress=False,
    )  # fmt: skip
    plain = preview_png(result, tmp_path / "plain.png", borders=False, title="t")
    framed = preview_png(result, tmp_path / "map.png", title="Quercus alba")
    pixels = np.asarray(Image.open(framed).convert("RGB")).astype(int)
    plain_pixels = np.asarray(Image.open(plain).convert("RGB")).astype(int)
    assert pixels.shape[0] > 300 and pixels.shape[1] > 300
    # Borders add dark line pixels that the borderless preview lacks.
    dark = (pixels.sum(-1) < 150).sum()
    assert dark > (plain_pixels.sum(-1) < 150).sum() + 50


def test_write_map_holds_one_block_of_rows_at_a_time(tmp_path):
    import tracemalloc

    from ecomodal.maps import GridMap, make_grid

    grid = make_grid(resolution=0.5, land_only=False)  # 720 x 360 cells
    values = np.arange(grid.num_cells, dtype=np.float32)[None] % 1000
    grid_map = GridMap(grid, values, ["v"])
    full_raster_bytes = grid.num_cells * 4
    write_map(tmp_path / "warm-up.tif", grid_map, block_size=16)  # imports allocate too
    tracemalloc.start()
    path = write_map(tmp_path / "big.tif", grid_map, block_size=16)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < full_raster_bytes / 4  # a 16-row window, never the whole raster
    with rasterio.open(path) as dataset:
        assert dataset.read(1)[359, 719] == values[0, -1]


def test_image_query_through_the_image_encoder(
    tmp_path, ca_grid, tiny_clip, photos, env_encoder_16
):
    folder, _ = tiny_clip
    image_encoder = load_encoder("image", f"local-dir:{folder}")
    photo = photos[0][0]
    result = species_map(
        ca_grid, image=photo, modality="env", encoder=env_encoder_16, query_encoder=image_encoder,
        cache_dir=tmp_path, show_progress=False,
    )  # fmt: skip
    query = image_encoder.encode([photo])[0]
    expected = env_encoder_16.encode(lat=ca_grid.lat, lon=ca_grid.lon) @ query
    np.testing.assert_allclose(result.band(0), expected, atol=1e-5)
    assert result.tags["query_modality"] == "image" and result.tags["query"] == photo
    with pytest.raises(FileNotFoundError, match="missing.jpg"):
        species_map(
            ca_grid, image=tmp_path / "missing.jpg", modality="env", encoder=env_encoder_16,
            query_encoder=image_encoder, cache_dir=tmp_path, show_progress=False,
        )  # fmt: skip
