"""Cluster discrimination on the synthetic benchmark: seeded k-means, the margin softmax by hand,
and a K sweep whose scores, files and saved heads are checked."""

from __future__ import annotations

import csv
import json
import math
import re
import sys

import numpy as np
import pytest
import torch
from run_checks import assert_same_weights, kill_after_first_epoch, metric_rows, run_to_end
from typer.testing import CliRunner

from ecomodal.cli import app
from ecomodal.data.synthetic import SyntheticConfig, make_synthetic, to_batch
from ecomodal.errors import CheckpointError
from ecomodal.io.checkpoints import read_config, read_weights
from ecomodal.io.tables import write_embeddings
from ecomodal.models.heads import MarginClassifier, ProjectionHead
from ecomodal.training.cluster import HeadConfig, cluster_sweep, kmeans, parse_ks

N_SPECIES = 8


@pytest.fixture(scope="module")
def aligned_table(tmp_path_factory):
    """Synthetic observations whose ``image`` embedding is its species' ``text`` embedding plus
    noise: a binding space where zero-shot works, as in a CLIP-style model."""
    config = SyntheticConfig(n_species=N_SPECIES, dim=16, hidden_dim=16, latent_dim=8)
    batch = to_batch(make_synthetic(400, config=config, seed=0))
    rng = np.random.default_rng(0)
    text = batch.embeddings["text"]
    image = text + 0.15 * rng.standard_normal(text.shape).astype(np.float32)
    batch.embeddings["image"] = image / np.linalg.norm(image, axis=1, keepdims=True)
    path = tmp_path_factory.mktemp("cluster") / "aligned.parquet"
    write_embeddings(path, batch)
    return path, batch


def test_kmeans_is_seeded(aligned_table):
    _, batch = aligned_table
    x = batch.embeddings["image"]
    first, again, other = kmeans(x, 6, seed=3), kmeans(x, 6, seed=3), kmeans(x, 6, seed=4)
    np.testing.assert_array_equal(first.assignments, again.assignments)
    np.testing.assert_array_equal(first.centres, again.centres)
    assert not np.array_equal(first.centres, other.centres)
    np.testing.assert_allclose(np.linalg.norm(first.centres, axis=1), 1.0, atol=1e-5)
    # Each row is assigned to its most similar centre.
    np.testing.assert_array_equal(first.assignments, np.argmax(x @ first.centres.T, axis=1))
    with pytest.raises(ValueError, match="Cannot make 500 clusters from 400 rows"):
        kmeans(x, 500)


def test_margin_softmax_by_hand():
    centres = torch.tensor([[2.0, 0.0], [0.0, 1.0]])  # normalised inside
    head = MarginClassifier(centres, margin=0.5, scale=2.0)
    embedding = torch.tensor([[3.0, 0.0]])  # angle 0 to centre 0, pi/2 to centre 1
    logits = head(embedding, torch.tensor([0]))
    torch.testing.assert_close(logits, torch.tensor([[2.0 * math.cos(0.5), 0.0]]))
    loss = torch.nn.functional.cross_entropy(logits, torch.tensor([0]))
    assert loss.item() == pytest.approx(math.log(1 + math.exp(-2.0 * math.cos(0.5))), rel=1e-6)
    # The margin only touches the true class: labelled 1, the angle pi/2 becomes pi/2 + 0.5.
    logits = head(embedding, torch.tensor([1]))
    torch.testing.assert_close(logits, torch.tensor([[2.0, 2.0 * math.cos(math.pi / 2 + 0.5)]]))
    torch.testing.assert_close(head(embedding), torch.tensor([[2.0, 0.0]]))  # inference: no margin
    # The widened angle stops at pi.
    far = head(torch.tensor([[-1.0, 0.0]]), torch.tensor([0]))
    assert far[0, 0].item() == pytest.approx(-2.0)


