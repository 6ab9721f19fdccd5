"""`ecomodal index build|search` end to end, and every bad input as one clear error line."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import pytest

from ecomodal.io.writer import write_embeddings

N, DIM = 300, 8


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """A real table and its index, built by the CLI: (table, index folder, vectors)."""
    from typer.testing import CliRunner

    from ecomodal.cli import app

    folder = tmp_path_factory.mktemp("cli-index")
    rng = np.random.default_rng(0)
    x = rng.standard_normal((N, DIM)).astype(np.float32)
    table = write_embeddings(
        folder / "obs.parquet",
        ids=[f"o{i}" for i in range(N)],
        embeddings={"env": x},
        columns={"biome": np.arange(N) % 4, "country": ["FR", "NZ", "BR"] * (N // 3)},
    )
    result = CliRunner().invoke(
        app,
        [
            "index",
            "build",
            "--data",
            str(table),
            "--modality",
            "env",
            "--out",
            str(folder / "idx"),
            "--shard-rows",
            "50",
            "--no-progress",
        ],
    )
    assert result.exit_code == 0, result.output
    assert f"of {N} env vectors (dim {DIM})" in result.output
    return table, folder / "idx", x


def cli(run_cli, words: str, **paths):
    """``run_cli`` on the words of ``words``, each formatted with ``paths``."""
    return run_cli(*(word.format(**paths) for word in words.split()))


def brute_force_ids(x, query, k, allowed=None):
    unit = x / np.linalg.norm(x, axis=1, keepdims=True)
    sims = unit @ (query / np.linalg.norm(query))
    if allowed is not None:
        sims[~allowed] = -np.inf
    return [f"o{i}" for i in np.argsort(-sims, kind="stable")[:k]]


def test_build_and_search_end_to_end(built, run_cli, tmp_path):
    table, index, x = built
    result = run_cli("index", "search", "--index", index, "--query-id", "o17", "-k", "5")
    assert result.code == 0, result.output
    lines = [json.loads(line) for line in result.output.strip().splitlines()]
    assert [line["id"] for line in lines] == brute_force_ids(x, x[17], 5)
    assert [line["rank"] for line in lines] == [1, 2, 3, 4, 5] and lines[0]["id"] == "o17"

    np.save(tmp_path / "q.npy", x[[3, 4]] * 2.0)
    out = tmp_path / "hits.parquet"
    result = cli(
        run_cli,
        "index search --index {index} --vector {tmp}/q.npy -k 4 --where country=NZ "
        "--where biome=1 --out {tmp}/hits.parquet",
        index=index,
        tmp=tmp_path,
    )
    assert result.code == 0, result.output
    hits = pq.read_table(out).to_pylist()
    allowed = (np.arange(N) % 4 == 1) & (np.arange(N) % 3 == 1)
    for query, vector in enumerate(x[[3, 4]]):
        got = [h["id"] for h in hits if h["query"] == query]
        assert got == brute_force_ids(x, vector, 4, allowed)
    assert len(result.output.strip().splitlines()) == 8

    result = run_cli("index", "search", "--index", index, "--query-id", "o2", "--format", "table")
    lines = result.output.strip().splitlines()
    assert result.code == 0 and lines[0].split() == ["query", "rank", "id", "score"]
    assert lines[1].split()[:3] == ["0", "1", "o2"] and len(lines) == 11


def test_search_by_place_with_the_loc_encoder(run_cli, tmp_path):
    """--lat/--lon on a loc index encodes the place with GeoCLIP: a row's own place finds it."""
    from ecomodal.encoders import load_encoder

    lat, lon = np.array([48.85, -41.3, -22.9, 35.7]), np.array([2.35, 174.8, -43.2, 139.7])
    vectors = load_encoder("loc", "geoclip").encode(lat=lat, lon=lon)
    table = write_embeddings(
        tmp_path / "places.parquet",
        ids=["paris", "wellington", "rio", "tokyo"],
        embeddings={"loc": vectors},
    )
    assert (
        cli(
            run_cli, "index build --data {t} --modality loc --out {t}.idx --no-progress", t=table
        ).code
        == 0
    )
    result = cli(run_cli, "index search --index {t}.idx --lat -41.2 --lon 174.7 -k 1", t=table)
    assert result.code == 0, result.output
    assert json.loads(result.output)["id"] == "wellington"


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_search_by_text_with_the_tables_text_encoder(run_cli, tmp_path):
    """--text on a text index encodes with the encoder the table records (offline MiniLM)."""
    from ecomodal.encoders import load_encoder

    names = ["Quercus robur", "Panthera leo", "Salmo salar", "Bellis perennis"]
    table = write_embeddings(
        tmp_path / "names.parquet",
        ids=["oak", "lion", "salmon", "daisy"],
        embeddings={"text": load_encoder("text", "minilm").encode(names)},
        encoders={"text": "minilm"},
    )
    assert (
        cli(
            run_cli, "index build --data {t} --modality text --out {t}.idx --no-progress", t=table
        ).code
        == 0
    )
    out = tmp_path / "hits.parquet"
    result = run_cli(
        *f"index search --index {table}.idx -k 2 --out {out}".split(),
        *("--text", "Salmo salar", "--text", "Panthera leo"),
    )
    assert result.code == 0, result.output
    hits = pq.read_table(out).to_pylist()
    assert [h["id"] for h in hits if h["rank"] == 1] == ["salmon", "lion"]
    assert hits[0]["score"] == pytest.approx(1.0, abs=1e-4)


