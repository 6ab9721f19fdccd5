"""Evaluation across tables: ``train=``/``test=`` (``--train``/``--test``) against the one-table
form, unseen test classes dropped and counted, and bad inputs as one clear line."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from ecomodal.data.synthetic import SyntheticConfig, make_synthetic, to_batch
from ecomodal.errors import InvalidArgumentError, InvalidEmbeddingsError, TableFormatError
from ecomodal.eval import evaluate, few_shot, linear_probe, retrieval
from ecomodal.eval.completion import completion
from ecomodal.eval.registry import get_task
from ecomodal.io.tables import EmbeddingBatch, read_embeddings, write_embeddings
from ecomodal.models.prom3e import ProM3E
from ecomodal.vectors import normalise

SPECIES = "scientific_name"


def _without(batch: EmbeddingBatch, modality: str) -> EmbeddingBatch:
    keep = [m for m in batch.modalities if m != modality]
    return EmbeddingBatch(batch.ids, {m: batch.embeddings[m] for m in keep},
                          {m: batch.present[m] for m in keep}, batch.columns)  # fmt: skip


@pytest.fixture(scope="module")
def tables(tmp_path_factory):
    """Paths of a 300-row synthetic table (split column train/val/test), its train+val rows,
    its test rows, and variants: test rows lacking ``sat``, train rows lacking ``audio``,
    16-d test rows, no test rows, and train+val rows without the class of the first test row."""
    root = tmp_path_factory.mktemp("two-tables")
    batch = to_batch(make_synthetic(300, config=SyntheticConfig(n_species=10, dim=32), seed=0))
    split = batch.column("split")
    species = batch.column(SPECIES)
    train, test = batch.select(split != "test"), batch.select(split == "test")
    unseen = str(test.column(SPECIES)[0])
    other = to_batch(make_synthetic(40, config=SyntheticConfig(n_species=10, dim=16), seed=1))
    parts = {
        "full": batch,
        "train": train,
        "test": test,
        "test_no_sat": _without(test, "sat"),
        "train_no_audio": _without(train, "audio"),
        "test_16d": other,
        "test_empty": test.select(np.array([], dtype=np.int64)),
        "train_unseen": batch.select((split != "test") & (species != unseen)),
        "one_unseen": batch.select((split == "test") | (species != unseen)),
    }
    paths = {}
    for name, part in parts.items():
        paths[name] = root / f"{name}.parquet"
        write_embeddings(paths[name], part)
    paths["unseen"] = unseen
    return paths


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return ProM3E(
        input_dim=32, embed_dim=16, heads=2, mlp_dim=32, num_modalities=6,
        modalities=("image", "sat", "loc", "env", "text", "audio"), dropout=0.0,
    ).eval()  # fmt: skip


def _flat(value, prefix=""):
    """Nested metrics as {path: leaf}, without the split names and dropped-class counts (the
    only places the two forms may differ)."""
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            if key not in ("split", "dropped_test_classes"):
                out |= _flat(item, f"{prefix}{key}/")
        return out
    return {prefix: value}


TASKS = ["zero-shot", "few-shot", "probe", "retrieval", "completion", "uncertainty", "gap"]


def test_two_tables_give_the_numbers_of_one_table_split_into_them(tables, model, tmp_path):
    common = dict(tasks=TASKS, labels=[SPECIES, "biome"], shots=(1, 3), repeats=2,
                  probe_features=[("loc",), ("env", "sat"), "prom3e-hidden"])  # fmt: skip
    one = evaluate(tables["full"], model, **common)
    two = evaluate(train=tables["train"], test=tables["test"], model=model, out=tmp_path, **common)
    flat_one, flat_two = _flat(one), _flat(two)
    assert flat_one.keys() == flat_two.keys() and len(flat_one) > 200
    for key, value in flat_one.items():
        if isinstance(value, float):
            assert flat_two[key] == pytest.approx(value, rel=1e-5, abs=1e-6, nan_ok=True), key
        else:
            assert flat_two[key] == value, key
    assert one["retrieval"]["pairs"]["loc->env"]["queries"] == 30  # the 30 test rows
    assert two["retrieval"]["split"] == "train/test" and one["retrieval"]["split"] == "published"
    assert two["completion"]["rows"] == 30 and two["completion"]["reference_rows"] == 270
    assert two["probe"][SPECIES]["results"]["loc"]["dropped_test_classes"] == {
        "classes": [], "rows": 0,
    }  # fmt: skip
    assert "dropped_test_classes" not in one["probe"][SPECIES]["results"]["loc"]
    config = json.loads((tmp_path / "metrics.json").read_text())["config"]
    assert config["train"] == str(tables["train"]) and config["test"] == str(tables["test"])
    assert config["split"] == "train/test" and config["rows"] == 300 and "table" not in config


def test_training_table_without_val_rows_calibrates_on_a_seeded_tenth(tables, model):
    batch = read_embeddings(tables["train"]).load()
    no_split = EmbeddingBatch(batch.ids, batch.embeddings, batch.present,
                              batch.columns.drop_columns(["split"]))  # fmt: skip
    result = retrieval(train=no_split, test=tables["test"], model=model, pairs=["loc->env"])
    again = retrieval(train=no_split, test=tables["test"], model=model, pairs=["loc->env"])
    entry = result["pairs"]["loc->env"]
    assert "delta_note" not in entry and entry == again["pairs"]["loc->env"]
    assert entry["gallery"] == 30


def test_unseen_test_classes_are_dropped_and_counted(tables, tmp_path):
    unseen = tables["unseen"]
    test = read_embeddings(tables["test"]).load()
    n_unseen = int((test.column(SPECIES) == unseen).sum())
    assert n_unseen >= 1
    two = linear_probe(train=tables["train_unseen"], test=tables["test"], label=SPECIES,
                       features=("loc",))  # fmt: skip
    scores = two["results"]["loc"]
    assert scores["dropped_test_classes"] == {"classes": [unseen], "rows": n_unseen}
    assert scores["n_test"] == 30 - n_unseen
    # The same probe in one table from which those test rows are gone: the same accuracy.
    kept = read_embeddings(tables["one_unseen"]).load()
    kept = kept.select(kept.column(SPECIES) != unseen)
    one = linear_probe(kept, label=SPECIES, features=("loc",))
    assert one["results"]["loc"]["n_test"] == scores["n_test"]
    assert scores["accuracy"] == pytest.approx(one["results"]["loc"]["accuracy"])

    # Few-shot already left such rows out in one table; now it says so, in both forms.
    shot = few_shot(train=tables["train_unseen"], test=tables["test"], label=SPECIES,
                    features=("loc",), shots=(1,), repeats=1)  # fmt: skip
    silent = few_shot(tables["one_unseen"], label=SPECIES, features=("loc",), shots=(1,),
                      repeats=1)  # fmt: skip
    expected = {"classes": [unseen], "rows": n_unseen}
    assert shot["dropped_test_classes"]["loc"] == silent["dropped_test_classes"]["loc"] == expected
    assert shot["results"] == silent["results"]

    evaluate(train=tables["train_unseen"], test=tables["test"], tasks=["probe", "few-shot"],
             labels=[SPECIES], probe_features=[("loc",)], few_shot_features=("loc",),
             shots=(1,), repeats=1, out=tmp_path)  # fmt: skip
    page = (tmp_path / "report.html").read_text()
    sentence = f"{n_unseen} test rows of 1 classes never seen in training were dropped ({unseen})"
    assert page.count(sentence) == 2  # probes and few-shot


def test_completion_task_scores_against_the_training_mean(tables, model):
    result = completion(train=tables["train"], test=tables["test"], model=model,
                        visible_sets=["loc"])  # fmt: skip
    train = read_embeddings(tables["train"]).load()
    test = read_embeddings(tables["test"]).load()
    mean = normalise(train.embeddings["env"].mean(axis=0, keepdims=True))
    truth = normalise(test.embeddings["env"])
    entry = result["pairs"]["loc->env"]
    assert entry["train_mean_cosine"] == pytest.approx(float((truth @ mean.T).mean()), rel=1e-5)
    assert {"model_cosine", "nn_cosine", "mean_cosine", "train_mean_r1"} <= entry.keys()
    others = {"image", "sat", "env", "text", "audio"}
    assert set(result["pairs"]) == {f"loc->{m}" for m in others} | {"average"}
    task = get_task("completion")
    assert task.needs_model and task.in_all


@pytest.mark.parametrize(
    ("kwargs", "error", "expected"),
    [
        ({"data": "full", "train": "train", "test": "test"}, InvalidArgumentError, "not both"),
        ({"train": "train"}, InvalidArgumentError, "train= needs test="),
        ({"test": "test"}, InvalidArgumentError, "test= needs train="),
        ({}, InvalidArgumentError, "give data="),
        ({"train": "train", "test": "test", "split": "random"}, InvalidArgumentError, "'random'"),
        ({"train": "train", "test": "test_no_sat"}, InvalidEmbeddingsError, "column 'sat'"),
        ({"train": "train", "test": "test_16d"}, InvalidEmbeddingsError, "16-d"),
        ({"train": "train", "test": "test_empty"}, InvalidEmbeddingsError, "has no rows"),
    ],
)
def test_api_refuses_bad_table_arguments(tables, kwargs, error, expected):
    given = {k: tables[v] if k != "split" else v for k, v in kwargs.items()}
    with pytest.raises(error, match=expected):
        linear_probe(label=SPECIES, **given)


def test_label_column_missing_from_one_table_names_it(tables):
    batch = read_embeddings(tables["test"]).load()
    no_label = EmbeddingBatch(batch.ids, batch.embeddings, batch.present,
                              batch.columns.drop_columns([SPECIES]))  # fmt: skip
    with pytest.raises(TableFormatError, match=f"test table has no column '{SPECIES}'"):
        evaluate(train=tables["train"], test=no_label, tasks=["probe"])


CLI_CASES = [
    # (arguments, expected texts); names are fixture tables
    (["probe", "--train", "train"], ["--train needs --test"]),
    (["probe", "--test", "test"], ["--test needs --train"]),
    (["probe", "--data", "full", "--train", "train", "--test", "test"], ["--data cannot"]),
    (["probe"], ["--data TABLE", "--train TABLE"]),
    (["probe", "--train", "train", "--test", "test", "--split", "random"], ["--split random"]),
    (["compare", "--train", "train", "--test", "test"], ["compare", "--data NAME=PATH"]),
    (["probe", "--train", "train", "--test", "test_no_sat"],
     ["test table", "test_no_sat.parquet", "no embedding column 'sat'"]),
    (["retrieval", "--train", "train_no_audio", "--test", "test"],
     ["train table", "train_no_audio.parquet", "no embedding column 'audio'"]),
    (["gap", "--train", "train", "--test", "test_16d"], ["'image'", "32-d", "16-d"]),
    (["probe", "--train", "train", "--test", "test_empty"], ["test table", "has no rows"]),
    (["probe", "--train", "nosuch.parquet", "--test", "test"], ["nosuch.parquet"]),
    (["probe", "--train", "train", "--test", "test", "--label", "nosuch"],
     ["test table", "no column 'nosuch'"]),
]  # fmt: skip


@pytest.mark.parametrize(("args", "expected"), CLI_CASES, ids=[" ".join(c[0]) for c in CLI_CASES])
def test_cli_bad_tables_fail_in_one_line_and_write_nothing(
    run_cli, tables, tmp_path, args, expected
):
    out = tmp_path / "out"
    result = run_cli("eval", *[str(tables.get(a, a)) for a in args], "--out", out)
    result.assert_clear_failure(*expected)
    assert not out.exists() or not run_cli.files_under(out)


def test_cli_runs_across_tables(run_cli, tables, tmp_path):
    out = tmp_path / "out"
    result = run_cli("eval", "probe", "--train", tables["train_unseen"], "--test",
                     tables["test"], "--features", "loc", "--out", out)  # fmt: skip
    assert result.code == 0, result.output
    metrics = json.loads((out / "metrics.json").read_text())["metrics"]
    dropped = metrics["probe"][SPECIES]["results"]["loc"]["dropped_test_classes"]
    assert dropped["classes"] == [tables["unseen"]] and dropped["rows"] >= 1
