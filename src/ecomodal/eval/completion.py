"""How well a model completes masked modalities, against simple baselines with no training."""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ecomodal.deprecation import renamed_arguments
from ecomodal.eval.common import (
    check_no_rows,
    eval_rows,
    model_inputs,
    require_model,
    resolve_model,
)
from ecomodal.eval.registry import EvalContext, TaskOption, register_task
from ecomodal.io.reader import TableLike
from ecomodal.modalities import parse_modalities
from ecomodal.models.prom3e import ProM3E
from ecomodal.options import parse_list
from ecomodal.report import Section
from ecomodal.vectors import normalise


def completion_scores(
    predicted: np.ndarray, truth: np.ndarray, *, block: int = 4096
) -> dict[str, float]:
    """Mean cosine of each prediction with its own truth, and R@1 among all truths.

    R@1 counts row i as found when no other truth is strictly closer to prediction i than truth i
    (ties, such as identical text embeddings of one species, count as found).
    """
    predicted = normalise(np.asarray(predicted, dtype=np.float32))
    truth = normalise(np.asarray(truth, dtype=np.float32))
    own = np.einsum("nd,nd->n", predicted, truth)
    hits = 0
    for start in range(0, len(predicted), block):
        sims = predicted[start : start + block] @ truth.T
        hits += int(np.sum(sims.max(axis=1) <= own[start : start + block] + 1e-6))
    return {"cosine": float(own.mean()), "r1": hits / len(predicted)}


def mean_of_visible(embeddings: np.ndarray, visible: Sequence[int]) -> np.ndarray:
    """Baseline: the normalised mean of the visible embeddings, used as every missing one."""
    return normalise(embeddings[:, list(visible)].mean(axis=1))


def nearest_neighbour(
    embeddings: np.ndarray,
    visible: Sequence[int],
    target: int,
    reference: np.ndarray,
    reference_present: np.ndarray,
    *,
    block: int = 2048,
) -> np.ndarray:
    """Baseline: the target embedding of the reference row closest in the visible modalities
    (sum of cosines); reference rows lacking the target or a visible modality are skipped."""
    usable = reference_present[:, target] & reference_present[:, list(visible)].all(axis=1)
    ref = reference[usable]
    out = np.empty((len(embeddings), reference.shape[-1]), dtype=np.float32)
    for start in range(0, len(embeddings), block):
        sims = sum(embeddings[start : start + block, v] @ ref[:, v].T for v in visible)
        out[start : start + block] = ref[np.argmax(sims, axis=1), target]
    return out


def evaluate_completion(
    model: ProM3E,
    embeddings: np.ndarray,
    present: np.ndarray,
    reference: np.ndarray,
    reference_present: np.ndarray,
    *,
    visible_sets: Sequence[Sequence[str]] | None = None,
    n_samples: int = 0,
    seed: int = 0,
    train_mean: bool = False,
) -> dict[str, dict[str, float]]:
    """Score the model's completions of every hidden modality against the two baselines.

    For each visible set (default: every single modality) and each other modality, the rows that
    have all of them are completed; the model, the mean-of-visible and the nearest-neighbour (in
    ``reference``, typically the training rows) predictions are scored by
    :func:`completion_scores`; with ``train_mean`` also the mean of the target modality over the
    ``reference`` rows (one constant prediction, ``train_mean_*``). Returns ``{"image->text": {"model_cosine": ..., ...}, ...}`` plus an
    ``"average"`` entry over all pairs.
    """
    names = list(model.modalities)
    if visible_sets is None:
        visible_sets = [[m] for m in names]
    results: dict[str, dict[str, float]] = {}
    for visible_names in visible_sets:
        vis = [names.index(m) for m in visible_names]
        for target in range(len(names)):
            if target in vis:
                continue
            rows = present[:, vis].all(axis=1) & present[:, target]
            if rows.sum() < 2:
                continue
            emb = embeddings[rows]
            truth = emb[:, target]
            completed = model.complete(
                emb,
                visible=visible_names,
                n_samples=n_samples,
                seed=seed,
                present=present[rows],
            ).embeddings[:, target]
            entry: dict[str, float] = {"rows": float(rows.sum())}
            predictions = {
                "model": completed,
                "mean": mean_of_visible(emb, vis),
                "nn": nearest_neighbour(emb, vis, target, reference, reference_present),
            }
            if train_mean:
                mean = reference[reference_present[:, target], target].mean(axis=0)
                predictions["train_mean"] = np.broadcast_to(mean, truth.shape)
            for label, prediction in predictions.items():
                for metric, value in completion_scores(prediction, truth).items():
                    entry[f"{label}_{metric}"] = value
            results[f"{'+'.join(visible_names)}->{names[target]}"] = entry
    if results:
        keys = [k for k in next(iter(results.values())) if k != "rows"]
        results["average"] = {k: float(np.mean([r[k] for r in results.values()])) for k in keys}
    return results


