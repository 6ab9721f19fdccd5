import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ecomodal.errors import InvalidEmbeddingsError, TableFormatError, UnknownModalityError
from ecomodal.io.tables import (
    EmbeddingBatch,
    EmbeddingTableWriter,
    import_multinat,
    read_embeddings,
    write_embeddings,
)


def _data(n=50, seed=0):
    rng = np.random.default_rng(seed)
    image = rng.standard_normal((n, 8)).astype(np.float32)
    loc = rng.standard_normal((n, 4)).astype(np.float32)
    image[[3, 7]] = np.nan  # missing
    return {
        "ids": [f"obs-{i}" for i in range(n)],
        "embeddings": {"image": image, "loc": loc},
        "columns": {"lat": np.linspace(-10, 10, n), "species": [f"sp{i % 3}" for i in range(n)]},
    }


def test_round_trip_types_nulls_metadata(tmp_path):
    d = _data()
    path = write_embeddings(tmp_path / "t.parquet", **d, encoders={"image": "bioclip"})
    schema = pq.read_schema(path)
    assert schema.names == ["id", "image", "loc", "lat", "species"]
    assert schema.field("image").type == pa.list_(pa.float32(), 8)
    meta = json.loads(schema.metadata[b"ecomodal"])
    assert meta["embeddings"]["image"] == {"encoder": "bioclip", "dim": 8}
    assert meta["embeddings"]["loc"]["dim"] == 4
    raw = pq.read_table(path)
    assert raw.column("image").null_count == 2
    table = read_embeddings(path)
    assert table.num_rows == 50 and table.modalities == ["image", "loc"]
    assert table.extra_columns == ["lat", "species"] and table.dims == {"image": 8, "loc": 4}
    batch = table.load()
    assert list(batch.ids) == d["ids"]
    assert not batch.present["image"][3] and batch.present["image"][4]
    ok = batch.present["image"]
    np.testing.assert_array_equal(batch.embeddings["image"][ok], d["embeddings"]["image"][ok])
    assert (batch.embeddings["image"][~ok] == 0).all()
    assert batch.columns.column("species").to_pylist()[:3] == ["sp0", "sp1", "sp2"]


def test_streaming_equals_load(tmp_path):
    path = write_embeddings(tmp_path / "t.parquet", **_data(1000), row_group_size=128)
    table = read_embeddings(path)
    parts = list(table.iter_batches(batch_size=300))
    assert [len(p) for p in parts][:3] == [300, 300, 300] and sum(map(len, parts)) == 1000
    whole = table.load()
    joined = EmbeddingBatch.concat(parts)
    np.testing.assert_array_equal(joined.embeddings["loc"], whole.embeddings["loc"])
    only_loc = next(table.iter_batches(batch_size=10, modalities=["loc"], columns=[]))
    assert only_loc.modalities == ["loc"] and only_loc.columns is None


def test_stack_order_and_absent_modality(tmp_path):
    batch = read_embeddings(write_embeddings(tmp_path / "t.parquet", **_data())).load()
    x, present = batch.stack(["loc", "audio"], dim=4)
    assert x.shape == (50, 2, 4)
    np.testing.assert_array_equal(x[:, 0], batch.embeddings["loc"])
    assert present[:, 0].all() and not present[:, 1].any()
    with pytest.raises(InvalidEmbeddingsError, match="different dimensions"):
        batch.stack(["image", "loc"])


def test_write_errors(tmp_path):
    d = _data()
    bad = d["embeddings"]["loc"].copy()
    bad[5, 1] = np.nan
    with pytest.raises(InvalidEmbeddingsError, match=r"column 'loc', row 5 \(id 'obs-5'\).*NaN"):
        write_embeddings(tmp_path / "x.parquet", **{**d, "embeddings": {"loc": bad}})
    dup = list(d["ids"])
    dup[9] = "obs-2"
    with pytest.raises(InvalidEmbeddingsError, match="duplicate id 'obs-2' at rows 2 and 9"):
        write_embeddings(tmp_path / "x.parquet", **{**d, "ids": dup})
    empty = {"image": d["embeddings"]["image"]}
    with pytest.raises(InvalidEmbeddingsError, match=r"row 3 \(id 'obs-3'\) has no embedding"):
        write_embeddings(tmp_path / "x.parquet", **{**d, "embeddings": empty})
    assert not (tmp_path / "x.parquet").exists()
    assert not list(tmp_path.iterdir())  # no temporary files either


def test_failed_write_keeps_existing_file(tmp_path):
    path = write_embeddings(tmp_path / "t.parquet", **_data())
    before = path.read_bytes()
    batch = read_embeddings(path).load()
    with pytest.raises(InvalidEmbeddingsError, match="duplicate id"):  # noqa: SIM117
        with EmbeddingTableWriter(path, {"image": 8, "loc": 4}) as writer:
            writer.write(batch.select(slice(0, 30)))
            writer.write(batch.select(slice(20, 50)))  # ids 20..29 again
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.parquet"]


