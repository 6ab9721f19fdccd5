"""The ``ecomodal`` command line: a thin shell over the Python API.

Each command group lives in its own module; this one assembles them into one app.
"""

from __future__ import annotations

import logging
import sys

import typer

from ecomodal.cli import data, embed, encoders, maps, patch, prom3e, slurm, train
from ecomodal.cli import eval as eval_cli
from ecomodal.errors import EcomodalError

app = typer.Typer(
    name="ecomodal",
    help="One embedding space for photos, names, places, satellite views, climate and sounds.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.add_typer(train.app, name="train")
app.add_typer(data.app, name="data")
app.add_typer(embed.app, name="embed")
app.add_typer(encoders.covariates_app, name="covariates")
app.add_typer(encoders.app, name="encoders")
app.command("complete")(prom3e.complete_command)
app.command("quickstart")(prom3e.quickstart_command)
app.command("fetch")(embed.fetch_command)
app.command("patch")(patch.patch_command)
app.add_typer(slurm.app, name="slurm")
app.add_typer(maps.app, name="map")
app.command("eval", cls=eval_cli.EvalCommand)(eval_cli.eval_command)


def main() -> None:
    """Entry point: runs the app and turns ecomodal errors into one clear line and exit code 2."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    _quiet_lightning()
    try:
        app()
    except (EcomodalError, FileNotFoundError) as err:
        typer.secho(f"error: {err}", err=True, fg="red")
        sys.exit(2)


def _quiet_lightning() -> None:
    """Keep Lightning's start-up notices (accelerators, tips) off the terminal.

    Lightning sets its loggers to INFO, with a handler of its own, when it is imported, so for the
    commands that train it is imported first and its levels are set after.
    """
    if len(sys.argv) > 1 and sys.argv[1] in {"train", "quickstart"}:
        import lightning.pytorch  # noqa: F401
    for name in ("lightning", "lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.WARNING)


__all__ = ["app", "main"]
