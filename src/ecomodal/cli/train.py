"""`ecomodal train ...`: training commands."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from ecomodal.cli.common import parse_devices

app = typer.Typer(help="Train models.", no_args_is_help=True)
F = TypeVar("F", bound=Callable[..., Any])

#: The trainer options of the training commands: name -> (annotation, default).
TRAINER_OPTIONS: dict[str, tuple[Any, Any]] = {
    "accelerator": (Annotated[str, typer.Option(help="cpu, gpu, auto ...")], "cpu"),
    "devices": (Annotated[str, typer.Option(help="Devices per node (a number or 'auto').")], "1"),
    "num_nodes": (Annotated[int, typer.Option(help="Number of nodes.")], 1),
    "strategy": (Annotated[str, typer.Option(help="Lightning strategy: auto, ddp ...")], "auto"),
    "precision": (Annotated[str, typer.Option(help="fp32 or bf16 (bfloat16 autocast).")], "fp32"),
    "resume": (
        Annotated[bool, typer.Option(help="Continue from RUN_DIR's last checkpoint.")],
        True,
    ),
    "progress": (Annotated[bool, typer.Option(help="Show a progress bar.")], True),
}


def trainer_options(
    accelerator: str = "cpu",
    devices: str = "1",
    num_nodes: int = 1,
    strategy: str = "auto",
    precision: str = "fp32",
    resume: bool = True,
    progress: bool = True,
):
    """The :class:`~ecomodal.training.trainer.TrainerOptions` of a command's trainer options."""
    from ecomodal.training.trainer import TrainerOptions

    return TrainerOptions(
        accelerator=accelerator,
        devices=parse_devices(devices),
        num_nodes=num_nodes,
        strategy=strategy,
        precision=precision,
        resume=resume,
        show_progress=progress,
    )


def with_trainer_options(*names: str, **replace: tuple[Any, Any]) -> Callable[[F], F]:
    """Give a command the trainer options ``names`` (default: all of :data:`TRAINER_OPTIONS`,
    ``replace`` swaps one's annotation and default) after its own; the command receives them
    as one ``trainer=TrainerOptions(...)``."""
    chosen = names or tuple(TRAINER_OPTIONS)
    options = {name: replace.get(name, TRAINER_OPTIONS[name]) for name in chosen}

    def decorate(command: F) -> F:
        signature = inspect.signature(command, eval_str=True)
        own = [p for p in signature.parameters.values() if p.name != "trainer"]
        added = [
            inspect.Parameter(
                name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=kind
            )
            for name, (kind, default) in options.items()
        ]

        @functools.wraps(command)
        def wrapper(**kwargs: Any) -> Any:
            values = {name: kwargs.pop(name) for name in options}
            return command(**kwargs, trainer=trainer_options(**values))

        parameters = [*own, *added]
        wrapper.__signature__ = signature.replace(parameters=parameters)  # type: ignore[attr-defined]
        wrapper.__annotations__ = {p.name: p.annotation for p in parameters}
        return wrapper  # type: ignore[return-value]

    return decorate


