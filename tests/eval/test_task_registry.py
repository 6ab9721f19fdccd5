"""A task added in this file alone shows up in `evaluate`, `ecomodal eval --help`, the CLI run and
the report; the registry's rules and the old keyword names."""

import json

import numpy as np
import pyarrow as pa
import pytest
from typer.testing import CliRunner

from ecomodal.cli import app
from ecomodal.errors import InvalidArgumentError
from ecomodal.eval import evaluate, get_task, register_task, task_names, unregister_task
from ecomodal.eval.registry import EvalContext, TaskOption
from ecomodal.io.tables import EmbeddingBatch, write_embeddings
from ecomodal.report import Section

runner = CliRunner()


def _toy_section(metrics):
    return Section("Toy mean of a column", "", [{"column": metrics["column"], **metrics}])


def toy_mean(context: EvalContext, column: str, scale: float) -> dict[str, float]:
    """The mean of one numeric column of the table's test rows, times ``scale``."""
    values = np.asarray(context.column(column), dtype=float)
    test = np.asarray(context.column("split")) == "test"
    return {"column": column, "mean": scale * float(values[test].mean()), "rows": int(test.sum())}


@pytest.fixture
def toy_task():
    register_task(
        name="toy-mean",
        description="Mean of a numeric column over the test rows.",
        options=[TaskOption("column", "size", "the numeric column"), TaskOption("scale", 1.0, "a factor", float)],
        section=_toy_section,
    )(toy_mean)  # fmt: skip
    yield get_task("toy-mean")
    unregister_task("toy-mean")


@pytest.fixture
def table(tmp_path):
    rng = np.random.default_rng(0)
    n = 40
    columns = pa.table(
        {
            "scientific_name": [f"sp{i % 4}" for i in range(n)],
            "size": np.arange(n, dtype=float),
            "split": ["train"] * 30 + ["test"] * 10,
        }
    )
    batch = EmbeddingBatch.from_stacked(
        [f"o{i}" for i in range(n)],
        rng.standard_normal((n, 2, 8)).astype(np.float32),
        None,
        ["sat", "loc"],
        columns=columns,
    )
    path = tmp_path / "t.parquet"
    write_embeddings(path, batch)
    return path


def test_a_task_registered_here_runs_everywhere(toy_task, table, tmp_path):
    assert "toy-mean" in task_names() and "toy-mean" in task_names(in_all=True)
    metrics = evaluate(table, tasks=["toy-mean"], out=tmp_path / "api")
    assert metrics == {"toy-mean": {"column": "size", "mean": 34.5, "rows": 10}}
    assert "Toy mean of a column" in (tmp_path / "api" / "report.html").read_text()
    scaled = evaluate(table, tasks="toy-mean", options={"toy-mean": {"scale": 2.0}})
    assert scaled["toy-mean"]["mean"] == 69.0

    help_text = runner.invoke(app, ["eval", "--help"]).output
    assert "toy-mean" in help_text and "Mean of a numeric column" in help_text

    out = tmp_path / "cli"
    args = ["eval", "toy-mean", "--data", str(table), "--out", str(out), "--option", "scale=2"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    written = json.loads((out / "metrics.json").read_text())
    assert written["metrics"]["toy-mean"] == {"column": "size", "mean": 69.0, "rows": 10}
    assert "Toy mean of a column" in (out / "report.html").read_text()


def test_the_toy_task_is_gone_after_its_test():
    assert "toy-mean" not in task_names()
    assert "toy-mean" not in runner.invoke(app, ["eval", "--help"]).output


def test_the_built_in_tasks_in_their_old_order():
    from ecomodal.eval import TASKS
    from ecomodal.eval.harness import SINGLE_TABLE_TASKS

    assert TASKS == (
        "zero-shot",
        "few-shot",
        "probe",
        "retrieval",
        "completion",
        "uncertainty",
        "gap",
        "compare",
    )
    assert TASKS[:-1] == SINGLE_TABLE_TASKS
    assert get_task("uncertainty").needs_model and not get_task("compare").in_all


def test_registry_rejects_mistakes(toy_task, table):
    with pytest.raises(InvalidArgumentError, match="already registered"):
        register_task(toy_task)
    with pytest.raises(InvalidArgumentError, match="no option 'colour'"):
        evaluate(table, tasks="toy-mean", options={"toy-mean": {"colour": "red"}})
    with pytest.raises(ValueError, match="Unknown task"):
        evaluate(table, tasks=["nope"])
    with pytest.raises(ValueError, match="Unknown evaluation task 'nope'"):
        get_task("nope")


def test_a_task_without_a_section_reports_its_numbers(table, tmp_path):
    @register_task(name="toy-rows", description="Rows of the table.", in_all=False)
    def rows(context):
        return {"rows": len(context.batch)}

    try:
        assert "toy-rows" not in task_names(in_all=True)
        evaluate(table, tasks=["toy-rows"], out=tmp_path)
        page = (tmp_path / "report.html").read_text()
        assert "toy-rows" in page and "<td>40</td>" in page
    finally:
        unregister_task("toy-rows")


def test_old_table_keyword_still_works_with_a_warning(table):
    from ecomodal.eval import linear_probe

    with pytest.deprecated_call(match="table="):
        old = evaluate(table=table, tasks=["retrieval"])
    assert old == evaluate(table, tasks=["retrieval"])
    with pytest.deprecated_call():
        assert linear_probe(table=table, label="scientific_name") == linear_probe(
            table, label="scientific_name"
        )
