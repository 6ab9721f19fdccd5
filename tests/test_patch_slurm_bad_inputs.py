"""`ecomodal patch` and `ecomodal slurm` on bad inputs: one clear line, nothing left behind."""

from __future__ import annotations

import pytest

from ecomodal.errors import InvalidArgumentError
from ecomodal.training.patching import parse_alphas

PATCH = ["patch", "--original", "IN/a", "--finetuned", "IN/b", "--val", "IN/val.csv"]
TRAIN = ["--", "prom3e", "--data", "IN/val.csv", "--out", "OUT/run"]

CASES = [
    # (arguments, expected texts): IN/ = the input folder, OUT/ = the (empty) output folder
    ([*PATCH, "--out", "OUT/p", "--alphas", "bogus"], ["--alphas", "'bogus'", "START:STOP:N"]),
    ([*PATCH, "--out", "OUT/p", "--alphas", "0:1:0"], ["--alphas", "'0:1:0'"]),
    ([*PATCH, "--out", "OUT/p", "--alphas=-0.5,1"], ["--alphas must lie in [0, 1]", "-0.5"]),
    ([*PATCH, "--out", "OUT/p", "--alphas", "0,1.5"], ["--alphas must lie in [0, 1]", "1.5"]),
    ([*PATCH, "--out", "OUT/p", "--alphas", "1:2:3"], ["--alphas must lie in [0, 1]"]),
    ([*PATCH, "--out", "OUT/p", "--alphas", "nan,0.5"], ["finite", "'nan,0.5'"]),
    ([*PATCH, "--out", "OUT/p", "--alphas", ""], ["--alphas"]),
    ([*PATCH, "--out", "OUT/p", "--batch-size", "0"], ["--batch-size must be >= 1", "got 0"]),
    ([*PATCH, "--out", "IN/val.csv"], ["val.csv is a file"]),
    (["patch", "--original", "IN/nosuch", "--finetuned", "IN/b", "--val", "IN/val.csv",
      "--out", "OUT/p"], ["nosuch"]),
    (["patch", "--original", "IN/a", "--finetuned", "IN/b", "--val", "IN/val.csv",
      "--modality", "loc", "--modality", "sat", "--out", "OUT/p"], ["2 --modality names", "1"]),
    (["slurm", "train", "--nodes", "0", *TRAIN], ["--nodes must be at least 1", "got 0"]),
    (["slurm", "train", "--nodes=-2", *TRAIN], ["--nodes", "got -2"]),
    (["slurm", "train", "--gpus-per-node", "0", *TRAIN], ["--gpus-per-node", "got 0"]),
    (["slurm", "train", "--cpus-per-task", "0", *TRAIN], ["--cpus-per-task", "got 0"]),
    (["slurm", "train", "--time", "soon", *TRAIN], ["--time 'soon'", "12:00:00"]),
    (["slurm", "train", "--mem", "lots", *TRAIN], ["--mem"]),
    (["slurm", "train", "--output", "IN/a", *TRAIN], ["--output", "is an existing folder"]),
    (["slurm", "embed", "--nodes", "0", "--", "--records", "IN/val.csv", "--out", "OUT/e.parquet"],
     ["--nodes must be at least 1"]),
]  # fmt: skip


@pytest.mark.parametrize(("args", "expected"), CASES, ids=[" ".join(c[0]) for c in CASES])
def test_patch_and_slurm_bad_input_is_one_clear_line(run_cli, tmp_path, args, expected):
    inputs, outputs = tmp_path / "in", tmp_path / "out"
    for folder in (inputs / "a", inputs / "b", outputs):
        folder.mkdir(parents=True)
    (inputs / "val.csv").write_text("image,text\nx.jpg,Quercus\n")
    paths = {"IN": inputs, "OUT": outputs}
    resolved = [
        str(paths[a.split("/")[0]] / a.split("/", 1)[1]) if a.split("/")[0] in paths else a
        for a in args
    ]
    result = run_cli(*resolved)
    result.assert_clear_failure(*expected)
    assert run_cli.files_under(outputs) == []
    assert run_cli.files_under(inputs) == ["val.csv"]


@pytest.mark.parametrize("alphas", ["-0.1,0.5", [0.0, 2.0], "0:1.5:4"])
def test_alphas_outside_zero_one_are_refused_by_the_api(alphas):
    with pytest.raises(InvalidArgumentError, match=r"must lie in \[0, 1\]"):
        parse_alphas(alphas)
    assert parse_alphas("0:1:3") == [0.0, 0.5, 1.0]
