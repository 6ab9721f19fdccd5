"""The embedding-table format, on real Parquet files written and read through pyarrow."""

import json
import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ecomodal.errors import InvalidEmbeddingsError, TableFormatError, UnknownModalityError
from ecomodal.io.tables import (
    EmbeddingBatch,
    EmbeddingTable,
    EmbeddingTableWriter,
    import_multinat,
    read_embeddings,
    write_embeddings,
)


def _data(n=50, seed=0):
    rng = np.random.default_rng(seed)
    image = rng.standard_normal((n, 8)).astype(np.float32)
    loc = rng.standard_normal((n, 4)).astype(np.float32)
    image[[3, 7]] = np.nan  # entirely NaN: missing
    return {
        "ids": [f"obs-{i}" for i in range(n)],
        "embeddings": {"image": image, "loc": loc},
        "columns": {
            "lat": np.linspace(-10, 10, n),
            "species": [f"sp{i % 3}" for i in range(n)],
            "count": np.arange(n, dtype=np.int32),
        },
    }


def _files(folder):
    return sorted(p.name for p in folder.iterdir())


# --------------------------------------------------------------------------- round trip


def test_round_trip_values_nulls_extras_and_metadata(tmp_path):
    d = _data()
    path = write_embeddings(tmp_path / "t.parquet", **d, encoders={"image": "bioclip"})
    assert path == tmp_path / "t.parquet"

    # On disk: column order, fixed_size_list<float32>, nulls, metadata.
    schema = pq.read_schema(path)
    assert schema.names == ["id", "image", "loc", "lat", "species", "count"]
    assert schema.field("id").type == pa.string()
    assert schema.field("image").type == pa.list_(pa.float32(), 8)
    assert schema.field("loc").type == pa.list_(pa.float32(), 4)
    meta = json.loads(schema.metadata[b"ecomodal"])
    assert meta == {
        "format_version": 1,
        "embeddings": {
            "image": {"encoder": "bioclip", "dim": 8},
            "loc": {"encoder": None, "dim": 4},
        },
    }
    assert list(meta["embeddings"]) == ["image", "loc"]
    raw = pq.read_table(path)
    assert raw.column("image").null_count == 2 and raw.column("loc").null_count == 0
    assert raw.column("image")[3].as_py() is None

    # Through the API.
    table = read_embeddings(path)
    assert isinstance(table, EmbeddingTable)
    assert table.num_rows == 50 and len(table) == 50
    assert table.modalities == ["image", "loc"]
    assert table.dims == {"image": 8, "loc": 4}
    assert table.encoders == {"image": "bioclip", "loc": None}
    assert table.extra_columns == ["lat", "species", "count"]
    batch = table.load()
    assert len(batch) == 50 and batch.modalities == ["image", "loc"]
    assert batch.ids.dtype == object and list(batch.ids) == d["ids"]
    assert all(type(i) is str for i in batch.ids)
    assert batch.embeddings["image"].dtype == np.float32
    assert batch.present["image"].tolist() == [i not in (3, 7) for i in range(50)]
    assert batch.present["loc"].all()
    ok = batch.present["image"]
    np.testing.assert_array_equal(batch.embeddings["image"][ok], d["embeddings"]["image"][ok])
    assert (batch.embeddings["image"][~ok] == 0).all()
    np.testing.assert_array_equal(batch.embeddings["loc"], d["embeddings"]["loc"])
    assert batch.columns.column_names == ["lat", "species", "count"]
    assert batch.columns.column("lat").to_pylist() == d["columns"]["lat"].tolist()
    assert batch.columns.column("species").to_pylist() == d["columns"]["species"]
    assert batch.columns.schema.field("count").type == pa.int32()
    assert batch.encoders == {"image": "bioclip", "loc": None}


