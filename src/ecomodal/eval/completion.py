"""How well a model completes masked modalities, against simple baselines with no training."""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ecomodal.deprecation import renamed_arguments
from ecomodal.errors import InvalidEmbeddingsError
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
from ecomodal.options import check_range
from ecomodal.report import Section
from ecomodal.vectors import normalise


def completion_scores(
    predicted: np.ndarray, truth: np.ndarray, *, ks: Sequence[int] = (1, 10), block: int = 4096
) -> dict[str, float]:
    """Mean cosine of each prediction with its own truth, and R@k among all truths (``r1``,
    ``r10``, ...).

    R@k counts row i as found when fewer than k other truths are strictly closer to prediction i
    than truth i (ties, such as identical text embeddings of one species, count as found).
    """
    own, closer = closer_counts(predicted, truth, block=block)
    return {
        "cosine": float(own.mean()),
        **{f"r{k}": float(np.mean(closer < k)) for k in ks},
    }


def closer_counts(
    predicted: np.ndarray, truth: np.ndarray, *, block: int = 4096
) -> tuple[np.ndarray, np.ndarray]:
    """Per row: the cosine of prediction i with truth i, and how many other truths are strictly
    closer to prediction i (row i is in the top k when that count is below k)."""
    predicted = normalise(np.asarray(predicted, dtype=np.float32))
    truth = normalise(np.asarray(truth, dtype=np.float32))
    own = np.einsum("nd,nd->n", predicted, truth)
    closer = np.empty(len(predicted), dtype=np.int64)
    for start in range(0, len(predicted), block):
        sims = predicted[start : start + block] @ truth.T
        closer[start : start + block] = np.sum(sims > own[start : start + block, None] + 1e-6, 1)
    return own, closer


def mean_of_visible(embeddings: np.ndarray, visible: Sequence[int]) -> np.ndarray:
    """Baseline: the normalised mean of the visible embeddings, used as every missing one."""
    return normalise(embeddings[:, list(visible)].mean(axis=1))


def training_mean(reference: np.ndarray, reference_present: np.ndarray, target: int) -> np.ndarray:
    """Baseline: the normalised mean of the reference rows' (unit) ``target`` embeddings, the
    same prediction for every row; [D]."""
    rows = reference_present[:, target]
    if not rows.any():
        raise InvalidEmbeddingsError(
            f"completion: no reference (training) row has modality {target}; the training-mean "
            "baseline needs at least one."
        )
    return normalise(normalise(reference[rows, target].astype(np.float32)).mean(axis=0))


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