def test_read_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_embeddings(tmp_path / "missing.parquet")
    junk = tmp_path / "junk.parquet"
    junk.write_bytes(b"PAR1 this is not parquet" * 20)
    with pytest.raises(TableFormatError, match="junk.parquet is not a readable Parquet"):
        read_embeddings(junk)
    good = write_embeddings(tmp_path / "good.parquet", **_data())
    truncated = tmp_path / "truncated.parquet"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(TableFormatError, match="truncated.parquet"):
        read_embeddings(truncated).load()
    noid = tmp_path / "noid.parquet"
    pq.write_table(pa.table({"image": pa.array([[1.0, 2.0]], pa.list_(pa.float32(), 2))}), noid)
    with pytest.raises(TableFormatError, match="has no 'id' column"):
        read_embeddings(noid)
    with pytest.raises(
        UnknownModalityError, match="no embedding column 'sat'; available: image, loc"
    ):
        read_embeddings(good, modalities=["sat"])
    # foreign file: list<double>, a NaN, a dim that changes, duplicate ids
    foreign = tmp_path / "foreign.parquet"
    pq.write_table(
        pa.table({"id": ["a", "b", "c"], "emb": [[1.0, 2.0], [3.0, float("nan")], [1.0, 0.0]]}),
        foreign,
    )
    with pytest.raises(InvalidEmbeddingsError, match=r"'emb', row 1 \(id 'b'\) has NaN"):
        read_embeddings(foreign).load()
    ragged = tmp_path / "ragged.parquet"
    pq.write_table(pa.table({"id": ["a", "b"], "emb": [[1.0, 2.0], [3.0]]}), ragged)
    with pytest.raises(InvalidEmbeddingsError, match=r"row 1 \(id 'b'\) has 1 values; expected 2"):
        read_embeddings(ragged).load()
    dups = tmp_path / "dups.parquet"
    pq.write_table(pa.table({"id": ["a", "b", "a"], "emb": [[1.0], [2.0], [3.0]]}), dups)
    with pytest.raises(InvalidEmbeddingsError, match="duplicate id 'a' at rows 0 and 2"):
        list(read_embeddings(dups).iter_batches(batch_size=2))


def test_foreign_parquet_without_metadata(tmp_path):
    path = tmp_path / "foreign.parquet"
    pq.write_table(
        pa.table(
            {
                "id": [1, 2],
                "image": pa.array([[1.0, 0.0], None], pa.list_(pa.float16())),
                "sound": pa.array([None, [0.5]], pa.list_(pa.float64())),
                "label": ["x", "y"],
            }
        ),
        path,
    )
    table = read_embeddings(path)
    assert table.modalities == ["image", "sound"] and table.extra_columns == ["label"]
    batch = table.load()
    assert list(batch.ids) == ["1", "2"] and batch.present["image"].tolist() == [True, False]
    assert batch.embeddings["image"].dtype == np.float32
    assert batch.embeddings["sound"].tolist() == [[0.0], [0.5]]
    # a row with no embedding at all is an error when every column is read
    pq.write_table(pa.table({"id": ["a"], "image": pa.array([None], pa.list_(pa.float32()))}), path)
    with pytest.raises(InvalidEmbeddingsError, match=r"row 0 \(id 'a'\) has no embedding"):
        read_embeddings(path).load()


def test_import_multinat_guessed_and_mapped(tmp_path):
    rng = np.random.default_rng(0)
    n = 20
    source = tmp_path / "multinat.parquet"
    pq.write_table(
        pa.table(
            {
                "key": [f"{i}_1.0_2.0" for i in range(n)],
                "img_embedding": pa.array(
                    rng.standard_normal((n, 6)).tolist(), pa.list_(pa.float64())
                ),
                "sat_emb": pa.array(
                    rng.standard_normal((n, 6)).astype(np.float16).tolist(), pa.list_(pa.float16())
                ),
                "location": pa.array(
                    rng.standard_normal((n, 6)).tolist(), pa.list_(pa.float32(), 6)
                ),
                "species": ["s"] * n,
            }
        ),
        source,
    )
    out = import_multinat(source, tmp_path / "out.parquet")
    table = read_embeddings(out)
    assert table.modalities == ["image", "sat", "loc"] and table.extra_columns == ["species"]
    assert table.encoders["image"] == "taxabind"
    batch = table.load()
    np.testing.assert_allclose(
        batch.embeddings["image"],
        np.asarray(pq.read_table(source).column("img_embedding").to_pylist(), np.float32),
    )
    mapped = import_multinat(
        source, tmp_path / "mapped.parquet", column_map={"sat_emb": "sat"}, id_column="key"
    )
    assert read_embeddings(mapped).modalities == ["sat"]
    with pytest.raises(TableFormatError, match="no column 'nope'"):
        import_multinat(source, tmp_path / "bad.parquet", column_map={"nope": "image"})
