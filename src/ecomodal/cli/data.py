"""`ecomodal data ...`: build and import data sets."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ecomodal.options import check_range, parse_key_values

app = typer.Typer(help="Build and import data sets.", no_args_is_help=True)


@app.command("synthetic")
def synthetic_command(
    out: Annotated[Path, typer.Option(help="Output embedding table (Parquet).")],
    n: Annotated[int, typer.Option(help="Number of observations.")] = 10_000,
    seed: Annotated[int, typer.Option(help="Seed of the world and the sample.")] = 0,
    n_species: Annotated[int, typer.Option(help="Number of species.")] = 100,
    missing_rate: Annotated[float, typer.Option(help="Share of missing modalities.")] = 0.0,
) -> None:
    """Write the synthetic benchmark with known truth (species, places, six modalities)."""
    from ecomodal.data.synthetic import SyntheticConfig, make_synthetic, to_batch
    from ecomodal.io.writer import write_embeddings

    check_range(n, "--n", minimum=1, integer=True)
    check_range(seed, "--seed", minimum=0, integer=True)
    check_range(n_species, "--n-species", minimum=1, integer=True)
    check_range(missing_rate, "--missing-rate", minimum=0, maximum=1)
    config = SyntheticConfig(n_species=n_species, missing_rate=missing_rate)
    path = write_embeddings(out, to_batch(make_synthetic(n, config=config, seed=seed)))
    typer.echo(f"wrote {n} synthetic observations to {path}")


@app.command("import-multinat")
def import_multinat_command(
    source: Annotated[Path, typer.Argument(help="MultiNat Parquet file or folder of them.")],
    out: Annotated[Path, typer.Option(help="Output embedding table (Parquet).")],
    column_map: Annotated[
        list[str] | None, typer.Option(help="SOURCE=MODALITY, repeatable (e.g. img_emb=image).")
    ] = None,
    id_column: Annotated[str | None, typer.Option(help="Column holding observation ids.")] = None,
) -> None:
    """Import ProM3E's published precomputed embeddings into the ecomodal table format."""
    from ecomodal.data.multinat import import_multinat
    from ecomodal.io.reader import read_embeddings

    mapping = parse_key_values(column_map, option="--column-map", key="SOURCE", value="MODALITY")
    path = import_multinat(source, out, column_map=mapping, id_column=id_column)
    table = read_embeddings(path)
    typer.echo(f"wrote {table.num_rows} rows with {', '.join(table.modalities)} to {path}")


@app.command("ecobench-lite")
def ecobench_lite_command(
    out: Annotated[Path, typer.Option(help="Output folder (table + provenance.json).")],
    n: Annotated[int, typer.Option(help="Number of places.")] = 20_000,
    seed: Annotated[int, typer.Option(help="Seed of the sample and the splits.")] = 0,
    places: Annotated[
        str,
        typer.Option(
            help="photo (GeoCLIP's photo locations) or random-land (area-uniform land points)."
        ),
    ] = "photo",
    covariates: Annotated[
        Path | None, typer.Option(help="Covariate raster (default: the offline stack).")
    ] = None,
    overwrite: Annotated[bool, typer.Option(help="Rebuild even if a build is there.")] = False,
    progress: Annotated[bool, typer.Option(help="Show progress bars.")] = True,
) -> None:
    """Build EcoBench-lite offline: real places with loc, env and sat embeddings and real labels."""
    from ecomodal.data.ecobench import build_ecobench_lite
    from ecomodal.data.places import check_places

    check_range(n, "--n", minimum=1, integer=True)
    check_range(seed, "--seed", minimum=0, integer=True)
    check_places(places, "--places")
    built = build_ecobench_lite(
        out,
        n=n,
        seed=seed,
        places=places,
        covariates=covariates,
        overwrite=overwrite,
        show_progress=progress,
    )
    verb = "reused" if built.reused else "wrote"
    kind = "" if places == "photo" else f"{places} "
    typer.echo(f"{verb} {built.rows} {kind}places: {built.table} (provenance: {built.provenance})")
