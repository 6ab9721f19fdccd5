"""The HTML report writer, metrics.json, and the `ecomodal eval` command."""

import base64
import json
import re

import numpy as np
import pyarrow as pa
import pytest
from typer.testing import CliRunner

from ecomodal.cli import app
from ecomodal.eval import fingerprint
from ecomodal.io.tables import EmbeddingBatch, read_embeddings, write_embeddings
from ecomodal.report import Section, bar_chart, heatmap, to_jsonable, write_report

runner = CliRunner()


def test_write_report_is_self_contained_and_metrics_carry_config(tmp_path):
    figure = bar_chart({"model": {"fish": 0.5, "birds": 0.8}}, title="T", ylabel="accuracy")
    grid = heatmap(
        np.eye(2), ["a", "b"], ["a", "b"], title="H", xlabel="x", ylabel="y", colorbar="c"
    )
    sections = [Section("Scores", "some <text>", [{"a": 1.0, "b": float("nan")}], [figure, grid])]
    paths = write_report(
        tmp_path / "out",
        title="Run",
        sections=sections,
        metrics={"x": np.float32(0.5), "bad": float("nan"), "arr": np.arange(2)},
        config={"k": (1, 2)},
        fingerprint="blake2b:00",
        seed=7,
    )
    page = paths["report"].read_text()
    images = re.findall(r'src="data:image/png;base64,([^"]+)"', page)
    assert len(images) == 2
    assert base64.b64decode(images[0])[:8] == b"\x89PNG\r\n\x1a\n"
    assert "some &lt;text&gt;" in page and "http" not in page.split("<body>")[1]
    written = json.loads(paths["metrics"].read_text())
    assert written["metrics"] == {"x": 0.5, "bad": None, "arr": [0, 1]}
    assert written["config"] == {"k": [1, 2]} and written["seed"] == 7
    assert written["data_fingerprint"] == "blake2b:00"
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["metrics.json", "report.html"]


def test_to_jsonable_nested():
    assert to_jsonable({1: [np.int64(3), float("inf")]}) == {"1": [3, None]}


def test_fingerprint_follows_the_data():
    ids = ["a", "b"]
    one = EmbeddingBatch.from_stacked(ids, np.ones((2, 1, 3)), None, ["loc"])
    two = EmbeddingBatch.from_stacked(ids, np.ones((2, 1, 3)), None, ["loc"])
    other = EmbeddingBatch.from_stacked(ids, np.full((2, 1, 3), 2.0), None, ["loc"])
    assert fingerprint(one) == fingerprint(two) != fingerprint(other)


@pytest.fixture
def small_table(tmp_path):
    rng = np.random.default_rng(0)
    n = 60
    emb = rng.standard_normal((n, 2, 8)).astype(np.float32)
    emb[:, 1] = emb[:, 0] + 0.05 * rng.standard_normal((n, 8))
    columns = pa.table(
        {
            "scientific_name": [f"sp{i % 3}" for i in range(n)],
            "split": ["train"] * 30 + ["val"] * 10 + ["test"] * 20,
        }
    )
    batch = EmbeddingBatch.from_stacked(
        [f"o{i}" for i in range(n)], emb, None, ["sat", "loc"], columns=columns
    )
    path = tmp_path / "t.parquet"
    write_embeddings(path, batch)
    return path


def test_cli_retrieval_writes_metrics_and_report(small_table, tmp_path):
    out = tmp_path / "eval"
    args = [
        "eval",
        "retrieval",
        "--data",
        str(small_table),
        "--out",
        str(out),
        "--pairs",
        "sat->loc",
    ]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    written = json.loads((out / "metrics.json").read_text())
    pair = written["metrics"]["retrieval"]["pairs"]["sat->loc"]
    assert pair["queries"] == 20 and pair["direct"]["R@1"] == 1.0
    expected = fingerprint(read_embeddings(small_table).load())
    assert written["data_fingerprint"] == expected and written["seed"] == 0
    assert "Cross-modal retrieval" in (out / "report.html").read_text()
    assert "<img" in (out / "report.html").read_text()


def test_cli_probe_and_uncertainty_without_model(small_table, tmp_path):
    out = tmp_path / "probe"
    args = [
        "eval",
        "probe",
        "--data",
        str(small_table),
        "--out",
        str(out),
        "--features",
        "sat;sat,loc",
    ]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    probe = json.loads((out / "metrics.json").read_text())["metrics"]["probe"]["scientific_name"]
    assert set(probe["results"]) == {"sat", "fusion[sat+loc]", "concat[sat+loc]"}
    result = runner.invoke(
        app, ["eval", "uncertainty", "--data", str(small_table), "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    skipped = json.loads((out / "metrics.json").read_text())["metrics"]["skipped"]
    assert skipped == {"uncertainty": "needs a ProM3E model"}


def test_cli_rejects_an_unknown_task(small_table, tmp_path):
    result = runner.invoke(
        app, ["eval", "accuracy", "--data", str(small_table), "--out", str(tmp_path)]
    )
    assert result.exit_code != 0
    assert "accuracy" in result.output