def test_round_trip_of_a_batch_and_an_empty_table(tmp_path):
    d = _data(10)
    first = read_embeddings(write_embeddings(tmp_path / "a.parquet", **d)).load()
    again = read_embeddings(write_embeddings(tmp_path / "b.parquet", first)).load()
    assert list(again.ids) == list(first.ids)
    for name in first.modalities:
        np.testing.assert_array_equal(again.embeddings[name], first.embeddings[name])
        np.testing.assert_array_equal(again.present[name], first.present[name])
    assert again.columns.equals(first.columns)

    empty = write_embeddings(
        tmp_path / "empty.parquet",
        ids=[],
        embeddings={"image": np.zeros((0, 3))},
        columns={"label": pa.array([], pa.string())},
    )
    table = read_embeddings(empty)
    assert table.num_rows == 0 and table.dims == {"image": 3}
    loaded = table.load()
    assert len(loaded) == 0 and loaded.embeddings["image"].shape == (0, 3)
    assert loaded.columns.column_names == ["label"] and loaded.columns.num_rows == 0


def test_explicit_present_and_columns_as_table(tmp_path):
    values = np.arange(12, dtype=np.float64).reshape(3, 4) + 1
    path = write_embeddings(
        tmp_path / "t.parquet",
        ids=np.array([10, 11, 12]),  # non-string ids are stored as strings
        embeddings={"text": values, "sat": values[:, :2]},
        present={"text": [True, False, True]},
        columns=pa.table({"genus": ["a", None, "c"]}),
    )
    batch = read_embeddings(path).load()
    assert list(batch.ids) == ["10", "11", "12"]
    assert batch.present["text"].tolist() == [True, False, True]
    assert batch.embeddings["text"][1].tolist() == [0, 0, 0, 0]  # absent rows are zeros
    assert batch.embeddings["text"][2].tolist() == [9, 10, 11, 12]
    assert batch.columns.column("genus").to_pylist() == ["a", None, "c"]
    assert pq.read_table(path).column("text").null_count == 1


def test_user_named_columns_are_embeddings(tmp_path):
    path = write_embeddings(
        tmp_path / "t.parquet",
        ids=["a", "b"],
        embeddings={"image_hat": np.ones((2, 3)), "image": [[1, 2, 3], [np.nan] * 3]},
        encoders={"image_hat": "prom3e"},
        columns={"sigma_l1": [0.5, 0.25]},
    )
    table = read_embeddings(path)
    assert table.modalities == ["image_hat", "image"]
    assert table.encoders == {"image_hat": "prom3e", "image": None}
    assert table.extra_columns == ["sigma_l1"]


# --------------------------------------------------------------------------- streaming


def test_streaming_yields_batches_whose_concat_equals_load(tmp_path):
    path = write_embeddings(tmp_path / "t.parquet", **_data(1000), row_group_size=128)
    assert pq.ParquetFile(path).metadata.num_row_groups == 8
    table = read_embeddings(path)
    parts = list(table.iter_batches(batch_size=300))
    assert [len(p) for p in parts] == [300, 300, 300, 100]
    whole = table.load()
    joined = EmbeddingBatch.concat(parts)
    assert list(joined.ids) == list(whole.ids)
    for name in whole.modalities:
        np.testing.assert_array_equal(joined.embeddings[name], whole.embeddings[name])
        np.testing.assert_array_equal(joined.present[name], whole.present[name])
    assert joined.columns.equals(whole.columns)

    only_loc = next(table.iter_batches(batch_size=10, modalities=["loc"], columns=[]))
    assert only_loc.modalities == ["loc"] and only_loc.columns is None and len(only_loc) == 10
    some = table.load(modalities=["image"], columns=["species"])
    assert some.modalities == ["image"] and some.columns.column_names == ["species"]
    with pytest.raises(TableFormatError, match="'image' is an embedding column"):
        table.iter_batches(columns=["image"])
    with pytest.raises(TableFormatError, match="'nope' is not a column"):
        table.load(columns=["nope"])


