"""`ecomodal map ...` on bad inputs: one clear line, exit status 2, nothing left behind, and the
bad value refused before any grid is embedded."""

from __future__ import annotations

import numpy as np
import pytest

from ecomodal.errors import EcomodalError

GRID = ["--grid", "-125,32,-114,42", "--resolution", "1", "--all-cells", "--no-progress"]
LOC = ["--loc-encoder", "geoclip"]


@pytest.fixture
def files(tmp_path):
    """Input files in tmp_path/in (outputs go to tmp_path/out, which must stay empty)."""
    folder = tmp_path / "in"
    folder.mkdir()
    texts = {
        "pts.csv": "lat,lon\n38.5,-121.5\n38.6,-121.4\n",
        "nolatlon.csv": "x,y\n1,2\n",
        "lat95.csv": "lat,lon\n38.5,-121.5\n95,-121.5\n",
        "lonnan.csv": "lat,lon\n38.5,nan\n",
        "text.csv": "lat,lon\n38.5,-121.5\nnorth,-121.4\n",
        "header.csv": "lat,lon\n",
        "zero.csv": "",
        "occ.csv": "lat,lon,species\n38.5,-121.5,a\n",
        "notes.txt": "not a model",
    }
    for name, text in texts.items():
        (folder / name).write_text(text)
    (folder / "folder.tif").mkdir()
    (tmp_path / "out").mkdir()
    return folder


def _species(*extra):
    return ["species", "--points", "IN/pts.csv", *LOC, *GRID, *extra]


CASES = [
    # (arguments, expected texts): IN = the input folder, OUT = the (empty) output folder
    (["species", "--points", "IN/pts.csv", *LOC, "--grid", "bogus", "--out", "OUT/m.tif"],
     ["--grid", "'bogus'"]),
    (["species", "--points", "IN/pts.csv", *LOC, "--grid", "1,2,3", "--out", "OUT/m.tif"],
     ["WEST,SOUTH,EAST,NORTH", "'1,2,3'"]),
    (["species", "--points", "IN/pts.csv", *LOC, "--grid", "-114,32,-125,42", "--all-cells",
      "--out", "OUT/m.tif"], ["west < east", "(-114.0, 32.0, -125.0, 42.0)"]),
    (["species", "--points", "IN/pts.csv", *LOC, "--grid", "-125,-95,-114,42", "--all-cells",
      "--out", "OUT/m.tif"], ["-90 <= south", "-95"]),
    (_species("--resolution", "0", "--out", "OUT/m.tif"), ["--resolution must be > 0", "got 0"]),
    (_species("--resolution", "-1", "--out", "OUT/m.tif"), ["--resolution", "got -1"]),
    (_species("--resolution", "nan", "--out", "OUT/m.tif"), ["--resolution", "finite"]),
    (_species("--resolution", "500", "--out", "OUT/m.tif"), ["<= 180", "got 500"]),
    (["species", "--points", "IN/nolatlon.csv", *LOC, *GRID, "--out", "OUT/m.tif"],
     ["nolatlon.csv", "lat and lon", "x, y"]),
    (["species", "--points", "IN/lat95.csv", *LOC, *GRID, "--out", "OUT/m.tif"],
     ["lat95.csv", "row 1", "'lat'", "[-90, 90]"]),
    (["species", "--points", "IN/lonnan.csv", *LOC, *GRID, "--out", "OUT/m.tif"],
     ["lonnan.csv", "row 0", "'lon'"]),
    (["species", "--points", "IN/text.csv", *LOC, *GRID, "--out", "OUT/m.tif"],
     ["text.csv", "row 1", "'lat'"]),
    (["species", "--points", "IN/header.csv", *LOC, *GRID, "--out", "OUT/m.tif"],
     ["header.csv", "no occurrences"]),
    (["species", "--points", "IN/zero.csv", *LOC, *GRID, "--out", "OUT/m.tif"], ["zero.csv"]),
    (["species", "--points", "IN/nosuch.csv", *LOC, *GRID, "--out", "OUT/m.tif"],
     ["nosuch.csv"]),
    (["species", "--points", "IN/pts.csv", "--background", "IN/lat95.csv", *LOC, *GRID,
      "--out", "OUT/m.tif"], ["lat95.csv", "row 1"]),
    (_species("--modality", "bogus", "--out", "OUT/m.tif"), ["'bogus'", "loc"]),
    (_species("--method", "maxent", "--out", "OUT/m.tif"), ["--method", "sdm, prototype", "maxent"]),
    (_species("--n-background", "0", "--out", "OUT/m.tif"), ["--n-background", "got 0"]),
    (_species("--block-deg", "0", "--out", "OUT/m.tif"), ["--block-deg", "got 0"]),
    (_species("--modalities", "loc,bogus", "--out", "OUT/m.tif"), ["'bogus'"]),
    (_species("--out", "IN/folder.tif"), ["--out", "folder.tif", "is an existing folder"]),
    (_species("--out", "IN/notes.txt/m.tif"), ["notes.txt is a file"]),
    (_species("--out", "OUT/m.tif", "--preview", "IN/folder.tif"), ["--preview", "is an existing folder"]),
    (_species("--out", "OUT/m.tif", "--preview", "OUT/m.tif"), ["--preview", "--out"]),
    (_species("--out", "OUT/m.tif", "--seed=-1"), ["--seed must be >= 0", "got -1"]),
    (["species", *LOC, *GRID, "--out", "OUT/m.tif"], ["exactly one of", "none"]),
    (_species("--query", "Quercus", "--out", "OUT/m.tif"), ["exactly one of", "query"]),
    (_species("--via-completion", "--out", "OUT/m.tif"), ["needs model="]),
    (["species", "--image", "IN/nosuch.jpg", *LOC, *GRID, "--out", "OUT/m.tif"],
     ["nosuch.jpg"]),
    (["sdm", "--points", "IN/pts.csv", *LOC, *GRID, "--n-background", "0", "--out",
      "OUT/m.tif"], ["--n-background must be >= 1", "got 0"]),
    (["sdm", "--points", "IN/pts.csv", *LOC, *GRID, "--classifier", "svm", "--out",
      "OUT/m.tif"], ["classifier", "'svm'"]),
    (["sdm", "--points", "IN/header.csv", *LOC, *GRID, "--out", "OUT/m.tif"],
     ["no occurrences"]),
    (["sdm", "--points", "IN/pts.csv", *LOC, *GRID, "--modality", "bogus", "--out",
      "OUT/m.tif"], ["'bogus'"]),
    (["sdm", "--points", "IN/pts.csv", *LOC, *GRID, "--out", "IN/folder.tif"], ["is an existing folder"]),
    (["uncertainty", "--model", "IN/nosuch", *GRID, "--out", "OUT/m.tif"], ["nosuch"]),
    (["uncertainty", "--model", "IN/notes.txt", *GRID, "--out", "OUT/m.tif"], ["notes.txt"]),
    (["uncertainty", "--model", "IN/nosuch", *GRID, "--resolution", "0", "--out", "OUT/m.tif"],
     ["--resolution"]),
    (["diversity", "--model", "IN/nosuch", "--occurrences", "IN/occ.csv", *GRID, "--folds", "1",
      "--out", "OUT/m.tif"], ["--folds must be >= 2", "got 1"]),
    (["diversity", "--model", "IN/nosuch", "--occurrences", "IN/lat95.csv", *GRID, "--out",
      "OUT/m.tif"], ["lat95.csv", "row 1"]),
    (["embedding", "--modality", "bogus", *GRID, "--out", "OUT/m.tif"], ["'bogus'"]),
    (["embedding", "--modality", "loc", "--method", "tsne", *GRID, "--out", "OUT/m.tif"],
     ["method", "'tsne'"]),
    (["embedding", "--modality", "prom3e-hidden", *GRID, "--out", "OUT/m.tif"],
     ["needs model="]),
]  # fmt: skip


