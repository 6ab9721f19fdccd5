"""``evaluate``: run registered tasks on one table and write ``metrics.json`` + ``report.html``.

The tasks come from :mod:`ecomodal.eval.registry`; each task's file defines how it runs and what
its report section shows.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ecomodal.deprecation import renamed_arguments
from ecomodal.errors import InvalidArgumentError
from ecomodal.eval.common import (
    check_counts,
    check_optional_count,
    check_split,
    eval_rows,
    fingerprint,
    resolve_model,
)
from ecomodal.eval.compare import compare_section  # noqa: F401 (its old home)
from ecomodal.eval.registry import EvalContext, choose_tasks, get_task, task_names
from ecomodal.io.reader import TableLike
from ecomodal.options import check_range
from ecomodal.report import Section, write_report

__all__ = [  # noqa: F822 (TASKS and SINGLE_TABLE_TASKS come from __getattr__)
    "SINGLE_TABLE_TASKS",
    "TASKS",
    "compare_section",
    "evaluate",
    "run_tasks",
    "sections",
]


def __getattr__(name: str) -> Any:
    # TASKS / SINGLE_TABLE_TASKS are read from the registry, so they list tasks added later.
    if name == "TASKS":
        return task_names()
    if name == "SINGLE_TABLE_TASKS":
        #: Tasks run by ``tasks="all"`` on one table (``compare`` needs several tables).
        return task_names(in_all=True)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def run_tasks(
    context: EvalContext,
    tasks: Sequence[str] | str = "all",
    options: Mapping[str, Mapping[str, Any]] | None = None,
) -> dict[str, Any]:
    """Run ``tasks`` (registered names, or ``"all"``) in ``context``; ``options[task]`` sets
    that task's options. Returns ``{task: metrics}``, with ``"skipped": {task: why}`` for the
    tasks that need a model when there is none."""
    chosen = choose_tasks(tasks)
    options = dict(options or {})
    for name in options:
        get_task(name)  # an unknown task name is an error, even when not chosen
    metrics: dict[str, Any] = {}
    skipped: dict[str, str] = {}
    for task in chosen:
        values = task.option_values(options.get(task.name))
        if task.needs_model and context.model is None:
            skipped[task.name] = "needs a ProM3E model"
            continue
        metrics[task.name] = task.run(context, **values)
    if skipped:
        metrics["skipped"] = skipped
    return metrics


def sections(metrics: Mapping[str, Any]) -> list[Section]:
    """The report sections of :func:`run_tasks`' ``metrics``, one per task, in their order."""
    return [
        get_task(name).report_section(value) for name, value in metrics.items() if name != "skipped"
    ]


def _merge(
    given: Mapping[str, Mapping[str, Any]] | None, keywords: Mapping[str, Mapping[str, Any]]
) -> dict[str, dict[str, Any]]:
    """Per-task options: ``evaluate``'s named keywords, then ``options`` over them."""
    known = set(task_names())
    merged = {task: dict(values) for task, values in keywords.items() if task in known}
    for task, values in (given or {}).items():
        get_task(task)
        if not isinstance(values, Mapping):
            raise InvalidArgumentError(
                f"options maps a task name to its options; got {task!r}: {values!r}."
            )
        merged.setdefault(task, {}).update(values)
    return merged


#: The built-in tasks that read the label columns (their absence is checked before any work).
LABELLED_TASKS = ("zero-shot", "few-shot", "probe")


def _check_arguments(
    labels: Sequence[str] | str,
    split: Any,
    shots: Sequence[int],
    repeats: int,
    max_queries: int | None,
    seed: int,
) -> list[str]:
    """The arguments every task shares, checked before any work; returns the label list."""
    labels = [labels] if isinstance(labels, str) else [str(label) for label in labels]
    if not labels:
        raise InvalidArgumentError("labels must name at least one label column; got none.")
    check_split(split)
    check_counts(shots, "shots")
    check_range(repeats, "repeats", minimum=1, integer=True)
    check_optional_count(max_queries, "max_queries")
    check_range(seed, "seed", minimum=0, integer=True)
    return labels