def test_read_embeddings_selects_modalities(tmp_path):
    path = write_embeddings(tmp_path / "t.parquet", **_data())
    table = read_embeddings(path, modalities=["loc"])
    assert table.modalities == ["loc"] and table.dims == {"loc": 4}
    assert table.encoders == {"loc": None}
    assert table.extra_columns == ["lat", "species", "count"]
    assert table.load().modalities == ["loc"]


def test_writer_streams_into_row_groups(tmp_path):
    batch = read_embeddings(write_embeddings(tmp_path / "src.parquet", **_data(100))).load()
    expected = batch.embeddings["loc"].copy()
    out = tmp_path / "out.parquet"
    with EmbeddingTableWriter(out, {"image": 8, "loc": 4}, row_group_size=40) as writer:
        for start in range(0, 100, 15):
            part = batch.select(slice(start, start + 15))
            writer.write(part)
            # A caller reusing its buffers must not change rows already handed over.
            part.embeddings["loc"][:] = 123.0
        assert not out.exists()  # nothing at the target until close
    metadata = pq.ParquetFile(out).metadata
    assert [metadata.row_group(i).num_rows for i in range(metadata.num_row_groups)] == [40, 40, 20]
    copy = read_embeddings(out).load()
    assert list(copy.ids) == list(batch.ids)
    np.testing.assert_array_equal(copy.embeddings["loc"], expected)
    assert copy.columns.column_names == ["lat", "species", "count"]


# --------------------------------------------------------------------------- NaN handling


def test_all_nan_row_is_null_but_partial_nan_is_an_error(tmp_path):
    d = _data()
    table = pq.read_table(write_embeddings(tmp_path / "ok.parquet", **d))
    assert table.column("image").is_null().to_pylist()[:8] == [False] * 3 + [True] + [False] * 3 + [
        True
    ]

    bad = d["embeddings"]["loc"].copy()
    bad[5, 1] = np.nan
    with pytest.raises(
        InvalidEmbeddingsError, match=r"bad\.parquet: column 'loc', row 5 \(id 'obs-5'\).*NaN"
    ):
        write_embeddings(tmp_path / "bad.parquet", **{**d, "embeddings": {"loc": bad}})
    bad = d["embeddings"]["image"].copy()
    bad[40, 0] = np.inf
    with pytest.raises(InvalidEmbeddingsError, match=r"column 'image', row 40 \(id 'obs-40'\)"):
        write_embeddings(tmp_path / "bad.parquet", **{**d, "embeddings": {"image": bad}})
    assert _files(tmp_path) == ["ok.parquet"]


def test_huge_finite_values_are_not_mistaken_for_inf(tmp_path):
    values = np.full((2, 4), 3e38, dtype=np.float32)  # the row sum overflows float32
    path = write_embeddings(tmp_path / "t.parquet", ids=["a", "b"], embeddings={"x": values})
    np.testing.assert_array_equal(read_embeddings(path).load().embeddings["x"], values)


# ------------------------------------------------------------------ stack / select / concat


def test_stack_order_and_all_absent_modality(tmp_path):
    batch = read_embeddings(write_embeddings(tmp_path / "t.parquet", **_data())).load()
    x, present = batch.stack(["loc", "audio"], dim=4)
    assert x.shape == (50, 2, 4) and x.dtype == np.float32 and present.shape == (50, 2)
    np.testing.assert_array_equal(x[:, 0], batch.embeddings["loc"])
    assert present[:, 0].all() and not present[:, 1].any() and (x[:, 1] == 0).all()
    # Without dim, the all-absent modality takes the requested columns' common dim.
    x, present = batch.stack(["audio", "image"])
    assert x.shape == (50, 2, 8)
    np.testing.assert_array_equal(x[:, 1], batch.embeddings["image"])
    assert present[:, 1].tolist() == batch.present["image"].tolist()
    with pytest.raises(InvalidEmbeddingsError, match="different dimensions"):
        batch.stack(["image", "loc"])
    with pytest.raises(InvalidEmbeddingsError, match=r"expected 8"):
        batch.stack(["loc"], dim=8)


