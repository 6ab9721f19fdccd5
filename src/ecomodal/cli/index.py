"""`ecomodal index build|search`: a FAISS search index over one modality of an embedding table."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

app = typer.Typer(
    help="Build and search a nearest-neighbour index of a table.", no_args_is_help=True
)

FORMATS = ("jsonl", "table")


@app.command("build")
def build_command(
    data: Annotated[Path, typer.Option(help="Embedding table (Parquet).")],
    modality: Annotated[str, typer.Option(help="The embedding column to index, e.g. loc.")],
    out: Annotated[Path, typer.Option(help="Index folder to write.")],
    kind: Annotated[
        str, typer.Option(help="auto (exact when small, IVF when large), exact, hnsw or ivf.")
    ] = "auto",
    exact_threshold: Annotated[
        int | None, typer.Option(help="auto: largest table indexed exactly.", min=0)
    ] = None,
    shard_rows: Annotated[int, typer.Option(help="Rows read at a time.", min=1)] = 65_536,
    filter_columns: Annotated[
        str | None,
        typer.Option(help="Comma-separated columns for --where (default: every scalar column)."),
    ] = None,
    nprobe: Annotated[int | None, typer.Option(help="IVF lists scanned per query.", min=1)] = None,
    seed: Annotated[int, typer.Option(help="Seed of the IVF training sample.", min=0)] = 0,
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
) -> None:
    """Index one modality of a table: cosine similarity, results mapped back to its ids."""
    from ecomodal.index import DEFAULT_EXACT_THRESHOLD, build_index, choose_kind
    from ecomodal.options import parse_list

    choose_kind(kind, 0, 0)  # an unknown --kind fails before the table is read
    index = build_index(
        data,
        modality,
        out,
        kind=kind,
        exact_threshold=DEFAULT_EXACT_THRESHOLD if exact_threshold is None else exact_threshold,
        shard_rows=shard_rows,
        filter_columns=None if filter_columns is None else parse_list(filter_columns),
        nprobe=nprobe,
        seed=seed,
        show_progress=progress,
    )
    columns = ", ".join(index.filter_columns) or "none"
    typer.echo(
        f"wrote an index ({index.kind}) of {index.count} {modality} vectors (dim {index.dim}) to "
        f"{out} (filter columns: {columns})"
    )


@app.command("search")
def search_command(
    index: Annotated[Path, typer.Option(help="Index folder (from 'ecomodal index build').")],
    query_id: Annotated[
        list[str] | None, typer.Option(help="Query by a row's own vector (repeat).")
    ] = None,
    lat: Annotated[float | None, typer.Option(help="Query place latitude (loc index).")] = None,
    lon: Annotated[float | None, typer.Option(help="Query place longitude (loc index).")] = None,
    text: Annotated[list[str] | None, typer.Option(help="Query text (text index; repeat).")] = None,
    vector: Annotated[Path | None, typer.Option(help="Query vectors: .npy, [D] or [Q, D].")] = None,
    k: Annotated[int, typer.Option("-k", "--k", help="Results per query.", min=1)] = 10,
    where: Annotated[
        list[str] | None, typer.Option(help="COLUMN=VALUE: only rows holding it (repeat).")
    ] = None,
    nprobe: Annotated[int | None, typer.Option(help="IVF lists scanned per query.", min=1)] = None,
    output_format: Annotated[
        str, typer.Option("--format", help="jsonl (one line per result) or table.")
    ] = "jsonl",
    out: Annotated[Path | None, typer.Option(help="Also write the results (Parquet).")] = None,
) -> None:
    """The k most similar rows to each query: its id, score (cosine) and rank."""
    from ecomodal.errors import InvalidArgumentError
    from ecomodal.index import load_index
    from ecomodal.options import parse_key_values

    if output_format not in FORMATS:
        raise InvalidArgumentError(f"--format must be jsonl or table; got {output_format!r}.")
    given = [
        name
        for name, value in (
            ("--query-id", query_id),
            ("--lat/--lon", lat is not None or lon is not None),
            ("--text", text),
            ("--vector", vector),
        )
        if value
    ]
    if len(given) != 1:
        raise InvalidArgumentError(
            "Give exactly one query: --query-id, --lat with --lon, --text or --vector"
            + (f"; got {' and '.join(given)}." if given else ".")
        )
    filters = parse_key_values(where, option="--where", key="COLUMN")
    if out is not None:
        from ecomodal.io.atomic import check_output_path

        check_output_path(out, what="--out")
    searcher = load_index(index)
    vectors = _query_vectors(searcher, query_id, lat, lon, text, vector)
    result = searcher.search(vectors, k, where=filters or None, nprobe=nprobe)
    table = result.to_table()
    if out is not None:
        import pyarrow.parquet as pq

        from ecomodal.io.atomic import atomic_path

        with atomic_path(out) as tmp:
            pq.write_table(table, tmp)
    _print(table, output_format)


def _query_vectors(searcher, query_id, lat, lon, text, vector) -> Any:
    from ecomodal.errors import InvalidArgumentError, InvalidEmbeddingsError

    if query_id:
        return searcher.vectors_of(query_id)
    if text:
        return searcher.encode_text(text)
    if vector is None:
        if lat is None or lon is None:
            raise InvalidArgumentError("--lat and --lon go together; give both.")
        return searcher.encode_points(lat, lon)
    import numpy as np

    try:
        values = np.load(vector, allow_pickle=False)
    except (ValueError, EOFError) as err:
        raise InvalidEmbeddingsError(f"--vector {vector} is not a .npy array: {err}") from None
    shape = list(np.shape(values))
    if len(shape) not in (1, 2) or shape[-1] != searcher.dim:
        raise InvalidEmbeddingsError(
            f"--vector {vector} has shape {shape}; index {searcher.path} holds "
            f"{searcher.modality} vectors of dimension {searcher.dim} (expected [{searcher.dim}] "
            f"or [Q, {searcher.dim}])."
        )
    return values


def _print(table, output_format: str) -> None:
    rows = table.to_pylist()
    if output_format == "jsonl":
        for row in rows:
            row["score"] = round(float(row["score"]), 6)
            typer.echo(json.dumps(row))
        return
    width = max([len("id"), *(len(str(row["id"])) for row in rows)])
    typer.echo(f"{'query':>5}  {'rank':>4}  {'id':<{width}}  score")
    for row in rows:
        typer.echo(f"{row['query']:>5}  {row['rank']:>4}  {row['id']:<{width}}  {row['score']:.4f}")
