"""Tasks that use a ProM3E model: checked against direct model calls, and the reference's claims
on the synthetic benchmark with a small trained model."""

import json

import numpy as np
import pyarrow as pa
import pytest
import torch

from ecomodal.eval import evaluate, linear_probe, modality_gap, retrieval, uncertainty, zero_shot
from ecomodal.io.tables import EmbeddingBatch
from ecomodal.models.prom3e import ProM3E


@pytest.fixture(scope="module")
def random_setup():
    """An untrained tiny ProM3E over three modalities and a table with some missing ones."""
    torch.manual_seed(0)
    model = ProM3E(
        input_dim=8, embed_dim=16, heads=2, mlp_dim=32, num_modalities=3,
        modalities=("image", "loc", "text"), dropout=0.0,
    ).eval()  # fmt: skip
    rng = np.random.default_rng(0)
    n = 40
    emb = rng.standard_normal((n, 3, 8)).astype(np.float32)
    present = np.ones((n, 3), dtype=bool)
    present[:5, 1] = False  # five rows lack loc
    columns = pa.table({"scientific_name": [f"sp{i % 4}" for i in range(n)], "split": ["test"] * n})
    batch = EmbeddingBatch.from_stacked(
        [f"o{i}" for i in range(n)], emb, present, ["image", "loc", "text"], columns=columns
    )
    return model, batch, emb, present


def test_uncertainty_matches_direct_model_calls(random_setup):
    model, batch, emb, present = random_setup
    result = uncertainty(batch, model, visible_sets=["image", "image,loc"])
    alone = model.complete(emb, visible=["image"], n_samples=0, present=present).sigma_l1
    both = model.complete(
        emb[5:], visible=["image", "loc"], n_samples=0, present=present[5:]
    ).sigma_l1
    assert result["sets"]["image"]["rows"] == 40
    assert result["sets"]["image"]["mean"] == pytest.approx(float(alone.mean()), rel=1e-5)
    assert result["sets"]["image+loc"]["rows"] == 35
    assert result["sets"]["image+loc"]["quantiles"]["0.5"] == pytest.approx(
        float(np.median(both)), rel=1e-5
    )
    ranking = {r["modality"]: r for r in result["next_modality"]["image"]}
    assert ranking["loc"]["rows"] == 35
    assert ranking["loc"]["drop"] == pytest.approx(float((alone[5:] - both).mean()), rel=1e-4)
    assert set(result["mean_by_count"]) == {"1", "2"}
    assert -1.0 <= result["sigma_error_spearman"] <= 1.0


def test_uncertainty_default_sets_are_all_subsets_and_seeded(random_setup):
    model, batch, *_ = random_setup
    result = uncertainty(batch, model)
    assert set(result["sets"]) == {"image", "loc", "text", "image+loc", "image+text",
                                   "loc+text", "image+loc+text"}  # fmt: skip
    assert result == uncertainty(batch, model)
    capped = uncertainty(batch, model, max_sets_per_count=1)
    assert len(capped["sets"]) == 3


def test_zero_shot_prom3e_decodes_the_text_slot(random_setup):
    model, batch, emb, present = random_setup
    result = zero_shot(batch, model, visible=["image", "loc"])
    rows = present.all(axis=1)
    decoded = model.complete(emb[rows], visible=["image", "loc"], n_samples=0).embeddings[:, 2]
    labels = np.array([f"sp{i % 4}" for i in range(40)])[rows]
    names = [f"sp{i}" for i in range(4)]
    # Candidates: the normalised mean of each species' normalised text embeddings.
    unit = emb[:, 2] / np.linalg.norm(emb[:, 2], axis=1, keepdims=True)
    protos = np.stack([unit[np.arange(40) % 4 == i].mean(0) for i in range(4)])
    protos /= np.linalg.norm(protos, axis=1, keepdims=True)
    predicted = np.array(names)[np.argmax(decoded @ protos.T, axis=1)]
    expected = float(np.mean(predicted == labels))
    assert result["methods"]["prom3e"]["scientific_name"]["top1"] == pytest.approx(expected)
    assert result["rows"] == 35 and "direct" in result["methods"]


def test_gap_after_completion_uses_decoded_slots(random_setup):
    model, batch, *_ = random_setup
    result = modality_gap(batch, model, modalities=["image", "loc"])
    assert set(result) == {"before", "after"}
    assert set(result["after"]["centroid_distance"]) == {"image|loc"}
    assert result["after"]["chance"] == 0.5


