"""The registry of evaluation tasks: one file defines a task and registers it here.

A task is an :class:`EvalTask`: a name, a one-line description, the options it takes (with
defaults and help), whether it needs a model and whether ``tasks="all"`` runs it, a ``run``
function returning its metrics and a ``section`` builder for the report.
:func:`~ecomodal.eval.harness.evaluate`, ``ecomodal eval`` and the quickstart read the registry
when they run, so a task registered later (in a plug-in or a test) is found by all of them::

    @register_task(name="toy-mean", description="Mean of a column.",
                   options=[TaskOption("column", "x", "the column")])
    def toy_mean(context: EvalContext, column: str) -> dict[str, float]:
        return {"mean": float(np.mean(context.column(column)))}
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ecomodal.errors import InvalidArgumentError
from ecomodal.eval.common import EvalRows
from ecomodal.io.batch import EmbeddingBatch
from ecomodal.models.prom3e import ProM3E
from ecomodal.report import Section

__all__ = [
    "EvalContext",
    "EvalTask",
    "TaskOption",
    "choose_tasks",
    "describe",
    "get_task",
    "register_task",
    "task_names",
    "tasks",
    "unregister_task",
]


@dataclass(frozen=True)
class TaskOption:
    """One option of a task: its name, default, help and how to read it from the command line
    (``parse`` turns the text of ``--option NAME=TEXT`` into the value)."""

    name: str
    default: Any = None
    help: str = ""
    parse: Callable[[str], Any] = str


@dataclass
class EvalContext:
    """What every task of one :func:`~ecomodal.eval.harness.evaluate` call shares.

    ``split`` divides ``batch`` into train/val/test (a name, or labels per row); ``rows``, when
    set, are the resolved rows (e.g. a training and a test table joined, see
    :func:`~ecomodal.eval.common.eval_rows`), ``batch`` and ``split`` then being theirs.
    """

    batch: EmbeddingBatch
    model: ProM3E | None = None
    labels: Sequence[str] = ("scientific_name",)
    split: str | np.ndarray = "published"
    seed: int = 0
    rows: EvalRows | None = None

    @property
    def table_rows(self) -> EvalRows:
        """The rows tasks evaluate: :attr:`rows`, or :attr:`batch` divided by :attr:`split`."""
        return self.rows if self.rows is not None else EvalRows(self.batch, self.split)

    @property
    def present(self) -> list[str]:
        """The modalities that at least one row of the table has."""
        return [m for m in self.batch.modalities if self.batch.present[m].any()]

    @property
    def non_text(self) -> list[str]:
        """:attr:`present` without ``text`` (it names the taxon)."""
        return [m for m in self.present if m != "text"]

    def column(self, name: str) -> np.ndarray:
        """The table's extra column ``name``."""
        return self.batch.column(name)


def _flat_rows(metrics: Mapping[str, Any], prefix: str = "") -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for key, value in metrics.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            rows += _flat_rows(value, f"{name}.")
        elif isinstance(value, int | float | str | bool) or value is None:
            rows.append({"metric": name, "value": value})
    return rows


