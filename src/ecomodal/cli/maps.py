"""`ecomodal map ...`: suitability, uncertainty, diversity and embedding maps as GeoTIFF.

Every command takes the same grid, encoder, cache and output options (see :func:`_map_options`);
:func:`with_map_options` adds them to a command and hands them over as one :class:`MapSetup`.
"""

from __future__ import annotations

import functools
import inspect
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import typer

from ecomodal.options import check_range, parse_numbers

app = typer.Typer(help="Maps over a lat/lon grid as GeoTIFF (+ PNG preview).", no_args_is_help=True)

OutOpt = Annotated[Path, typer.Option("--out", help="Output GeoTIFF.")]
VisibleOpt = Annotated[str, typer.Option("--visible", help="Visible modalities of each cell.")]
ModelOpt = Annotated[str | None, typer.Option("--model", help="ProM3E checkpoint.")]
SeedOpt = Annotated[int, typer.Option(help="Seed.")]
CheckpointOpt = Annotated[str, typer.Option("--model", help="ProM3E checkpoint.")]
PointsOpt = Annotated[
    Path | None, typer.Option(help="Occurrences CSV/Parquet with lat, lon columns.")
]
NBackgroundOpt = Annotated[
    int, typer.Option(help="Grid cells drawn as background when --background is not given.")
]
BackgroundOpt = Annotated[
    Path | None,
    typer.Option(help="Background places (CSV/Parquet, lat, lon): presence vs background."),
]


def _map_options(
    grid: Annotated[
        str, typer.Option(help="'global' or a bounding box WEST,SOUTH,EAST,NORTH (degrees).")
    ] = "global",
    resolution: Annotated[float, typer.Option(help="Cell size in degrees.")] = 0.25,
    all_cells: Annotated[
        bool, typer.Option("--all-cells", help="Keep sea cells too (default: land cells only).")
    ] = False,
    loc_encoder: Annotated[str | None, typer.Option(help="loc encoder spec.")] = None,
    env_encoder: Annotated[str | None, typer.Option(help="env encoder spec.")] = None,
    sat_encoder: Annotated[str | None, typer.Option(help="sat encoder spec.")] = None,
    covariates: Annotated[
        str | None, typer.Option(help="Covariate raster of the env encoder.")
    ] = None,
    cache_dir: Annotated[
        Path | None, typer.Option(help="Folder of the cached grid embeddings.")
    ] = None,
    preview: Annotated[Path | None, typer.Option(help="Also write a PNG preview here.")] = None,
    device: Annotated[str | None, typer.Option(help="cpu, cuda ...")] = None,
    show_progress: Annotated[
        bool, typer.Option("--progress/--no-progress", help="Show progress bars.")
    ] = True,
) -> None:
    """The options every ``map`` command shares (a signature template, never called)."""