def visible_subsets(
    n_modalities: int, *, max_sets_per_count: int | None = None, seed: int = 0
) -> dict[int, list[tuple[int, ...]]]:
    """Every non-empty subset of ``range(n_modalities)``, by size; at most ``max_sets_per_count``
    of each size (a seeded sample, in lexicographic order)."""
    rng = np.random.default_rng(seed)
    out: dict[int, list[tuple[int, ...]]] = {}
    for count in range(1, n_modalities + 1):
        subsets = list(itertools.combinations(range(n_modalities), count))
        if max_sets_per_count is not None and len(subsets) > max_sets_per_count:
            picks = rng.choice(len(subsets), size=max_sets_per_count, replace=False)
            subsets = [subsets[i] for i in sorted(picks)]
        out[count] = subsets
    return out


def sigma_by_visible_count(
    model: ProM3E,
    embeddings: np.ndarray,
    present: np.ndarray,
    *,
    max_sets_per_count: int | None = None,
    seed: int = 0,
) -> dict[int, float]:
    """Mean ``sigma_l1`` over rows and visible sets, for each number of visible modalities.

    Every subset of the model's modalities of each size is tried on the rows that have it (or a
    seeded sample of ``max_sets_per_count`` subsets).
    """
    names = list(model.modalities)
    out: dict[int, float] = {}
    by_count = visible_subsets(len(names), max_sets_per_count=max_sets_per_count, seed=seed)
    for count, subsets in by_count.items():
        values = []
        for subset in subsets:
            rows = present[:, list(subset)].all(axis=1)
            if not rows.any():
                continue
            result = model.complete(
                embeddings[rows],
                visible=[names[i] for i in subset],
                n_samples=0,
                present=present[rows],
            )
            values.append(result.sigma_l1)
        if values:
            out[count] = float(np.concatenate(values).mean())
    return out


@renamed_arguments(table="data")
def completion(
    data: TableLike | None = None,
    model: Any = None,
    *,
    train: TableLike | None = None,
    test: TableLike | None = None,
    visible_sets: Sequence[Sequence[str] | str] | None = None,
    split: str | np.ndarray = "published",
    n_samples: int = 0,
    seed: int = 0,
) -> dict[str, Any]:
    """ProM3E's completions of the test rows against three baselines with no training: the mean
    of the visible embeddings, the nearest training row in the visible modalities (its target
    embedding) and the training mean of the target modality (see :func:`evaluate_completion`).

    Rows: the test rows of ``split`` complete, the train and val rows are the reference; or, with
    ``train`` and ``test`` instead of ``data``, every row of ``test`` completes and every row of
    ``train`` is the reference. ``visible_sets`` defaults to each single modality that the table
    and the model share. Returns ``{"split", "rows", "reference_rows", "pairs": {"loc->env":
    {"model_cosine", "model_r1", "nn_cosine", ...}, ..., "average": {...}}}``.
    """
    rows = eval_rows(data, train, test, task="completion", split=split, seed=seed)
    prom3e = require_model(resolve_model(model), "completion")
    batch, sides = rows.batch, rows.sides(seed=seed)
    tested, reference = sides == "test", sides != "test"
    check_no_rows(tested, "completion", f"test rows (split {rows.split_name!r})")
    check_no_rows(reference, "completion", f"training rows (split {rows.split_name!r})")
    names = [m for m in prom3e.modalities if m in batch.embeddings and batch.present[m].any()]
    sets = (
        [[m] for m in names]
        if visible_sets is None
        else [parse_modalities(s, names) for s in visible_sets]
    )
    emb, present = model_inputs(batch, prom3e)
    pairs = evaluate_completion(
        prom3e,
        emb[tested],
        present[tested],
        emb[reference],
        present[reference],
        visible_sets=sets,
        n_samples=n_samples,
        seed=seed,
        train_mean=True,
    )
    return {
        "split": rows.split_name,
        "rows": int(tested.sum()),
        "reference_rows": int(reference.sum()),
        "pairs": pairs,
    }


def _section(result: Mapping[str, Any]) -> Section:
    rows = [{"pair": pair, **scores} for pair, scores in result["pairs"].items()]
    text = (
        f"{result['rows']} test rows completed ({result['split']}); baselines: the mean of the "
        f"visible embeddings (mean), the nearest of {result['reference_rows']} training rows in "
        "the visible modalities (nn) and the training mean of the completed modality "
        "(train_mean). cosine: to the truth; r1: the truth is the closest of all test rows."
    )
    return Section("Completion against baselines", text, rows)


def _parse_sets(text: str) -> list[list[str]]:
    return [parse_list(part) for part in text.split(";") if part.strip()]


@register_task(
    name="completion",
    description="ProM3E completion of each modality against mean, nearest-neighbour and "
    "training-mean baselines.",
    options=[
        TaskOption("visible", None, "visible sets, e.g. 'loc;loc,env' (default: each)", _parse_sets)
    ],
    section=_section,
    needs_model=True,
    in_all=False,
    order=45,
)
def _run(context: EvalContext, visible: Sequence[Sequence[str]] | None) -> dict[str, Any]:
    return completion(context.table_rows, context.model, visible_sets=visible, seed=context.seed)
