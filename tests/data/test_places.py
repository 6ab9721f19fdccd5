"""Random land places: seeded, on land by the MODIS rule, area-uniform."""

from __future__ import annotations

import numpy as np
import pytest

from ecomodal.data.ecobench import build_ecobench_lite
from ecomodal.data.places import (
    LAND_RULE,
    check_places,
    is_land,
    make_places,
    photo_places,
    random_land_places,
)
from ecomodal.errors import InvalidArgumentError
from ecomodal.geo.labels import _land_cover_raster, land_cover

#: Latitude bands (degrees) the distribution test compares.
BANDS = np.array([-90, -60, -30, 0, 30, 60, 90])


def land_area_by_band(area_uniform: bool) -> np.ndarray:
    """Share of land points per latitude band expected from the land-cover raster itself: each
    raster row weighted by its area (cos lat) when points are area-uniform, else equally."""
    codes = _land_cover_raster()
    height = codes.shape[0]
    lat = 90.0 - (np.arange(height) + 0.5) * 180.0 / height
    land_per_row = (codes != 0).sum(axis=1) * (np.cos(np.radians(lat)) if area_uniform else 1.0)
    per_band = np.histogram(lat, bins=BANDS, weights=land_per_row)[0]
    return per_band / per_band.sum()


@pytest.fixture(scope="module")
def places():
    return random_land_places(3000, 0)


def test_same_seed_same_places_other_seed_other_places(places):
    again = random_land_places(3000, 0)
    np.testing.assert_array_equal(again.lat, places.lat)
    np.testing.assert_array_equal(again.lon, places.lon)
    assert again.record == places.record
    other = random_land_places(3000, 1)
    assert not np.isin(other.lat, places.lat).any()
    # A smaller build is a prefix of a larger one with the same seed.
    small = random_land_places(50, 0)
    np.testing.assert_array_equal(small.lat, places.lat[:50])
    assert list(small.ids) == [f"land-{i:06d}" for i in range(50)]
    assert len(set(places.ids)) == 3000


def test_every_place_is_on_land_by_the_rule(places):
    codes, names = land_cover(places.lat, places.lon)
    assert (codes != 0).all() and "water" not in set(names)
    assert is_land(places.lat, places.lon).all()
    assert not is_land(np.array([0.0, -40.0]), np.array([-30.0, -120.0])).any()  # mid-ocean
    assert is_land(np.array([48.137, -80.0]), np.array([11.575, 0.0])).all()  # Munich, Antarctica
    assert places.record == {
        "kind": "random-land",
        "rule": LAND_RULE,
        "draws": places.record["draws"],
        "kept": 3000,
    }
    # About 28% of the sphere is land by this rule, so ~3000 / 0.284 draws.
    assert 9000 < places.record["draws"] < 12500


def test_latitudes_are_area_uniform_over_land(places):
    expected = land_area_by_band(area_uniform=True)
    observed = np.histogram(places.lat, bins=BANDS)[0] / len(places.lat)
    tolerance = 4 * np.sqrt(expected * (1 - expected) / len(places.lat)) + 1e-3
    np.testing.assert_array_less(np.abs(observed - expected), tolerance)
    # Uniform in degrees (a pile-up at the poles) would be told apart.
    wrong = land_area_by_band(area_uniform=False)
    assert (np.abs(wrong - expected) > tolerance).any()
    assert np.mean(np.abs(places.lat) > 60) < wrong[[0, -1]].sum() - 0.03
    assert -180 <= places.lon.min() < -170 and 170 < places.lon.max() <= 180


def test_photo_places_and_the_choice_of_generator(tmp_path):
    photo = make_places("photo", 20, 4)
    assert photo.record["kind"] == "photo" and photo.ids[0].startswith("geoclip-")
    np.testing.assert_array_equal(photo.lat, photo_places(20, 4).lat)
    assert make_places("random-land", 5, 4).ids[0] == "land-000000"
    with pytest.raises(InvalidArgumentError, match="places must be one of photo, random-land"):
        check_places("land")
    with pytest.raises(InvalidArgumentError, match="places must be one of .*; got 'sea'"):
        build_ecobench_lite(tmp_path / "eb", n=5, places="sea", show_progress=False)
    assert not (tmp_path / "eb").exists()
    with pytest.raises(InvalidArgumentError, match="n must be >= 1; got 0"):
        random_land_places(0, 0)
    with pytest.raises(InvalidArgumentError, match="seed must be >= 0; got -2"):
        random_land_places(10, -2)