# --------------------------------------------------------------------------- synthetic claims


def test_mixed_retrieval_beats_direct_on_synthetic(synthetic_run):
    table, model, _ = synthetic_run
    pairs = retrieval(table, model, pairs=["sat->loc", "loc->sat", "env->sat", "sat->env"])
    for name, entry in pairs["pairs"].items():
        assert entry["mixed"]["MRR"] > entry["direct"]["MRR"], name
        assert 0.0 <= entry["delta"] <= 1.0
        assert entry["val_MRR_by_delta"]["0.0"] <= entry["val_MRR_by_delta"][str(entry["delta"])]


def test_hidden_feature_probe_beats_raw_single_modalities_on_synthetic(synthetic_run):
    table, model, _ = synthetic_run
    visible = ["loc", "env", "sat"]
    hidden = linear_probe(table, label="biome", features="prom3e-hidden", model=model,
                          visible=visible)  # fmt: skip
    assert hidden["results"]["prom3e-hidden[loc+env+sat]"]["n_features"] == 9 * 64
    for modality in visible:
        raw = linear_probe(table, label="biome", features=(modality,))
        assert hidden["accuracy"] > raw["accuracy"], modality
    blocked = linear_probe(table, label="biome", features=("loc",), split="spatial-block")
    assert blocked["split"] == "spatial-block" and blocked["results"]["loc"]["n_test"] > 0


def test_evaluate_writes_every_task(synthetic_run, tmp_path):
    table, model, folder = synthetic_run
    metrics = evaluate(
        table, folder, tasks=["retrieval", "uncertainty", "gap"], out=tmp_path, seed=1,
        max_queries=50,
    )  # fmt: skip
    written = json.loads((tmp_path / "metrics.json").read_text())
    assert written["seed"] == 1 and written["config"]["model_spec"] == str(folder)
    assert written["data_fingerprint"].startswith("blake2b:")
    assert set(written["metrics"]) == {"retrieval", "uncertainty", "gap"}
    assert metrics["retrieval"]["pairs"]["sat->loc"]["queries"] == 50
    page = (tmp_path / "report.html").read_text()
    assert page.count("data:image/png;base64,") >= 5


def test_evaluate_classification_tasks_and_compare(synthetic_run, tmp_path):
    table, model, _ = synthetic_run
    metrics = evaluate(
        table,
        model,
        tasks=["zero-shot", "few-shot", "probe", "compare"],
        labels=("scientific_name", "biome"),
        probe_features=[("loc",), "prom3e-hidden"],
        zero_shot_visible=[["image"], ["image", "sat"]],
        shots=(1,),
        repeats=2,
        compare_tables={"same": table, "again": table},
        compare_group="family",
        out=tmp_path,
    )
    zs = metrics["zero-shot"]["image+sat"]["methods"]
    assert set(zs) == {"direct", "prom3e"} and set(zs["direct"]) == {
        "scientific_name", "genus", "family",
    }  # fmt: skip
    # ProM3E decoding text from image+sat beats TaxaBind's fusion on the synthetic benchmark.
    assert zs["prom3e"]["scientific_name"]["top1"] > zs["direct"]["scientific_name"]["top1"]
    assert set(metrics["probe"]) == {"scientific_name", "biome"}
    assert "prom3e-hidden[image+sat+loc+env+audio]" in metrics["probe"]["biome"]["results"]
    assert metrics["few-shot"]["biome"]["results"]["image"]["1"]["centroid"]["runs"] == 2
    compared = metrics["compare"]
    assert compared["models"]["same"] == compared["models"]["again"]
    assert sum(c["images"] for c in compared["counts"].values()) == compared["rows"] == 1500
    page = (tmp_path / "report.html").read_text()
    assert "Model comparison" in page and "Zero-shot classification" in page


def test_cli_eval_compare_takes_named_tables(synthetic_run, tmp_path):
    from typer.testing import CliRunner

    from ecomodal.cli import app

    table, _, _ = synthetic_run
    args = ["eval", "compare", "--data", f"one={table}", "--data", f"two={table}",
            "--group", "family", "--out", str(tmp_path)]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    written = json.loads((tmp_path / "metrics.json").read_text())
    assert set(written["metrics"]["compare"]["models"]) == {"one", "two"}