@pytest.mark.parametrize(("args", "expected"), CASES, ids=[" ".join(c[0]) for c in CASES])
def test_map_bad_input_is_one_clear_line_and_leaves_nothing(
    run_cli, files, tmp_path, monkeypatch, args, expected
):
    import ecomodal.maps.cache as cache

    def no_grid_work(*args, **kwargs):
        raise AssertionError("the grid was embedded before the bad input was refused")

    monkeypatch.setattr(cache, "embed_grid", no_grid_work)
    paths = {"IN": files, "OUT": tmp_path / "out"}
    resolved = [
        str(paths[a.split("/")[0]] / a.split("/", 1)[1]) if a.split("/")[0] in paths else a
        for a in args
    ]
    before = run_cli.files_under(files)
    result = run_cli("map", *resolved, "--cache-dir", tmp_path / "cache")
    result.assert_clear_failure(*expected)
    assert run_cli.files_under(tmp_path / "out") == []
    assert run_cli.files_under(files) == before
    assert not (tmp_path / "cache").exists() or run_cli.files_under(tmp_path / "cache") == []


@pytest.mark.parametrize(
    ("call", "expected"),
    [
        ("points_lat_lon(([95.0], [0.0]))", "row 0, column 'lat'"),
        ("points_lat_lon(([1.0, 2.0], [0.0]))", "same length"),
        ("points_lat_lon(([], []))", "no points"),
        ("points_lat_lon((['north'], [0.0]))", "sequences of numbers"),
        ("make_grid((-125, 32, -114, 42), resolution=0)", "resolution must be in (0, 180]"),
        ("diversity_regression(np.ones(10), np.ones(10), folds=1)", "folds must be >= 2"),
        ("species_map(GRID, points=([38.0], [-121.0]), n_samples=-1)", "n_samples must be >= 0"),
        ("species_map(GRID, points=([38.0], [-121.0]), modality='x')", "'x'"),
        ("sdm_map(GRID, points=([38.0], [-121.0]), n_background=0)", "n_background must be"),
        ("sdm_map(GRID, points=([38.0], [-121.0]), out=FOLDER)", "is an existing folder"),
        ("embedding_map(GRID, modality='loc', method='tsne')", "method must be one of"),
        ("embedding_map(GRID, modality='loc', sample=2)", "sample must be >= 4"),
    ],
)
def test_map_api_checks_its_arguments_before_any_grid_work(tmp_path, monkeypatch, call, expected):
    import ecomodal.maps.cache as cache
    from ecomodal.maps import (  # noqa: F401 (used by the calls)
        diversity_regression,
        embedding_map,
        make_grid,
        points_lat_lon,
        sdm_map,
        species_map,
    )

    monkeypatch.setattr(cache, "embed_grid", lambda *a, **k: pytest.fail("grid embedded"))
    grid = make_grid((-125, 32, -114, 42), resolution=1.0, land_only=False)
    with pytest.raises(EcomodalError, match=expected.replace("(", r"\(").replace("[", r"\[")):
        eval(call, {**locals(), "GRID": grid, "FOLDER": tmp_path, "np": np})  # noqa: S307
