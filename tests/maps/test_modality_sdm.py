"""The default SDM: one EmbeddingSDM per modality chosen by spatial-block CV (select_sdm,
ModalitySDM), sdm_map over several modalities and ProM3E hidden features, and the land-cover
judge (maps.truth)."""

import numpy as np
import pytest
import rasterio

from ecomodal.errors import InvalidArgumentError, MapError
from ecomodal.maps import sdm_map, species_map
from ecomodal.maps.sdm import EmbeddingSDM, auc_roc, cross_validate_sdm
from ecomodal.maps.sdm_select import ModalitySDM, select_sdm
from ecomodal.maps.truth import class_slug, covariate_baselines, score_against_land_cover


def _blobs(seed=0, n_presence=120, n_background=400):
    """Presences where feature 0 is high (in the east), background everywhere; lat/lon spread
    over 20 x 20 degrees so spatial blocks have room."""
    rng = np.random.default_rng(seed)
    lat = rng.uniform(0, 20, n_presence + n_background)
    lon = rng.uniform(0, 20, n_presence + n_background)
    X = rng.normal(size=(len(lat), 6))
    y = np.r_[np.ones(n_presence, int), np.zeros(n_background, int)]
    X[y == 1, 0] += 1.5
    return X, y, lat, lon


def test_select_sdm_scores_each_candidate_by_its_spatial_block_cv_auc():
    X, y, lat, lon = _blobs()
    candidates = [{"classifier": "logistic", "C": 1e-6}, {"classifier": "random_forest"}]
    selection = select_sdm(
        X[y == 1], X[y == 0],
        presence_lat=lat[y == 1], presence_lon=lon[y == 1],
        background_lat=lat[y == 0], background_lon=lon[y == 0],
        candidates=candidates, block_deg=4.0, n_folds=4, seed=1,
    )  # fmt: skip
    from ecomodal.data.splits import spatial_block_folds

    order = np.r_[np.flatnonzero(y == 1), np.flatnonzero(y == 0)]
    folds = spatial_block_folds(lat[order], lon[order], 4.0, 4, 1)
    for params, row in zip(candidates, selection.scores, strict=True):
        expected = cross_validate_sdm(EmbeddingSDM(seed=1, **params), X[order], y[order], folds)
        assert row["auc"] == pytest.approx(expected.summary()["auc"]["mean"])
    winner = int(np.argmax([row["auc"] for row in selection.scores]))
    assert selection.best.get_params()["classifier"] == candidates[winner]["classifier"]
    assert selection.summary()["chosen"]["classifier"] == candidates[winner]["classifier"]
    assert selection.block_deg == 4.0 and selection.n_folds == 4
    assert auc_roc(y, selection.best.predict(X)) > 0.75  # fitted on every point


def test_modality_sdm_averages_standardised_modalities_and_is_deterministic():
    X, y, lat, lon = _blobs(seed=2)
    rng = np.random.default_rng(5)
    features = {"signal": X, "noise": rng.normal(size=(len(y), 9))}
    presence = {k: v[y == 1] for k, v in features.items()}
    background = {k: v[y == 0] for k, v in features.items()}
    coords = dict(
        presence_lat=lat[y == 1], presence_lon=lon[y == 1],
        background_lat=lat[y == 0], background_lon=lon[y == 0],
    )  # fmt: skip
    sdm = ModalitySDM(block_deg=5.0, n_components=4, seed=3).fit(presence, background, **coords)
    manual = np.zeros(len(y))
    for name in ("signal", "noise"):
        mean, axes = sdm.projections_[name]
        score = sdm.selections_[name].best.decision_function((features[name] - mean) @ axes)
        manual += (score - sdm.center_[name]) / sdm.scale_[name]
    np.testing.assert_allclose(sdm.decision_function(features), manual / 2, atol=1e-9)
    suitability = sdm.predict(features)
    assert ((suitability > 0) & (suitability < 1)).all()
    assert auc_roc(y, suitability) > 0.75
    assert set(sdm.summary()) == {"signal", "noise"}
    again = ModalitySDM(block_deg=5.0, n_components=4, seed=3).fit(presence, background, **coords)
    np.testing.assert_array_equal(again.predict(features), suitability)
    with pytest.raises(InvalidArgumentError, match="lack \\['noise'\\]"):
        sdm.predict({"signal": X})
    with pytest.raises(InvalidArgumentError, match="same modalities"):
        ModalitySDM().fit(presence, {"signal": background["signal"]}, **coords)


