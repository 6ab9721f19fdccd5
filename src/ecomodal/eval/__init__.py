"""The evaluation harness: every task runs on embedding tables, any model plugs in.

Tasks: :func:`zero_shot`, :func:`few_shot`, :func:`linear_probe`, :func:`retrieval`,
:func:`uncertainty`, :func:`modality_gap`, :func:`compare_models`; :func:`evaluate` runs several
and writes ``metrics.json`` and ``report.html``. Each task registers itself in
:mod:`ecomodal.eval.registry` (:func:`register_task`), so a new one is one file.
"""

from typing import Any

from ecomodal.data.splits import make_split, spatial_block_split
from ecomodal.eval.common import fingerprint
from ecomodal.eval.compare import compare_models
from ecomodal.eval.few_shot import few_shot
from ecomodal.eval.gap import modality_gap
from ecomodal.eval.harness import evaluate
from ecomodal.eval.probe import linear_probe
from ecomodal.eval.registry import (
    EvalContext,
    EvalTask,
    TaskOption,
    get_task,
    register_task,
    task_names,
    unregister_task,
)
from ecomodal.eval.retrieval import rank_metrics, ranks_of_truth, retrieval
from ecomodal.eval.uncertainty import expected_error_quality, next_modality, uncertainty
from ecomodal.eval.zero_shot import zero_shot


def __getattr__(name: str) -> Any:
    if name in ("TASKS", "SINGLE_TABLE_TASKS"):  # read from the registry when asked
        from ecomodal.eval import harness

        return getattr(harness, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "TASKS",
    "EvalContext",
    "EvalTask",
    "TaskOption",
    "compare_models",
    "evaluate",
    "expected_error_quality",
    "few_shot",
    "fingerprint",
    "get_task",
    "linear_probe",
    "make_split",
    "modality_gap",
    "next_modality",
    "rank_metrics",
    "ranks_of_truth",
    "register_task",
    "retrieval",
    "spatial_block_split",
    "task_names",
    "uncertainty",
    "unregister_task",
    "zero_shot",
]