@renamed_arguments(table="data")
def evaluate(
    data: TableLike | None = None,
    model: Any = None,
    *,
    train: TableLike | None = None,
    test: TableLike | None = None,
    tasks: Sequence[str] | str = "all",
    labels: Sequence[str] = ("scientific_name",),
    out: str | os.PathLike[str] | None = None,
    seed: int = 0,
    split: str = "published",
    probe_features: Sequence[str | Sequence[str]] | None = None,
    zero_shot_visible: Sequence[Sequence[str]] | None = None,
    few_shot_features: str | Sequence[str] = ("image",),
    shots: Sequence[int] = (1, 5, 10),
    repeats: int = 5,
    retrieval_pairs: Sequence[str | Sequence[str]] | None = None,
    max_queries: int | None = None,
    compare_tables: Mapping[str, TableLike] | None = None,
    compare_group: str = "group",
    title: str = "ecomodal evaluation",
    options: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Run ``tasks`` (names from :data:`TASKS`, or ``"all"``) and return their metrics; with
    ``out``, also write ``metrics.json`` and ``report.html`` there.

    ``labels``: the label columns of the probes and few-shot tasks (the first is zero-shot's).
    ``probe_features`` defaults to each single modality, TaxaBind's fusion of all of them and,
    with a model, ProM3E hidden and completed features. ``zero_shot_visible`` defaults to each
    non-text modality and, if there are several, all of them together. Tasks that need a model
    are skipped (and say so) without one. ``options`` maps a task name to its options (see
    :func:`~ecomodal.eval.registry.get_task`), for any registered task; they override the
    named keywords above.

    ``train`` and ``test`` (instead of ``data``): a training table and a separate test table
    with the same modalities. Probes and few-shot fit on the training rows, retrieval tunes its
    delta on the training table's validation rows (its ``split`` column's ``val`` rows, else a
    seeded tenth), completion baselines look up the training rows, and every task scores every
    row of the test table; test rows of a class never seen in training are dropped from the
    probes and few-shot and counted (``dropped_test_classes``).
    """
    chosen = [t.name for t in choose_tasks(tasks)]
    labels = _check_arguments(labels, split, shots, repeats, max_queries, seed)
    per_task = _merge(
        options,
        {
            "probe": {"features": probe_features},
            "zero-shot": {"visible": zero_shot_visible},
            "few-shot": {"features": few_shot_features, "shots": shots, "repeats": repeats},
            "retrieval": {"pairs": retrieval_pairs, "max_queries": max_queries},
            "compare": {"tables": compare_tables, "group": compare_group},
        },
    )
    labelled = any(name in LABELLED_TASKS for name in chosen)
    rows = eval_rows(  # a missing label column is an error before any task runs
        data, train, test, task="evaluate", split=split, columns=labels if labelled else (),
        seed=seed,
    )  # fmt: skip
    batch = rows.batch
    prom3e = resolve_model(model)
    context = EvalContext(
        batch, prom3e, labels=tuple(labels), split=rows.split, seed=seed, rows=rows
    )
    metrics = run_tasks(context, chosen, {t: per_task[t] for t in chosen if t in per_task})
    if out is not None:
        config = {
            "tasks": chosen,
            "labels": list(labels),
            "split": rows.split_name,
            "model": None if prom3e is None else prom3e.config.to_dict(),
            "model_spec": None if model is None or prom3e is model else str(model),
        }
        for name, table in {"table": data, "train": train, "test": test}.items():
            if table is not None:
                config[name] = str(table) if isinstance(table, str | Path) else type(table).__name__
        config |= {
            "rows": len(batch),
            "shots": list(shots),
            "repeats": repeats,
            "max_queries": max_queries,
        }
        if options:
            config["options"] = dict(options)
        write_report(
            out,
            title=title,
            sections=sections(metrics),
            metrics=metrics,
            config=config,
            fingerprint=fingerprint(batch),
            seed=seed,
        )
    return metrics
