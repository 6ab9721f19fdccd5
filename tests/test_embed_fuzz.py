"""Fuzz: observation tables with random schemas, dtypes, nulls, NaN/inf, extreme values and odd
ids through `embed_records` with the offline loc encoder. A clean result or an EcomodalError,
never another exception (issue 14). Deterministic and bounded (well under a minute)."""

from __future__ import annotations

import datetime
import tempfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ecomodal.embed import embed_records
from ecomodal.encoders import load_encoder
from ecomodal.errors import EcomodalError
from ecomodal.io.reader import read_embeddings

NAMES = ["id", "lat", "lon", "latitude", "decimalLongitude", "gbifID", "species", "x", "image"]
FLOATS = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0.0, -90.0, 90.0, 180.0, -180.0, 1e308, -1e-320, 3e38]),
)
TEXT = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=6)


def _column(kind: str, n: int) -> st.SearchStrategy[pa.Array]:
    """A strategy for one column of ``n`` values of ``kind``, with nulls."""

    def values(element):
        return st.lists(st.one_of(st.none(), element), min_size=n, max_size=n)

    if kind == "float":
        return values(FLOATS).map(lambda v: pa.array(v, pa.float64()))
    if kind == "int":
        bound = st.integers(-(2**63), 2**63 - 1)
        return values(bound).map(lambda v: pa.array(v, pa.int64()))
    if kind == "string":
        numeric = FLOATS.map(repr)
        return values(st.one_of(TEXT, numeric)).map(lambda v: pa.array(v, pa.string()))
    if kind == "bool":
        return values(st.booleans()).map(lambda v: pa.array(v, pa.bool_()))
    if kind == "null":
        return st.just(pa.nulls(n))
    if kind == "timestamp":
        day = st.datetimes(min_value=datetime.datetime(1900, 1, 1))
        return values(day).map(lambda v: pa.array(v, pa.timestamp("us")))
    if kind == "list":
        return values(st.lists(FLOATS, max_size=3)).map(
            lambda v: pa.array(v, pa.list_(pa.float64()))
        )
    raise AssertionError(kind)


KINDS = ["float", "int", "string", "bool", "null", "timestamp", "list"]


@st.composite
def tables(draw) -> tuple[pa.Table, str]:
    n = draw(st.integers(0, 12))
    names = draw(st.lists(st.sampled_from(NAMES), min_size=1, max_size=6, unique=True))
    columns = {}
    for name in names:
        if name == "id" and draw(st.booleans()):  # odd ids: repeated, empty, unicode, null
            ids = draw(
                st.lists(
                    st.one_of(st.none(), TEXT, st.sampled_from(["a", "a"])), min_size=n, max_size=n
                )
            )
            columns[name] = pa.array(ids, pa.string())
        else:
            columns[name] = draw(_column(draw(st.sampled_from(KINDS)), n))
    table = pa.table(columns)
    fmt = draw(st.sampled_from(["csv", "parquet"]))
    if fmt == "csv" and any(
        pa.types.is_list(f.type) or pa.types.is_null(f.type) for f in table.schema
    ):
        fmt = "parquet"  # CSV cannot hold lists
    return table, fmt


@pytest.fixture(scope="module")
def loc_encoder():
    return load_encoder("loc", "geoclip")


@settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=tables(), column_map=st.sampled_from([None, ["latitude=lat"], ["nosuch=lat"]]))
def test_embed_records_gives_a_result_or_an_ecomodal_error(loc_encoder, data, column_map):
    table, fmt = data
    with tempfile.TemporaryDirectory() as folder:
        records = Path(folder) / f"obs.{fmt}"
        if fmt == "csv":
            pacsv.write_csv(table, records)
        else:
            pq.write_table(table, records)
        out = Path(folder) / "emb.parquet"
        try:
            summary = embed_records(
                records, out, modalities="loc", encoders={"loc": loc_encoder},
                column_map=column_map, chunk_rows=5,
            )  # fmt: skip
        except EcomodalError:
            assert not out.exists()
            assert not (Path(folder) / "emb.parquet.parts").exists()
            return
        batch = read_embeddings(out).load()
        assert summary.written == len(batch) <= table.num_rows
        assert summary.written + summary.failed["loc"] == summary.rows == table.num_rows
        assert np.isfinite(batch.embeddings["loc"]).all()
        np.testing.assert_allclose(np.linalg.norm(batch.embeddings["loc"], axis=1), 1.0, rtol=1e-5)