@app.command("prom3e")
@with_trainer_options()
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
    lambda_kl: Annotated[
        float, typer.Option(help="Weight of the KL term (published 1e-3).")
    ] = 1e-3,
    noise: Annotated[
        str, typer.Option(help="Latent noise: per-row (published) or per-dimension.")
    ] = "per-row",
    visible_counts: Annotated[
        str, typer.Option(help="Training mask: how many modalities stay visible, e.g. 1,2.")
    ] = "1,2",
    visible_probs: Annotated[
        str, typer.Option(help="Probabilities of those counts (published: 0.9,0.1).")
    ] = "0.9,0.1",
    calibrate: Annotated[
        bool,
        typer.Option(
            help="Calibrate best/ on the validation rows at the end (neighbours, completion mix, "
            "uncertainty model)."
        ),
    ] = True,
    trainer: Any = None,
) -> None:
    """Train ProM3E on an embedding table; writes RUN_DIR/best and RUN_DIR/last in the published format."""
    from ecomodal.modalities import MODALITIES
    from ecomodal.models.config import check_noise
    from ecomodal.options import parse_list, parse_numbers
    from ecomodal.training.prom3e import train_prom3e
    from ecomodal.training.tasks import check_visible
    from ecomodal.training.trainer import check_training_numbers

    check_training_numbers(
        flags=True,
        epochs=epochs,
        batch_size=batch_size,
        seed=seed,
        lr=lr,
        val_fraction=val_fraction,
        embed_dim=embed_dim,
        depth=depth,
        heads=heads,
        mlp_dim=mlp_dim,
        dropout=dropout,
        lambda_kl=lambda_kl,
    )
    check_noise(noise, "--noise")
    chosen = parse_list(modalities) or None
    counts = parse_numbers(visible_counts, int, option="--visible-counts")
    probs = parse_numbers(visible_probs, float, option="--visible-probs")
    check_visible(counts, probs, len(chosen or MODALITIES), flags=True)
    model_config = {
        "embed_dim": embed_dim,
        "depth": depth,
        "heads": heads,
        "mlp_dim": mlp_dim,
        "dropout": dropout,
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
        modalities=chosen,
        visible_counts=counts,
        visible_probs=probs,
        masked_only=masked_only,
        lambda_kl=lambda_kl,
        noise=noise,
        calibrate=calibrate,
        trainer=trainer,
    )
    if result.is_global_zero:
        typer.echo(
            f"best model: {result.best_dir} (val loss {result.best_val_loss:.4f}, epoch "
            f"{result.best_epoch}"
            + ("; calibrated" if calibrate else "")
            + f"); metrics: {result.metrics_path}"
        )


@app.command("bind")
@with_trainer_options()
def train_bind_command(
    data: Annotated[
        Path,
        typer.Option(help="Observation table (lat/lon, media) or feature table (Parquet)."),
    ],
    out: Annotated[Path, typer.Option(help="Run folder: checkpoints, metrics, best encoder.")],
    modality: Annotated[str, typer.Option(help="The modality whose encoder trains.")] = "env",
    bind_to: Annotated[str, typer.Option(help="The binding modality.")] = "image",
    head: Annotated[
        str | None,
        typer.Option(help="sinr (env default), linear (fast path default), mlp or geoclip."),
    ] = None,
    hidden: Annotated[int, typer.Option(help="Hidden units of the mlp head.")] = 0,
    locked: Annotated[
        bool,
        typer.Option(
            "--locked/--unlocked", help="Locked tuning (binding side frozen) or unlocked."
        ),
    ] = True,
    loss: Annotated[str, typer.Option(help="auto, random-negatives, supcon or clip.")] = "auto",
    num_negatives: Annotated[
        int | None, typer.Option(help="Random-location negatives per batch (default: batch).")
    ] = None,
    covariates: Annotated[
        str | None, typer.Option(help="Covariate raster for env (default: the offline stack).")
    ] = None,
    bind_to_encoder: Annotated[
        str | None, typer.Option(help="Encoder spec embedding the binding modality.")
    ] = None,
    species_column: Annotated[str, typer.Option(help="Species label column.")] = "species",
    val_fraction: Annotated[
        float, typer.Option(help="Validation share without a split column.")
    ] = 0.1,
    epochs: Annotated[int, typer.Option(help="Maximum number of epochs.")] = 20,
    batch_size: Annotated[int, typer.Option(help="Rows per batch and device.")] = 512,
    lr: Annotated[float, typer.Option(help="AdamW learning rate.")] = 1e-4,
    accumulate: Annotated[int, typer.Option(help="Gradient accumulation (published: 8).")] = 1,
    seed: Annotated[int, typer.Option(help="Seed of every random choice.")] = 0,
    trainer: Any = None,
) -> None:
    """Bind an encoder to a binding modality (TaxaBind); writes RUN_DIR/best and RUN_DIR/last."""
    from ecomodal.training.bind import train_bind
    from ecomodal.training.trainer import check_training_numbers

    check_training_numbers(
        flags=True,
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        val_fraction=val_fraction,
        accumulate=accumulate,
        seed=seed,
        hidden=hidden,
        num_negatives=num_negatives,
    )
    result = train_bind(
        data,
        out,
        modality=modality,
        bind_to=bind_to,
        head=head,
        hidden=hidden,
        locked=locked,
        loss=loss,
        num_negatives=num_negatives,
        covariates=covariates,
        bind_to_encoder=bind_to_encoder,
        species_column=species_column,
        val_fraction=val_fraction,
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        accumulate=accumulate,
        seed=seed,
        trainer=trainer,
    )
    if result.metrics:
        held = result.metrics
        typer.echo(
            f"best encoder: {result.best_dir} (epoch {result.best_epoch}); held-out "
            f"{modality}->{bind_to} R@10 {held['R@10']:.3f} (untrained "
            f"{held['untrained']['R@10']:.3f}, chance {held['chance_R@10']:.3f}, "
            f"{held['n_gallery']} {held['split']} rows); metrics: {result.metrics_path}"
        )


