"""`ecomodal eval` and the evaluation API on bad inputs: one clear line, nothing written."""

from __future__ import annotations

import numpy as np
import pytest

from ecomodal.data.synthetic import SyntheticConfig, make_synthetic, to_batch
from ecomodal.errors import EcomodalError, InvalidArgumentError, InvalidEmbeddingsError
from ecomodal.io.tables import write_embeddings


@pytest.fixture(scope="module")
def tables(tmp_path_factory):
    """(a 300-row synthetic table, the same table with no rows, a plain file)."""
    root = tmp_path_factory.mktemp("eval-bad")
    batch = to_batch(make_synthetic(300, config=SyntheticConfig(n_species=10, dim=32), seed=0))
    full, empty = root / "t.parquet", root / "empty.parquet"
    write_embeddings(full, batch)
    write_embeddings(empty, batch.select(np.array([], dtype=np.int64)))
    plain = root / "notes.txt"
    plain.write_text("not a model")
    return full, empty, plain


CASES = [
    # (task and options, expected texts); T = the table, E = the empty table, F = a plain file
    (["zero-shot", "--data", "E"], ["has no rows", "empty.parquet"]),
    (["probe", "--data", "E"], ["has no rows"]),
    (["few-shot", "--data", "E"], ["has no rows"]),
    (["retrieval", "--data", "E"], ["has no rows"]),
    (["gap", "--data", "E"], ["has no rows"]),
    (["all", "--data", "E"], ["has no rows"]),
    (["zero-shot", "--data", "T", "--split", "bogus"], ["Unknown split 'bogus'", "published"]),
    (["few-shot", "--data", "T", "--shots=-1"], ["--shots must be >= 1", "got -1"]),
    (["few-shot", "--data", "T", "--shots", "1,0"], ["--shots must be >= 1", "got 0"]),
    (["few-shot", "--data", "T", "--shots", "a,b"], ["--shots", "'a,b'"]),
    (["few-shot", "--data", "T", "--repeats", "0"], ["--repeats must be >= 1", "got 0"]),
    (["retrieval", "--data", "T", "--max-queries", "0"], ["--max-queries must be >= 1", "got 0"]),
    (["zero-shot", "--data", "T", "--seed=-1"], ["--seed must be >= 0", "got -1"]),
    (["zero-shot", "--data", "T", "--label", "nosuch"], ["no column 'nosuch'"]),
    (["probe", "--data", "T", "--label", "scientific_name,nosuch"], ["no column 'nosuch'"]),
    (["zero-shot", "--data", "T", "--model", "F"], ["notes.txt"]),
    (["zero-shot", "--data", "T", "--visible", "bogus"], ["'bogus'"]),
    (["few-shot", "--data", "T", "--option", "repeats=0"], ["repeats must be >= 1", "got 0"]),
    (["retrieval", "--data", "T", "--option", "max_queries=-3"], ["max_queries must be >= 1"]),
    (["retrieval", "--data", "T", "--pairs", "sat->sat"], ["SOURCE->TARGET", "sat->sat"]),
    (["zero-shot", "--data", "nosuch.parquet"], ["nosuch.parquet"]),
]


@pytest.mark.parametrize(("args", "expected"), CASES, ids=[" ".join(c[0]) for c in CASES])
def test_eval_bad_input_is_one_clear_line_and_writes_nothing(
    run_cli, tables, tmp_path, args, expected
):
    full, empty, plain = tables
    named = {"T": str(full), "E": str(empty), "F": str(plain)}
    out = tmp_path / "out"
    result = run_cli("eval", *[named.get(a, a) for a in args], "--out", out)
    result.assert_clear_failure(*expected)
    assert not out.exists()
    assert run_cli.files_under(tmp_path) == []


