"""`ecomodal covariates build` on a bad output path: one clear line, before any work."""

from __future__ import annotations


def test_covariates_build_into_a_folder_is_one_clear_line(run_cli, tmp_path, monkeypatch):
    import ecomodal.geo.covariates as covariates

    monkeypatch.setattr(covariates, "era5_climatology", lambda: 1 / 0)  # no work may start
    folder = tmp_path / "stack.tif"
    folder.mkdir()
    run_cli("covariates", "build", "--out", folder).assert_clear_failure(
        "stack.tif is an existing folder", "GeoTIFF"
    )
    assert run_cli.files_under(tmp_path) == []