@app.command("cluster")
@with_trainer_options(
    "accelerator",
    "resume",
    "progress",
    resume=(
        Annotated[
            bool,
            typer.Option(help="Skip the K done in OUT; continue a stopped K at its next epoch."),
        ],
        True,
    ),
    progress=(TRAINER_OPTIONS["progress"][0], False),
)
def train_cluster_command(
    data: Annotated[Path, typer.Option(help="Embedding table (Parquet) with a split column.")],
    out: Annotated[Path, typer.Option(help="Folder: one k{K}/ head per K, cluster_sweep.*.")],
    k: Annotated[
        str, typer.Option("--k", help="Comma-separated cluster counts, e.g. 100,500,1000.")
    ] = "100,500,1000,2000,3000,5000,10000",
    embedding: Annotated[str, typer.Option(help="Column clustered by k-means.")] = "image",
    features: Annotated[
        str | None, typer.Option(help="Column the head trains on (default: --embedding).")
    ] = None,
    reference: Annotated[
        str | None,
        typer.Option(help="Column to compare with, e.g. bioclip (default: --embedding)."),
    ] = None,
    label: Annotated[str, typer.Option(help="Taxon column scored.")] = "scientific_name",
    text: Annotated[str, typer.Option(help="Text embedding column for zero-shot.")] = "text",
    split: Annotated[str, typer.Option(help="published (split column) or random.")] = "published",
    shots: Annotated[int, typer.Option(help="Support rows per class for few-shot.")] = 5,
    repeats: Annotated[int, typer.Option(help="Seeded few-shot draws averaged.")] = 5,
    hidden: Annotated[int, typer.Option(help="Head MLP width (0: linear head).")] = 0,
    margin: Annotated[float, typer.Option(help="Angular margin (radians).")] = 0.3,
    scale: Annotated[float, typer.Option(help="Logit scale of the margin softmax.")] = 32.0,
    epochs: Annotated[int, typer.Option(help="Head training epochs per K.")] = 10,
    batch_size: Annotated[int, typer.Option(help="Rows per batch.")] = 256,
    lr: Annotated[float, typer.Option(help="AdamW learning rate.")] = 1e-3,
    niter: Annotated[int, typer.Option(help="k-means iterations.")] = 20,
    seed: Annotated[int, typer.Option(help="Seed of every random choice.")] = 0,
    trainer: Any = None,
) -> None:
    """UNICOM-style cluster discrimination: k-means pseudo-classes, a margin-softmax head, and a
    sweep of K scored by zero-shot and few-shot accuracy (cluster_sweep.csv/.json/.png)."""
    from ecomodal.training.cluster import HeadConfig, cluster_sweep, parse_ks
    from ecomodal.training.trainer import check_training_numbers

    check_training_numbers(
        flags=True,
        hidden=hidden,
        margin=margin,
        scale=scale,
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        niter=niter,
        shots=shots,
        repeats=repeats,
        seed=seed,
    )
    try:
        ks = parse_ks(k)
    except ValueError as err:
        raise typer.BadParameter(str(err), param_hint="--k") from None
    head = HeadConfig(
        hidden=hidden, margin=margin, scale=scale, epochs=epochs, batch_size=batch_size, lr=lr
    )
    result = cluster_sweep(
        data,
        out,
        ks=ks,
        embedding=embedding,
        features=features,
        reference=reference,
        label=label,
        text=text,
        split=split,
        shots=shots,
        repeats=repeats,
        head=head,
        niter=niter,
        seed=seed,
        trainer=trainer,
    )
    ref = result.reference
    typer.echo(
        f"reference {ref['column']}: zero-shot {ref['zero_shot']:.4f}, few-shot {ref['few_shot']:.4f}"
    )
    for run in result.runs:
        typer.echo(f"K={run.k}: zero-shot {run.zero_shot:.4f}, few-shot {run.few_shot:.4f}")
    typer.echo(f"closest to the reference: K={result.closest_k}; results: {result.csv_path}")
