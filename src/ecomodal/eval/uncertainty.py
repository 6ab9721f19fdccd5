"""Uncertainty and informativeness: sigma_l1 per visible set, which modality to add next, and
how well sigma predicts the completion error."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ecomodal.deprecation import renamed_arguments
from ecomodal.eval.common import (
    check_no_rows,
    check_optional_count,
    eval_rows,
    model_inputs,
    require_model,
    resolve_model,
)
from ecomodal.eval.completion import visible_subsets
from ecomodal.eval.registry import EvalContext, register_task
from ecomodal.io.reader import TableLike
from ecomodal.modalities import parse_modalities
from ecomodal.report import Section, bar_chart, distributions

QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)


def _set_name(names: Sequence[str]) -> str:
    return "+".join(names)


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman rank correlation (NaN when either side is constant or fewer than 3 values)."""
    from scipy.stats import spearmanr

    if len(x) < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return float("nan")
    return float(spearmanr(x, y).statistic)


@renamed_arguments(table="data")
def uncertainty(
    data: TableLike | None = None,
    model: Any = None,
    *,
    train: TableLike | None = None,
    test: TableLike | None = None,
    visible_sets: Sequence[Sequence[str] | str] | None = None,
    max_sets_per_count: int | None = 10,
    split: str | np.ndarray | None = "published",
    n_samples: int = 0,
    max_samples: int = 2000,
    seed: int = 0,
) -> dict[str, Any]:
    """sigma_l1 of ProM3E for each visible set, a next-modality ranking, and sigma vs error.

    ``visible_sets`` defaults to every non-empty subset of the modalities the table and model
    share (at most ``max_sets_per_count`` of each size, a seeded sample). Rows: the test rows of
    ``split`` (``None``: every row), or every row of ``test`` when ``train`` and ``test`` are
    given instead of ``data``; each set uses the rows that have all of it.

    Returns ``sets`` (per set: rows, mean, std, quantiles of sigma_l1, mean completion error =
    1 - cosine of the completed hidden modalities with the truth, and the Spearman correlation of
    sigma with that error), ``mean_by_count``, ``next_modality`` (per set, the modalities not in
    it ranked by the mean drop of sigma when added, on the rows that have it), ``added_modality``
    (that drop averaged over sets), ``sigma_error_spearman`` (pooled over every row and set) and
    ``samples`` (up to ``max_samples`` sigma values per set, for plots).
    """
    check_optional_count(max_sets_per_count, "max_sets_per_count")
    check_optional_count(max_samples, "max_samples")
    check_optional_count(n_samples, "n_samples", minimum=0)
    rows_in = eval_rows(data, train, test, task="uncertainty", split=split, seed=seed)
    batch = rows_in.batch
    prom3e = require_model(resolve_model(model), "uncertainty")
    if rows_in.split is not None:
        batch = batch.select(rows_in.sides(seed=seed) == "test")
        check_no_rows(len(batch), "uncertainty", f"test rows (split {rows_in.split_name!r})")
    names = [m for m in prom3e.modalities if m in batch.embeddings and batch.present[m].any()]
    emb, present = model_inputs(batch, prom3e)
    order = list(prom3e.modalities)
    if visible_sets is None:
        by_count = visible_subsets(len(names), max_sets_per_count=max_sets_per_count, seed=seed)
        sets = [[names[i] for i in s] for subsets in by_count.values() for s in subsets]
    else:
        sets = [parse_modalities(s, names) for s in visible_sets]
    cache: dict[tuple[str, ...], tuple[np.ndarray, np.ndarray]] = {}

    def run(visible: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """sigma and completion error for every row [N] (NaN where the set is not present)."""
        key = tuple(visible)
        if key not in cache:
            cols = [order.index(m) for m in visible]
            rows = present[:, cols].all(axis=1)
            sigma = np.full(len(batch), np.nan)
            error = np.full(len(batch), np.nan)
            if rows.any():
                done = prom3e.complete(
                    emb[rows],
                    visible=list(visible),
                    n_samples=n_samples,
                    seed=seed,
                    present=present[rows],
                )
                sigma[rows] = done.sigma_l1
                hidden = present[rows].copy()
                hidden[:, cols] = False
                truth = emb[rows]
                cosine = np.einsum("nmd,nmd->nm", done.embeddings, truth) / np.maximum(
                    np.linalg.norm(truth, axis=-1), 1e-12
                )
                with np.errstate(invalid="ignore"):
                    error[rows] = np.where(
                        hidden.any(1),
                        ((1 - cosine) * hidden).sum(1) / np.maximum(hidden.sum(1), 1),
                        np.nan,
                    )
            cache[key] = (sigma, error)
        return cache[key]

    rng = np.random.default_rng(seed)
    out_sets: dict[str, Any] = {}
    samples: dict[str, list[float]] = {}
    next_modality: dict[str, list[dict[str, Any]]] = {}
    drops: dict[str, list[float]] = {}
    by_count: dict[int, list[np.ndarray]] = {}
    pooled_sigma, pooled_error = [], []
    for visible in sets:
        sigma, error = run(visible)
        ok = np.isfinite(sigma)
        if not ok.any():
            continue
        name = _set_name(visible)
        values = sigma[ok]
        entry: dict[str, Any] = {
            "rows": int(ok.sum()),
            "mean": float(values.mean()),
            "std": float(values.std()),
            "quantiles": {
                str(q): float(v)
                for q, v in zip(QUANTILES, np.quantile(values, QUANTILES), strict=True)
            },
        }
        with_error = ok & np.isfinite(error)
        if with_error.any():
            entry["mean_error"] = float(error[with_error].mean())
            entry["sigma_error_spearman"] = spearman(sigma[with_error], error[with_error])
            pooled_sigma.append(sigma[with_error])
            pooled_error.append(error[with_error])
        out_sets[name] = entry
        by_count.setdefault(len(visible), []).append(values)
        pick = rng.choice(len(values), min(max_samples, len(values)), replace=False)
        samples[name] = [float(v) for v in values[np.sort(pick)]]
        ranking = []
        for extra in names:
            if extra in visible:
                continue
            bigger = [m for m in names if m in visible or m == extra]
            sigma_more, _ = run(bigger)
            both = ok & np.isfinite(sigma_more)
            if both.any():
                drop = float((sigma[both] - sigma_more[both]).mean())
                ranking.append({"modality": extra, "drop": drop, "rows": int(both.sum())})
                drops.setdefault(extra, []).append(drop)
        next_modality[name] = sorted(ranking, key=lambda r: -r["drop"])
    pooled = (
        spearman(np.concatenate(pooled_sigma), np.concatenate(pooled_error))
        if pooled_sigma
        else float("nan")
    )
    added = {m: float(np.mean(v)) for m, v in drops.items()}
    return {
        "sets": out_sets,
        "mean_by_count": {
            str(k): float(np.concatenate(v).mean()) for k, v in sorted(by_count.items())
        },
        "next_modality": next_modality,
        "added_modality": dict(sorted(added.items(), key=lambda kv: -kv[1])),
        "sigma_error_spearman": pooled,
        "samples": samples,
    }


def _section(result: Mapping[str, Any]) -> Section:
    rows = [
        {
            "visible": name,
            **{k: v for k, v in entry.items() if k != "quantiles"},
            **{f"q{k}": v for k, v in entry["quantiles"].items()},
        }
        for name, entry in result["sets"].items()
    ]
    figures = [
        distributions(
            result["samples"],
            title="sigma_l1 per visible set",
            xlabel="sigma_l1 (sum of sigma)",
            ylabel="visible modalities",
        ),
        bar_chart(
            {"mean drop": result["added_modality"]},
            title="Mean drop of sigma_l1 when a modality is added",
            ylabel="sigma_l1 drop",
            xlabel="added modality",
        ),
    ]
    text = (
        f"Mean sigma_l1 by number of visible modalities: {result['mean_by_count']}. Spearman "
        f"correlation of sigma_l1 with completion error: {result['sigma_error_spearman']:.3f}."
    )
    return Section("Uncertainty and informativeness", text, rows, figures)


@register_task(
    name="uncertainty",
    description="ProM3E's sigma_l1 per visible set, the next modality to add, sigma vs error.",
    section=_section,
    needs_model=True,
    order=50,
)
def _run(context: EvalContext) -> dict[str, Any]:
    return uncertainty(context.table_rows, context.model, seed=context.seed)
