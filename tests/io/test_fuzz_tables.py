"""Fuzz: random embedding tables (schemas, dtypes, nulls, NaN/inf, extreme values, odd ids),
written as real Parquet, through ``read_embeddings(...).load()`` and ``complete_table``: each gives
a clean result or an :class:`~ecomodal.errors.EcomodalError`, never another exception.

Derandomized and bounded (about 20 s on 2 cores), so CI sees the same examples every run.
"""

from __future__ import annotations

import itertools
import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from ecomodal.errors import EcomodalError
from ecomodal.inference import complete_table
from ecomodal.io.tables import read_embeddings
from ecomodal.models.prom3e import ProM3E

DIM = 4
_COUNTER = itertools.count()

FLOATS = st.one_of(
    st.floats(-3, 3, width=32),
    st.sampled_from([0.0, -0.0, np.nan, np.inf, -np.inf, 1e30, -3e38, 3.4e38, 1e-30, 1e-45]),
    st.floats(allow_nan=True, allow_infinity=True),
)
NAMES = st.sampled_from(["image", "loc", "env", "sat_hat", "sigma_l1", "lat", "", "id2", "image"])
VALUE_TYPES = st.sampled_from(
    ["float32", "float32", "float64", "float16", "int64", "bool", "string", "varlist", "scalar"]
)
IDS = st.one_of(
    st.text(max_size=4),
    st.sampled_from(["", " ", "r0", "r0", "é\u0000", "id"]),
    st.integers(-3, 3),
    st.none(),
)


@st.composite
def near_valid_tables(draw):
    """Tables that are mostly right (unique odd string ids, float modality columns of float16,
    32 or 64, nulls, an extra column) where now and then one cell is extreme or non-finite: most
    complete, the spoiled ones must be refused."""
    n = draw(st.integers(1, 6))
    ids = draw(st.lists(st.text(max_size=4), min_size=n, max_size=n, unique=True))
    names = draw(st.lists(st.sampled_from(["image", "loc", "env", "sat"]), min_size=1, unique=True))
    data = {"id": pa.array(ids, type=pa.string())}
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    for name in names:
        kind = draw(st.sampled_from([np.float32, np.float32, np.float64, np.float16]))
        values = rng.normal(size=(n, DIM)) * draw(st.sampled_from([1.0, 1e-3, 1e3]))
        if draw(st.integers(0, 3)) == 0:  # spoil one cell
            values[draw(st.integers(0, n - 1)), draw(st.integers(0, DIM - 1))] = draw(FLOATS)
        with np.errstate(over="ignore"):
            values = values.astype(kind)
        present = np.array([draw(st.integers(0, 5)) > 0 for _ in range(n)])
        mask = pa.array(~present) if not present.all() else None
        data[name] = pa.FixedSizeListArray.from_arrays(pa.array(values.ravel()), DIM, mask=mask)
    if draw(st.booleans()):
        data["lat"] = pa.array([draw(FLOATS) for _ in range(n)])
    return pa.table(data)


@st.composite
def wild_tables(draw):
    """A table: an id column (or none, or of an odd type), 0-3 other columns, maybe metadata."""
    n = draw(st.integers(0, 5))
    names, arrays = [], []
    id_kind = draw(st.sampled_from(["string", "string", "string", "int", "missing", "float"]))
    if id_kind != "missing":
        ids = draw(st.lists(IDS, min_size=n, max_size=n))
        if id_kind == "int":
            ids = [i if isinstance(i, int) else None for i in ids]
            arrays.append(pa.array(ids, type=pa.int64()))
        elif id_kind == "float":
            arrays.append(pa.array([draw(FLOATS) for _ in range(n)], type=pa.float64()))
        else:
            arrays.append(pa.array([None if i is None else str(i) for i in ids], type=pa.string()))
        names.append("id")
    for _ in range(draw(st.integers(0, 3))):
        names.append(draw(NAMES))
        arrays.append(draw(columns(n)))
    table = pa.Table.from_arrays(arrays, names=names) if names else pa.table({"x": [1] * n})
    metadata = draw(metadata_for(names))
    if metadata is not None:
        table = table.replace_schema_metadata({b"ecomodal": metadata})
    return table


