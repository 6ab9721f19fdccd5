"""`ecomodal embed`, `embed merge` and `fetch`: observation tables to embeddings."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

RUN_HELP = "Run folder (quickstart, train bind): embed with its encoders (its encoders.json)."
POINTS_HELP = "Places to embed with --run: CSV or Parquet with lat, lon (and id)."
app = typer.Typer(help="Embed observation tables; `embed merge` joins shards.")


def _Pairs(help: str) -> Any:  # noqa: N802 (used as a type)
    """A repeatable ``KEY=VALUE`` option, parsed by :func:`ecomodal.options.parse_key_values`."""
    return Annotated[list[str] | None, typer.Option(help=f"{help} (repeat).")]


@app.callback(invoke_without_command=True)
def embed_command(
    ctx: typer.Context,
    records: Annotated[Path | None, typer.Option(help="Observation table: CSV or Parquet.")] = None,
    modalities: Annotated[
        str | None, typer.Option(help="Comma-separated modalities, e.g. loc,env (--run: all).")
    ] = None,
    run: Annotated[Path | None, typer.Option(help=RUN_HELP)] = None,
    points: Annotated[Path | None, typer.Option(help=POINTS_HELP)] = None,
    out: Annotated[Path | None, typer.Option(help="Output embedding table (Parquet).")] = None,
    root: Annotated[
        Path | None, typer.Option(help="Folder that relative media paths start from.")
    ] = None,
    encoder: _Pairs("MODALITY=SPEC, e.g. loc=geoclip or env=local-dir:runs/env") = None,
    covariates: Annotated[
        str | None, typer.Option(help="Covariate raster for env (a path, or 'default').")
    ] = None,
    batch_size: Annotated[int | None, typer.Option(help="Rows per encoder batch.", min=1)] = None,
    device: Annotated[str | None, typer.Option(help="cpu, cuda ...")] = None,
    precision: Annotated[str, typer.Option(help="fp32 or bf16.")] = "fp32",
    column_map: _Pairs("COLUMN=NAME, e.g. decimalLatitude=lat") = None,
    shard: Annotated[
        str | None, typer.Option(help="I/N: embed the I-th of N slices (torchrun's rank if unset).")
    ] = None,
    media: _Pairs("NAME=TEMPLATE media paths, e.g. image=taxabench_images/{id}.jpg") = None,
    chunk_rows: Annotated[
        int,
        typer.Option(help="Rows per resumable chunk (a finished chunk is never redone).", min=1),
    ] = 16384,
    progress: Annotated[bool, typer.Option(help="Show progress bars.")] = True,
) -> None:
    """Embed every row's modalities into an embedding table (resumable; errors beside it)."""
    if ctx.invoked_subcommand is not None:
        return
    if records is not None and points is not None:
        raise typer.BadParameter("give --records or --points, not both.")
    if run is not None and (encoder or covariates):
        raise typer.BadParameter(
            "--run embeds with the run's encoders; drop --encoder/--covariates."
        )
    records = records if records is not None else points
    needed = [("--records" if run is None else "--points", records), ("--out", out)]
    if run is None:
        needed.insert(1, ("--modalities", modalities))
    missing = [name for name, value in needed if value is None]
    if missing:
        raise typer.BadParameter(f"missing {', '.join(missing)}.")
    from ecomodal.embed import embed_records
    from ecomodal.options import parse_key_values

    options = {"env": {"covariates": covariates}} if covariates else None
    summary = embed_records(
        records,
        out,
        modalities=modalities,
        encoders=parse_key_values(encoder, option="--encoder", key="MODALITY", value="SPEC"),
        run=run,
        root=root,
        batch_size=batch_size,
        device=device,
        precision=precision,
        column_map=column_map,
        shard=shard,
        chunk_rows=chunk_rows,
        encoder_options=options,
        media=media,
        show_progress=progress,
    )
    _print_embed_summary(summary)


def _print_embed_summary(summary) -> None:
    typer.echo(f"wrote {summary.written} of {summary.rows} rows to {summary.out}")
    for modality, count in summary.encoded.items():
        typer.echo(f"  {modality}: {count} encoded, {summary.failed.get(modality, 0)} failed")
    if summary.rows_without_embedding:
        typer.echo(f"  {summary.rows_without_embedding} rows had no embedding at all")
    if any(summary.failed.values()):
        typer.echo(f"errors: {summary.errors}")


@app.command("merge")
def embed_merge_command(
    inputs: Annotated[list[Path], typer.Argument(help="Shard tables (NAME.shard-*.parquet).")],
    out: Annotated[Path, typer.Option(help="Merged embedding table (Parquet).")],
) -> None:
    """Join the shards of a sharded `ecomodal embed` run (and their errors tables)."""
    from ecomodal.embed import merge_embeddings

    _print_embed_summary(merge_embeddings(inputs, out))


def fetch_command(
    records: Annotated[Path, typer.Option(help="Observation table: CSV or Parquet.")],
    columns: Annotated[
        str, typer.Option(help="Comma-separated URL columns, e.g. image_url,sound_url.")
    ],
    root: Annotated[Path, typer.Option(help="Media folder: files go to ROOT/COLUMN/ID.ext.")],
    max_concurrency: Annotated[int, typer.Option(help="Requests in flight at most.", min=1)] = 8,
    rate: Annotated[
        float, typer.Option(help="Requests per second per host (0: no limit).", min=0)
    ] = 4.0,
    retries: Annotated[int, typer.Option(help="Retries after the first attempt.", min=0)] = 4,
    timeout: Annotated[
        float, typer.Option(help="Seconds before a request times out (> 0).", min=0)
    ] = 30.0,
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
) -> None:
    """Download the photos, sounds and tiles that a records table links to (resumable)."""
    from ecomodal.io.fetch import fetch_media
    from ecomodal.options import check_range, parse_list

    check_range(timeout, "--timeout", minimum=0, exclusive_minimum=True)
    if not parse_list(columns):
        raise typer.BadParameter(f"expects comma-separated URL columns; got {columns!r}.")
    summary = fetch_media(
        records,
        columns,
        root,
        max_concurrency=max_concurrency,
        per_host_rate=rate or None,
        retries=retries,
        timeout=timeout,
        show_progress=progress,
    )
    typer.echo(
        f"{summary.downloaded} downloaded, {summary.skipped} already there, {summary.failed} "
        f"failed of {summary.requested} ({summary.bytes:,} bytes) into {root}"
    )
    if summary.failed:
        typer.echo(f"failures: {summary.failures_path}")
