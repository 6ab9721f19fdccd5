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
    neighbours: Annotated[
        bool,
        typer.Option(
            help="Mix in a calibrated model's neighbours (--no-neighbours: ProM3E alone)."
        ),
    ] = True,
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
) -> None:
    """Infer every modality of every row; writes <modality>_hat columns, sigma_l1 and, for a
    calibrated model, <modality>_expected_error."""
    from ecomodal.inference import complete_table
    from ecomodal.options import check_range

    check_range(n_samples, "--n-samples", minimum=0, integer=True)
    check_range(batch_size, "--batch-size", minimum=1, integer=True)
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
        neighbours=neighbours,
        show_progress=progress,
    )
    errors = ", ".join(f"{m} {v:.3f}" for m, v in summary.mean_expected_error.items())
    typer.echo(
        f"wrote {summary.rows} rows to {summary.path} (mean sigma_l1 {summary.mean_sigma_l1:.2f}"
        + (f"; mean expected error {errors}" if errors else "")
        + ("" if summary.neighbours else "; ProM3E alone, no neighbours")
        + ")"
    )


def calibrate_command(
    model: Annotated[str, typer.Option(help="Model folder, local-dir:PATH or hf-hub:ORG/NAME.")],
    data: Annotated[
        Path, typer.Option(help="Embedding table the model did not train on (its val rows).")
    ],
    split: Annotated[
        str,
        typer.Option(
            help="Rows of the split column to calibrate on; 'train' rows are the neighbours."
        ),
    ] = "val",
    out: Annotated[
        Path | None,
        typer.Option(help="Folder for the calibration files (default: the model folder)."),
    ] = None,
    max_neighbours: Annotated[
        int, typer.Option(help="Most neighbour rows kept (seeded).")
    ] = 20_000,
    no_uncertainty: Annotated[
        bool, typer.Option("--no-uncertainty", help="Fit the completion mix only.")
    ] = False,
    block_deg: Annotated[
        float,
        typer.Option(
            help="Interval quantiles cross-fitted over spatial blocks of this size (degrees; "
            "0: a random half of the rows, as before).",
            min=0,
        ),
    ] = 10.0,
    seed: Annotated[int, typer.Option(help="Seed.")] = 0,
) -> None:
    """Fit retrieval-augmented completion and the uncertainty model (expected error, intervals)."""
    from ecomodal.options import check_range
    from ecomodal.training.calibrate import calibrate

    check_range(max_neighbours, "--max-neighbours", minimum=1, integer=True)
    result = calibrate(
        model,
        data,
        split=split,
        out=out,
        max_neighbours=max_neighbours,
        error_model=not no_uncertainty,
        block_deg=block_deg or None,
        seed=seed,
    )
    report = result.report
    typer.echo(
        f"calibrated on {report['calibration_rows']} rows ({split}), "
        f"{report.get('neighbours_saved', report['neighbours'])} neighbours; wrote {', '.join(p.name for p in result.files)} "
        f"to {result.folder}"
    )
    uncertainty = report.get("uncertainty", {})
    for name, pair in report["pairs"].items():
        line = f"  {name}: cosine {pair['prom3e_cosine']:.3f} -> {pair['cosine']:.3f}"
        if name in uncertainty.get("pairs", {}):
            figures = uncertainty["pairs"][name]
            line += f", Spearman(expected error, error) {figures['spearman']:.2f}"
        typer.echo(line)


def quickstart_command(
    out: Annotated[Path, typer.Option(help="Folder for every output.")] = Path("quickstart-output"),
    n: Annotated[
        int | None, typer.Option(help="Places (real) or observations (synthetic).")
    ] = None,
    epochs: Annotated[int | None, typer.Option(help="ProM3E training epochs.")] = None,
    bind_epochs: Annotated[int | None, typer.Option(help="Binding epochs (real data).")] = None,
    grid_resolution: Annotated[
        float | None, typer.Option(help="Map grid cell size in degrees (real data).")
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed.")] = 0,
    synthetic: Annotated[
        bool, typer.Option(help="Run the synthetic-benchmark quickstart instead.")
    ] = False,
    progress: Annotated[bool, typer.Option(help="Show progress.")] = True,
) -> None:
    """Run the main job end to end (EcoBench-lite, offline) and say where the results are."""
    if synthetic:
        from ecomodal.quickstart_synthetic import run_synthetic_quickstart

        report = run_synthetic_quickstart(
            out, n=n or 12_000, epochs=epochs or 40, seed=seed, show_progress=progress
        )
        typer.echo(json.dumps(report["summary"], indent=2))
        typer.echo(f"results: {out.resolve()} (metrics.json, completed_test.parquet, run/best/)")
        return
    from dataclasses import replace

    from ecomodal.maps.truth import describe_truth
    from ecomodal.quickstart import QuickstartConfig, run_quickstart

    given = {
        "n": n,
        "epochs": epochs,
        "bind_epochs": bind_epochs,
        "grid_resolution": grid_resolution,
    }
    config = replace(
        QuickstartConfig(seed=seed), **{k: v for k, v in given.items() if v is not None}
    )
    metrics = run_quickstart(out, config=config, show_progress=progress)
    typer.echo(json.dumps(metrics["summary"], indent=2, default=str))
    outputs = metrics["outputs"]
    typer.echo(f"report: {outputs['report']}")
    typer.echo(f"metrics: {outputs['metrics']}")
    typer.echo(
        f"maps: {out.resolve() / 'maps'} (suitability-<land cover class>, uncertainty = "
        "sigma_l1 and, for a calibrated model, expected-error: .tif + .png)"
    )
    for name, entry in metrics["maps"].items():
        truth = entry.get("against_modis") if isinstance(entry, dict) else None
        if truth:
            typer.echo(f"  {name}: {describe_truth(truth)}")
    typer.echo(f"explore the maps in a browser: ecomodal serve {out}")