@dataclass
class MapSetup:
    """The shared options, parsed: the grid, the encoders and where outputs go."""

    grid: str
    resolution: float
    all_cells: bool
    loc_encoder: str | None
    env_encoder: str | None
    sat_encoder: str | None
    covariates: str | None
    cache_dir: Path | None
    preview: Path | None
    device: str | None
    show_progress: bool
    _encoders: dict[str, Any] | None = field(default=None, init=False, repr=False)

    def check(self, out: Path, seed: int) -> None:
        """The shared options and the outputs, checked before any work: a bad value costs
        nothing and leaves nothing behind."""
        from ecomodal.io.atomic import check_output_path

        self.bbox()
        check_range(self.resolution, "--resolution", minimum=0, exclusive_minimum=True,
                    maximum=180)  # fmt: skip
        check_range(seed, "--seed", minimum=0, integer=True)
        check_output_path(out, what="--out")
        if self.preview is not None:
            check_output_path(self.preview, what="--preview")
        if self.preview is not None and self.preview.resolve() == out.resolve():
            raise typer.BadParameter(
                f"--preview {self.preview} is the --out GeoTIFF; give the PNG another path."
            )

    def bbox(self) -> list[float] | None:
        """``--grid`` as WEST, SOUTH, EAST, NORTH (``None``: the globe)."""
        if self.grid.strip().lower() == "global":
            return None
        bbox = parse_numbers(self.grid, float, option="--grid")
        if len(bbox) != 4:
            raise typer.BadParameter(
                f"--grid expects 'global' or WEST,SOUTH,EAST,NORTH; got {self.grid!r}."
            )
        return bbox

    def make_grid(self):
        from ecomodal.maps import make_grid

        return make_grid(self.bbox(), resolution=self.resolution, land_only=not self.all_cells)

    def encoders(self) -> dict[str, Any]:
        """Encoder specs per modality; env gets the covariate raster when one is named (loaded
        once per command)."""
        from ecomodal.maps.cache import resolve_encoder

        if self._encoders is not None:
            return self._encoders
        specs = {"loc": self.loc_encoder, "sat": self.sat_encoder, "env": self.env_encoder}
        encoders: dict[str, Any] = {k: v for k, v in specs.items() if v is not None}
        if self.covariates is not None:
            encoders["env"] = resolve_encoder(
                "env", self.env_encoder, device=self.device, options={"covariates": self.covariates}
            )
        self._encoders = encoders
        return encoders

    def common(self) -> dict[str, Any]:
        """Keyword arguments every map function takes."""
        return {
            "encoders": self.encoders(),
            "cache_dir": self.cache_dir,
            "device": self.device,
            "show_progress": self.show_progress,
        }

    def draw(self, function: Any, out: Path, *args: Any, **kwargs: Any) -> None:
        """``function(*args, grid, **kwargs, **common())``: one map, saved to ``out``."""
        self.save(function(*args, self.make_grid(), **kwargs, **self.common()), out)

    def save(self, grid_map: Any, out: Path, suffix: str = "") -> None:
        """Write the GeoTIFF (and the preview), with ``suffix`` before the file extensions."""
        from ecomodal.maps import preview_png, write_map

        out = out.with_name(f"{out.stem}{suffix}{out.suffix}")
        write_map(out, grid_map)
        bands = ", ".join(grid_map.band_names)
        message = f"wrote {out} ({grid_map.grid.num_cells} cells, bands {bands})"
        if self.preview is not None:
            png = self.preview.with_name(f"{self.preview.stem}{suffix}{self.preview.suffix}")
            preview_png(grid_map, png)
            message += f" and {png}"
        typer.echo(message)


def with_map_options(command):
    """Add the shared options of :func:`_map_options` to ``command`` (which takes ``setup``)."""
    own = inspect.signature(command, eval_str=True)
    shared = inspect.signature(_map_options, eval_str=True).parameters
    params = [p for name, p in own.parameters.items() if name != "setup"]
    params += list(shared.values())

    @functools.wraps(command)
    def wrapper(**kwargs: Any) -> Any:
        setup = MapSetup(**{name: kwargs.pop(name) for name in shared})
        setup.check(kwargs["out"], kwargs.get("seed", 0))
        return command(setup=setup, **kwargs)

    wrapper.__signature__ = own.replace(parameters=params)
    wrapper.__annotations__ = {p.name: p.annotation for p in params}
    return wrapper


@app.command("species")
@with_map_options
def species_command(
    setup: MapSetup,
    out: OutOpt,
    query: Annotated[str | None, typer.Option(help="Taxon name (text query).")] = None,
    image: Annotated[Path | None, typer.Option(help="Photo of the species.")] = None,
    points: PointsOpt = None,
    background: BackgroundOpt = None,
    modality: Annotated[str, typer.Option(help="Grid modality scored directly.")] = "loc",
    query_encoder: Annotated[
        str | None, typer.Option(help="Text or image encoder spec of the query.")
    ] = None,
    model: ModelOpt = None,
    via_completion: Annotated[
        bool, typer.Option("--via-completion", help="Score ProM3E's completion of the query.")
    ] = False,
    visible: Annotated[
        str | None, typer.Option(help="Visible modalities for --via-completion.")
    ] = None,
    method: Annotated[
        str,
        typer.Option(
            help="For --points: sdm (presence vs background SDM over every modality, chosen by "
            "spatial-block CV) or prototype (cosine to the points' mean embedding)."
        ),
    ] = "sdm",
    modalities: Annotated[
        str | None,
        typer.Option(
            help="Modalities of the SDM (default: --modality and every modality given an "
            "encoder; with --model also prom3e-hidden)."
        ),
    ] = None,
    n_background: NBackgroundOpt = 10_000,
    block_deg: Annotated[
        float | None,
        typer.Option(help="Side of the SDM's cross-validation blocks in degrees (default: auto)."),
    ] = None,
    seed: SeedOpt = 0,
) -> None:
    """Suitability per cell: an SDM fitted on --points (default), or the similarity of the query
    (--query, --image, or --points with --method prototype) to each cell."""
    from ecomodal.maps import species_map
    from ecomodal.maps.species import METHODS

    if method not in METHODS:
        raise typer.BadParameter(f"--method must be one of {', '.join(METHODS)}; got {method!r}.")
    check_range(n_background, "--n-background", minimum=1, integer=True)
    if block_deg is not None:
        check_range(block_deg, "--block-deg", minimum=0, exclusive_minimum=True)

    setup.draw(
        species_map,
        out,
        query=query,
        image=image,
        points=points,
        background=background,
        modality=modality,
        encoder=setup.encoders().get(modality),
        query_encoder=query_encoder,
        model=model,
        via_completion=via_completion,
        visible=visible,
        seed=seed,
        method=method,
        modalities=modalities,
        n_background=n_background,
        block_deg=block_deg,
    )


