"""`ecomodal slurm train|embed`: the printed sbatch scripts are valid bash, ask for what was asked,
and carry ecomodal commands that the real command line parses."""

from __future__ import annotations

import os
import re
import shlex
import subprocess

import pytest
from typer.testing import CliRunner

from ecomodal.cli import app
from ecomodal.cli.slurm import parse_ecomodal_args
from ecomodal.training.slurm import SlurmResources, embed_script, train_script

runner = CliRunner()


def _bash_syntax_ok(script: str, tmp_path) -> None:
    path = tmp_path / "job.sh"
    path.write_text(script)
    result = subprocess.run(["bash", "-n", str(path)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def _sbatch(script: str) -> dict[str, str]:
    return dict(re.findall(r"^#SBATCH --([a-z-]+)=(\S+)$", script, flags=re.M))


def _srun_lines(script: str) -> list[str]:
    return [line for line in script.splitlines() if line.startswith("srun ")]


def _run_with_printed_args(command: str, cwd, env_extra: dict[str, str]) -> list[str]:
    """Run a script line with `ecomodal` replaced by a printer of the GPUs it sees and of its
    arguments (one per line), in a real bash with the given SLURM variables."""
    printer = """sh -c 'echo "GPUS=${CUDA_VISIBLE_DEVICES:-}"; printf "%s\\n" "$@"' ecomodal"""
    line = command.replace("ecomodal ", f"{printer} ")
    env = {**os.environ, **env_extra}
    result = subprocess.run(
        ["bash", "-c", line], cwd=cwd, env=env, capture_output=True, text=True, check=True
    )
    return result.stdout.splitlines()


def test_train_script_is_complete_and_parses(tmp_path):
    result = runner.invoke(
        app,
        [
            "slurm",
            "train",
            "--nodes",
            "2",
            "--gpus-per-node",
            "4",
            "--time",
            "12:00:00",
            "--partition",
            "gpu",
            "--setup",
            "source .venv/bin/activate",
            "--",
            "prom3e",
            "--data",
            "data/train.parquet",
            "--out",
            "runs/a",
            "--epochs",
            "20",
        ],
    )
    assert result.exit_code == 0, result.output
    script = result.output
    assert script.startswith("#!/bin/bash\n")
    _bash_syntax_ok(script, tmp_path)
    sbatch = _sbatch(script)
    assert sbatch["nodes"] == "2"
    assert sbatch["ntasks-per-node"] == "4"  # one task per GPU: Lightning's SLURM convention
    assert sbatch["gpus-per-node"] == "4"
    assert sbatch["time"] == "12:00:00"
    assert sbatch["partition"] == "gpu"
    assert "source .venv/bin/activate" in script.splitlines()
    (srun,) = _srun_lines(script)
    words = shlex.split(srun)
    assert words[:3] == ["srun", "ecomodal", "train"]
    ctx = parse_ecomodal_args(words[2:])
    assert ctx.info_name == "prom3e"
    assert ctx.params["num_nodes"] == 2
    assert ctx.params["devices"] == "4"
    assert ctx.params["accelerator"] == "gpu"
    assert ctx.params["strategy"] == "ddp"
    assert ctx.params["epochs"] == 20
    assert str(ctx.params["data"]) == "data/train.parquet"


def test_embed_script_shards_per_task_then_merges(tmp_path):
    out = tmp_path / "out dir" / "emb.parquet"
    result = runner.invoke(
        app,
        [
            "slurm",
            "embed",
            "--nodes",
            "2",
            "--gpus-per-node",
            "2",
            "--time",
            "1-00:00:00",
            "--account",
            "lab1",
            "--mem",
            "64G",
            "--",
            "--records",
            "records.csv",
            "--modalities",
            "image,loc",
            "--out",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    script = result.output
    _bash_syntax_ok(script, tmp_path)
    sbatch = _sbatch(script)
    assert (sbatch["nodes"], sbatch["ntasks-per-node"], sbatch["gpus-per-node"]) == ("2", "2", "2")
    assert (sbatch["time"], sbatch["account"], sbatch["mem"]) == ("1-00:00:00", "lab1", "64G")
    embed_line, merge_line = _srun_lines(script)

    # Each task expands its own rank into --shard, and the path with a space stays one argument.
    inner = shlex.split(embed_line)[-1]
    slurm = {"SLURM_PROCID": "3", "SLURM_NTASKS": "4", "SLURM_LOCALID": "1"}
    gpus, *args = _run_with_printed_args(inner, tmp_path, {**slurm, "CUDA_VISIBLE_DEVICES": "4,5"})
    assert gpus == "GPUS=5"  # the task's own GPU of the two its node has
    ctx = parse_ecomodal_args(args)
    assert ctx.info_name == "embed"
    assert ctx.params["shard"] == "3/4"
    assert ctx.params["device"] == "cuda"
    gpus, *_ = _run_with_printed_args(inner, tmp_path, {**slurm, "CUDA_VISIBLE_DEVICES": "7"})
    assert gpus == "GPUS=7"  # already bound to one GPU by SLURM: kept
    assert ctx.params["out"] == out
    assert ctx.params["modalities"] == "image,loc"

    # The merge step's glob picks up exactly the four shard tables (not their errors tables).
    out.parent.mkdir()
    shards = [out.parent / f"emb.shard-{i:05d}-of-00004.parquet" for i in range(4)]
    for path in shards:
        path.write_bytes(b"")
    (out.parent / "emb.shard-00000-of-00004.errors.parquet").write_bytes(b"")
    (out.parent / "emb.shard-00000-of-00003.parquet").write_bytes(b"")  # another run's shard
    merge = merge_line.removeprefix("srun --nodes=1 --ntasks=1 ")
    _, *args = _run_with_printed_args(merge, tmp_path, {})
    ctx = parse_ecomodal_args(args)
    assert ctx.info_name == "merge"
    assert sorted(str(p) for p in ctx.params["inputs"]) == [str(p) for p in shards]
    assert ctx.params["out"] == out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["train", "--", "prom3e", "--data", "t.parquet", "--bogus", "1"], "No such option"),
        (["train", "--", "prom3e", "--data", "t.parquet"], "Missing parameter: out"),
        (
            [
                "train",
                "--nodes",
                "2",
                "--",
                "prom3e",
                "--data",
                "t",
                "--out",
                "o",
                "--num-nodes",
                "3",
            ],
            "--num-nodes",
        ),
        (["train", "--time", "soon", "--", "prom3e", "--data", "t", "--out", "o"], "--time"),
        (
            [
                "embed",
                "--",
                "--records",
                "r.csv",
                "--modalities",
                "loc",
                "--out",
                "o.parquet",
                "--shard",
                "0/2",
            ],
            "--shard",
        ),
        (["embed", "--", "--records", "r.csv", "--modalities", "loc"], "--out"),
        (["train", "--", "bogus", "--data", "t", "--out", "o"], "no command 'bogus'"),
    ],
)
def test_bad_requests_fail_with_a_clear_message(argv, message):
    result = runner.invoke(app, ["slurm", *argv])
    assert result.exit_code == 2
    # The error box wraps long lines: compare the words.
    assert message in " ".join(re.sub(r"[│╭╮╰╯─]", " ", result.output).split())


def test_python_api_matches_cli(tmp_path):
    resources = SlurmResources(nodes=1, gpus_per_node=8, time="04:00:00", partition="a100")
    script = train_script(["prom3e", "--data", "t.parquet", "--out", "o"], resources)
    _bash_syntax_ok(script, tmp_path)
    assert "--devices 8 --num-nodes 1 --strategy ddp" in script
    with pytest.raises(ValueError, match="--partition"):
        SlurmResources(partition="gpu; rm -rf /").sbatch_lines()
    with pytest.raises(ValueError, match="must write --out"):
        embed_script(["--records", "r.csv", "--out", "a.parquet"], "b.parquet", resources)
