"""ecomodal.index: exact search equals brute force, approximate recall, filters, shards, files."""

from __future__ import annotations

import numpy as np
import pytest

from ecomodal.errors import InvalidArgumentError, OutputPathError
from ecomodal.index import build_index, choose_kind, load_index
from ecomodal.io.writer import write_embeddings

N, DIM = 600, 16


def clustered(n=N, dim=DIM, clusters=12, spread=0.4, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, dim))
    return (centres[rng.integers(0, clusters, n)] + spread * rng.standard_normal((n, dim))).astype(
        np.float32
    )


@pytest.fixture(scope="module")
def table(tmp_path_factory):
    """A real Parquet table: loc vectors (row 5 has none), env vectors, a biome and a name per row."""
    x = clustered()
    present = np.ones(N, dtype=bool)
    present[5] = False
    biome = np.arange(N) % 5
    biome[:12] = 9  # a rare value: 12 rows, all early in the table
    path = tmp_path_factory.mktemp("tables") / "obs.parquet"
    write_embeddings(
        path,
        ids=[f"obs{i}" for i in range(N)],
        embeddings={"loc": x, "env": clustered(dim=4, seed=1)},
        present={"loc": present, "env": np.ones(N, dtype=bool)},
        columns={"biome": biome, "name": [f"sp{i % 3}" for i in range(N)]},
        row_group_size=64,
    )
    return path, x, present, biome


def brute_force(x, present, queries, k, allowed=None):
    unit = x / np.linalg.norm(x, axis=1, keepdims=True)
    q = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    sims = q @ unit.T
    keep = present if allowed is None else present & allowed
    sims[:, ~keep] = -np.inf
    order = np.argsort(-sims, axis=1, kind="stable")[:, :k]
    return order, np.take_along_axis(sims, order, axis=1)


def test_exact_search_equals_numpy_brute_force(table, tmp_path):
    path, x, present, _ = table
    index = build_index(path, "loc", tmp_path / "idx", kind="auto")
    assert index.kind == "exact" and index.count == N - 1
    queries = clustered(20, seed=3)
    result = index.search(queries, k=7)
    rows, scores = brute_force(x, present, queries, 7)
    assert result.ids.shape == (20, 7)
    np.testing.assert_array_equal(result.ids, np.array([[f"obs{r}" for r in q] for q in rows]))
    np.testing.assert_allclose(result.scores, scores, atol=1e-5)
    np.testing.assert_array_equal(result.ranks[0], np.arange(1, 8))
    assert "obs5" not in set(index.ids)  # the row without a loc vector is left out


@pytest.mark.parametrize("kind", ["ivf", "hnsw"])
def test_approximate_recall_on_clustered_rows(table, tmp_path, kind):
    path, x, present, _ = table
    index = build_index(path, "loc", tmp_path / kind, kind=kind)
    assert index.kind == kind
    queries = clustered(50, seed=4)
    found = index.search(queries, k=10).ids
    truth, _ = brute_force(x, present, queries, 10)
    hits = [len(set(f) & {f"obs{r}" for r in t}) for f, t in zip(found, truth, strict=True)]
    assert np.mean(hits) / 10 >= 0.9


def test_auto_kind_switches_to_ivf_above_the_threshold(table, tmp_path):
    assert choose_kind("auto", 10, 10) == "exact" and choose_kind("auto", 11, 10) == "ivf"
    index = build_index(table[0], "loc", tmp_path / "idx", exact_threshold=100)
    assert index.kind == "ivf" and index.meta["nlist"] >= 1 and index.meta["nprobe"] >= 1


@pytest.mark.parametrize("kind", ["exact", "ivf", "hnsw"])
def test_filters_return_only_matching_rows_and_k_of_them(table, tmp_path, kind):
    path, x, present, biome = table
    index = build_index(path, "loc", tmp_path / kind, kind=kind)
    queries = clustered(15, seed=5)
    for where, allowed in (
        ({"biome": 2}, biome == 2),
        ({"biome": "9"}, biome == 9),  # text is cast to the column's type (as from --where)
        ({"biome": [9, 1], "name": "sp0"}, np.isin(biome, [9, 1]) & (np.arange(N) % 3 == 0)),
    ):
        result = index.search(queries, k=10, where=where)
        assert result.ids.shape == (15, 10)
        rows, scores = brute_force(x, present, queries, 10, allowed)
        expected = {f"obs{r}" for r in np.flatnonzero(allowed & present)}
        assert set(result.ids.ravel()) <= expected
        if kind == "exact" or allowed.sum() < 50:  # rare values: exact among matches
            np.testing.assert_allclose(result.scores, scores, atol=1e-5)
    # Fewer matching rows than k: every query gets all of them.
    few = index.search(queries, k=50, where={"biome": 9})
    assert few.k == 11 and set(few.ids[0]) == {f"obs{i}" for i in range(12) if i != 5}


