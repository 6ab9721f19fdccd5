import json

import numpy as np
import pytest
import rasterio
from typer.testing import CliRunner

from ecomodal.cli import app

runner = CliRunner()
GRID = ["--grid", "-125,32,-114,42", "--resolution", "1"]


def _invoke(args):
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output + repr(result.exception)
    return result


@pytest.mark.parametrize(("method", "tag"), [(None, "embedding-sdm"), ("prototype", "cosine")])
def test_map_species_from_points_writes_geotiff_and_preview(
    tmp_path, ca_grid, loc_encoder, method, tag
):
    csv = tmp_path / "occ.csv"
    csv.write_text("lat,lon\n38.5,-121.5\n38.6,-121.4\n")
    out, png = tmp_path / "species.tif", tmp_path / "species.png"
    _invoke([
        "map", "species", "--points", str(csv), *GRID, "--loc-encoder", "geoclip",
        "--cache-dir", str(tmp_path / "cache"), "--out", str(out), "--preview", str(png),
        "--no-progress", *(["--method", method] if method else []),
    ])  # fmt: skip
    assert png.stat().st_size > 10_000
    with rasterio.open(out) as dataset:
        values = dataset.read(1)
        tags = dataset.tags()
        best = np.unravel_index(np.nanargmax(values), values.shape)
        assert dataset.xy(*best) == (-121.5, 38.5)  # the cell of the points scores highest
    assert str(csv) in tags["query"] and tags["method"] == tag
    assert np.isfinite(values).sum() == ca_grid.num_cells
    if method is None:  # the SDM: background cells drawn from the grid, the choice recorded
        assert "grid cells drawn at random" in tags["background"]
        assert "logistic" in tags["sdm_selection"]


def test_map_species_needs_exactly_one_query(tmp_path):
    result = runner.invoke(
        app, ["map", "species", *GRID, "--loc-encoder", "geoclip", "--out", str(tmp_path / "x.tif"),
              "--cache-dir", str(tmp_path), "--no-progress"],
    )  # fmt: skip
    assert result.exit_code != 0 and "exactly one of" in str(result.exception)
    assert not (tmp_path / "x.tif").exists()


def test_map_uncertainty_diversity_and_embedding(tmp_path, ca_grid, small_prom3e):
    model = small_prom3e.save_pretrained(tmp_path / "prom3e")
    common = [
        *GRID,
        "--loc-encoder",
        "geoclip",
        "--cache-dir",
        str(tmp_path / "c"),
        "--no-progress",
    ]
    out = tmp_path / "sigma.tif"
    _invoke(
        [
            "map",
            "uncertainty",
            "--model",
            str(model),
            "--visible",
            "loc",
            *common,
            "--out",
            str(out),
        ]
    )
    with rasterio.open(out) as dataset:
        assert dataset.descriptions == ("sigma_l1",)
        sigma = dataset.read(1)
    assert (sigma[np.isfinite(sigma)] > 0).all() and np.isfinite(sigma).sum() == ca_grid.num_cells

    rng = np.random.default_rng(0)
    occ = tmp_path / "occ.csv"
    rows = [f"{a:.3f},{o:.3f},sp{s}" for a, o, s in zip(
        rng.uniform(33, 41, 300), rng.uniform(-123, -115, 300), rng.integers(0, 20, 300), strict=True
    )]  # fmt: skip
    occ.write_text("lat,lon,species\n" + "\n".join(rows) + "\n")
    result = _invoke([
        "map", "diversity", "--model", str(model), "--occurrences", str(occ), "--visible", "loc",
        "--folds", "3", *common, "--out", str(tmp_path / "div.tif"),
    ])  # fmt: skip
    fit = json.loads(result.output.strip().splitlines()[-1])
    assert set(fit) == {"r2", "pearson_r", "n_cells", "alpha"} and fit["n_cells"] > 20

    _invoke([
        "map", "embedding", "--modality", "prom3e-hidden", "--model", str(model), "--visible", "loc",
        *common, "--out", str(tmp_path / "hidden.tif"),
    ])  # fmt: skip
    written = sorted(p.name for p in tmp_path.glob("hidden_register*.tif"))
    assert written == [f"hidden_register{i}.tif" for i in range(1, 5)]
    with rasterio.open(tmp_path / "hidden_register1.tif") as dataset:
        assert dataset.descriptions == ("red", "green", "blue")
