"""`ecomodal patch`: multimodal patching of the binding model (weight interpolation + alpha sweep)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def patch_command(
    original: Annotated[
        Path, typer.Option(help="Original binding model folder (open_clip or ecomodal format).")
    ],
    finetuned: Annotated[
        list[Path],
        typer.Option(
            help="Fine-tuned checkpoint of the same model (repeat: sequential patching, in order)."
        ),
    ],
    val: Annotated[
        Path,
        typer.Option(
            help="Validation records (CSV/Parquet): photos plus a text or rank columns; only its "
            "split == val rows when it has a split column."
        ),
    ],
    out: Annotated[
        Path,
        typer.Option(help="Folder for the patched model, patching_curve.csv and .png."),
    ],
    alphas: Annotated[
        str,
        typer.Option(
            help="START:STOP:N = N evenly spaced alphas with both ends included (0:1:10 = 10 "
            "values 0, 1/9, ..., 1), or a comma list such as 0,0.5,1."
        ),
    ] = "0:1:10",
    modality: Annotated[
        list[str] | None,
        typer.Option(help="Name of each --finetuned step, e.g. loc (repeat, same order)."),
    ] = None,
    query: Annotated[str, typer.Option(help="Modality scored against the taxon texts.")] = "image",
    text_encoder: Annotated[
        str | None,
        typer.Option(help="Text encoder spec for the candidates (default: the patched model)."),
    ] = None,
    root: Annotated[
        Path | None, typer.Option(help="Folder that relative media paths start from.")
    ] = None,
    column_map: Annotated[
        list[str] | None, typer.Option(help="COLUMN=NAME, e.g. photo=image (repeat).")
    ] = None,
    media: Annotated[
        list[str] | None,
        typer.Option(help="NAME=TEMPLATE media paths, e.g. image=images/{id}.jpg (repeat)."),
    ] = None,
    batch_size: Annotated[int, typer.Option(help="Rows per encoder batch.")] = 64,
    device: Annotated[str | None, typer.Option(help="cpu, cuda ...")] = None,
) -> None:
    """Interpolate the binding model between original and fine-tuned weights, keep the alpha with
    the best zero-shot accuracy on VAL, and write the curve (alpha, accuracy) as CSV and PNG."""
    from ecomodal.options import check_range
    from ecomodal.training.patching import parse_alphas, patch_model

    try:
        alpha_values = parse_alphas(alphas)
    except ValueError as err:
        raise typer.BadParameter(str(err), param_hint="--alphas") from None
    check_range(batch_size, "--batch-size", minimum=1, integer=True)
    result = patch_model(
        original,
        finetuned,
        val,
        out,
        alphas=alpha_values,
        modalities=modality,
        query=query,
        text_encoder=text_encoder,
        root=root,
        column_map=column_map,
        media=media,
        batch_size=batch_size,
        device=device,
    )
    for step in result.steps:
        typer.echo(
            f"step {step.step} ({step.modality}): best alpha {step.best_alpha:.4f}, "
            f"zero-shot accuracy {step.best_accuracy:.4f}"
        )
    typer.echo(f"patched model: {result.out}; curve: {result.curve_csv}, {result.curve_png}")