@app.command("sdm")
@with_map_options
def sdm_command(
    setup: MapSetup,
    points: PointsOpt,
    out: OutOpt,
    background: BackgroundOpt = None,
    n_background: NBackgroundOpt = 10_000,
    modality: Annotated[str, typer.Option(help="Grid modality the SDM is fitted on.")] = "loc",
    classifier: Annotated[str, typer.Option(help="logistic, ridge or random_forest.")] = "logistic",
    seed: SeedOpt = 0,
) -> None:
    """Suitability per cell from an SDM fitted on the points' embeddings against background
    (--background, else --n-background grid cells drawn with --seed)."""
    from ecomodal.maps import EmbeddingSDM, sdm_map

    check_range(n_background, "--n-background", minimum=1, integer=True)
    setup.draw(
        sdm_map,
        out,
        points=points,
        background=background,
        n_background=n_background,
        modality=modality,
        sdm=EmbeddingSDM(classifier=classifier, seed=seed),
        seed=seed,
    )


@app.command("uncertainty")
@with_map_options
def uncertainty_command(
    setup: MapSetup,
    model: CheckpointOpt,
    out: OutOpt,
    visible: VisibleOpt = "sat,loc,env",
    measure: Annotated[
        str | None,
        typer.Option(
            "--measure",
            help="expected-error (one band <modality>_expected_error per completed modality, "
            "from the uncertainty model of `ecomodal calibrate`) or sigma-l1 (ProM3E's "
            "published sigma_l1). Default: expected-error when the model has an uncertainty "
            "model and --visible leaves a modality to complete, else sigma-l1.",
        ),
    ] = None,
) -> None:
    """An uncertainty per cell from the visible modalities: the expected completion error of each
    completed modality, or sigma_l1 (the published biodiversity proxy); the GeoTIFF's bands are
    named after it and tagged measure=..."""
    from ecomodal.maps import uncertainty_map
    from ecomodal.maps.uncertainty import MEASURES

    if measure is not None and measure not in MEASURES:
        raise typer.BadParameter(
            f"expects one of {', '.join(MEASURES)}; got {measure!r}.", param_hint="--measure"
        )
    setup.draw(uncertainty_map, out, model, visible=visible, measure=measure)


@app.command("diversity")
@with_map_options
def diversity_command(
    setup: MapSetup,
    model: CheckpointOpt,
    occurrences: Annotated[
        Path, typer.Option(help="Occurrences CSV/Parquet: lat, lon and a species column.")
    ],
    out: OutOpt,
    visible: VisibleOpt = "sat,loc,env",
    folds: Annotated[int, typer.Option(help="Cross-validation folds.")] = 5,
    seed: SeedOpt = 0,
) -> None:
    """Regress log(species density + 1) on ProM3E's sigma per cell; prints R^2 and Pearson r."""
    from ecomodal.maps import diversity_map

    check_range(folds, "--folds", minimum=2, integer=True)
    result, fit = diversity_map(
        model,
        setup.make_grid(),
        occurrences,
        visible=visible,
        folds=folds,
        seed=seed,
        **setup.common(),
    )
    setup.save(result, out)
    typer.echo(json.dumps(fit.to_dict()))


@app.command("embedding")
@with_map_options
def embedding_command(
    setup: MapSetup,
    modality: Annotated[str, typer.Option(help="loc, env, sat or prom3e-hidden.")],
    out: OutOpt,
    method: Annotated[str, typer.Option(help="pca or ica.")] = "pca",
    model: ModelOpt = None,
    visible: VisibleOpt = "sat,loc,env",
    seed: SeedOpt = 0,
) -> None:
    """The three leading PCA/ICA components of an embedding as RGB (prom3e-hidden: one map per
    register token, written as OUT_register<k>.tif)."""
    from ecomodal.maps import embedding_map

    maps = embedding_map(
        setup.make_grid(),
        modality=modality,
        method=method,
        model=model,
        visible=visible,
        seed=seed,
        **setup.common(),
    )
    for index, grid_map in enumerate(maps, start=1):
        setup.save(grid_map, out, f"_register{index}" if len(maps) > 1 else "")