def test_tiny_shards_give_the_same_index_as_one_shard(table, tmp_path):
    path = table[0]
    queries = clustered(30, seed=6)
    for kind in ("exact", "ivf"):
        one = build_index(path, "loc", tmp_path / f"{kind}-one", kind=kind, shard_rows=10_000)
        many = build_index(path, "loc", tmp_path / f"{kind}-many", kind=kind, shard_rows=7)
        np.testing.assert_array_equal(one.ids, many.ids)
        assert one.rows.equals(many.rows)
        rows = np.arange(one.count)
        np.testing.assert_array_equal(one._reconstruct(rows), many._reconstruct(rows))
        a, b = one.search(queries, k=10), many.search(queries, k=10)
        np.testing.assert_array_equal(a.ids, b.ids)
        np.testing.assert_array_equal(a.scores, b.scores)


def test_save_load_roundtrip(table, tmp_path):
    path = table[0]
    built = build_index(path, "loc", tmp_path / "idx", kind="ivf", nprobe=3, seed=2)
    loaded = load_index(tmp_path / "idx")
    assert (loaded.kind, loaded.modality, loaded.dim, loaded.count) == ("ivf", "loc", DIM, N - 1)
    assert loaded.meta["nprobe"] == 3 and loaded.meta["seed"] == 2
    assert loaded.filter_columns == ["biome", "name"]
    assert loaded.meta["table"] == str(path.resolve())
    queries = clustered(10, seed=7)
    a, b = built.search(queries, k=5), loaded.search(queries, k=5)
    np.testing.assert_array_equal(a.ids, b.ids)
    np.testing.assert_array_equal(a.scores, b.scores)
    # A row's own vector finds that row first.
    own = loaded.search(loaded.vectors_of(["obs42", "obs7"]), k=1, nprobe=64)
    assert own.ids[:, 0].tolist() == ["obs42", "obs7"]
    table_out = own.to_table()
    assert table_out.column_names == ["query", "rank", "id", "score"]
    # Rebuilding over an index folder replaces it; a foreign folder is refused, untouched.
    build_index(path, "loc", tmp_path / "idx", kind="exact")
    assert load_index(tmp_path / "idx").kind == "exact"
    foreign = tmp_path / "notes"
    foreign.mkdir()
    (foreign / "keep.txt").write_text("mine")
    with pytest.raises(OutputPathError, match="not an ecomodal index"):
        build_index(path, "loc", foreign)
    assert [p.name for p in foreign.iterdir()] == ["keep.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["idx", "notes"]


def test_python_api_bad_arguments(table, tmp_path):
    index = build_index(table[0], "loc", tmp_path / "idx")
    with pytest.raises(InvalidArgumentError, match="k must be >= 1"):
        index.search(np.ones(DIM), k=0)
    with pytest.raises(InvalidArgumentError, match="kind must be one of"):
        build_index(table[0], "loc", tmp_path / "other", kind="lsh")
    with pytest.raises(InvalidArgumentError, match="filter_columns"):
        build_index(table[0], "loc", tmp_path / "other", filter_columns=["nope"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["idx"]
    # No row holds the modality: an error inside the build, and no temporary folder left.
    empty = write_embeddings(
        tmp_path / "empty.parquet",
        ids=["a", "b"],
        embeddings={"loc": np.ones((2, 3)), "env": np.ones((2, 2))},
        present={"loc": np.zeros(2, dtype=bool), "env": np.ones(2, dtype=bool)},
    )
    with pytest.raises(InvalidArgumentError, match="no row with a 'loc' embedding"):
        build_index(empty, "loc", tmp_path / "idx", kind="exact", shard_rows=1)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty.parquet", "idx"]
    assert load_index(tmp_path / "idx").count == N - 1  # the earlier index is untouched