@dataclass(frozen=True)
class EvalTask:
    """An evaluation task: ``run(context, **options) -> metrics``, ``section(metrics) -> Section``.

    ``options`` lists the keyword options ``run`` takes besides the context; ``needs_model``
    tasks are skipped (and say so) without a model; ``in_all`` tasks run for ``tasks="all"``;
    ``order`` places the task in listings and in ``"all"`` (ties: registration order). Without a
    ``section`` the report shows the metrics' numbers as a table.
    """

    name: str
    description: str
    run: Callable[..., dict[str, Any]]
    section: Callable[[Mapping[str, Any]], Section] | None = None
    options: tuple[TaskOption, ...] = ()
    needs_model: bool = False
    in_all: bool = True
    order: int = 100
    _index: int = field(default=0, compare=False, repr=False)

    def option_values(self, given: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Every option's value: its default unless ``given`` sets it (``None`` keeps it)."""
        known = {o.name: o for o in self.options}
        unknown = [k for k in (given or {}) if k not in known]
        if unknown:
            raise InvalidArgumentError(
                f"Task {self.name!r} has no option {', '.join(map(repr, unknown))}; its options: "
                f"{', '.join(known) or 'none'}."
            )
        values = {name: option.default for name, option in known.items()}
        values.update({k: v for k, v in (given or {}).items() if v is not None})
        return values

    def report_section(self, metrics: Mapping[str, Any]) -> Section:
        """The report section of this task's ``metrics``."""
        if self.section is not None:
            return self.section(metrics)
        return Section(self.name, self.description, _flat_rows(metrics))


_TASKS: dict[str, EvalTask] = {}
_discovered = False


def _discover() -> None:
    """Import every module of :mod:`ecomodal.eval` once, so each built-in task registers."""
    global _discovered
    if _discovered:
        return
    _discovered = True
    import ecomodal.eval as package

    for info in pkgutil.iter_modules(package.__path__):
        if not info.name.startswith("_"):
            importlib.import_module(f"{package.__name__}.{info.name}")


def register_task(task: EvalTask | None = None, /, *, replace: bool = False, **fields: Any) -> Any:
    """Register ``task`` (an :class:`EvalTask`), or use as a decorator on its ``run`` function
    with the other fields as keywords: ``@register_task(name=..., description=..., ...)``.

    A name already taken is an error unless ``replace``. Returns the task (the function, as a
    decorator).
    """
    if task is not None:
        if fields:
            raise InvalidArgumentError("register_task takes a task or its fields, not both.")
        return _add(task, replace)

    def decorate(run: Callable[..., dict[str, Any]]) -> Callable[..., dict[str, Any]]:
        options = tuple(fields.pop("options", ()))
        _add(EvalTask(run=run, options=options, **fields), replace)
        return run

    return decorate


def _add(task: EvalTask, replace: bool) -> EvalTask:
    if task.name in _TASKS and not replace:
        raise InvalidArgumentError(
            f"An evaluation task named {task.name!r} is already registered; pass replace=True "
            "to replace it."
        )
    if not task.name or task.name == "all":
        raise InvalidArgumentError(f"{task.name!r} cannot name an evaluation task.")
    object.__setattr__(task, "_index", len(_TASKS))
    _TASKS[task.name] = task
    return task


def unregister_task(name: str) -> EvalTask:
    """Remove the task ``name`` from the registry and return it."""
    get_task(name)
    return _TASKS.pop(name)


def tasks(*, in_all: bool | None = None) -> list[EvalTask]:
    """The registered tasks in order (only those ``tasks="all"`` runs, with ``in_all=True``)."""
    _discover()
    found = sorted(_TASKS.values(), key=lambda t: (t.order, t._index))
    return [t for t in found if in_all is None or t.in_all == in_all]


def task_names(*, in_all: bool | None = None) -> tuple[str, ...]:
    """The names of :func:`tasks`."""
    return tuple(t.name for t in tasks(in_all=in_all))


def get_task(name: str) -> EvalTask:
    """The registered task ``name``; an unknown name is an error listing the known ones."""
    _discover()
    if name not in _TASKS:
        raise InvalidArgumentError(
            f"Unknown evaluation task {name!r}; expected one of: {', '.join(task_names())}."
        )
    return _TASKS[name]


def choose_tasks(names: Sequence[str] | str) -> list[EvalTask]:
    """The tasks ``names`` stands for: ``"all"``, one name or several."""
    if names == "all":
        return tasks(in_all=True)
    chosen = [names] if isinstance(names, str) else list(names)
    known = set(task_names())
    unknown = [t for t in chosen if t not in known]
    if unknown:
        raise InvalidArgumentError(
            f"Unknown task(s) {unknown}; expected from: {', '.join(task_names())} or 'all'."
        )
    return [_TASKS[t] for t in chosen]


def describe(task: EvalTask) -> str:
    """One line per task for help texts: name, description and options with defaults."""
    line = f"{task.name}: {task.description}"
    if task.needs_model:
        line += " Needs a model."
    options = [
        f"{o.name} [{o.default!r}]" + (f": {o.help}" if o.help else "") for o in task.options
    ]
    return line + (f" Options: {'; '.join(options)}." if options else "")
