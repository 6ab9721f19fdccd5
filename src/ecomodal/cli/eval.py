"""`ecomodal eval TASK`: the evaluation harness on embedding tables.

The tasks, their descriptions and their options are read from the registry
(:mod:`ecomodal.eval.registry`) when the command runs, so a task registered later is listed in
``--help`` and runs like the built-in ones (its options through ``--option NAME=VALUE``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import click
import typer
from typer.core import TyperCommand

from ecomodal.errors import InvalidArgumentError, OptionFormatError
from ecomodal.options import check_range, parse_key_values, parse_list, parse_numbers


class EvalCommand(TyperCommand):
    """``ecomodal eval``, whose help lists the registered tasks (read when the help is shown)."""

    def format_help(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        from ecomodal.eval.registry import describe, tasks

        self.epilog = "\n\n".join(
            ["Tasks (or 'all'):", *[describe(t) for t in tasks()], "--option takes any task "
             "option as NAME=VALUE or TASK.NAME=VALUE."]
        )  # fmt: skip
        super().format_help(ctx, formatter)


def _named_table(value: str) -> tuple[str, str]:
    return Path(value).stem, value


def _tables(
    task: str, data: list[str] | None, train: str | None, test: str | None, split: str
) -> dict[str, str]:
    """The ``--data`` tables by name; ``--train``/``--test`` checked to come together, without
    ``--data`` nor a ``--split`` other than published."""
    if train is None and test is None:
        if not data:
            raise InvalidArgumentError(
                "Give --data TABLE (one table divided by --split) or --train TABLE and "
                "--test TABLE."
            )
        return parse_key_values(data, option="--data", key="NAME", value="PATH",
                                allow_bare=_named_table)  # fmt: skip
    if data:
        raise InvalidArgumentError("--data cannot be combined with --train/--test; give one form.")
    if train is None or test is None:
        given, other = ("--train", "--test") if test is None else ("--test", "--train")
        raise InvalidArgumentError(f"{given} needs {other} too (a training and a test table).")
    if task == "compare":
        raise InvalidArgumentError(
            "compare takes its tables as --data NAME=PATH, not --train/--test."
        )
    if split != "published":
        raise InvalidArgumentError(
            f"--split {split} divides one --data table; with --train and --test the test table "
            "is the test set."
        )
    return {}


def task_options(items: list[str] | None, chosen: list[str]) -> dict[str, dict[str, Any]]:
    """``--option [TASK.]NAME=VALUE`` items as per-task options; a bare NAME goes to every chosen
    task that has that option, and each value is read by the option's own parser."""
    from ecomodal.eval.registry import get_task, task_names

    options: dict[str, dict[str, Any]] = {}
    for key, text in parse_key_values(items, option="--option", key="[TASK.]NAME").items():
        prefix, dot, rest = key.partition(".")
        targets = [prefix] if dot and prefix in task_names() else chosen
        name = rest if dot and prefix in task_names() else key
        found = [t for t in targets if any(o.name == name for o in get_task(t).options)]
        if not found:
            raise OptionFormatError(
                f"--option {key}: no task of {', '.join(targets)} has an option {name!r}."
            )
        for task in found:
            (option,) = [o for o in get_task(task).options if o.name == name]
            try:
                options.setdefault(task, {})[name] = option.parse(text)
            except (TypeError, ValueError) as err:
                raise OptionFormatError(f"--option {key}: {err}") from None
    return options


def eval_command(
    task: Annotated[str, typer.Argument(help="A registered task (listed below) or 'all'.")],
    out: Annotated[Path, typer.Option(help="Folder for metrics.json and report.html.")],
    data: Annotated[
        list[str] | None,
        typer.Option(
            help="Embedding table (Parquet), divided by --split. compare: repeat as NAME=PATH "
            "per model."
        ),
    ] = None,
    train: Annotated[
        str | None,
        typer.Option(
            help="A training table (Parquet), with --test instead of --data: fits, references "
            "and calibration rows come from it."
        ),
    ] = None,
    test: Annotated[
        str | None,
        typer.Option(help="A test table (Parquet), with --train: every row of it is scored."),
    ] = None,
    model: Annotated[
        str | None, typer.Option(help="ProM3E: folder, local-dir:PATH or hf-hub:ORG/NAME.")
    ] = None,
    label: Annotated[
        str, typer.Option(help="Comma-separated label columns (the first is zero-shot's).")
    ] = "scientific_name",
    split: Annotated[str, typer.Option(help="published, spatial-block or random.")] = "published",
    features: Annotated[
        str | None,
        typer.Option(
            help="probe/few-shot features: modalities (image or loc,env,sat), prom3e-hidden or "
            "prom3e-completed; ';' separates several sets."
        ),
    ] = None,
    visible: Annotated[
        str | None, typer.Option(help="zero-shot visible sets, e.g. 'image;image,sat'.")
    ] = None,
    pairs: Annotated[
        str | None, typer.Option(help="retrieval pairs, e.g. sat->loc,loc->sat (default: all).")
    ] = None,
    shots: Annotated[str, typer.Option(help="few-shot k values.")] = "1,5,10",
    repeats: Annotated[int, typer.Option(help="few-shot draws per k.")] = 5,
    max_queries: Annotated[
        int | None, typer.Option(help="retrieval: a seeded sample of queries per pair.")
    ] = None,
    group: Annotated[str, typer.Option(help="compare: the taxon-group column.")] = "group",
    option: Annotated[
        list[str] | None,
        typer.Option(help="A task's option as NAME=VALUE or TASK.NAME=VALUE (repeatable)."),
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of every random choice.")] = 0,
) -> None:
    """Run an evaluation TASK and write OUT/metrics.json and OUT/report.html."""
    from ecomodal.eval import evaluate
    from ecomodal.eval.probe import parse_feature_sets
    from ecomodal.eval.registry import task_names

    if task != "all" and task not in task_names():
        raise typer.BadParameter(
            f"Unknown task {task!r}; expected one of: {', '.join([*task_names(), 'all'])}."
        )
    chosen = list(task_names(in_all=True)) if task == "all" else [task]
    tables = _tables(task, data, train, test, split)
    feature_sets = parse_feature_sets(features) if features else None
    shot_values = parse_numbers(shots, int, option="--shots")
    for value in shot_values or [None]:
        check_range(value, "--shots", minimum=1, integer=True)
    check_range(repeats, "--repeats", minimum=1, integer=True)
    if max_queries is not None:
        check_range(max_queries, "--max-queries", minimum=1, integer=True)
    check_range(seed, "--seed", minimum=0, integer=True)
    metrics = evaluate(
        next(iter(tables.values())) if tables else None,
        model,
        train=train,
        test=test,
        tasks="all" if task == "all" else [task],
        labels=parse_list(label) or ["scientific_name"],
        out=out,
        seed=seed,
        split=split,
        probe_features=feature_sets,
        few_shot_features=feature_sets[0] if feature_sets else ("image",),
        zero_shot_visible=[parse_list(v) for v in visible.split(";")] if visible else None,
        retrieval_pairs=parse_list(pairs) or None,
        shots=shot_values,
        repeats=repeats,
        max_queries=max_queries,
        compare_tables=tables if task == "compare" else None,
        compare_group=group,
        options=task_options(option, chosen) or None,
    )
    summary = {k: v for k, v in metrics.items() if k == "skipped"}
    typer.echo(json.dumps({"tasks": [k for k in metrics if k != "skipped"], **summary}))
    typer.echo(f"wrote {out / 'metrics.json'} and {out / 'report.html'}")
