"""Bad training inputs: `train prom3e`, `train bind` and `train cluster` answer each with one clear
line and exit status 2, and leave nothing in the run folder; the same checks hold in the Python
API; a crafted resume checkpoint never runs code."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import torch

from ecomodal.data.synthetic import SyntheticConfig, make_synthetic, to_batch
from ecomodal.errors import CheckpointError, EcomodalError
from ecomodal.io.tables import write_embeddings
from ecomodal.training.bind import train_bind
from ecomodal.training.callbacks import merge_metric_logs
from ecomodal.training.cluster import HeadConfig, cluster_sweep
from ecomodal.training.prom3e import train_prom3e

HAS_GPU = torch.cuda.is_available()


@pytest.fixture(scope="module")
def tables(tmp_path_factory):
    """A 60-row table with the six modalities and a split column; the same without the split
    column; a 1-row and a 0-row table."""
    folder = tmp_path_factory.mktemp("bad-inputs")
    batch = to_batch(make_synthetic(60, config=SyntheticConfig(n_species=5, dim=16), seed=0))
    write_embeddings(folder / "small.parquet", batch)
    embeddings = {name: values for name, values in batch.embeddings.items()}
    write_embeddings(folder / "nosplit.parquet", ids=batch.ids, embeddings=embeddings)
    one = {name: values[:1] for name, values in embeddings.items()}
    write_embeddings(folder / "one.parquet", ids=batch.ids[:1], embeddings=one)
    zero = {name: values[:0] for name, values in embeddings.items()}
    write_embeddings(folder / "zero.parquet", ids=batch.ids[:0], embeddings=zero)
    return folder


PROM3E = ("--embed-dim", "16", "--heads", "2", "--mlp-dim", "32", "--no-progress")
BIND = ("--modality", "image", "--bind-to", "text", "--head", "mlp", "--hidden", "8")
BIND += ("--no-progress",)
CLUSTER = ("--k", "3", "--embedding", "image", "--shots", "1", "--repeats", "1")
NO_GPU = pytest.mark.skipif(HAS_GPU, reason="this machine has a GPU")

CASES = [
    # train prom3e
    ("prom3e", "zero", (), ("zero.parquet", "0 row(s)")),
    ("prom3e", "one", (), ("one.parquet", "1 row(s)", "at least 1 training and 1 validation")),
    ("prom3e", "small", ("--epochs", "0"), ("--epochs must be >= 1", "got 0")),
    ("prom3e", "small", ("--epochs", "-1"), ("--epochs must be >= 1", "got -1")),
    *[
        ("prom3e", "nosplit", ("--val-fraction", v), ("--val-fraction must be > 0 and < 1", v))
        for v in ("0", "1", "1.5", "-0.5")
    ],
    ("prom3e", "small", ("--val-fraction", "1.5"), ("--val-fraction", "got 1.5")),
    ("prom3e", "small", ("--batch-size", "0"), ("--batch-size must be >= 1", "got 0")),
    ("prom3e", "small", ("--lr", "nan"), ("--lr must be a finite number", "got nan")),
    ("prom3e", "small", ("--lr", "0"), ("--lr must be > 0", "got 0")),
    ("prom3e", "small", ("--dropout", "1.5"), ("--dropout must be >= 0 and < 1", "got 1.5")),
    ("prom3e", "small", ("--visible-probs", "0.5,0.3,0.2"), ("--visible-probs", "same", "(3)")),
    ("prom3e", "small", ("--visible-probs", "0.5,0.4"), ("--visible-probs must sum to 1",)),
    ("prom3e", "small", ("--visible-counts", "7,1"), ("--visible-counts", "<= 6", "got 7")),
    ("prom3e", "small", ("--modalities", "image,foo"), ("['foo']", "small.parquet")),
    ("prom3e", "small", ("--precision", "fp8"), ("'fp8'", "fp32, bf16")),
    ("prom3e", "small", ("--devices", "bogus"), ("devices must be", "'bogus'")),
    ("prom3e", "small", ("--devices", "0"), ("devices must be", "got 0")),
    ("prom3e", "small", ("--accelerator", "tpu9"), ("Unknown accelerator 'tpu9'",)),
    pytest.param("prom3e", "small", ("--accelerator", "cuda"), ("'cuda' is not available",), marks=NO_GPU),
    pytest.param("prom3e", "small", ("--accelerator", "gpu"), ("'gpu' is not available",), marks=NO_GPU),
    # train bind
    ("bind", "zero", (), ("zero.parquet",)),
    ("bind", "one", (), ("at least 2 training and 2 validation rows",)),
    ("bind", "small", ("--epochs", "0"), ("--epochs must be >= 1", "got 0")),
    ("bind", "small", ("--epochs", "-1"), ("--epochs must be >= 1", "got -1")),
    ("bind", "small", ("--batch-size", "0"), ("--batch-size must be >= 1", "got 0")),
    ("bind", "small", ("--val-fraction", "1.5"), ("--val-fraction", "got 1.5")),
    ("bind", "nosplit", ("--val-fraction", "0"), ("--val-fraction", "got 0")),
    ("bind", "small", ("--lr", "nan"), ("--lr must be a finite number",)),
    ("bind", "small", ("--accumulate", "0"), ("--accumulate must be >= 1", "got 0")),
    ("bind", "small", ("--num-negatives", "0"), ("--num-negatives must be >= 1",)),
    ("bind", "small", ("--precision", "fp8"), ("'fp8'",)),
    ("bind", "small", ("--devices", "bogus"), ("'bogus'",)),
    ("bind", "small", ("--modality", "foo"), ("no 'foo' feature column",)),
    pytest.param("bind", "small", ("--accelerator", "gpu"), ("'gpu' is not available",), marks=NO_GPU),
    # train cluster
    ("cluster", "zero", (), ("no column 'split'",)),
    ("cluster", "zero", ("--split", "random"), ("K=3 needs at least as many train rows",)),
    ("cluster", "small", ("--epochs", "0"), ("--epochs must be >= 1", "got 0")),
    ("cluster", "small", ("--batch-size", "0"), ("--batch-size must be >= 1", "got 0")),
    ("cluster", "small", ("--lr", "nan"), ("--lr must be a finite number",)),
    ("cluster", "small", ("--margin", "-1"), ("--margin must be >= 0", "got -1")),
    ("cluster", "small", ("--scale", "0"), ("--scale must be > 0",)),
    ("cluster", "small", ("--shots", "0"), ("--shots must be >= 1",)),
    ("cluster", "small", ("--niter", "0"), ("--niter must be >= 1",)),
    ("cluster", "small", ("--embedding", "foo"), ("'foo'",)),
    pytest.param("cluster", "small", ("--accelerator", "cuda"), ("'cuda' is not available",), marks=NO_GPU),
]  # fmt: skip


@pytest.mark.parametrize(("command", "table", "args", "expected"), CASES)
def test_bad_training_input_is_one_clear_line(run_cli, tables, tmp_path, command, table, args, expected):  # fmt: skip
    out = tmp_path / "run"
    base = {"prom3e": PROM3E, "bind": BIND, "cluster": CLUSTER}[command]
    data = tables / f"{table}.parquet"
    result = run_cli("train", command, "--data", data, "--out", out, *base, *args)
    result.assert_clear_failure(*expected)
    assert not out.exists() or run_cli.files_under(out) == []  # no best/, no partial files


def test_the_api_checks_the_same(tables, tmp_path):
    small, out = tables / "small.parquet", tmp_path / "run"
    calls = [
        (lambda: train_prom3e(small, out, epochs=0), "epochs must be >= 1; got 0"),
        (lambda: train_prom3e(small, out, batch_size=0), "batch_size must be >= 1; got 0"),
        (lambda: train_prom3e(small, out, val_fraction=1.5), "val_fraction must be > 0"),
        (lambda: train_prom3e(small, out, lr=float("nan")), "lr must be a finite number"),
        (lambda: train_prom3e(small, out, model_config={"dropout": 1.5}), "dropout must be"),
        (lambda: train_prom3e(small, out, visible_counts=(7,), visible_probs=(1.0,)), "<= 6"),
        (lambda: train_prom3e(small, out, modalities=["foo"]), "['foo']"),
        (lambda: train_prom3e(tables / "one.parquet", out), "1 row(s)"),
        (lambda: train_prom3e(small, out, accelerator="bogus"), "Unknown accelerator"),
        (lambda: train_bind(small, out, modality="image", bind_to="text", epochs=-1), "epochs"),
        (lambda: train_bind(small, out, modality="image", bind_to="text", batch_size=0), "batch_size"),
        (lambda: cluster_sweep(small, out, ks="3", head=HeadConfig(epochs=0)), "epochs must be"),
        (lambda: cluster_sweep(small, out, ks="3", shots=0), "shots must be >= 1"),
    ]  # fmt: skip
    for call, message in calls:
        with pytest.raises(EcomodalError) as info:
            call()
        assert message in str(info.value)
        assert not out.exists()


class _Marker:
    """Unpickling this runs ``open(path, "w")``: a stand-in for any code a crafted file runs."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_a_crafted_resume_checkpoint_runs_no_code(run_cli, tables, tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    run, marker = tmp_path / "run", tmp_path / "pwned"
    ckpt = run / "checkpoints" / "last.ckpt"
    ckpt.parent.mkdir(parents=True)
    torch.save({"epoch": 0, "state_dict": {}, "payload": _Marker(marker)}, ckpt)
    small = tables / "small.parquet"
    with pytest.raises(CheckpointError, match=r"last\.ckpt: not loaded as resume state"):
        train_prom3e(small, run, epochs=1, model_config={"embed_dim": 16, "heads": 2})
    result = run_cli("train", "prom3e", "--data", small, "--out", run, *PROM3E)
    result.assert_clear_failure("last.ckpt", "--no-resume")
    assert not marker.exists()
    # the file is a real threat: a plain torch.load under this environment runs its code
    with pytest.warns(UserWarning, match="TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"):
        torch.load(ckpt)["payload"].close()
    assert marker.exists()


