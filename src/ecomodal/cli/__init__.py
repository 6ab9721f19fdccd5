"""The ``ecomodal`` command line: a thin shell over the Python API.

Each command group lives in its own module; this one assembles them into one app.
"""

from __future__ import annotations

import logging
import os
import sys

import typer

from ecomodal.cli import data, embed, encoders, maps, patch, prom3e, slurm, train
from ecomodal.cli import eval as eval_cli
from ecomodal.cli import index as index_cli
from ecomodal.cli import serve as serve_cli
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
app.command("calibrate")(prom3e.calibrate_command)
app.command("quickstart")(prom3e.quickstart_command)
app.command("fetch")(embed.fetch_command)
app.command("patch")(patch.patch_command)
app.add_typer(slurm.app, name="slurm")
app.add_typer(maps.app, name="map")
app.add_typer(index_cli.app, name="index")
app.command("serve")(serve_cli.serve_command)
app.command("eval", cls=eval_cli.EvalCommand)(eval_cli.eval_command)


#: Exceptions that mean the input or the file system said no: one line, exit status 2.
USER_ERRORS = (EcomodalError, OSError)
#: Set to 1 to see the traceback of any error.
DEBUG_VARIABLE = "ECOMODAL_DEBUG"


def main() -> None:
    """Entry point: runs the app; a user error (an ecomodal error, or a file the system refuses)
    becomes one clear line and exit status 2, anything else one line naming it as an internal
    error and exit status 1. ``ECOMODAL_DEBUG=1`` shows the traceback instead."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    _quiet_lightning()
    debug = os.environ.get(DEBUG_VARIABLE, "") not in ("", "0")
    try:
        status = app(standalone_mode=False, prog_name="ecomodal")
    except (typer.Abort, KeyboardInterrupt):
        typer.secho("interrupted", err=True, fg="red")
        sys.exit(130)
    except typer.TyperException as err:  # the command line itself: a bad flag, value or command
        _usage_error(err)
    except USER_ERRORS as err:
        if debug:
            raise
        typer.secho(f"error: {_describe(err)}", err=True, fg="red")
        sys.exit(2)
    except Exception as err:  # a bug, not the user's mistake: still no wall of text
        if debug:
            raise
        typer.secho(
            f"internal error: {type(err).__name__}: {err} (set {DEBUG_VARIABLE}=1 for the "
            "traceback, and please report it)",
            err=True,
            fg="red",
        )
        sys.exit(1)
    sys.exit(status if isinstance(status, int) else 0)


def _usage_error(err: Exception) -> None:
    """One line naming the command for a usage error (a bare command group has printed its
    help already)."""
    ctx = getattr(err, "ctx", None)
    command = ctx.command_path if ctx is not None else "ecomodal"
    if type(err).__name__ == "NoArgsIsHelpError":
        sys.exit(2)
    message = err.format_message() if hasattr(err, "format_message") else str(err)
    typer.secho(f"error: {command}: {message} (see '{command} --help')", err=True, fg="red")
    sys.exit(getattr(err, "exit_code", 2) or 2)


def _describe(err: BaseException) -> str:
    """The message of a user error; an OSError names its file and says what the system said."""
    if isinstance(err, OSError) and not isinstance(err, EcomodalError) and err.filename:
        reason = err.strerror or type(err).__name__
        return f"{reason}: {err.filename}"
    return str(err)


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
