"""`ecomodal eval TASK`: the evaluation harness on embedding tables."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from ecomodal.cli.common import numbers

TASK_NAMES = ("zero-shot", "few-shot", "probe", "retrieval", "uncertainty", "gap", "compare", "all")


def _list(text: str | None) -> list[str] | None:
    return [part.strip() for part in text.split(",") if part.strip()] if text else None


def _named_tables(values: list[str]) -> dict[str, str]:
    tables = {}
    for value in values:
        name, sep, path = value.partition("=")
        if not sep:
            name, path = Path(value).stem, value
        if not name or not path:
            raise typer.BadParameter(f"--data expects PATH or NAME=PATH; got {value!r}.")
        tables[name] = path
    return tables


def eval_command(
    task: Annotated[str, typer.Argument(help=f"One of: {', '.join(TASK_NAMES)}.")],
    data: Annotated[
        list[str],
        typer.Option(help="Embedding table (Parquet). compare: repeat as NAME=PATH per model."),
    ],
    out: Annotated[Path, typer.Option(help="Folder for metrics.json and report.html.")],
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
    seed: Annotated[int, typer.Option(help="Seed of every random choice.")] = 0,
) -> None:
    """Run an evaluation TASK and write OUT/metrics.json and OUT/report.html."""
    from ecomodal.eval import evaluate

    if task not in TASK_NAMES:
        raise typer.BadParameter(
            f"Unknown task {task!r}; expected one of: {', '.join(TASK_NAMES)}."
        )
    tables = _named_tables(data)
    feature_sets = None
    if features:
        feature_sets = [
            part.strip() if part.strip().startswith("prom3e-") else tuple(_list(part))
            for part in features.split(";")
            if part.strip()
        ]
    metrics = evaluate(
        next(iter(tables.values())),
        model,
        tasks="all" if task == "all" else [task],
        labels=_list(label) or ["scientific_name"],
        out=out,
        seed=seed,
        split=split,
        probe_features=feature_sets,
        few_shot_features=feature_sets[0] if feature_sets else ("image",),
        zero_shot_visible=[_list(v) for v in visible.split(";")] if visible else None,
        retrieval_pairs=_list(pairs),
        shots=numbers(shots, int, "--shots"),
        repeats=repeats,
        max_queries=max_queries,
        compare_tables=tables if task == "compare" else None,
        compare_group=group,
    )
    summary = {k: v for k, v in metrics.items() if k == "skipped"}
    typer.echo(json.dumps({"tasks": [k for k in metrics if k != "skipped"], **summary}))
    typer.echo(f"wrote {out / 'metrics.json'} and {out / 'report.html'}")
