"""The completion task against its baselines: default (retrieval-augmented when calibrated), ProM3E
alone, the nearest-neighbour lookup and the training mean, each with cosine, R@1 and R@10."""

import json

import numpy as np
import pyarrow as pa
import pytest
import torch

from ecomodal.data.synthetic import SyntheticConfig, make_synthetic
from ecomodal.eval import evaluate
from ecomodal.eval.completion import completion, completion_scores, evaluate_completion
from ecomodal.io.batch import EmbeddingBatch
from ecomodal.io.writer import write_embeddings
from ecomodal.models.prom3e import ProM3E
from ecomodal.training.calibrate import calibrate

NAMES = ("loc", "env", "sat")


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


@pytest.fixture(scope="module")
def setup():
    """Synthetic loc/env/sat rows (train/val/test), an untrained tiny ProM3E and a calibrated one."""
    data = make_synthetic(900, config=SyntheticConfig(n_species=20, dim=16), seed=3)
    cols = [data.modalities.index(m) for m in NAMES]
    emb, present = data.embeddings[:, cols], np.ones((len(data), 3), dtype=bool)
    split = data.columns["split"]
    batch = EmbeddingBatch.from_stacked(
        data.ids, emb, present, list(NAMES), columns=pa.table({"split": split.tolist()})
    )

    def tiny() -> ProM3E:
        torch.manual_seed(0)
        return ProM3E(
            input_dim=16, embed_dim=16, heads=2, mlp_dim=32, num_modalities=3,
            modalities=NAMES, dropout=0.0,
        ).eval()  # fmt: skip

    plain, calibrated = tiny(), tiny()
    calibrate(calibrated, batch, split="val", max_rows_per_set=40, n_samples=0, seed=0)
    return batch, emb, present, split, plain, calibrated


def _parts(emb, present, split):
    train, test = split == "train", split == "test"
    return emb[test], present[test], emb[train], present[train]


def test_scores_count_r10_among_the_ten_closest():
    truth = np.eye(12, dtype=np.float32)
    # Prediction i is truth i plus a pull towards the first `closer[i]` other truths: exactly that
    # many truths are closer to it than its own.
    closer = [0, 1, 9, 10, 11, 0, 3, 0, 10, 0, 0, 0]
    predicted = truth.copy()
    for i, n in enumerate(closer):
        others = [j for j in range(12) if j != i][:n]
        predicted[i] = 0.1 * truth[i] + truth[others].sum(0)
    scores = completion_scores(predicted, truth)
    assert scores["r1"] == pytest.approx(np.mean([n < 1 for n in closer]))
    assert scores["r10"] == pytest.approx(np.mean([n < 10 for n in closer]))
    assert set(scores) == {"cosine", "r1", "r10"}


def test_calibrated_model_reports_the_four_completions(setup):
    batch, emb, present, split, _, model = setup
    test, test_present, train, train_present = _parts(emb, present, split)
    scores = evaluate_completion(model, test, test_present, train, train_present, n_samples=0)
    assert set(scores) == {f"{a}->{b}" for a in NAMES for b in NAMES if a != b} | {"average"}
    for pair, entry in scores.items():
        for label in ("model", "mean", "nn", "prom3e", "train_mean"):
            for metric in ("cosine", "r1", "r10"):
                assert f"{label}_{metric}" in entry, (pair, label, metric)
            assert entry[f"{label}_r10"] >= entry[f"{label}_r1"]
    entry = scores["sat->env"]
    rows = test_present.all(1)
    # ProM3E alone is the uncalibrated path; the default mixes in neighbours, so it differs.
    alone = model.complete(test, visible=["sat"], n_samples=0, neighbours=False).embeddings[:, 1]
    truth = _unit(test[rows, 1])
    assert entry["prom3e_cosine"] == pytest.approx(float(np.mean(np.sum(_unit(alone) * truth, 1))))
    default = model.complete(test, visible=["sat"], n_samples=0).embeddings[:, 1]
    assert entry["model_cosine"] == pytest.approx(float(np.mean(np.sum(_unit(default) * truth, 1))))
    assert entry["model_cosine"] != pytest.approx(entry["prom3e_cosine"], abs=1e-4)
    # Training mean: the normalised mean of the training rows' env, the same for every test row.
    mean = _unit(_unit(train[:, 1]).mean(0))
    assert entry["train_mean_cosine"] == pytest.approx(float(np.mean(truth @ mean)), rel=1e-5)


