"""`ecomodal slurm embed|train`: print a ready sbatch script for a multi-node run."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Annotated, Any

import typer

app = typer.Typer(
    help="Print SLURM batch scripts: `ecomodal slurm train [OPTIONS] -- prom3e --data ...`.",
    no_args_is_help=True,
)

Nodes = Annotated[int, typer.Option(help="Number of nodes.")]
GpusPerNode = Annotated[int, typer.Option(help="GPUs per node (one task per GPU).")]
Time = Annotated[str, typer.Option(help="Wall-time limit, e.g. 12:00:00 or 2-00:00:00.")]
Partition = Annotated[str | None, typer.Option(help="SLURM partition.")]
Account = Annotated[str | None, typer.Option(help="SLURM account to charge.")]
CpusPerTask = Annotated[int, typer.Option(help="CPU cores per task (data loading).")]
Mem = Annotated[str | None, typer.Option(help="Memory per node, e.g. 64G.")]
Setup = Annotated[
    list[str] | None,
    typer.Option(help="Shell line run first, e.g. 'source .venv/bin/activate' (repeat)."),
]
Output = Annotated[Path | None, typer.Option(help="Write the script here instead of printing it.")]
#: Writes a script from the resources and the setup lines.
ScriptMaker = Callable[[Any, Sequence[str]], str]


def parse_ecomodal_args(args: Sequence[str]) -> typer.Context:
    """Parse ``ecomodal ARGS`` with the real command line, down to the leaf command, without
    running it; returns the leaf's context (its ``params``). A bad command raises
    ``typer.BadParameter`` naming the problem."""
    from ecomodal.cli import app as root_app

    command = typer.main.get_command(root_app)
    remaining, name, parent = list(args), "ecomodal", None
    shown = " ".join(args)
    while True:
        group_ctx = typer.Context(command, info_name=name, parent=parent)
        is_group = hasattr(command, "get_command")
        sub = command.get_command(group_ctx, remaining[0]) if is_group and remaining else None
        if sub is not None:
            name, parent, command, remaining = remaining[0], group_ctx, sub, remaining[1:]
            continue
        if is_group and not remaining:
            raise typer.BadParameter(f"`ecomodal {shown}` names a command group, not a command.")
        if is_group and not remaining[0].startswith("-"):
            raise typer.BadParameter(f"`ecomodal {shown}`: {name} has no command {remaining[0]!r}.")
        try:
            return command.make_context(name, remaining, parent=parent)
        except typer.TyperException as err:
            raise typer.BadParameter(f"`ecomodal {shown}` does not parse: {err}") from None


def _emit(script: str, output: Path | None) -> None:
    if output is None:
        typer.echo(script, nl=False)
        return
    from ecomodal.io.atomic import atomic_path

    with atomic_path(output) as tmp:
        tmp.write_text(script)
    typer.echo(f"wrote {output}; submit with: sbatch {output}")


def _resources(**values):
    from ecomodal.training.slurm import SlurmResources

    resources = SlurmResources(**{k: v for k, v in values.items() if v is not None})
    try:
        resources.check()
    except ValueError as err:
        raise typer.BadParameter(str(err)) from None
    return resources


def _slurm_command(
    name: str, args_help: str, doc: str, prepare: Callable[[list[str]], ScriptMaker]
) -> Callable[..., None]:
    """An ``ecomodal slurm NAME`` command: ``prepare(args)`` checks the ``ecomodal NAME``
    arguments and returns what writes the script for the resources and setup lines."""

    def command(
        args: list[str],
        nodes: Nodes = 1,
        gpus_per_node: GpusPerNode = 1,
        time: Time = "12:00:00",
        partition: Partition = None,
        account: Account = None,
        cpus_per_task: CpusPerTask = 8,
        mem: Mem = None,
        setup: Setup = None,
        output: Output = None,
    ) -> None:
        if output is not None:
            from ecomodal.io.atomic import check_output_path

            check_output_path(output, what="--output")
        make_script = prepare(args)
        resources = _resources(
            nodes=nodes,
            gpus_per_node=gpus_per_node,
            time=time,
            partition=partition,
            account=account,
            cpus_per_task=cpus_per_task,
            mem=mem,
            job_name=f"ecomodal-{name}",
        )
        try:
            script = make_script(resources, setup or ())
        except ValueError as err:
            raise typer.BadParameter(str(err)) from None
        _emit(script, output)

    command.__annotations__["args"] = Annotated[list[str], typer.Argument(help=args_help)]
    command.__doc__ = doc
    command.__name__ = f"slurm_{name}_command"
    return command


def _prepare_train(args: list[str]) -> ScriptMaker:
    from ecomodal.training.slurm import train_script

    def make(resources, setup: Sequence[str]) -> str:
        script = train_script(args, resources, setup=setup)
        parse_ecomodal_args(["train", *_command_args(script, "train")])
        return script

    return make


def _prepare_embed(args: list[str]) -> ScriptMaker:
    from ecomodal.training.slurm import embed_script

    ctx = parse_ecomodal_args(["embed", *args])
    out = ctx.params.get("out")
    if out is None:
        raise typer.BadParameter("The embed command needs --out.")
    return lambda resources, setup: embed_script(args, out, resources, setup=setup)


app.command("train")(
    _slurm_command(
        "train",
        "After --: the `ecomodal train` arguments.",
        "Print an sbatch script training with `srun ecomodal train ...` on NODES x GPUS (DDP).",
        _prepare_train,
    )
)
app.command("embed")(
    _slurm_command(
        "embed",
        "After --: the `ecomodal embed` options.",
        "Print an sbatch script embedding one shard per GPU task, then merging the shards.",
        _prepare_embed,
    )
)


def _command_args(script: str, command: str) -> list[str]:
    """The arguments after ``ecomodal COMMAND`` on the script's srun line."""
    import shlex

    for line in script.splitlines():
        words = shlex.split(line) if line.startswith("srun ") else []
        if "ecomodal" in words and words[words.index("ecomodal") + 1] == command:
            return words[words.index("ecomodal") + 2 :]
    raise typer.BadParameter(f"No `ecomodal {command}` line in the generated script.")