def test_select_concat_from_stacked():
    rng = np.random.default_rng(1)
    stacked = rng.standard_normal((6, 2, 3)).astype(np.float32)
    stacked[2, 1] = np.nan  # entirely NaN: absent when no mask is given
    batch = EmbeddingBatch.from_stacked(
        [f"r{i}" for i in range(6)],
        stacked,
        None,
        ["image", "text"],
        columns={"k": list(range(6))},
        encoders={"image": "bioclip"},
    )
    assert batch.modalities == ["image", "text"] and batch.encoders["image"] == "bioclip"
    assert batch.present["text"].tolist() == [True, True, False, True, True, True]
    assert (batch.embeddings["text"][2] == 0).all()
    x, present = batch.stack(["text", "image"])
    np.testing.assert_array_equal(x[:, 1], stacked[:, 0])

    picked = batch.select(np.array([4, 0]))
    assert list(picked.ids) == ["r4", "r0"] and picked.columns.column("k").to_pylist() == [4, 0]
    masked = batch.select(np.array([True, False, True, False, False, False]))
    assert list(masked.ids) == ["r0", "r2"] and masked.present["text"].tolist() == [True, False]
    sliced = batch.select(slice(1, 3))
    assert list(sliced.ids) == ["r1", "r2"] and sliced.columns.column("k").to_pylist() == [1, 2]
    stepped = batch.select(slice(None, None, -2))
    assert list(stepped.ids) == ["r5", "r3", "r1"]

    joined = EmbeddingBatch.concat([sliced, picked])
    assert list(joined.ids) == ["r1", "r2", "r4", "r0"]
    assert joined.columns.column("k").to_pylist() == [1, 2, 4, 0]
    np.testing.assert_array_equal(joined.embeddings["image"][2], stacked[4, 0])
    other = EmbeddingBatch.from_stacked(["z"], np.ones((1, 1, 3)), None, ["image"])
    with pytest.raises(InvalidEmbeddingsError, match="Cannot concatenate"):
        EmbeddingBatch.concat([batch, other])
    with pytest.raises(InvalidEmbeddingsError, match=r"\[rows, 2 modalities, dim\]"):
        EmbeddingBatch.from_stacked(["a"], np.ones((1, 3)), None, ["image", "text"])


def test_sliced_arrow_columns_convert_with_their_offset():
    from ecomodal.io.format import column_to_numpy

    values = pa.array(np.arange(12, dtype=np.float32))
    mask = pa.array([False, True, False, False])
    fixed = pa.FixedSizeListArray.from_arrays(values, 3, mask=mask).slice(1, 3)
    variable = pa.array([[0.0, 1.0], None, [4.0, 5.0], [6.0, 7.0]], pa.list_(pa.float16()))
    ids = np.array(["a", "b", "c"], dtype=object)
    out, present = column_to_numpy(fixed, 3, source="s", column="c", ids=ids, offset=0)
    assert present.tolist() == [False, True, True]
    assert out.tolist() == [[0, 0, 0], [6, 7, 8], [9, 10, 11]]
    out, present = column_to_numpy(variable.slice(1), 2, source="s", column="c", ids=ids, offset=0)
    assert present.tolist() == [False, True, True] and out.tolist() == [[0, 0], [4, 5], [6, 7]]


# --------------------------------------------------------------------------- write validation