@st.composite
def columns(draw, n):
    kind = draw(VALUE_TYPES)
    dim = draw(st.sampled_from([DIM, DIM, DIM, 1, DIM + 1]))
    nulls = [draw(st.booleans()) and draw(st.booleans()) for _ in range(n)]
    if kind == "scalar":
        return pa.array([None if null else draw(FLOATS) for null in nulls], type=pa.float64())
    if kind == "string":
        return pa.array([None if null else draw(st.text(max_size=3)) for null in nulls])
    if kind == "varlist":
        rows = [
            None if null else [draw(FLOATS) for _ in range(draw(st.sampled_from([DIM, DIM, 2])))]
            for null in nulls
        ]
        return pa.array(rows, type=pa.list_(pa.float32()))
    flat = [draw(FLOATS) for _ in range(n * dim)]
    if kind == "bool":
        values = pa.array([bool(v) if v == v else False for v in flat], type=pa.bool_())
    elif kind == "int64":
        values = pa.array([int(v) if np.isfinite(v) and abs(v) < 1e18 else 0 for v in flat])
    else:
        with np.errstate(over="ignore"):
            values = pa.array(np.asarray(flat, dtype=np.float64).astype(kind))
    mask = pa.array(nulls, type=pa.bool_()) if any(nulls) else None
    return pa.FixedSizeListArray.from_arrays(values, dim, mask=mask)


@st.composite
def metadata_for(draw, names):
    choice = draw(st.sampled_from(["none", "none", "right", "wrong-dim", "garbage", "extra"]))
    if choice == "none":
        return None
    if choice == "garbage":
        return draw(st.sampled_from([b"{", b"[]", b'{"format_version": 9, "embeddings": {}}']))
    described = {}
    for name in names:
        if name not in ("id", "lat", "sigma_l1"):
            dim = DIM if choice == "right" else draw(st.sampled_from([0, 2, "four", None, True]))
            described[name] = {"encoder": draw(st.sampled_from([None, "x", 3])), "dim": dim}
    if choice == "extra":
        described["audio"] = {"encoder": None, "dim": DIM}
    return json.dumps({"format_version": 1, "embeddings": described}).encode()


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    root = tmp_path_factory.mktemp("fuzz")
    torch.manual_seed(0)
    model = ProM3E(input_dim=DIM, embed_dim=8, heads=2, mlp_dim=16).save_pretrained(root / "m")
    return root, model


@settings(
    max_examples=250,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    table=st.one_of(near_valid_tables(), wild_tables()),
    visible=st.sampled_from([None, None, None, "image", "image,loc", "loc"]),
    n_samples=st.sampled_from([0, 2]),
    batch_size=st.sampled_from([1, 3, 4096]),
)
def test_tables_read_and_complete_cleanly_or_fail_with_an_ecomodal_error(
    workspace, table, visible, n_samples, batch_size
):
    root, model = workspace
    step = next(_COUNTER)
    path, out = root / f"in{step}.parquet", root / f"out{step}.parquet"
    pq.write_table(table, path)
    try:
        batch = read_embeddings(path).load()
    except EcomodalError as err:
        event(f"read: {type(err).__name__}")
        batch = None
    else:
        assert len(batch) == table.num_rows
        for name, values in batch.embeddings.items():
            assert values.dtype == np.float32
            assert np.isfinite(values[batch.present[name]]).all()
    try:
        summary = complete_table(
            model,
            path,
            out,
            visible=visible,
            n_samples=n_samples,
            batch_size=batch_size,
            show_progress=False,
        )
    except EcomodalError as err:
        event(f"complete: {type(err).__name__}")
        assert not out.exists()
    else:
        event("complete: ok")
        assert batch is not None  # what completes must also read
        done = read_embeddings(out).load()
        assert summary.rows == len(done) == len(batch)
        assert list(done.ids) == list(batch.ids)
        for name in ("image", "sat", "loc", "env", "text", "audio"):
            hat = done.embeddings[name + "_hat"]
            assert np.isfinite(hat).all()
            np.testing.assert_allclose(np.linalg.norm(hat, axis=1), 1.0, atol=1e-4)
        out.unlink()
    path.unlink()
    assert not list(root.glob(".*tmp"))
