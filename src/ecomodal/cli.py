"""The ``ecomodal`` command line: a thin shell over the Python API."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Annotated

import typer

from ecomodal.errors import EcomodalError

app = typer.Typer(
    name="ecomodal",
    help="One embedding space for photos, names, places, satellite views, climate and sounds.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
train_app = typer.Typer(help="Train models.", no_args_is_help=True)
data_app = typer.Typer(help="Build and import data sets.", no_args_is_help=True)
embed_app = typer.Typer(help="Embed observation tables; `embed merge` joins shards.")
covariates_app = typer.Typer(help="Environmental covariate rasters.", no_args_is_help=True)
encoders_app = typer.Typer(help="Modality encoders.", no_args_is_help=True)
app.add_typer(train_app, name="train")
app.add_typer(data_app, name="data")
app.add_typer(embed_app, name="embed")
app.add_typer(covariates_app, name="covariates")
app.add_typer(encoders_app, name="encoders")


def _parse_column_map(pairs: list[str] | None) -> dict[str, str] | None:
    if not pairs:
        return None
    mapping = {}
    for pair in pairs:
        source, sep, target = pair.partition("=")
        if not sep or not source or not target:
            raise typer.BadParameter(f"--column-map expects SOURCE=MODALITY; got {pair!r}.")
        mapping[source] = target
    return mapping


def _numbers(text: str, kind: type, option: str) -> list:
    try:
        return [kind(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise typer.BadParameter(
            f"{option} expects comma-separated numbers; got {text!r}."
        ) from None


@train_app.command("prom3e")
def train_prom3e_command(
    data: Annotated[Path, typer.Option(help="Embedding table (Parquet) to train on.")],
    out: Annotated[Path, typer.Option(help="Run folder: checkpoints, metrics, best model.")],
    epochs: Annotated[int, typer.Option(help="Maximum number of epochs.")] = 500,
    batch_size: Annotated[int, typer.Option(help="Rows per batch and device.")] = 1024,
    seed: Annotated[int, typer.Option(help="Seed of every random choice.")] = 0,
    lr: Annotated[float, typer.Option(help="AdamW learning rate.")] = 1e-4,
    val_fraction: Annotated[
        float, typer.Option(help="Validation share without a split column.")
    ] = 0.1,
    modalities: Annotated[
        str | None,
        typer.Option(help="Comma-separated modality columns (default: the canonical six)."),
    ] = None,
    embed_dim: Annotated[int, typer.Option(help="Transformer width.")] = 1024,
    depth: Annotated[int, typer.Option(help="Number of transformer blocks.")] = 1,
    heads: Annotated[int, typer.Option(help="Attention heads.")] = 8,
    mlp_dim: Annotated[int, typer.Option(help="Transformer MLP width.")] = 2048,
    dropout: Annotated[float, typer.Option(help="Dropout rate.")] = 0.1,
    masked_only: Annotated[bool, typer.Option(help="Reconstruct hidden modalities only.")] = False,
    visible_counts: Annotated[
        str, typer.Option(help="Training mask: how many modalities stay visible, e.g. 1,2.")
    ] = "1,2",
    visible_probs: Annotated[
        str, typer.Option(help="Probabilities of those counts (published: 0.9,0.1).")
    ] = "0.9,0.1",
    accelerator: Annotated[str, typer.Option(help="cpu, gpu, auto ...")] = "cpu",
    devices: Annotated[str, typer.Option(help="Devices per node (a number or 'auto').")] = "1",
    num_nodes: Annotated[int, typer.Option(help="Number of nodes.")] = 1,
    strategy: Annotated[str, typer.Option(help="Lightning strategy: auto, ddp ...")] = "auto",
    precision: Annotated[str, typer.Option(help="32-true or bf16-mixed.")] = "32-true",
    resume: Annotated[bool, typer.Option(help="Continue from RUN_DIR's last checkpoint.")] = True,
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
) -> None:
    """Train ProM3E on an embedding table; writes RUN_DIR/best and RUN_DIR/last in the published format."""
    from ecomodal.training.prom3e import train_prom3e

    model_config = {
        "embed_dim": embed_dim,
        "depth": depth,
        "heads": heads,
        "mlp_dim": mlp_dim,
        "dropout": dropout,
        "masked_only": masked_only,
    }
    result = train_prom3e(
        data,
        out,
        epochs=epochs,
        batch_size=batch_size,
        seed=seed,
        lr=lr,
        val_fraction=val_fraction,
        model_config=model_config,
        modalities=modalities.split(",") if modalities else None,
        visible_counts=_numbers(visible_counts, int, "--visible-counts"),
        visible_probs=_numbers(visible_probs, float, "--visible-probs"),
        accelerator=accelerator,
        devices=int(devices) if devices.isdigit() else devices,
        num_nodes=num_nodes,
        strategy=strategy,
        precision=precision,
        resume=resume,
        progress=progress,
    )
    typer.echo(
        f"best model: {result.best_dir} (val loss {result.best_val_loss:.4f}, epoch "
        f"{result.best_epoch}); metrics: {result.metrics_path}"
    )


@app.command("complete")
def complete_command(
    model: Annotated[str, typer.Option(help="Folder, local-dir:PATH or hf-hub:ORG/NAME.")],
    data: Annotated[Path, typer.Option(help="Input embedding table (Parquet).")],
    out: Annotated[Path, typer.Option(help="Output table (Parquet).")],
    visible: Annotated[
        str | None,
        typer.Option(help="Comma-separated visible modalities (default: what each row has)."),
    ] = None,
    n_samples: Annotated[int, typer.Option(help="Latent samples averaged; 0 = no noise.")] = 5,
    batch_size: Annotated[int, typer.Option(help="Rows per batch.")] = 4096,
    seed: Annotated[int, typer.Option(help="Seed of the latent noise.")] = 0,
    device: Annotated[str | None, typer.Option(help="cpu, cuda ...")] = None,
    precision: Annotated[str, typer.Option(help="fp32 or bf16.")] = "fp32",
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
) -> None:
    """Infer every modality of every row; writes <modality>_hat columns and sigma_l1."""
    from ecomodal.inference import complete_table

    summary = complete_table(
        model,
        data,
        out,
        visible=visible,
        n_samples=n_samples,
        batch_size=batch_size,
        seed=seed,
        device=device,
        precision=precision,
        show_progress=progress,
    )
    typer.echo(
        f"wrote {summary.rows} rows to {summary.path} (mean sigma_l1 {summary.mean_sigma_l1:.2f})"
    )


@data_app.command("synthetic")
def synthetic_command(
    out: Annotated[Path, typer.Option(help="Output embedding table (Parquet).")],
    n: Annotated[int, typer.Option(help="Number of observations.")] = 10_000,
    seed: Annotated[int, typer.Option(help="Seed of the world and the sample.")] = 0,
    n_species: Annotated[int, typer.Option(help="Number of species.")] = 100,
    missing_rate: Annotated[float, typer.Option(help="Share of missing modalities.")] = 0.0,
) -> None:
    """Write the synthetic benchmark with known truth (species, places, six modalities)."""
    from ecomodal.data.synthetic import SyntheticConfig, make_synthetic, to_batch
    from ecomodal.io.tables import write_embeddings

    config = SyntheticConfig(n_species=n_species, missing_rate=missing_rate)
    path = write_embeddings(out, to_batch(make_synthetic(n, config=config, seed=seed)))
    typer.echo(f"wrote {n} synthetic observations to {path}")


@data_app.command("import-multinat")
def import_multinat_command(
    source: Annotated[Path, typer.Argument(help="MultiNat Parquet file or folder of them.")],
    out: Annotated[Path, typer.Option(help="Output embedding table (Parquet).")],
    column_map: Annotated[
        list[str] | None, typer.Option(help="SOURCE=MODALITY, repeatable (e.g. img_emb=image).")
    ] = None,
    id_column: Annotated[str | None, typer.Option(help="Column holding observation ids.")] = None,
) -> None:
    """Import ProM3E's published precomputed embeddings into the ecomodal table format."""
    from ecomodal.io.tables import import_multinat, read_embeddings

    path = import_multinat(
        source, out, column_map=_parse_column_map(column_map), id_column=id_column
    )
    table = read_embeddings(path)
    typer.echo(f"wrote {table.num_rows} rows with {', '.join(table.modalities)} to {path}")