def test_write_validation_errors(tmp_path):
    d = _data()
    target = tmp_path / "x.parquet"
    dup = list(d["ids"])
    dup[9] = "obs-2"
    with pytest.raises(InvalidEmbeddingsError, match="duplicate id 'obs-2' at rows 2 and 9"):
        write_embeddings(target, **{**d, "ids": dup})
    with pytest.raises(InvalidEmbeddingsError, match=r"row 3 \(id 'obs-3'\) has no embedding"):
        write_embeddings(target, **{**d, "embeddings": {"image": d["embeddings"]["image"]}})
    nulls = list(d["ids"])
    nulls[4] = None
    with pytest.raises(TableFormatError, match="row 4 has a null id"):
        write_embeddings(target, **{**d, "ids": nulls})
    with pytest.raises(InvalidEmbeddingsError, match=r"embeddings\['loc'\] has 49 rows"):
        write_embeddings(target, **{**d, "embeddings": {"loc": d["embeddings"]["loc"][:49]}})
    with pytest.raises(InvalidEmbeddingsError, match=r"must be \[rows, dim\]"):
        write_embeddings(target, ids=["a"], embeddings={"loc": [1.0, 2.0]})
    with pytest.raises(TableFormatError, match="extra columns have 3 rows"):
        write_embeddings(target, **{**d, "columns": {"lat": [1.0, 2.0, 3.0]}})
    assert _files(tmp_path) == []  # nothing at the target, no temporary files either


def test_writer_rejects_wrong_dimension_and_columns(tmp_path):
    batch = read_embeddings(write_embeddings(tmp_path / "src.parquet", **_data())).load()
    out = tmp_path / "out.parquet"
    with (
        pytest.raises(InvalidEmbeddingsError, match=r"column 'loc' has shape \[50, 4\].*\[50, 5\]"),
        EmbeddingTableWriter(out, {"image": 8, "loc": 5}) as writer,
    ):
        writer.write(batch)
    with (
        pytest.raises(InvalidEmbeddingsError, match=r"the file has \['image'\]"),
        EmbeddingTableWriter(out, {"image": 8}) as writer,
    ):
        writer.write(batch)
    with (
        pytest.raises(TableFormatError, match=r"extra columns \['lat'\]; the file has"),
        EmbeddingTableWriter(out, {"image": 8, "loc": 4}) as writer,
    ):
        writer.write(batch.select(slice(0, 10)))
        part = batch.select(slice(10, 20))
        part.columns = part.columns.select(["lat"])
        writer.write(part)
    assert _files(tmp_path) == ["src.parquet"]


# --------------------------------------------------------------------------- atomicity


def test_failing_writer_leaves_existing_file_identical(tmp_path):
    path = write_embeddings(tmp_path / "t.parquet", **_data())
    before = path.read_bytes()
    batch = read_embeddings(path).load()
    with (
        pytest.raises(InvalidEmbeddingsError, match=r"duplicate id 'obs-20' at rows 20 and 30"),
        EmbeddingTableWriter(path, {"image": 8, "loc": 4}, row_group_size=8) as writer,
    ):
        writer.write(batch.select(slice(0, 30)))  # written out: several row groups
        assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
        writer.write(batch.select(slice(20, 50)))  # ids 20..29 again
    assert path.read_bytes() == before
    assert _files(tmp_path) == ["t.parquet"]

    # Without a with block a failed write aborts too, and the writer refuses further use.
    writer = EmbeddingTableWriter(path, {"image": 8, "loc": 4})
    writer.write(batch.select(slice(0, 10)))
    with pytest.raises(InvalidEmbeddingsError, match="duplicate id 'obs-0' at rows 0 and 10"):
        writer.write(batch.select(slice(0, 10)))
    with pytest.raises(ValueError, match="aborted"):
        writer.close()
    assert path.read_bytes() == before and _files(tmp_path) == ["t.parquet"]

    # An exception from the caller inside the with block discards the file as well.
    with (
        pytest.raises(RuntimeError, match="boom"),
        EmbeddingTableWriter(path, {"image": 8, "loc": 4}) as writer,
    ):
        writer.write(batch)
        raise RuntimeError("boom")
    assert path.read_bytes() == before and _files(tmp_path) == ["t.parquet"]


def test_successful_write_replaces_existing_file(tmp_path):
    path = write_embeddings(tmp_path / "t.parquet", **_data(10))
    write_embeddings(path, ids=["only"], embeddings={"env": np.ones((1, 2))})
    table = read_embeddings(path)
    assert table.modalities == ["env"] and table.num_rows == 1
    assert _files(tmp_path) == ["t.parquet"]


