from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from ecomodal.embed import (
    ResumeMismatchError,
    embed_records,
    errors_path,
    merge_embeddings,
    parse_shard,
    shard_path,
)
from ecomodal.encoders import load_encoder
from ecomodal.errors import TableFormatError
from ecomodal.io.records import read_records, taxonomic_strings
from ecomodal.io.tables import read_embeddings


@pytest.fixture(scope="module")
def loc_encoder():
    return load_encoder("loc", "geoclip")


def _inat_csv(path, n=40, bad_rows=(3, 17)):
    rng = np.random.default_rng(0)
    lat = rng.uniform(-60, 70, n).round(5).astype(object)
    lon = rng.uniform(-180, 180, n).round(5)
    for row in bad_rows:
        lat[row] = 123.0
    table = pa.table(
        {
            "id": [f"obs{i}" for i in range(n)],
            "latitude": pa.array([float(v) for v in lat]),
            "longitude": lon,
            "scientific_name": ["Quercus alba"] * n,
            "image_url": [f"https://example.org/{i}.jpg" for i in range(n)],
        }
    )
    pacsv.write_csv(table, path)
    return path


def test_read_records_understands_inaturalist_names(tmp_path):
    path = _inat_csv(tmp_path / "obs.csv")
    records = read_records(path)
    assert {"id", "lat", "lon", "scientific_name", "image"} <= set(records.column_names)
    mapped = read_records(path, column_map=["scientific_name=image"])
    assert mapped.column("image")[0].as_py() == "Quercus alba"
    with pytest.raises(TableFormatError, match="names no column"):
        read_records(path, column_map={"lat": "nope"})


def test_read_records_rejects_duplicate_ids(tmp_path):
    path = tmp_path / "dup.csv"
    path.write_text("id,lat,lon\na,1,2\nb,1,2\na,3,4\n")
    with pytest.raises(TableFormatError, match="duplicate id 'a' at rows 0 and 2"):
        read_records(path)


def test_taxonomic_string_from_ranks():
    table = pa.table(
        {
            "kingdom": ["Plantae", "Animalia"],
            "phylum": ["Tracheophyta", None],
            "genus": ["Quercus", "Canis"],
            "species": ["Quercus alba", "lupus"],
        }
    )
    assert taxonomic_strings(table) == ["Plantae Tracheophyta Quercus alba", "Animalia Canis lupus"]


def test_embed_writes_the_table_and_an_errors_table(tmp_path, loc_encoder):
    records = _inat_csv(tmp_path / "obs.csv")
    out = tmp_path / "emb.parquet"
    summary = embed_records(
        records, out, modalities="loc", encoders={"loc": loc_encoder}, chunk_rows=16
    )
    assert summary.rows == 40 and summary.written == 38
    assert summary.failed == {"loc": 2} and summary.encoded == {"loc": 38}
    table = read_embeddings(out)
    batch = table.load()
    assert table.encoders["loc"] == "geoclip"
    assert "obs3" not in set(batch.ids) and len(set(batch.ids)) == 38
    # Carried columns: coordinates, the name, and the photo URL renamed away from 'image'.
    assert {"lat", "lon", "scientific_name", "image_source"} <= set(batch.columns.column_names)
    lat = batch.columns.column("lat").to_numpy()
    lon = batch.columns.column("lon").to_numpy()
    np.testing.assert_allclose(
        batch.embeddings["loc"], loc_encoder.encode(lat=lat, lon=lon), atol=1e-5
    )
    errors = pq.read_table(errors_path(out)).to_pylist()
    assert [(e["row"], e["id"], e["modality"], e["column"]) for e in errors] == [
        (3, "obs3", "loc", "lat"),
        (17, "obs17", "loc", "lat"),
    ]
    assert "123" in errors[0]["reason"]
    assert not (tmp_path / "emb.parquet.parts").exists()