def test_metrics_keep_each_epoch_once(tmp_path):
    """Segments of a run killed twice: a segment resumed at epoch N replaces the earlier rows
    of epochs N and later (a killed attempt's), and a row cut by the kill is skipped."""
    logs = tmp_path / "logs"
    segments = {
        0: ["0,0,a", "0,1,b", "1,2,c", "1,3,d"],  # killed during epoch 1 (epoch 0 finished)
        1: ["1,2,c", "1,3,d", "2,4,e", "2,5"],  # resumed at 1, killed in 2, the last row cut
        2: ["2,4,e", "2,5,f"],  # resumed at 2, finished
    }
    for version, rows in segments.items():
        (logs / f"version_{version}").mkdir(parents=True)
        text = "\n".join(["epoch,step,train/loss", *rows]) + "\n"
        (logs / f"version_{version}" / "metrics.csv").write_text(text)
    merged = merge_metric_logs(logs, tmp_path / "metrics.csv")
    with merged.open(newline="") as handle:
        rows = [(r["epoch"], r["step"], r["train/loss"]) for r in csv.DictReader(handle)]
    expected = ["0,0,a", "0,1,b", "1,2,c", "1,3,d", "2,4,e", "2,5,f"]
    assert rows == [tuple(line.split(",")) for line in expected]
    assert np.unique([r[1] for r in rows]).size == len(rows)
