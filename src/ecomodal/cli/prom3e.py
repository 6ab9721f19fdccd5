"""`ecomodal complete` and `ecomodal quickstart`: ProM3E inference and the main job."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer


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
