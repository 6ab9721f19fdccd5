"""`ecomodal train ...`: training commands."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ecomodal.cli.common import numbers

app = typer.Typer(help="Train models.", no_args_is_help=True)


@app.command("prom3e")
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
        visible_counts=numbers(visible_counts, int, "--visible-counts"),
        visible_probs=numbers(visible_probs, float, "--visible-probs"),
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