def test_sdm_map_over_several_modalities_and_prom3e_hidden(
    tmp_path, ca_grid, loc_encoder, small_prom3e
):
    lat, lon = (
        [38.5, 38.6, 38.4, 37.9, 39.0, 38.2],
        [-121.5, -121.4, -121.6, -122.2, -121.9, -121.0],
    )
    out = tmp_path / "sdm.tif"
    result = sdm_map(
        ca_grid, points=(lat, lon), modalities=["loc"], model=small_prom3e, visible=["loc"],
        encoders={"loc": loc_encoder}, cache_dir=tmp_path / "cache", n_background=60, seed=2,
        out=out, show_progress=False,
    )  # fmt: skip
    values = result.band("suitability")
    assert np.isfinite(values).all() and ((values > 0) & (values < 1)).all()
    assert set(result.tags["sdm_selection"]) == {"loc", "prom3e-hidden"}
    assert result.tags["query_modality"] == "loc+prom3e-hidden"
    home = ca_grid.cell_of([38.5], [-121.5])[0]
    assert values[home] > np.median(values)
    with rasterio.open(out) as dataset:
        assert "prom3e-hidden" in dataset.tags()["sdm_selection"]
    with pytest.raises(MapError, match="need model="):
        sdm_map(ca_grid, points=(lat, lon), modalities="loc,prom3e-hidden",
                encoders={"loc": loc_encoder}, show_progress=False)  # fmt: skip


def test_species_map_points_default_is_the_sdm_and_rejects_unknown_methods(
    tmp_path, ca_grid, loc_encoder
):
    lat, lon = [38.5, 38.6, 38.4], [-121.5, -121.4, -121.6]
    result = species_map(
        ca_grid, points=(lat, lon), encoder=loc_encoder, cache_dir=tmp_path, n_background=50,
        show_progress=False,
    )  # fmt: skip
    assert result.tags["method"] == "embedding-sdm" and "50 grid cells" in result.tags["background"]
    with pytest.raises(MapError, match="method must be one of"):
        species_map(ca_grid, points=(lat, lon), method="maxent", show_progress=False)


def test_score_against_land_cover():
    classes = np.array(["barren"] * 4 + ["grassland"] * 4 + ["snow and ice"] * 2, dtype=object)
    perfect = np.array([0.9, 0.8, 0.95, 0.7, 0.1, 0.2, 0.3, 0.2, 0.0, 0.1])
    score = score_against_land_cover(perfect, classes, "barren")
    assert score["auc"] == 1.0 and score["snow_ice_below"] and score["n_class_cells"] == 4
    assert score["class_mean"] == pytest.approx(0.8375)
    reversed_map = 1 - perfect
    worse = score_against_land_cover(reversed_map, classes, "barren")
    assert worse["auc"] == 0.0 and not worse["snow_ice_below"]
    with_nan = perfect.copy()
    with_nan[0] = np.nan
    assert score_against_land_cover(with_nan, classes, "barren")["n_cells"] == 9
    with pytest.raises(InvalidArgumentError, match="No map cell is 'cropland'"):
        score_against_land_cover(perfect, classes, "cropland")
    assert class_slug("cropland/natural vegetation mosaic") == "cropland-natural-vegetation-mosaic"


def test_covariate_baselines_rank_the_presence_climate_high(ca_grid, default_covariates):
    # Presences in the hot Central Valley against background cells all over California.
    lat = np.array([36.0, 36.5, 35.5, 37.0, 36.2, 35.8, 36.8, 37.2])
    lon = np.array([-120.0, -119.8, -119.4, -120.6, -119.9, -119.2, -120.3, -120.9])
    rows = np.arange(0, ca_grid.num_cells, 2)
    maps = covariate_baselines(lat, lon, ca_grid.lat[rows], ca_grid.lon[rows], ca_grid, seed=0)
    assert set(maps) == {"covariate-logistic", "covariate-maxent"}
    home = ca_grid.cell_of([36.0], [-120.0])[0]
    for name, values in maps.items():
        assert values.shape == (ca_grid.num_cells,) and np.isfinite(values).all(), name
        assert values[home] > np.median(values), name
    with pytest.raises(InvalidArgumentError, match="Unknown baselines"):
        covariate_baselines(lat, lon, lat, lon, ca_grid, baselines=["glm"])
