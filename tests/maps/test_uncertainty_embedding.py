import numpy as np
import pytest
import rasterio

from ecomodal.maps import (
    components_rgb,
    diversity_map,
    diversity_regression,
    embed_grid,
    embedding_map,
    species_density,
    uncertainty_map,
    write_map,
)


@pytest.fixture()
def loc_cells(tmp_path, ca_grid, loc_encoder):
    return {"loc": embed_grid(ca_grid, modality="loc", encoder=loc_encoder, cache_dir=tmp_path)}


def test_uncertainty_map_is_prom3e_sigma_l1_per_cell(ca_grid, loc_cells, small_prom3e):
    result = uncertainty_map(
        small_prom3e, ca_grid, visible="loc", embeddings=loc_cells, chunk_rows=16
    )
    x = np.zeros((ca_grid.num_cells, 6, 512), np.float32)
    x[:, 2] = loc_cells["loc"].read()
    expected = small_prom3e.complete(x, visible=["loc"], n_samples=0).sigma_l1
    np.testing.assert_allclose(result.band("sigma_l1"), expected, rtol=1e-5)
    assert result.tags["visible"] == ["loc"] and result.tags["method"] == "prom3e-sigma-l1"
    with pytest.raises(ValueError, match="visible modality 'env' has no grid embeddings"):
        from ecomodal.maps.completion import iter_completions

        next(iter_completions(small_prom3e, loc_cells, visible="loc,env"))


def test_species_density_counts_distinct_species_per_cell(ca_grid):
    lat = [38.5, 38.6, 38.4, 36.5, 0.0]
    lon = [-121.5, -121.4, -121.6, -119.5, 0.0]  # the last point is outside the grid
    species = ["a", "a", "b", "c", "d"]
    density = species_density(ca_grid, lat, lon, species)
    cell = ca_grid.cell_of([38.5, 36.5], [-121.5, -119.5])
    assert density[cell[0]] == 2 and density[cell[1]] == 1 and density.sum() == 3
    assert species_density(ca_grid, lat, lon)[cell[0]] == 3  # occurrences without species


def test_diversity_regression_recovers_a_known_relation():
    rng = np.random.default_rng(0)
    sigma = rng.normal(size=(300, 8))
    density = np.expm1(1.5 + sigma[:, 0] - 0.5 * sigma[:, 3] + 0.1 * rng.normal(size=300))
    density = np.maximum(density, 1.0)
    fit = diversity_regression(sigma, density, seed=0)
    assert fit.r2 > 0.8 and fit.pearson_r > 0.9 and fit.n_cells == 300
    noise = diversity_regression(rng.normal(size=(300, 8)), density, seed=0)
    assert noise.r2 < 0.1  # unrelated features explain nothing out of fold
    assert diversity_regression(sigma, density, seed=0).r2 == fit.r2  # seeded: same result
    with pytest.raises(ValueError, match="Only 0 cells"):
        diversity_regression(sigma, np.zeros(300))


def test_diversity_map_from_an_occurrence_file(tmp_path, ca_grid, loc_cells, small_prom3e):
    rng = np.random.default_rng(1)
    lat = rng.uniform(33, 41, 400)
    lon = rng.uniform(-123, -115, 400)
    species = rng.integers(0, 30, 400)
    csv = tmp_path / "occ.csv"
    rows = "\n".join(f"{a},{o},sp{s}" for a, o, s in zip(lat, lon, species, strict=True))
    csv.write_text("lat,lon,species\n" + rows + "\n")
    result, fit = diversity_map(
        small_prom3e, ca_grid, csv, visible="loc", embeddings=loc_cells, folds=3
    )
    assert result.band_names == ["sigma_l1", "species_density", "predicted_log_density"]
    expected = species_density(ca_grid, lat, lon, [f"sp{s}" for s in species])
    np.testing.assert_array_equal(result.band("species_density"), expected)
    assert fit.n_cells == int((expected >= 1).sum())
    assert result.tags["diversity_regression"]["r2"] == fit.r2
    path = write_map(tmp_path / "diversity.tif", result)
    with rasterio.open(path) as dataset:
        assert dataset.count == 3 and dataset.descriptions[2] == "predicted_log_density"
        assert '"pearson_r"' in dataset.tags()["diversity_regression"]


def test_components_rgb_pca_and_ica_find_the_planted_directions():
    rng = np.random.default_rng(0)
    latent = rng.laplace(size=(2000, 3)) * [5.0, 3.0, 2.0]
    mixing = np.linalg.qr(rng.normal(size=(32, 32)))[0][:3]
    features = latent @ mixing + 0.01 * rng.normal(size=(2000, 32))
    features[7] = np.nan
    rgb, summary = components_rgb(features, method="pca", seed=0)
    assert rgb.shape == (3, 2000) and np.isnan(rgb[:, 7]).all()
    assert np.nanmin(rgb) >= 0 and np.nanmax(rgb) <= 1
    assert summary["explained_variance_ratio"][0] > 0.5
    ok = np.isfinite(rgb[0])
    assert abs(np.corrcoef(rgb[0, ok], latent[ok, 0])[0, 1]) > 0.9
    ica, _ = components_rgb(features, method="ica", seed=0)
    corr = np.abs(np.corrcoef(np.vstack([ica[:, ok], latent[ok].T]))[:3, 3:])
    assert (corr.max(axis=1) > 0.9).all()  # each independent component is one planted source
    with pytest.raises(ValueError, match="method"):
        components_rgb(features, method="tsne")


def test_embedding_maps_for_a_modality_and_prom3e_registers(
    tmp_path, ca_grid, loc_cells, small_prom3e
):
    (loc_map,) = embedding_map(ca_grid, modality="loc", embeddings=loc_cells, method="pca")
    assert loc_map.band_names == ["red", "green", "blue"]
    expected, _ = components_rgb(loc_cells["loc"].read(), method="pca", seed=0)
    np.testing.assert_allclose(loc_map.values, expected, atol=1e-5)
    registers = embedding_map(
        ca_grid, modality="prom3e-hidden", model=small_prom3e, visible="loc", embeddings=loc_cells
    )
    assert len(registers) == small_prom3e.config.num_register_tokens
    assert registers[0].tags["embedding"] == "register token 1"
    assert np.isfinite(registers[0].values).all()
