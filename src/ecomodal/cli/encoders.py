"""`ecomodal encoders ...` and `ecomodal covariates ...`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(help="Modality encoders.", no_args_is_help=True)
covariates_app = typer.Typer(help="Environmental covariate rasters.", no_args_is_help=True)


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


@app.command("list")
def encoders_list_command(
    modality: Annotated[str | None, typer.Option(help="Only this modality.")] = None,
) -> None:
    """Registered encoders: modality, name, spec, dimension, licence."""
    from ecomodal.encoders import list_encoders

    for row in list_encoders(modality):
        default = " (default)" if row.get("default") else ""
        spec, dim = row.get("spec", row.get("loader", "")), row.get("dim", "?")
        typer.echo(
            f"{row['modality']:6} {row['name']:12} {spec:28} dim {dim:<5} "
            f"licence: {row.get('licence', 'unknown')}{default}\n       {row.get('description', '')}"
        )