BAD_SEARCHES = [
    (["--query-id", "nobody"], ["'nobody'", "not in index"]),
    (["--query-id", "o1", "-k", "0"], ["-k", "greater than or equal to 1"]),
    (["--query-id", "o1", "--where", "biome"], ["--where", "COLUMN=VALUE", "'biome'"]),
    (["--query-id", "o1", "--where", "colour=red"], ["'colour'", "filter columns: biome, country"]),
    (["--query-id", "o1", "--where", "biome=many"], ["biome='many'", "int64"]),
    (["--vector", "{npy_bad_dim}"], ["--vector", "shape [5]", "dimension 8"]),
    (["--vector", "{npy_matrix_bad_dim}"], ["--vector", "shape [2, 3]"]),
    (["--vector", "{not_npy}"], ["--vector", "not a .npy"]),
    (["--vector", "{missing_npy}"], ["No such file", "missing.npy"]),
    (["--lat", "10", "--lon", "20"], ["lat/lon query", "env embeddings"]),
    (["--lat", "10"], ["--lat and --lon go together"]),
    (["--lat", "95", "--lon", "20"], ["lat must lie in [-90, 90]", "95"]),
    (["--text", "a fern"], ["text query", "env embeddings"]),
    ([], ["exactly one query"]),
    (["--query-id", "o1", "--text", "fern"], ["exactly one query", "--query-id and --text"]),
    (["--query-id", "o1", "--format", "xml"], ["--format", "'xml'"]),
    (["--query-id", "o1", "--nprobe", "0"], ["--nprobe"]),
    (["--query-id", "o1", "--out", "{folder}"], ["--out", "existing folder"]),
]


@pytest.mark.parametrize(("args", "expected"), BAD_SEARCHES, ids=lambda v: str(v)[:40])
def test_bad_search_input_is_one_clear_line(built, run_cli, tmp_path, args, expected):
    _, index, _ = built
    np.save(tmp_path / "bad_dim.npy", np.ones(5, dtype=np.float32))
    np.save(tmp_path / "matrix.npy", np.ones((2, 3), dtype=np.float32))
    (tmp_path / "text.npy").write_text("not an array")
    (tmp_path / "out").mkdir()
    paths = {
        "npy_bad_dim": tmp_path / "bad_dim.npy",
        "npy_matrix_bad_dim": tmp_path / "matrix.npy",
        "not_npy": tmp_path / "text.npy",
        "missing_npy": tmp_path / "missing.npy",
        "folder": tmp_path / "out",
    }
    args = [a.format(**paths) for a in args]
    before = run_cli.files_under(tmp_path)
    run_cli("index", "search", "--index", index, *args).assert_clear_failure(*expected)
    assert run_cli.files_under(tmp_path) == before


def test_missing_or_foreign_index_folder(run_cli, tmp_path):
    run_cli(
        "index", "search", "--index", tmp_path / "none", "--query-id", "a"
    ).assert_clear_failure("No such index folder", "none")
    (tmp_path / "plain").mkdir()
    run_cli(
        "index", "search", "--index", tmp_path / "plain", "--query-id", "a"
    ).assert_clear_failure("not an ecomodal index", "index.json is missing")


BAD_BUILDS = [
    (["--modality", "sat"], ["has no embedding column 'sat'", "available: env"]),
    (["--modality", "env", "--kind", "lsh"], ["kind must be one of", "'lsh'"]),
    (["--modality", "env", "--shard-rows", "0"], ["--shard-rows"]),
    (["--modality", "env", "--filter-columns", "biome,env"], ["filter_columns", "'env'"]),
    (["--modality", "env", "--out", "{file}"], ["{file}", "not an ecomodal index"]),
]


@pytest.mark.parametrize(("args", "expected"), BAD_BUILDS, ids=lambda v: str(v)[:40])
def test_bad_build_input_is_one_clear_line(built, run_cli, tmp_path, args, expected):
    table = built[0]
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "notes.txt").write_text("mine")
    fill = {"file": str(tmp_path / "taken")}
    args = [a.format(**fill) for a in args]
    expected = [e.format(**fill) for e in expected]
    if "--out" not in args:
        args += ["--out", str(tmp_path / "idx")]
    run_cli("index", "build", "--data", table, *args).assert_clear_failure(*expected)
    assert run_cli.files_under(tmp_path) == ["taken/notes.txt"]
    missing = cli(
        run_cli, "index build --data {t}/no.parquet --modality env --out {t}/idx", t=tmp_path
    )
    missing.assert_clear_failure("no.parquet")