def test_zero_row_table_used_to_give_empty_metrics(tables):
    """The silent result of the issue: zero-shot on a table with no rows exited 0, metrics {}."""
    from ecomodal.eval import evaluate
    from ecomodal.eval.zero_shot import zero_shot

    _, empty, _ = tables
    with pytest.raises(InvalidEmbeddingsError, match="has no rows"):
        evaluate(empty, tasks=["zero-shot"])
    with pytest.raises(InvalidEmbeddingsError, match="zero-shot: the table .* has no rows"):
        zero_shot(empty)


@pytest.mark.parametrize(
    ("call", "expected"),
    [
        ("zero_shot(T, ks=(0,))", "ks must be >= 1; got 0"),
        ("zero_shot(T, n_samples=-1)", "n_samples must be >= 0; got -1"),
        ("zero_shot(T, split='bogus')", "Unknown split 'bogus'"),
        ("zero_shot(T, split=np.full(300, 'train'))", "zero-shot: no test rows"),
        ("few_shot(T, label='scientific_name', shots=(-1,))", "shots must be >= 1; got -1"),
        ("few_shot(T, label='scientific_name', shots=())", "shots must give at least one"),
        ("few_shot(T, label='scientific_name', repeats=0)", "repeats must be >= 1; got 0"),
        ("few_shot(T, label='scientific_name', repeats=1.5)", "whole number; got 1.5"),
        ("few_shot(T, label='scientific_name', methods=('knn',))", "methods must be some of"),
        ("linear_probe(T, label='scientific_name', classifier='svm')", "Unknown classifier"),
        ("linear_probe(T, label='scientific_name', max_train_rows=0)", "max_train_rows must be"),
        ("retrieval(T, max_queries=0)", "max_queries must be >= 1; got 0"),
        ("retrieval(T, deltas=(0.5, 1.5))", "deltas must be >= 0 and <= 1; got 1.5"),
        ("retrieval(T, ks=(1, -5))", "ks must be >= 1; got -5"),
        ("modality_gap(T, max_rows=0)", "max_rows must be >= 1; got 0"),
        ("evaluate(T, tasks=['few-shot'], repeats=0)", "repeats must be >= 1; got 0"),
        ("evaluate(T, tasks=['few-shot'], shots=[0])", "shots must be >= 1; got 0"),
        ("evaluate(T, tasks=['retrieval'], max_queries=0)", "max_queries must be >= 1; got 0"),
        ("evaluate(T, tasks=['probe'], labels=[])", "labels must name at least one"),
        ("evaluate(T, tasks=['probe'], labels=['nosuch'])", "no column 'nosuch'"),
        ("evaluate(T, split='bogus')", "Unknown split 'bogus'"),
        ("evaluate(T, seed=-1)", "seed must be >= 0; got -1"),
    ],
)
def test_every_eval_api_checks_its_arguments_first(tables, tmp_path, call, expected):
    from ecomodal.eval import evaluate  # noqa: F401 (used by the calls)
    from ecomodal.eval.few_shot import few_shot  # noqa: F401
    from ecomodal.eval.gap import modality_gap  # noqa: F401
    from ecomodal.eval.probe import linear_probe  # noqa: F401
    from ecomodal.eval.retrieval import retrieval  # noqa: F401
    from ecomodal.eval.zero_shot import zero_shot  # noqa: F401

    full, _, _ = tables
    with pytest.raises(EcomodalError, match=expected.replace("(", r"\(")) as info:
        eval(call, {**locals(), "T": full, "np": np})  # noqa: S307 (a fixed table of calls)
    assert isinstance(info.value, InvalidArgumentError | ValueError)


def test_label_columns_are_required_only_by_the_tasks_that_read_them(tables):
    """Retrieval reads no label: a table without the default label column still evaluates."""
    from ecomodal.eval import evaluate

    full, _, _ = tables
    metrics = evaluate(full, tasks=["retrieval"], labels=["nosuch"], max_queries=5)
    assert metrics["retrieval"]["pairs"]["image->text"]["queries"] == 5
