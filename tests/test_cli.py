import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from ecomodal.cli import app, main
from ecomodal.io.tables import read_embeddings

runner = CliRunner()


def _complete(model, data, out, *extra):
    args = ["complete", "--model", str(model), "--data", str(data), "--out", str(out)]
    return [*args, "--no-progress", *extra]


TINY_ARGS = ["--embed-dim", "32", "--heads", "2", "--mlp-dim", "64"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    table = root / "syn.parquet"
    result = runner.invoke(
        app,
        [
            "data",
            "synthetic",
            "--out",
            str(table),
            "--n",
            "600",
            "--n-species",
            "20",
            "--missing-rate",
            "0.2",
        ],
    )
    assert result.exit_code == 0, result.output
    run = root / "run"
    result = runner.invoke(
        app,
        [
            "train",
            "prom3e",
            "--data",
            str(table),
            "--out",
            str(run),
            "--epochs",
            "2",
            "--batch-size",
            "64",
            "--no-progress",
            *TINY_ARGS,
        ],
    )
    assert result.exit_code == 0, result.output
    assert "best model:" in result.output
    return table, run


def test_complete_writes_hats_sigma_and_carries_columns(trained, tmp_path):
    table, run = trained
    out = tmp_path / "completed.parquet"
    result = runner.invoke(app, _complete(run / "best", table, out, "--n-samples", "0"))
    assert result.exit_code == 0, result.output
    assert "wrote 600 rows" in result.output
    source = read_embeddings(table).load()
    done = read_embeddings(out)
    for m in ("image", "sat", "loc", "env", "text", "audio"):
        assert f"{m}_hat" in done.modalities
    loaded = done.load()
    assert list(loaded.ids) == list(source.ids)
    assert all(loaded.present[f"{m}_hat"].all() for m in ("image", "text"))
    # input embeddings unchanged, nulls kept
    for m in source.modalities:
        assert (loaded.present[m] == source.present[m]).all()
        assert (loaded.embeddings[m] == source.embeddings[m]).all()
    names = pq.read_schema(out).names
    assert "sigma_l1" in names and "scientific_name" in names and "split" in names


def test_complete_with_visible_set(trained, tmp_path):
    table, run = trained
    out = tmp_path / "vis.parquet"
    # rows with missing image/loc cannot use that visible set: clear error, no output
    result = runner.invoke(app, _complete(run / "best", table, out, "--visible", "image,loc"))
    assert result.exit_code != 0
    assert "lacks visible modality" in str(result.exception)
    assert not out.exists()
    assert not list(tmp_path.glob(".*tmp"))


def test_errors_are_one_clear_line(trained, tmp_path, monkeypatch, capsys):
    table, run = trained
    bad_modality = _complete(run / "best", table, tmp_path / "x.parquet", "--visible", "satellite")
    monkeypatch.setattr("sys.argv", ["ecomodal", *bad_modality])
    with pytest.raises(SystemExit) as exit_info:
        main()
    assert exit_info.value.code == 2
    assert "Unknown modality 'satellite'" in capsys.readouterr().err
    monkeypatch.setattr("sys.argv", ["ecomodal", *_complete(tmp_path / "none", table, "y.parquet")])
    with pytest.raises(SystemExit) as exit_info:
        main()
    assert exit_info.value.code == 2
    assert "does not exist" in capsys.readouterr().err
