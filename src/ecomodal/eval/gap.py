"""The modality gap: how far apart the modalities sit in the shared space, before and after
ProM3E completion."""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ecomodal.data.splits import make_split
from ecomodal.deprecation import renamed_arguments
from ecomodal.eval.common import (
    check_no_rows,
    check_optional_count,
    eval_table,
    model_inputs,
    normalise,
    resolve_model,
)
from ecomodal.eval.registry import EvalContext, register_task
from ecomodal.io.reader import TableLike
from ecomodal.modalities import parse_modalities
from ecomodal.report import Section, bar_chart


def centroid_distances(groups: dict[str, np.ndarray]) -> dict[str, float]:
    """Euclidean distance between the centroids of the normalised embeddings of each pair."""
    centroids = {m: normalise(x).mean(axis=0) for m, x in groups.items()}
    return {
        f"{a}|{b}": float(np.linalg.norm(centroids[a] - centroids[b]))
        for a, b in itertools.combinations(groups, 2)
    }


def separability(groups: dict[str, np.ndarray], *, folds: int = 5, seed: int = 0) -> float:
    """Cross-validated accuracy of a logistic regression telling the modalities apart (chance:
    1 / number of modalities); 1.0 means the modalities are linearly separable."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_score

    x = np.concatenate([normalise(v) for v in groups.values()])
    y = np.concatenate([np.full(len(v), i) for i, v in enumerate(groups.values())])
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    classifier = LogisticRegression(max_iter=1000, random_state=seed)
    return float(cross_val_score(classifier, x, y, cv=splitter).mean())


def _gap(groups: dict[str, np.ndarray], seed: int) -> dict[str, Any]:
    return {
        "centroid_distance": centroid_distances(groups),
        "separability": separability(groups, seed=seed),
        "chance": 1.0 / len(groups),
    }


@renamed_arguments(table="data")
def modality_gap(
    data: TableLike,
    model: Any = None,
    *,
    modalities: Sequence[str] | str | None = None,
    split: str | np.ndarray | None = "published",
    max_rows: int = 5000,
    seed: int = 0,
) -> dict[str, Any]:
    """Centroid distances and linear separability of the modalities, ``before`` completion (the
    table's embeddings) and, with a ProM3E ``model``, ``after`` (each row completed from every
    modality it has: the decoded slots). Uses the test rows of ``split`` (``None``: all rows), at
    most ``max_rows`` per modality (a seeded sample)."""
    check_optional_count(max_rows, "max_rows")
    batch = eval_table(data, "gap")
    prom3e = resolve_model(model)
    if split is not None:
        batch = batch.select(make_split(batch, split, seed=seed) == "test")
        check_no_rows(len(batch), "gap", f"test rows (split {split!r})")
    names = parse_modalities(modalities, batch.modalities)
    rng = np.random.default_rng(seed)

    def sample(rows: np.ndarray) -> np.ndarray:
        rows = np.flatnonzero(rows)
        return np.sort(rng.choice(rows, max_rows, replace=False)) if len(rows) > max_rows else rows

    before = {m: batch.embeddings[m][sample(batch.present[m])] for m in names}
    out: dict[str, Any] = {"before": _gap(before, seed)}
    if prom3e is not None:
        emb, present = model_inputs(batch, prom3e)
        rows = sample(present.any(axis=1))
        done = prom3e.complete(emb[rows], n_samples=0, seed=seed, present=present[rows])
        order = list(prom3e.modalities)
        after = {m: done.embeddings[:, order.index(m)] for m in names if m in order}
        out["after"] = _gap(after, seed)
    return out


def _section(result: Mapping[str, Any]) -> Section:
    rows = []
    for stage, entry in result.items():
        rows.append({"stage": stage, "pair": "separability", "value": entry["separability"]})
        rows += [
            {"stage": stage, "pair": k, "value": v} for k, v in entry["centroid_distance"].items()
        ]
    bars = {stage: entry["centroid_distance"] for stage, entry in result.items()}
    figure = bar_chart(
        bars,
        title="Distance between modality centroids",
        ylabel="Euclidean distance (unit vectors)",
        xlabel="modality pair",
    )
    return Section(
        "Modality gap", "Separability: CV accuracy of telling modalities apart.", rows, [figure]
    )


@register_task(
    name="gap",
    description="How far apart the modalities sit, before and after ProM3E completion.",
    section=_section,
    order=60,
)
def _run(context: EvalContext) -> dict[str, Any]:
    return modality_gap(context.batch, context.model, split=context.split, seed=context.seed)