#: The predictions scored per pair, by key prefix: ``model`` is the model's default completion
#: (retrieval-augmented when calibrated), ``prom3e`` ProM3E alone, ``mean`` the mean of the visible
#: embeddings, ``nn`` the nearest training row's embedding, ``train_mean`` the training mean.
PREDICTIONS = ("model", "mean", "nn", "prom3e", "train_mean")


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
    neighbours: Any = None,
) -> dict[str, dict[str, float]]:
    """Score the model's completions of every hidden modality against simple baselines.

    For each visible set (default: every single modality) and each other modality, the rows that
    have all of them are completed and scored by :func:`completion_scores` (mean cosine, R@1 and
    R@10 among those rows). Predictions (key prefixes, see :data:`PREDICTIONS`): ``model``, the
    model's default completion (retrieval-augmented for a calibrated model; ``neighbours`` is
    passed to :meth:`ProM3E.complete`); ``prom3e``, ProM3E alone (equal to ``model`` for an
    uncalibrated model); ``mean``, the mean of the visible embeddings; ``nn``, the target
    embedding of the ``reference`` row (typically the training rows) nearest in the visible
    modalities; ``train_mean``, the normalised mean of the reference rows' target embeddings.
    Returns ``{"image->text": {"rows": ..., "model_cosine": ..., "model_r10": ..., ...}, ...}``
    plus an ``"average"`` entry over all pairs.
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
            done = model.complete(
                emb,
                visible=visible_names,
                n_samples=n_samples,
                seed=seed,
                present=present[rows],
                neighbours=neighbours,
            )
            alone = done.embeddings if done.prom3e_embeddings is None else done.prom3e_embeddings
            constant = training_mean(reference, reference_present, target)
            entry: dict[str, float] = {"rows": float(rows.sum())}
            predictions = {
                "model": done.embeddings[:, target],
                "mean": mean_of_visible(emb, vis),
                "nn": nearest_neighbour(emb, vis, target, reference, reference_present),
                "prom3e": alone[:, target],
                "train_mean": np.broadcast_to(constant, truth.shape),
            }
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


#: The four completions the report compares: (key prefix, column heading).
REPORTED = (
    ("model", "default"),
    ("prom3e", "ProM3E alone"),
    ("nn", "NN lookup"),
    ("train_mean", "training mean"),
)


@renamed_arguments(table="data")
def completion(
    data: TableLike | None = None,
    model: Any = None,
    *,
    train: TableLike | None = None,
    test: TableLike | None = None,
    split: str | np.ndarray = "published",
    visible_sets: Sequence[Sequence[str] | str] | None = None,
    n_samples: int = 0,
    seed: int = 0,
    neighbours: Any = None,
) -> dict[str, Any]:
    """Completion quality of the test rows against the nearest-neighbour lookup and the training
    mean (see :func:`evaluate_completion`).

    Rows: the test rows of ``split`` complete and every other row (train and val) is the
    baselines' reference; or, with ``train`` and ``test`` instead of ``data``, every row of
    ``test`` completes and every row of ``train`` is the reference. ``visible_sets`` defaults to each single modality the
    table and model share. Returns ``pairs`` (per ``"loc->env"`` pair and ``"average"``),
    ``calibrated`` (whether the default completion is retrieval-augmented), ``train_rows`` /
    ``reference_rows`` and ``test_rows`` / ``rows``.
    """
    check_range(n_samples, "n_samples", minimum=0, integer=True)
    rows = eval_rows(data, train, test, task="completion", split=split, seed=seed)
    prom3e = require_model(resolve_model(model), "completion")
    batch, sides = rows.batch, rows.sides(seed=seed)
    tested, reference = sides == "test", sides != "test"
    check_no_rows(reference, "completion", f"train rows (split {rows.split_name!r})")
    check_no_rows(tested, "completion", f"test rows (split {rows.split_name!r})")
    names = [m for m in prom3e.modalities if m in batch.embeddings and batch.present[m].any()]
    if visible_sets is None:
        sets = [[m] for m in names]
    else:
        sets = [parse_modalities(s, names) for s in visible_sets]
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
        neighbours=neighbours,
    )
    return {
        "pairs": pairs,
        "calibrated": neighbours is not False
        and (neighbours is not None or prom3e.calibration is not None),
        "train_rows": int(reference.sum()),
        "test_rows": int(tested.sum()),
        "rows": int(tested.sum()),
        "reference_rows": int(reference.sum()),
        "split": rows.split_name,
    }


def _section(result: Mapping[str, Any]) -> Section:
    rows = []
    for pair, entry in result["pairs"].items():
        row: dict[str, Any] = {"pair": pair}
        if "rows" in entry:
            row["rows"] = int(entry["rows"])
        for key, heading in REPORTED:
            row[f"{heading} cosine"] = entry[f"{key}_cosine"]
            row[f"{heading} R@10"] = entry[f"{key}_r10"]
        rows.append(row)
    how = (
        "retrieval-augmented (ProM3E mixed with the nearest training rows, as calibrated)"
        if result["calibrated"]
        else "ProM3E alone (the model is not calibrated: `ecomodal calibrate` adds neighbours)"
    )
    text = (
        f"Each test row ({result['test_rows']}) completes the missing modality from the visible "
        f"one; cosine to the truth and R@10 among the test rows' truths. Default: {how}. NN "
        f"lookup: the embedding of the training row ({result['train_rows']}) nearest in the "
        "visible modality. Training mean: the normalised mean of the training embeddings."
    )
    return Section("Completion against the lookup and the mean", text, rows)


@register_task(
    name="completion",
    description="Completion of each modality from each other one: the model's default, ProM3E "
    "alone, the nearest-training-row lookup and the training mean (cosine, R@1, R@10).",
    options=[
        TaskOption(
            "visible_sets",
            None,
            "visible sets, ';' between sets, e.g. loc;env;loc,env (default: each modality)",
            lambda text: [s for s in text.split(";") if s.strip()],
        ),
    ],
    section=_section,
    needs_model=True,
    order=45,
)
def _run(context: EvalContext, visible_sets: Sequence[str] | None = None) -> dict[str, Any]:
    return completion(
        context.table_rows, context.model, visible_sets=visible_sets, seed=context.seed
    )
