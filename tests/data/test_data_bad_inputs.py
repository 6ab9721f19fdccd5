"""`ecomodal data ...` on bad inputs: one clear line, exit status 2, nothing left behind."""

from __future__ import annotations

import pytest

from ecomodal.data.synthetic import SyntheticConfig, make_synthetic
from ecomodal.errors import InvalidArgumentError

CASES = [
    # (arguments, expected texts): IN/ = the input folder, OUT/ = the (empty) output folder
    (["synthetic", "--n", "0", "--out", "OUT/s.parquet"], ["--n must be >= 1", "got 0"]),
    (["synthetic", "--n", "-5", "--out", "OUT/s.parquet"], ["--n must be >= 1", "got -5"]),
    (["synthetic", "--n", "10", "--missing-rate", "1.5", "--out", "OUT/s.parquet"],
     ["--missing-rate must be >= 0 and <= 1", "got 1.5"]),
    (["synthetic", "--n", "10", "--missing-rate=-0.1", "--out", "OUT/s.parquet"],
     ["--missing-rate", "got -0.1"]),
    (["synthetic", "--n", "10", "--missing-rate", "nan", "--out", "OUT/s.parquet"],
     ["--missing-rate must be a finite number"]),
    (["synthetic", "--n", "10", "--n-species", "0", "--out", "OUT/s.parquet"],
     ["--n-species must be >= 1", "got 0"]),
    (["synthetic", "--n", "10", "--seed=-1", "--out", "OUT/s.parquet"],
     ["--seed must be >= 0", "got -1"]),
    (["synthetic", "--n", "10", "--out", "IN/folder"], ["folder"]),
    (["ecobench-lite", "--n", "0", "--out", "OUT/eb"], ["--n must be >= 1", "got 0"]),
    (["ecobench-lite", "--n", "-3", "--out", "OUT/eb"], ["--n must be >= 1", "got -3"]),
    (["ecobench-lite", "--n", "100000000", "--out", "OUT/eb"], ["n must be between 1 and"]),
    (["ecobench-lite", "--n", "10", "--seed=-1", "--out", "OUT/eb"], ["--seed must be >= 0"]),
    (["ecobench-lite", "--n", "10", "--covariates", "IN/nosuch.tif", "--out", "OUT/eb"],
     ["nosuch.tif", "does not exist"]),
    (["ecobench-lite", "--n", "10", "--covariates", "IN/notes.csv", "--out", "OUT/eb"],
     ["notes.csv", ".tif"]),
    (["ecobench-lite", "--n", "10", "--out", "IN/notes.csv"], ["notes.csv is a file"]),
    (["ecobench-lite", "--places", "sea", "--n", "10", "--out", "OUT/eb"],
     ["--places must be one of photo, random-land", "got 'sea'"]),
    (["ecobench-lite", "--places", "Random-Land", "--n", "10", "--out", "OUT/eb"],
     ["--places must be one of photo, random-land", "got 'Random-Land'"]),
    (["ecobench-lite", "--places", "", "--n", "10", "--out", "OUT/eb"],
     ["--places must be one of photo, random-land", "got ''"]),
    (["ecobench-lite", "--places", "random-land", "--n", "0", "--out", "OUT/eb"],
     ["--n must be >= 1", "got 0"]),
    (["ecobench-lite", "--places", "random-land", "--n", "10", "--seed=-4", "--out", "OUT/eb"],
     ["--seed must be >= 0", "got -4"]),
    (["ecobench-lite", "--places", "random-land", "--n", "10", "--out", "IN/notes.csv"],
     ["notes.csv is a file"]),
    (["ecobench-lite", "--places", "random-land", "--n", "10", "--covariates", "IN/nosuch.tif",
      "--out", "OUT/eb"], ["nosuch.tif", "does not exist"]),
    (["import-multinat", "IN/nosuch", "--out", "OUT/m.parquet"], ["nosuch", "does not exist"]),
    (["import-multinat", "IN/notes.csv", "--out", "OUT/m.parquet"], ["notes.csv", "Parquet"]),
]  # fmt: skip


@pytest.mark.parametrize(("args", "expected"), CASES, ids=[" ".join(c[0]) for c in CASES])
def test_data_bad_input_is_one_clear_line_and_leaves_nothing(run_cli, tmp_path, args, expected):
    inputs, outputs = tmp_path / "in", tmp_path / "out"
    inputs.mkdir()
    outputs.mkdir()
    (inputs / "notes.csv").write_text("a,b\n1,2\n")
    (inputs / "folder").mkdir()
    paths = {"IN": inputs, "OUT": outputs}
    resolved = [
        str(paths[a.split("/")[0]] / a.split("/", 1)[1]) if a.split("/")[0] in paths else a
        for a in args
    ]
    result = run_cli("data", *resolved)
    result.assert_clear_failure(*expected)
    assert run_cli.files_under(outputs) == []
    assert run_cli.files_under(inputs) == ["notes.csv"]


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"missing_rate": 1.5}, "missing_rate must be >= 0 and <= 1; got 1.5"),
        ({"n_species": 0}, "n_species must be >= 1; got 0"),
        ({"dim": 2.5}, "dim must be a whole number; got 2.5"),
        ({"val_fraction": 0.6, "test_fraction": 0.6}, "val_fraction \\+ test_fraction"),
        ({"noise": {"smell": 0.1}}, "noise names a modality 'smell'"),
        ({"noise": {"image": -1.0}}, "noise\\['image'\\] must be >= 0"),
    ],
)
def test_synthetic_config_checks_every_field(fields, expected):
    with pytest.raises(InvalidArgumentError, match=expected):
        SyntheticConfig(**fields)


def test_synthetic_checks_count_and_seed():
    with pytest.raises(InvalidArgumentError, match="n_observations must be >= 1; got 0"):
        make_synthetic(0)
    with pytest.raises(InvalidArgumentError, match="seed must be >= 0; got -1"):
        make_synthetic(10, seed=-1)
    with pytest.raises(InvalidArgumentError, match="n_observations must be a whole number"):
        make_synthetic(2.5)
    # A missing rate of 1 is allowed: every row keeps one modality.
    data = make_synthetic(50, config=SyntheticConfig(n_species=5, dim=8, missing_rate=1.0))
    assert (data.present.sum(axis=1) == 1).all()