# --------------------------------------------------------------------------- read validation


def test_read_errors_missing_corrupt_and_schema(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.parquet does not exist"):
        read_embeddings(tmp_path / "missing.parquet")
    junk = tmp_path / "junk.parquet"
    junk.write_bytes(os.urandom(2000))
    with pytest.raises(TableFormatError, match="junk.parquet is not a readable Parquet") as info:
        read_embeddings(junk)
    assert info.value.__cause__ is not None
    good = write_embeddings(tmp_path / "good.parquet", **_data())
    truncated = tmp_path / "truncated.parquet"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(TableFormatError, match="truncated.parquet") as info:
        read_embeddings(truncated).load()
    assert info.value.__cause__ is not None

    noid = tmp_path / "noid.parquet"
    pq.write_table(pa.table({"image": pa.array([[1.0, 2.0]], pa.list_(pa.float32(), 2))}), noid)
    with pytest.raises(TableFormatError, match="noid.parquet has no 'id' column"):
        read_embeddings(noid)
    nullid = tmp_path / "nullid.parquet"
    pq.write_table(pa.table({"id": ["a", "b", None], "e": [[1.0], [2.0], [3.0]]}), nullid)
    with pytest.raises(TableFormatError, match="nullid.parquet: row 2 has a null id"):
        list(read_embeddings(nullid).iter_batches(batch_size=2))  # row 2 is in the 2nd batch
    with pytest.raises(
        UnknownModalityError, match="no embedding column 'sat'; available: image, loc"
    ):
        read_embeddings(good, modalities=["sat"])
    with pytest.raises(UnknownModalityError, match="available: image, loc"):
        read_embeddings(good).iter_batches(modalities=["image", "audio"])
    meta = tmp_path / "newer.parquet"
    raw = pq.read_table(good)
    newer = {"format_version": 2, "embeddings": {"image": {"encoder": None, "dim": 8}}}
    pq.write_table(raw.replace_schema_metadata({b"ecomodal": json.dumps(newer)}), meta)
    with pytest.raises(TableFormatError, match="format_version 2 is not supported"):
        read_embeddings(meta)


def test_read_validates_foreign_rows(tmp_path):
    nan = tmp_path / "nan.parquet"
    pq.write_table(
        pa.table({"id": ["a", "b", "c"], "emb": [[1.0, 2.0], [3.0, float("nan")], [1.0, 0.0]]}),
        nan,
    )
    with pytest.raises(
        InvalidEmbeddingsError, match=r"nan.parquet: column 'emb', row 1 \(id 'b'\)"
    ):
        read_embeddings(nan).load()
    ragged = tmp_path / "ragged.parquet"
    pq.write_table(
        pa.table({"id": ["a", "b", "c"], "emb": [[1.0, 2.0], [3.0, 4.0], [3.0]]}), ragged
    )
    with pytest.raises(
        InvalidEmbeddingsError,
        match=r"ragged.parquet: column 'emb', row 2 \(id 'c'\) has 1 values; expected 2",
    ):
        list(read_embeddings(ragged).iter_batches(batch_size=2))
    dups = tmp_path / "dups.parquet"
    pq.write_table(
        pa.table({"id": ["a", "b", "c", "a"], "emb": [[1.0], [2.0], [3.0], [4.0]]}), dups
    )
    stream = read_embeddings(dups).iter_batches(batch_size=2)
    assert list(next(stream).ids) == ["a", "b"]
    with pytest.raises(InvalidEmbeddingsError, match="duplicate id 'a' at rows 0 and 3"):
        next(stream)
    none = tmp_path / "none.parquet"
    pq.write_table(
        pa.table(
            {
                "id": ["a", "b"],
                "x": pa.array([[1.0], None], pa.list_(pa.float32())),
                "y": pa.array([None, None], pa.list_(pa.float32(), 1)),
            }
        ),
        none,
    )
    with pytest.raises(InvalidEmbeddingsError, match=r"row 1 \(id 'b'\) has no embedding"):
        read_embeddings(none).load()
    # Reading a subset of the modalities, rows without that subset are fine.
    assert read_embeddings(none).load(modalities=["y"]).present["y"].tolist() == [False, False]


def test_foreign_parquet_without_metadata(tmp_path):
    path = tmp_path / "foreign.parquet"
    pq.write_table(
        pa.table(
            {
                "id": pa.array([1, 2, 3], pa.int64()),
                "image": pa.array([[1.0, 0.5], None, [0.25, 2.0]], pa.list_(pa.float16())),
                "sound": pa.array([None, [0.5], [1.5]], pa.large_list(pa.float64())),
                "geo": pa.array([[1.0, 2.0, 3.0]] * 3, pa.list_(pa.float64(), 3)),
                "tags": pa.array([[1, 2], [], None], pa.list_(pa.int64())),  # ints: not embeddings
                "label": ["x", "y", "z"],
            }
        ),
        path,
    )
    table = read_embeddings(path)
    assert table.modalities == ["image", "sound", "geo"]
    assert table.dims == {"image": 2, "sound": 1, "geo": 3}
    assert table.encoders == {"image": None, "sound": None, "geo": None}
    assert table.extra_columns == ["tags", "label"]
    batch = table.load()
    assert list(batch.ids) == ["1", "2", "3"]
    assert all(v.dtype == np.float32 for v in batch.embeddings.values())
    assert batch.present["image"].tolist() == [True, False, True]
    assert batch.embeddings["image"].tolist() == [[1.0, 0.5], [0.0, 0.0], [0.25, 2.0]]
    assert batch.embeddings["sound"].tolist() == [[0.0], [0.5], [1.5]]
    assert batch.embeddings["geo"][2].tolist() == [1.0, 2.0, 3.0]
    assert batch.columns.column("tags").to_pylist() == [[1, 2], [], None]
    # Re-written, it becomes an ecomodal table with fixed-size float32 columns.
    out = write_embeddings(tmp_path / "native.parquet", batch)
    assert pq.read_schema(out).field("sound").type == pa.list_(pa.float32(), 1)


# --------------------------------------------------------------------------- MultiNat import


def _multinat_table(n, seed=0, start=0):
    rng = np.random.default_rng(seed)
    return pa.table(
        {
            "key": [f"{start + i}_1.0_2.0" for i in range(n)],
            "img_embedding": pa.array(rng.standard_normal((n, 6)).tolist(), pa.list_(pa.float64())),
            "sat_emb": pa.array(
                rng.standard_normal((n, 6)).astype(np.float16).tolist(), pa.list_(pa.float16())
            ),
            "location": pa.array(rng.standard_normal((n, 6)).tolist(), pa.list_(pa.float32(), 6)),
            "species": ["s"] * n,
            "lat": rng.uniform(-90, 90, n),
        }
    )


def test_import_multinat_with_guessed_names(tmp_path):
    source = tmp_path / "multinat.parquet"
    raw = _multinat_table(20)
    pq.write_table(raw, source)
    out = import_multinat(source, tmp_path / "out.parquet", batch_size=7)
    assert out == tmp_path / "out.parquet"
    table = read_embeddings(out)
    assert table.modalities == ["image", "sat", "loc"]
    assert table.encoders == {"image": "taxabind", "sat": "taxabind", "loc": "taxabind"}
    assert table.dims == {"image": 6, "sat": 6, "loc": 6}
    assert table.extra_columns == ["species", "lat"]
    assert pq.read_schema(out).field("image").type == pa.list_(pa.float32(), 6)
    batch = table.load()
    assert list(batch.ids) == raw.column("key").to_pylist()
    expected = {"image": "img_embedding", "sat": "sat_emb", "loc": "location"}
    for modality, src in expected.items():
        np.testing.assert_array_equal(
            batch.embeddings[modality],
            np.asarray(raw.column(src).to_pylist(), dtype=np.float64).astype(np.float32),
        )
    assert batch.columns.column("lat").to_pylist() == raw.column("lat").to_pylist()


def test_import_multinat_with_column_map_folder_and_float16(tmp_path):
    folder = tmp_path / "multinat"
    folder.mkdir()
    for part, start in (("part-1", 5), ("part-0", 0)):  # read in sorted order: part-0 first
        table = _multinat_table(5, seed=start, start=start).rename_columns(
            ["obs", "a", "b", "c", "species", "lat"]
        )
        pq.write_table(table, folder / f"{part}.parquet")
    (folder / "_SUCCESS").write_text("")
    out = import_multinat(
        folder,
        tmp_path / "mapped.parquet",
        column_map={"b": "sat", "a": "image_emb"},
        id_column="obs",
        encoder="bioclip",
    )
    table = read_embeddings(out)
    assert table.modalities == ["sat", "image_emb"]  # canonical modalities first
    assert table.encoders == {"sat": "bioclip", "image_emb": "bioclip"}
    assert table.extra_columns == ["c", "species", "lat"]  # unmapped columns are carried
    batch = table.load()
    assert list(batch.ids) == [f"{i}_1.0_2.0" for i in range(10)]
    first = pq.read_table(folder / "part-0.parquet")
    np.testing.assert_array_equal(
        batch.embeddings["sat"][:5],
        np.asarray(first.column("b").to_pylist(), dtype=np.float16).astype(np.float32),
    )


def test_import_multinat_nan_rows_and_errors(tmp_path):
    source = tmp_path / "src.parquet"
    pq.write_table(
        pa.table(
            {
                "observation_id": [101, 102, 103],
                "photo": [[1.0, 2.0], [float("nan")] * 2, [3.0, 4.0]],
                "climate": [[1.0], [2.0], [3.0]],
            }
        ),
        source,
    )
    batch = read_embeddings(import_multinat(source, tmp_path / "out.parquet")).load()
    assert list(batch.ids) == ["101", "102", "103"]
    assert batch.modalities == ["image", "env"]
    assert batch.present["image"].tolist() == [True, False, True]  # an all-NaN row is missing

    with pytest.raises(TableFormatError, match="no column 'nope'"):
        import_multinat(source, tmp_path / "bad.parquet", column_map={"nope": "image"})
    with pytest.raises(TableFormatError, match="no id column 'obs'"):
        import_multinat(source, tmp_path / "bad.parquet", id_column="obs")
    with pytest.raises(FileNotFoundError, match="nothing.parquet does not exist"):
        import_multinat(tmp_path / "nothing.parquet", tmp_path / "bad.parquet")
    twice = tmp_path / "twice.parquet"
    pq.write_table(pa.table({"id": ["a"], "img": [[1.0]], "image_emb": [[2.0]]}), twice)
    with pytest.raises(TableFormatError, match="'img' and 'image_emb' both look like 'image'"):
        import_multinat(twice, tmp_path / "bad.parquet")
    partial = tmp_path / "partial.parquet"
    pq.write_table(pa.table({"id": ["a", "b"], "img": [[1.0, 2.0], [1.0, float("nan")]]}), partial)
    with pytest.raises(
        InvalidEmbeddingsError,
        match=r"partial.parquet: column 'img' \(-> image\), row 1 \(id 'b'\)",
    ):
        import_multinat(partial, tmp_path / "bad.parquet")
    assert not (tmp_path / "bad.parquet").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_atomic_path_gives_each_writer_its_own_temporary(tmp_path):
    from ecomodal.io.atomic import atomic_path

    target = tmp_path / "same.txt"
    with atomic_path(target) as first, atomic_path(target) as second:
        assert first != second
        first.write_text("first")
        second.write_text("second")
    assert target.read_text() == "first"  # the outer one finishes last
    assert [p.name for p in tmp_path.iterdir()] == ["same.txt"]
