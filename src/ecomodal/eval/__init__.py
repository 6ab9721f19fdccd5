"""The evaluation harness: every task runs on embedding tables, any model plugs in.

Tasks: :func:`zero_shot`, :func:`few_shot`, :func:`linear_probe`, :func:`retrieval`,
:func:`uncertainty`, :func:`modality_gap`, :func:`compare_models`; :func:`evaluate` runs several
and writes ``metrics.json`` and ``report.html``.
"""

from ecomodal.data.splits import make_split, spatial_block_split
from ecomodal.eval.common import fingerprint
from ecomodal.eval.compare import compare_models
from ecomodal.eval.few_shot import few_shot
from ecomodal.eval.gap import modality_gap
from ecomodal.eval.harness import TASKS, evaluate
from ecomodal.eval.probe import linear_probe
from ecomodal.eval.retrieval import rank_metrics, ranks_of_truth, retrieval
from ecomodal.eval.uncertainty import uncertainty
from ecomodal.eval.zero_shot import zero_shot

__all__ = [
    "TASKS",
    "compare_models",
    "evaluate",
    "few_shot",
    "fingerprint",
    "linear_probe",
    "make_split",
    "modality_gap",
    "rank_metrics",
    "ranks_of_truth",
    "retrieval",
    "spatial_block_split",
    "uncertainty",
    "zero_shot",
]