def test_sweep_scores_saves_and_resumes(aligned_table, tmp_path):
    path, batch = aligned_table
    out = tmp_path / "sweep"
    head = HeadConfig(epochs=6, batch_size=32, lr=1e-2)
    options = dict(ks="2,8", head=head, shots=3, repeats=2, seed=0)
    result = cluster_sweep(path, out, **options)
    two, eight = result.runs
    assert (two.k, eight.k) == (2, 8)
    # The binding space itself classifies almost perfectly; 2 pseudo-classes cannot separate 8
    # species, as many as the species come close to the reference.
    assert result.reference["zero_shot"] > 0.95
    assert eight.zero_shot > 0.8 > two.zero_shot
    assert result.closest_k == 8
    assert eight.clusters_used == 8

    # The saved head and centres reproduce the clustering it was trained on.
    head_dir = out / "k8"
    config = read_config(head_dir / "config.json")
    head = ProjectionHead(**config)
    head.load_state_dict(read_weights(head_dir / "model.safetensors"))
    centres = np.load(head_dir / "centres.npy")
    train = np.asarray(batch.columns.column("split").to_pylist()) == "train"
    x = batch.embeddings["image"][train]
    with torch.no_grad():
        predicted = np.argmax(head(torch.from_numpy(x)).numpy() @ centres.T, axis=1)
    assignments = kmeans(x, 8, seed=0).assignments
    assert np.mean(predicted == assignments) > 0.9

    with open(out / "cluster_sweep.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert [int(r["k"]) for r in rows] == [2, 8]
    assert float(rows[1]["zero_shot"]) == pytest.approx(eight.zero_shot)
    summary = json.loads((out / "cluster_sweep.json").read_text())
    assert summary["closest_k"] == 8 and summary["reference"]["column"] == "image"
    assert (out / "cluster_sweep.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # Resuming skips the K already done (their files are untouched) and gives the same scores.
    stamp = (head_dir / "model.safetensors").stat().st_mtime_ns
    again = cluster_sweep(path, out, **options)
    assert (head_dir / "model.safetensors").stat().st_mtime_ns == stamp
    assert again.runs == result.runs


def test_cli_train_cluster(aligned_table, tmp_path):
    path, _ = aligned_table
    out = tmp_path / "cli"
    result = CliRunner().invoke(
        app,
        [
            "train",
            "cluster",
            "--data",
            str(path),
            "--k",
            "4",
            "--out",
            str(out),
            "--epochs",
            "1",
            "--shots",
            "2",
            "--repeats",
            "1",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "K=4: zero-shot" in result.output
    assert "closest to the reference: K=4" in result.output
    assert (out / "k4" / "model.safetensors").is_file()
    bad = CliRunner().invoke(
        app, ["train", "cluster", "--data", str(path), "--k", "1,x", "--out", str(out)]
    )
    assert bad.exit_code == 2


def test_bad_requests_are_named(aligned_table, tmp_path):
    path, _ = aligned_table
    assert parse_ks("500, 100,100") == [100, 500]
    with pytest.raises(ValueError, match="at least 2"):
        parse_ks("1,5")
    with pytest.raises(ValueError, match="K=5000 needs at least as many train rows"):
        cluster_sweep(path, tmp_path, ks="5000")
    with pytest.raises(ValueError, match="no embedding column 'bioclip'"):
        cluster_sweep(path, tmp_path, ks="4", reference="bioclip")


@pytest.mark.slow
def test_killed_sweep_resumes_each_k_at_the_next_epoch(aligned_table, tmp_path):
    """A real `ecomodal train cluster` SIGKILLed after the first finished epoch of its second K,
    then rerun: K=2 (done) is kept, K=3 resumes at the next epoch (said in the log), and every
    head, per-K metrics.csv and the sweep's results equal those of an uninterrupted run."""
    path, _ = aligned_table
    epochs = 4

    def args_for(out):
        return (
            [sys.executable, "-m", "ecomodal", "train", "cluster", "--data", str(path)]
            + ["--out", str(out), "--k", "2,3", "--epochs", str(epochs), "--batch-size", "32"]
            + ["--shots", "2", "--repeats", "1"]
        )

    straight, killed = tmp_path / "straight", tmp_path / "killed"
    run_to_end(args_for(straight))
    done = kill_after_first_epoch(
        args_for(killed), killed / "k3" / "checkpoints" / "last.ckpt", epochs
    )
    assert (killed / "k2" / "metrics.json").is_file() and not (
        killed / "k3" / "metrics.json"
    ).exists()
    log = run_to_end(args_for(killed))
    assert f"resuming from epoch {done} (epochs 0-{done - 1} done in {killed / 'k3'})" in log, log
    assert log.count("resuming from epoch") == 1  # K=2 was not trained again

    def results(out):
        summary = json.loads((out / "cluster_sweep.json").read_text())
        for run in summary["runs"]:
            assert run.pop("head_dir") == str(out / f"k{run['k']}")
        return summary, (out / "cluster_sweep.csv").read_text()

    assert results(killed) == results(straight)
    for k in ("k2", "k3"):
        assert_same_weights(straight / k, killed / k)
        assert_same_weights(straight / k / "last", killed / k)
        rows = metric_rows(killed / k)
        assert rows == metric_rows(straight / k)
        assert [int(epoch) for epoch, _, _ in rows] == list(range(epochs))  # each epoch once


def test_resume_finishes_a_k_trained_but_not_scored_and_refuses_other_settings(
    aligned_table, tmp_path, caplog
):
    """A K whose head finished training but was killed before its metrics.json is scored again
    without training (same loss and scores); a resume state written with other head options or
    other clusters is refused naming the file and what differs; resume=False trains afresh."""
    path, _ = aligned_table
    out = tmp_path / "sweep"
    options = dict(ks="3", shots=2, repeats=1, seed=0)
    head = HeadConfig(epochs=2, batch_size=64)
    first = cluster_sweep(path, out, head=head, **options)
    (out / "k3" / "metrics.json").unlink()
    with caplog.at_level("WARNING"):
        again = cluster_sweep(path, out, head=head, **options)
    assert f"all 2 epochs already done in {out / 'k3'}" in caplog.text
    assert again.runs == first.runs and math.isfinite(again.runs[0].train_loss)
    assert [int(e) for e, _, _ in metric_rows(out / "k3")] == [0, 1]

    ckpt = out / "k3" / "checkpoints" / "last.ckpt"
    (out / "k3" / "metrics.json").unlink()
    with pytest.raises(
        CheckpointError, match=re.escape(f"{ckpt}: written by a run with lr=0.001, this one")
    ):
        cluster_sweep(path, out, head=HeadConfig(epochs=2, batch_size=64, lr=0.01), **options)
    with pytest.raises(
        CheckpointError, match=re.escape(f"{ckpt}: written for other k-means clusters")
    ):
        cluster_sweep(path, out, head=head, **{**options, "seed": 1})
    fresh = cluster_sweep(path, out, head=head, **{**options, "seed": 1}, resume=False)
    assert fresh.runs[0].train_loss != first.runs[0].train_loss
    assert [int(e) for e, _, _ in metric_rows(out / "k3")] == [0, 1]