def test_uncalibrated_model_keeps_its_numbers(setup):
    batch, emb, present, split, model, _ = setup
    test, test_present, train, train_present = _parts(emb, present, split)
    scores = evaluate_completion(model, test, test_present, train, train_present, seed=1)
    done = model.complete(test, visible=["loc"], n_samples=0, seed=1).embeddings[:, 2]
    own = np.sum(_unit(done) * _unit(test[:, 2]), 1)
    sims = _unit(done) @ _unit(test[:, 2]).T
    entry = scores["loc->sat"]
    assert entry["model_cosine"] == pytest.approx(float(own.mean()))
    assert entry["model_r1"] == pytest.approx(float(np.mean(sims.max(1) <= own + 1e-6)))
    assert {k: entry[f"prom3e_{k}"] for k in ("cosine", "r1", "r10")} == {
        k: entry[f"model_{k}"] for k in ("cosine", "r1", "r10")
    }
    # The lookup copies the training row nearest in loc.
    nearest = np.argmax(_unit(test[:, 0]) @ train[:, 0].T, axis=1)
    looked_up = np.sum(_unit(train[nearest, 2]) * _unit(test[:, 2]), 1)
    assert entry["nn_cosine"] == pytest.approx(float(looked_up.mean()), rel=1e-5)


def test_task_uses_the_split_and_reports_the_table(setup, tmp_path):
    batch, emb, present, split, _, model = setup
    result = completion(batch, model, visible_sets=["env"])
    assert result["calibrated"] is True
    assert result["test_rows"] == int((split == "test").sum())
    assert result["train_rows"] == int((split != "test").sum())  # train and val rows
    assert set(result["pairs"]) == {"env->loc", "env->sat", "average"}
    table = tmp_path / "table.parquet"
    write_embeddings(table, batch)
    metrics = evaluate(table, model, tasks=["completion"], out=tmp_path / "report")
    assert metrics["completion"]["pairs"]["env->sat"] == pytest.approx(
        completion(table, model)["pairs"]["env->sat"]
    )
    html = (tmp_path / "report" / "report.html").read_text()
    for heading in ("default cosine", "ProM3E alone R@10", "NN lookup cosine", "training mean"):
        assert heading in html
    saved = json.loads((tmp_path / "report" / "metrics.json").read_text())
    assert "train_mean_r10" in saved["metrics"]["completion"]["pairs"]["loc->env"]


@pytest.fixture
def files(setup, tmp_path):
    """A model folder, the table, a table with no train rows and one without a split column."""
    batch, emb, present, split, model, _ = setup
    model.save_pretrained(tmp_path / "model")
    write_embeddings(tmp_path / "table.parquet", batch)
    no_train = EmbeddingBatch.from_stacked(
        batch.ids, emb, present, list(NAMES), columns=pa.table({"split": ["test"] * len(split)})
    )
    write_embeddings(tmp_path / "no-train.parquet", no_train)
    write_embeddings(
        tmp_path / "no-split.parquet",
        EmbeddingBatch.from_stacked(batch.ids, emb, present, list(NAMES)),
    )
    return tmp_path


@pytest.mark.parametrize(
    ("args", "texts"),
    [
        (("--data", "no-train.parquet"), ("completion", "no train rows")),
        (("--data", "no-split.parquet"), ("split",)),
        (
            ("--data", "table.parquet", "--option", "visible_sets=loc;image"),
            ("image",),
        ),
        (("--data", "table.parquet", "--option", "visible_sets="), ("--option",)),
        (("--data", "table.parquet", "--option", "visible=loc"), ("visible",)),
        (("--data", "missing.parquet"), ("missing.parquet",)),
    ],
)
def test_bad_inputs_fail_clearly(files, run_cli, args, texts):
    args = [str(files / a) if a.endswith(".parquet") else a for a in args]
    out = files / "out"
    result = run_cli("eval", "completion", "--model", files / "model", "--out", out, *args)
    result.assert_clear_failure(*texts)
    assert not out.exists() or run_cli.files_under(out) == []