def test_embed_resumes_after_an_interruption(tmp_path, loc_encoder):
    records = _inat_csv(tmp_path / "obs.csv")
    out = tmp_path / "emb.parquet"

    class Boom(Exception):
        pass

    calls = {"n": 0}
    original = loc_encoder.encode_rows

    def flaky(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise Boom
        return original(*args, **kwargs)

    loc_encoder.encode_rows = flaky
    try:
        with pytest.raises(Boom):
            embed_records(
                records, out, modalities="loc", encoders={"loc": loc_encoder}, chunk_rows=8
            )
    finally:
        del loc_encoder.encode_rows
    parts = sorted(p.name for p in (tmp_path / "emb.parquet.parts").glob("part-*"))
    assert len(parts) == 2 and not out.exists()
    summary = embed_records(
        records, out, modalities="loc", encoders={"loc": loc_encoder}, chunk_rows=8
    )
    assert summary.resumed_chunks == 2
    ids = read_embeddings(out).load().ids
    assert len(ids) == len(set(ids)) == 38
    assert list(ids) == [f"obs{i}" for i in range(40) if i not in (3, 17)]


def test_resume_with_other_options_is_refused(tmp_path, loc_encoder):
    records = _inat_csv(tmp_path / "obs.csv")
    out = tmp_path / "emb.parquet"
    parts = tmp_path / "emb.parquet.parts"
    parts.mkdir()
    (parts / "manifest.json").write_text('{"chunk_rows": 3}')
    (parts / "part-000000000000.parquet").write_bytes(b"a finished chunk")
    with pytest.raises(ResumeMismatchError, match="chunk_rows"):
        embed_records(records, out, modalities="loc", encoders={"loc": loc_encoder})


def test_shards_merge_into_the_whole(tmp_path, loc_encoder):
    records = _inat_csv(tmp_path / "obs.csv")
    out = tmp_path / "emb.parquet"
    for index in (2, 0, 1):
        embed_records(
            records, out, modalities=["loc"], encoders={"loc": loc_encoder}, shard=f"{index}/3"
        )
    shards = [shard_path(out, i, 3) for i in (1, 2, 0)]
    assert all(p.is_file() for p in shards) and not out.exists()
    with pytest.raises(ValueError, match="not one complete set"):
        merge_embeddings(shards[:2], out)
    summary = merge_embeddings(shards, out)
    assert summary.rows == 40 and summary.written == 38 and summary.failed == {"loc": 2}
    whole = embed_records(
        records, tmp_path / "whole.parquet", modalities="loc", encoders={"loc": loc_encoder}
    )
    a, b = read_embeddings(out).load(), read_embeddings(whole.out).load()
    assert list(a.ids) == list(b.ids)
    np.testing.assert_allclose(a.embeddings["loc"], b.embeddings["loc"], atol=1e-6)
    assert pq.read_table(errors_path(out)).column("row").to_pylist() == [3, 17]


def test_parse_shard(monkeypatch):
    assert parse_shard("1/4") == (1, 4)
    for bad in ("4/4", "x", "1-4", "-1/2"):
        with pytest.raises(ValueError, match="Bad shard"):
            parse_shard(bad)
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert parse_shard(None) == (1, 2)
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert parse_shard(None) is None


def _big_csv(path, n):
    rng = np.random.default_rng(1)
    pacsv.write_csv(
        pa.table(
            {
                "observation_id": [f"r{i}" for i in range(n)],
                "decimalLatitude": rng.uniform(-80, 80, n),
                "decimalLongitude": rng.uniform(-180, 180, n),
            }
        ),
        path,
    )
    return path


@pytest.mark.slow
def test_cli_embed_killed_and_rerun_has_every_row_once(tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time

    records = _big_csv(tmp_path / "obs.csv", 40_000)
    out = tmp_path / "emb.parquet"
    args = [
        sys.executable, "-m", "ecomodal", "embed", "--records", str(records),
        "--modalities", "loc", "--encoder", "loc=geoclip", "--out", str(out),
        "--chunk-rows", "2048", "--no-progress",
    ]  # fmt: skip
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    parts = tmp_path / "emb.parquet.parts"
    deadline = time.monotonic() + 120
    while len(list(parts.glob("part-*.parquet"))) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    finished = len(list(parts.glob("part-*.parquet")))
    assert 2 <= finished < 20 and not out.exists()
    rerun = subprocess.run(args, env=env, capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert "wrote 40000 of 40000 rows" in rerun.stdout
    ids = read_embeddings(out).load(modalities=[]).ids
    assert list(ids) == [f"r{i}" for i in range(40_000)]
    assert not parts.exists() and not list(tmp_path.glob(".*.tmp"))


def test_cli_embed_merge_and_covariates(tmp_path):
    from typer.testing import CliRunner

    from ecomodal.cli import app

    runner = CliRunner()
    records = _big_csv(tmp_path / "obs.csv", 50)
    out = tmp_path / "emb.parquet"
    for shard in ("0/2", "1/2"):
        result = runner.invoke(
            app,
            ["embed", "--records", str(records), "--modalities", "loc", "--encoder",
             "loc=geoclip", "--out", str(out), "--shard", shard, "--no-progress"],
        )  # fmt: skip
        assert result.exit_code == 0, result.output
    shards = sorted(tmp_path.glob("emb.shard-*.parquet"))
    result = runner.invoke(app, ["embed", "merge", *map(str, shards), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "wrote 50 of 50 rows" in result.output
    assert len(read_embeddings(out)) == 50
    result = runner.invoke(app, ["embed", "--records", str(records)])
    assert result.exit_code != 0 and "--modalities" in result.output
    tif = tmp_path / "cov.tif"
    result = runner.invoke(app, ["covariates", "build", "--out", str(tif)])
    assert result.exit_code == 0, result.output
    assert "15 bands: elevation, bio1, bio4" in result.output and tif.is_file()


def test_embed_photos_names_and_places_with_a_media_root(tmp_path, tiny_clip, photos, loc_encoder):
    import shutil

    folder, _ = tiny_clip
    media = tmp_path / "media"
    media.mkdir()
    good, corrupt, _ = photos
    names = []
    for path in [*good, corrupt]:
        shutil.copy(path, media / Path(path).name)
        names.append(Path(path).name)
    records = tmp_path / "obs.parquet"
    pq.write_table(
        pa.table(
            {
                "id": ["a", "b", "c", "d"],
                "latitude": [10.0, 20.0, 30.0, 40.0],
                "longitude": [1.0, 2.0, 3.0, 4.0],
                "file_name": names,
                "genus": ["Quercus", "Canis", None, "Corvus"],
                "species": ["alba", "lupus", None, "corax"],
            }
        ),
        records,
    )
    out = tmp_path / "emb.parquet"
    summary = embed_records(
        records,
        out,
        modalities="image,text,loc",
        encoders={"image": f"local-dir:{folder}", "text": str(folder), "loc": loc_encoder},
        root=media,
    )
    assert summary.failed == {"image": 1, "text": 1, "loc": 0}
    batch = read_embeddings(out).load()
    assert list(batch.ids) == ["a", "b", "c", "d"]
    assert batch.present["image"].tolist() == [True, True, True, False]
    assert batch.present["text"].tolist() == [True, True, False, True]
    assert batch.columns.column("image_source").to_pylist() == names
    errors = pq.read_table(errors_path(out)).to_pylist()
    assert {(e["id"], e["modality"]) for e in errors} == {("d", "image"), ("c", "text")}


def test_taxabench_layout_with_media_templates(tmp_path, tiny_clip, photos):
    import shutil

    folder, _ = tiny_clip
    images = tmp_path / "taxabench_images"
    images.mkdir()
    good, _, _ = photos
    shutil.copy(good[0], images / "101.jpg")
    shutil.copy(good[1], images / "102.png")  # found through the glob
    pacsv.write_csv(
        pa.table(
            {
                "id": [101, 102, 103],
                "image_url": ["https://static.inaturalist.org/photos/1/medium.jpg"] * 3,
                "latitude": [1.0, 2.0, 3.0],
                "longitude": [4.0, 5.0, 6.0],
                "scientific_name": ["Corvus corax"] * 3,
            }
        ),
        tmp_path / "test_df.csv",
    )
    out = tmp_path / "emb.parquet"
    summary = embed_records(
        tmp_path / "test_df.csv",
        out,
        modalities=["image"],
        encoders={"image": str(folder)},
        media=["image=taxabench_images/{id}.*"],
    )
    assert summary.written == 2 and summary.failed == {"image": 1}
    assert list(read_embeddings(out).load().ids) == ["101", "102"]
    errors = pq.read_table(errors_path(out)).to_pylist()
    assert errors[0]["id"] == "103" and "does not exist" in errors[0]["reason"]
    with pytest.raises(ValueError, match="names columns \\['species_id'\\]"):
        embed_records(
            tmp_path / "test_df.csv",
            tmp_path / "other.parquet",
            modalities=["image"],
            encoders={"image": str(folder)},
            media={"image": "x/{species_id}.jpg"},
        )


def test_option_and_column_mistakes_are_ecomodal_errors(tmp_path, loc_encoder):
    from ecomodal.embed import parse_media_templates
    from ecomodal.errors import MissingColumnError, OptionFormatError

    assert parse_media_templates(["image = photos/{id}.jpg"]) == {"image": "photos/{id}.jpg"}
    with pytest.raises(OptionFormatError, match="--media expects NAME=TEMPLATE"):
        parse_media_templates(["photos/{id}.jpg"])
    records = tmp_path / "obs.csv"
    records.write_text("id,latitude_deg,lon\na,10,20\n")
    with pytest.raises(MissingColumnError, match="Map one with --column-map COLUMN=lat"):
        embed_records(
            records, tmp_path / "e.parquet", modalities="loc", encoders={"loc": loc_encoder}
        )
    from typer.testing import CliRunner

    from ecomodal.cli import app

    args = ["embed", "--records", str(records), "--modalities", "loc", "--out", "e.parquet"]
    result = CliRunner().invoke(app, [*args, "--encoder", "geoclip"])
    assert isinstance(result.exception, OptionFormatError)
    assert "--encoder expects MODALITY=SPEC; got 'geoclip'" in str(result.exception)
