import subprocess
import sys

import numpy as np
import pytest
import torch
from run_checks import assert_killed_run_resumes_exactly, assert_same_weights, weights

from ecomodal.data.synthetic import SyntheticConfig, make_synthetic, to_batch
from ecomodal.eval.completion import evaluate_completion, sigma_by_visible_count
from ecomodal.io.tables import write_embeddings
from ecomodal.models import load_model
from ecomodal.training.prom3e import train_prom3e

TINY = {"input_dim": 64, "embed_dim": 64, "heads": 4, "mlp_dim": 128, "dropout": 0.1}


@pytest.fixture(scope="module")
def tiny_table(tmp_path_factory):
    data = make_synthetic(1200, config=SyntheticConfig(n_species=30, dim=64), seed=0)
    path = tmp_path_factory.mktemp("data") / "tiny.parquet"
    write_embeddings(path, to_batch(data))
    return path


def test_training_writes_published_format_and_metrics(tiny_table, tmp_path):
    result = train_prom3e(
        tiny_table,
        tmp_path / "run",
        epochs=3,
        batch_size=128,
        lr=1e-3,
        model_config=TINY,
        show_progress=False,
    )
    model = load_model(result.best_dir)
    assert model.config.embed_dim == 64
    assert (result.last_dir / "config.json").is_file()
    header = result.metrics_path.read_text().splitlines()[0].split(",")
    for column in ("epoch", "step", "train/loss", "val/loss", "val/kl"):
        assert column in header
    assert 0 <= result.best_epoch < 3
    assert np.isfinite(result.best_val_loss)


def test_resume_repeats_an_uninterrupted_run(tiny_table, tmp_path):
    kwargs = dict(epochs=3, batch_size=128, model_config=TINY, show_progress=False, seed=7)
    train_prom3e(tiny_table, tmp_path / "straight", **kwargs)
    train_prom3e(tiny_table, tmp_path / "split", **{**kwargs, "epochs": 1})
    train_prom3e(tiny_table, tmp_path / "split", **kwargs)
    assert_same_weights(tmp_path / "straight" / "last", tmp_path / "split" / "last")
    rows = (tmp_path / "split" / "metrics.csv").read_text().splitlines()
    straight = (tmp_path / "straight" / "metrics.csv").read_text().splitlines()
    assert len(rows) == len(straight)  # both segments' logs are kept
    # a different seed gives different weights
    train_prom3e(tiny_table, tmp_path / "other", **{**kwargs, "seed": 8})
    assert not torch.equal(
        weights(tmp_path / "other" / "last")["cls_tokens"],
        weights(tmp_path / "straight" / "last")["cls_tokens"],
    )


def _cli(*args):
    return [sys.executable, "-m", "ecomodal", *args]


def _train_args(table, out, epochs, extra=()):
    return _cli(
        "train", "prom3e", "--data", str(table), "--out", str(out), "--epochs", str(epochs),
        "--batch-size", "64", "--embed-dim", "64", "--heads", "4", "--mlp-dim", "128",
        "--seed", "3", "--no-progress", *extra,
    )  # fmt: skip


@pytest.mark.slow
def test_killed_process_resumes_exactly(tiny_table, tmp_path):
    assert_killed_run_resumes_exactly(lambda out: _train_args(tiny_table, out, 4), tmp_path, 4)


@pytest.mark.slow
def test_two_process_ddp_on_cpu(tiny_table, tmp_path):
    out = tmp_path / "ddp"
    run = subprocess.run(
        _train_args(tiny_table, out, 2, ("--devices", "2", "--strategy", "ddp")),
        capture_output=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr.decode()[-3000:]
    # Lightning's start-up notices stay off the terminal (the CLI quiets them after import)
    for notice in (b"GPU available", b"litlogger", b"Initializing distributed"):
        assert notice not in run.stderr + run.stdout, notice
    assert run.stdout.count(b"best model:") == 1  # rank 0 reports, once
    model = load_model(out / "best")
    assert model.config.embed_dim == 64
    # each of the 2 processes sees half the training rows per epoch: 960 train rows / 2 / 64
    steps = [int(r.split(",")[1]) for r in (out / "metrics.csv").read_text().splitlines()[1:]]
    assert max(steps) + 1 == 2 * (960 // 2 // 64)


def test_bf16_training_runs(tiny_table, tmp_path):
    result = train_prom3e(
        tiny_table,
        tmp_path / "bf16",
        epochs=1,
        batch_size=128,
        model_config=TINY,
        precision="bf16",
        show_progress=False,
    )
    assert np.isfinite(result.best_val_loss)
    tensors = weights(result.last_dir)
    assert all(t.dtype == torch.float32 for t in tensors.values())


def test_non_finite_loss_stops_with_the_step(tiny_table, tmp_path):
    with pytest.raises(FloatingPointError, match=r"non-finite loss .* at step \d+"):
        train_prom3e(
            tiny_table,
            tmp_path / "nan",
            epochs=2,
            batch_size=128,
            model_config=TINY,
            lr=1e30,
            show_progress=False,
        )


@pytest.mark.slow
def test_trained_model_beats_baselines(tmp_path):
    """The completion criterion of the synthetic benchmark (see the foundation issue)."""
    data = make_synthetic(6000, config=SyntheticConfig(n_species=60, dim=64), seed=1)
    path = tmp_path / "data.parquet"
    write_embeddings(path, to_batch(data))
    result = train_prom3e(
        path, tmp_path / "run", epochs=80, batch_size=256, lr=1e-3, t0=80, seed=1,
        model_config={**TINY, "embed_dim": 128, "mlp_dim": 256}, show_progress=False,
    )  # fmt: skip
    model = load_model(result.best_dir)
    test, train = data.split("test"), data.split("train")
    scores = evaluate_completion(
        model, test.embeddings, test.present, train.embeddings, train.present
    )
    avg = scores["average"]
    assert avg["model_cosine"] > max(avg["mean_cosine"], avg["nn_cosine"]) + 0.05
    assert avg["model_r1"] > max(avg["mean_r1"], avg["nn_r1"])
    # the species is recovered from the photo better than by the nearest neighbour
    assert scores["image->text"]["model_r1"] > scores["image->text"]["nn_r1"]
    sigma = sigma_by_visible_count(model, test.embeddings, test.present, max_sets_per_count=6)
    assert set(sigma) == {1, 2, 3, 4, 5, 6}
    assert all(np.isfinite(v) and v > 0 for v in sigma.values())
