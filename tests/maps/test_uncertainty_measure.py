"""`ecomodal map uncertainty --measure`: expected error by default for a calibrated model,
sigma_l1 otherwise; bands named after the measure; clear errors when it cannot be shown."""

import numpy as np
import pyarrow as pa
import pytest
import rasterio

from ecomodal.data.synthetic import SyntheticConfig, make_synthetic
from ecomodal.errors import MapError, MissingUncertaintyModelError
from ecomodal.io.tables import EmbeddingBatch, write_embeddings
from ecomodal.maps import embed_grid, uncertainty_map
from ecomodal.models import load_model
from ecomodal.training.calibrate import calibrate

GRID = ["--grid", "-125,32,-114,42", "--resolution", "1"]


@pytest.fixture(scope="module")
def loc_cells(tmp_path_factory, ca_grid, loc_encoder):
    folder = tmp_path_factory.mktemp("cells")
    return {"loc": embed_grid(ca_grid, modality="loc", encoder=loc_encoder, cache_dir=folder)}


@pytest.fixture(scope="module")
def folders(tmp_path_factory, small_prom3e):
    """(uncalibrated folder, calibrated folder): the same random 512-wide ProM3E, the second
    calibrated on a synthetic table that has only loc and sat (so from loc it completes sat)."""
    root = tmp_path_factory.mktemp("measure")
    plain = small_prom3e.save_pretrained(root / "plain")
    calibrated = small_prom3e.save_pretrained(root / "calibrated")
    data = make_synthetic(400, config=SyntheticConfig(n_species=10, dim=512, val_fraction=0.3))
    keep = [data.modalities.index("loc"), data.modalities.index("sat")]
    batch = EmbeddingBatch.from_stacked(
        data.ids, data.embeddings[:, keep], data.present[:, keep], ["loc", "sat"],
        columns=pa.table({"split": list(data.columns["split"])}),
    )  # fmt: skip
    write_embeddings(root / "table.parquet", batch)
    calibrate(calibrated, root / "table.parquet", max_rows_per_set=20, max_neighbours=300)
    return plain, calibrated


def test_measure_defaults_to_expected_error_only_with_an_uncertainty_model(
    ca_grid, loc_cells, folders
):
    plain, calibrated = folders
    sigma = uncertainty_map(plain, ca_grid, visible="loc", embeddings=loc_cells, chunk_rows=16)
    assert sigma.band_names == ["sigma_l1"] and sigma.tags["measure"] == "sigma-l1"

    result = uncertainty_map(
        calibrated, ca_grid, visible="loc", embeddings=loc_cells, chunk_rows=16
    )
    assert result.band_names == ["sat_expected_error"]
    assert result.tags["measure"] == "expected-error" and result.tags["completed"] == ["sat"]
    model = load_model(calibrated)
    x = np.zeros((ca_grid.num_cells, 6, 512), np.float32)
    x[:, model.modalities.index("loc")] = loc_cells["loc"].read()
    expected = model.complete(x, visible=["loc"], n_samples=0).expected_error
    np.testing.assert_allclose(
        result.band("sat_expected_error"), expected[:, model.modalities.index("sat")], rtol=1e-4
    )
    assert np.ptp(result.band(0)) > 0  # a value per cell, not one constant

    # sigma-l1 stays available on the calibrated model, and is the published value.
    again = uncertainty_map(
        calibrated, ca_grid, visible="loc", embeddings=loc_cells, measure="sigma-l1"
    )
    np.testing.assert_allclose(again.band("sigma_l1"), sigma.band("sigma_l1"), rtol=1e-5)


def test_expected_error_measure_fails_clearly_when_it_cannot_be_shown(ca_grid, folders):
    plain, calibrated = folders
    with pytest.raises(MissingUncertaintyModelError, match="ecomodal calibrate"):
        uncertainty_map(plain, ca_grid, visible="loc", measure="expected-error")
    with pytest.raises(MapError, match="nothing to complete"):
        uncertainty_map(calibrated, ca_grid, visible="loc,sat", measure="expected-error")
    with pytest.raises(ValueError, match="measure must be one of"):
        uncertainty_map(calibrated, ca_grid, visible="loc", measure="variance")


def test_cli_map_uncertainty_writes_the_expected_error_band(run_cli, tmp_path, folders):
    _, calibrated = folders
    out = tmp_path / "expected.tif"
    result = run_cli(
        "map", "uncertainty", "--model", calibrated, "--visible", "loc", *GRID,
        "--loc-encoder", "geoclip", "--cache-dir", tmp_path / "c", "--no-progress",
        "--out", out,
    )  # fmt: skip
    assert result.code == 0, result.output
    with rasterio.open(out) as dataset:
        assert dataset.descriptions == ("sat_expected_error",)
        assert dataset.tags()["measure"] == "expected-error"
        values = dataset.read(1)
    assert np.isfinite(values).any() and (values[np.isfinite(values)] >= 0).all()


BAD = [
    (["--model", "PLAIN", "--measure", "expected-error", "--visible", "loc"],
     ["expected-error", "ecomodal calibrate"]),
    (["--model", "CAL", "--measure", "variance", "--visible", "loc"], ["--measure", "'variance'"]),
    (["--model", "CAL", "--measure", "expected-error", "--visible", "loc,sat"],
     ["nothing to complete", "--visible"]),
]  # fmt: skip


@pytest.mark.parametrize(("args", "expected"), BAD, ids=[" ".join(c[0]) for c in BAD])
def test_cli_measure_bad_input_is_one_line_and_leaves_nothing(
    run_cli, tmp_path, folders, args, expected
):
    plain, calibrated = folders
    args = [{"PLAIN": plain, "CAL": calibrated}.get(a, a) for a in args]
    out = tmp_path / "out"
    result = run_cli(
        "map", "uncertainty", *args, *GRID, "--loc-encoder", "geoclip", "--no-progress",
        "--cache-dir", out / "cache", "--out", out / "m.tif",
    )  # fmt: skip
    result.assert_clear_failure(*expected)
    assert run_cli.files_under(tmp_path) == []