@app.command("quickstart")
def quickstart_command(
    out: Annotated[Path, typer.Option(help="Folder for every output.")] = Path("quickstart-output"),
    n: Annotated[int, typer.Option(help="Synthetic observations.")] = 12_000,
    epochs: Annotated[int, typer.Option(help="Training epochs.")] = 40,
    seed: Annotated[int, typer.Option(help="Seed.")] = 0,
) -> None:
    """Run the main job end to end and say where the results are."""
    from ecomodal.quickstart import run_quickstart

    report = run_quickstart(out, n=n, epochs=epochs, seed=seed)
    typer.echo(json.dumps(report["summary"], indent=2))
    typer.echo(f"results: {out.resolve()} (metrics.json, completed_test.parquet, run/best/)")


def _encoder_specs(pairs: list[str] | None) -> dict[str, str]:
    specs = {}
    for pair in pairs or []:
        modality, sep, spec = pair.partition("=")
        if not sep or not modality or not spec:
            raise typer.BadParameter(f"--encoder expects MODALITY=SPEC; got {pair!r}.")
        specs[modality.strip()] = spec.strip()
    return specs


@embed_app.callback(invoke_without_command=True)
def embed_command(
    ctx: typer.Context,
    records: Annotated[Path | None, typer.Option(help="Observation table: CSV or Parquet.")] = None,
    modalities: Annotated[
        str | None, typer.Option(help="Comma-separated modalities, e.g. loc,env.")
    ] = None,
    out: Annotated[Path | None, typer.Option(help="Output embedding table (Parquet).")] = None,
    root: Annotated[
        Path | None, typer.Option(help="Folder that relative media paths start from.")
    ] = None,
    encoder: Annotated[
        list[str] | None,
        typer.Option(help="MODALITY=SPEC, e.g. loc=geoclip or env=local-dir:runs/env (repeat)."),
    ] = None,
    covariates: Annotated[
        str | None, typer.Option(help="Covariate raster for env (a path, or 'default').")
    ] = None,
    batch_size: Annotated[int | None, typer.Option(help="Rows per encoder batch.")] = None,
    device: Annotated[str | None, typer.Option(help="cpu, cuda ...")] = None,
    precision: Annotated[str, typer.Option(help="fp32 or bf16.")] = "fp32",
    column_map: Annotated[
        list[str] | None,
        typer.Option(help="COLUMN=NAME, e.g. decimalLatitude=lat (repeat)."),
    ] = None,
    shard: Annotated[
        str | None, typer.Option(help="I/N: embed the I-th of N slices (torchrun's rank if unset).")
    ] = None,
    media: Annotated[
        list[str] | None,
        typer.Option(
            help="NAME=TEMPLATE media paths, e.g. image=taxabench_images/{id}.jpg (repeat)."
        ),
    ] = None,
    chunk_rows: Annotated[
        int, typer.Option(help="Rows per resumable chunk (a finished chunk is never redone).")
    ] = 16384,
    progress: Annotated[bool, typer.Option(help="Show progress bars.")] = True,
) -> None:
    """Embed every row's modalities into an embedding table (resumable; errors beside it)."""
    if ctx.invoked_subcommand is not None:
        return
    missing = [
        name
        for name, value in (("--records", records), ("--modalities", modalities), ("--out", out))
        if value is None
    ]
    if missing:
        raise typer.BadParameter(f"missing {', '.join(missing)}.")
    from ecomodal.embed import embed_records

    options = {"env": {"covariates": covariates}} if covariates else None
    summary = embed_records(
        records,
        out,
        modalities=modalities,
        encoders=_encoder_specs(encoder),
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


@embed_app.command("merge")
def embed_merge_command(
    inputs: Annotated[list[Path], typer.Argument(help="Shard tables (NAME.shard-*.parquet).")],
    out: Annotated[Path, typer.Option(help="Merged embedding table (Parquet).")],
) -> None:
    """Join the shards of a sharded `ecomodal embed` run (and their errors tables)."""
    from ecomodal.embed import merge_embeddings

    _print_embed_summary(merge_embeddings(inputs, out))


@app.command("fetch")
def fetch_command(
    records: Annotated[Path, typer.Option(help="Observation table: CSV or Parquet.")],
    columns: Annotated[
        str, typer.Option(help="Comma-separated URL columns, e.g. image_url,sound_url.")
    ],
    root: Annotated[Path, typer.Option(help="Media folder: files go to ROOT/COLUMN/ID.ext.")],
    max_concurrency: Annotated[int, typer.Option(help="Requests in flight at most.")] = 8,
    rate: Annotated[float, typer.Option(help="Requests per second per host (0: no limit).")] = 4.0,
    retries: Annotated[int, typer.Option(help="Retries after the first attempt.")] = 4,
    timeout: Annotated[float, typer.Option(help="Seconds before a request times out.")] = 30.0,
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
) -> None:
    """Download the photos, sounds and tiles that a records table links to (resumable)."""
    from ecomodal.io.fetch import fetch_media

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


@covariates_app.command("build")
def covariates_build_command(
    out: Annotated[
        Path | None, typer.Option(help="Where to write the GeoTIFF (default: the cache).")
    ] = None,
    overwrite: Annotated[bool, typer.Option(help="Rebuild even if it exists.")] = False,
) -> None:
    """Build the offline covariate stack: elevation + ERA5-derived bioclim, 0.25 degree GeoTIFF."""
    from ecomodal.geo.covariates import CovariateStack, build_default_covariates

    path = build_default_covariates(out, overwrite=overwrite)
    stack = CovariateStack.open(path)
    typer.echo(f"{path} ({stack.num_bands} bands: {', '.join(stack.band_names)})")


@encoders_app.command("list")
def encoders_list_command(
    modality: Annotated[str | None, typer.Option(help="Only this modality.")] = None,
) -> None:
    """Registered encoders: modality, name, spec, dimension, licence."""
    from ecomodal.encoders import list_encoders

    for row in list_encoders(modality):
        default = " (default)" if row.get("default") else ""
        typer.echo(
            f"{row['modality']:6} {row['name']:12} {row['spec']:28} dim {row['dim']:<5} "
            f"licence: {row['licence']}{default}\n       {row['description']}"
        )


def main() -> None:
    """Entry point: runs the app and turns ecomodal errors into one clear line and exit code 2."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        app()
    except (EcomodalError, FileNotFoundError) as err:
        typer.secho(f"error: {err}", err=True, fg="red")
        sys.exit(2)


if __name__ == "__main__":
    main()
