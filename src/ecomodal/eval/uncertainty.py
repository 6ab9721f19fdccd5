"""Uncertainty and informativeness: sigma_l1 per visible set, which modality to add next, and
how well sigma (and, for a calibrated model, the uncertainty model's expected error) predicts the
completion error."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ecomodal.deprecation import renamed_arguments
from ecomodal.errors import MissingUncertaintyModelError
from ecomodal.eval.common import (
    check_no_rows,
    check_optional_count,
    eval_rows,
    model_inputs,
    require_model,
    resolve_model,
)
from ecomodal.eval.completion import visible_subsets
from ecomodal.eval.expected_error import (  # noqa: F401  (spearman, reliability: public here too)
    COVERAGE,
    _chains,
    _choice,
    _quality,
    _set_name,
    reliability,
    spearman,
)
from ecomodal.eval.registry import EvalContext, register_task
from ecomodal.io.reader import TableLike
from ecomodal.modalities import parse_modalities
from ecomodal.models.calibration import has_uncertainty_model
from ecomodal.report import Section, bar_chart, distributions, reliability_diagram

QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)
#: How to get an expected error, shown for a model without an uncertainty model.
CALIBRATE_HINT = (
    "This model has no uncertainty model, so only sigma_l1 is shown; fit one with `ecomodal "
    "calibrate --model DIR --data TABLE` (Python: ecomodal.calibrate(DIR, TABLE)) "
    "for the expected error, 90% intervals, nested chains and the next-modality choice."
)


@dataclass
class _SetRun:
    """One visible set completed over every row that has it (NaN elsewhere): ``sigma`` and
    ``error`` (mean over the hidden modalities) [N]; per modality [N, M] the ``observed`` error
    1 - cosine to the truth (NaN where visible or absent) and, with an uncertainty model,
    ``expected`` error and whether the ``covered`` by the 90% interval (NaN where unknown)."""

    rows: np.ndarray
    sigma: np.ndarray
    error: np.ndarray
    observed: np.ndarray
    expected: np.ndarray | None
    covered: np.ndarray | None


class _Completions:
    """Completes the evaluation rows once per visible set (cached)."""

    def __init__(self, prom3e: Any, batch: Any, *, n_samples: int, seed: int):
        self.model = prom3e
        self.emb, self.present = model_inputs(batch, prom3e)
        self.order = list(prom3e.modalities)
        self.n_samples = n_samples
        self.seed = seed
        self.calibrated = has_uncertainty_model(prom3e)
        self.cache: dict[tuple[str, ...], _SetRun] = {}

    def key(self, visible: Sequence[str]) -> tuple[str, ...]:
        return tuple(m for m in self.order if m in visible)

    def __call__(self, visible: Sequence[str]) -> _SetRun:
        key = self.key(visible)
        if key not in self.cache:
            self.cache[key] = self._run(key)
        return self.cache[key]

    def _run(self, visible: tuple[str, ...]) -> _SetRun:
        n, n_mod = self.present.shape
        cols = [self.order.index(m) for m in visible]
        rows = self.present[:, cols].all(axis=1)
        sigma, error = np.full(n, np.nan), np.full(n, np.nan)
        observed = np.full((n, n_mod), np.nan)
        expected = np.full((n, n_mod), np.nan) if self.calibrated else None
        covered = np.full((n, n_mod), np.nan) if self.calibrated else None
        if rows.any():
            done = self.model.complete(
                self.emb[rows],
                visible=list(visible),
                n_samples=self.n_samples,
                seed=self.seed,
                present=self.present[rows],
                # Nothing to complete: ProM3E alone (Calibration.apply needs a hidden modality).
                **({"neighbours": False} if len(visible) == len(self.order) else {}),
            )
            sigma[rows] = done.sigma_l1
            hidden = self.present[rows].copy()
            hidden[:, cols] = False
            truth = self.emb[rows]
            cosine = np.einsum("nmd,nmd->nm", done.embeddings, truth) / np.maximum(
                np.linalg.norm(truth, axis=-1), 1e-12
            )
            with np.errstate(invalid="ignore"):
                error[rows] = np.where(
                    hidden.any(1),
                    ((1 - cosine) * hidden).sum(1) / np.maximum(hidden.sum(1), 1),
                    np.nan,
                )
            observed[rows] = np.where(hidden, 1 - cosine, np.nan)
            if self.calibrated and len(visible) < len(self.order):
                expected[rows] = np.asarray(done.expected_error, dtype=np.float64)
                low, high = done.interval(COVERAGE)
                inside = (cosine >= np.asarray(low)) & (cosine <= np.asarray(high))
                known = hidden & np.isfinite(expected[rows])
                covered[rows] = np.where(known, inside, np.nan)
        return _SetRun(rows, sigma, error, observed, expected, covered)


def _eval_rows(
    data: TableLike, model: Any, task: str, split: Any, seed: int, train=None, test=None
) -> tuple[Any, Any]:
    """The evaluation rows (the test rows of ``split``, or every row of ``test``) and the model."""
    rows_in = eval_rows(data, train, test, task=task, split=split, seed=seed)
    batch = rows_in.batch
    prom3e = require_model(resolve_model(model), task)
    if rows_in.split is not None:
        batch = batch.select(rows_in.sides(seed=seed) == "test")
        check_no_rows(len(batch), task, f"test rows (split {rows_in.split_name!r})")
    return batch, prom3e


def _default_sets(names: Sequence[str], max_sets_per_count: int | None, seed: int, sizes=None):
    by_count = visible_subsets(len(names), max_sets_per_count=max_sets_per_count, seed=seed)
    return [
        [names[i] for i in s]
        for count, subsets in by_count.items()
        if sizes is None or count in sizes
        for s in subsets
    ]


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
    """sigma_l1 of ProM3E for each visible set, a next-modality ranking, and sigma vs error; for a
    calibrated model also how well its expected error predicts the observed one.

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

    With an uncertainty model, ``expected_error`` (see :func:`expected_error_quality`: per
    (visible set, completed modality) pair and pooled, Spearman of expected error and of sigma_l1
    with the observed error, mean expected vs observed error, 90% interval coverage, a
    reliability table by decile, mean expected error per set and the nested chains) and
    ``next_modality_choice`` (:func:`next_modality`); without one, ``expected_error`` is ``None``
    and ``calibrate`` says how to add one.
    """
    check_optional_count(max_samples, "max_samples")
    runs, names, sets = _prepare(
        data, model, "uncertainty", visible_sets=visible_sets,
        max_sets_per_count=max_sets_per_count, split=split, n_samples=n_samples, seed=seed,
        train=train, test=test,
    )  # fmt: skip

    def run(visible: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """sigma and completion error for every row [N] (NaN where the set is not present)."""
        done = runs(visible)
        return done.sigma, done.error

    rng = np.random.default_rng(seed)
    out_sets: dict[str, Any] = {}
    samples: dict[str, list[float]] = {}
    next_modality_ranking: dict[str, list[dict[str, Any]]] = {}
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
        next_modality_ranking[name] = sorted(ranking, key=lambda r: -r["drop"])
    pooled = (
        spearman(np.concatenate(pooled_sigma), np.concatenate(pooled_error))
        if pooled_sigma
        else float("nan")
    )
    added = {m: float(np.mean(v)) for m, v in drops.items()}
    result: dict[str, Any] = {
        "sets": out_sets,
        "mean_by_count": {
            str(k): float(np.concatenate(v).mean()) for k, v in sorted(by_count.items())
        },
        "next_modality": next_modality_ranking,
        "added_modality": dict(sorted(added.items(), key=lambda kv: -kv[1])),
        "sigma_error_spearman": pooled,
        "samples": samples,
    }
    if runs.calibrated:
        result["expected_error"] = _quality(runs, names, sets)
        result["next_modality_choice"] = _choice(runs, names, sets, names, seed)
    else:
        result["expected_error"] = None
        result["calibrate"] = CALIBRATE_HINT
    return result


#: The defaults of :func:`expected_error_quality`'s options (those of :func:`uncertainty`).
_DEFAULTS = {
    "visible_sets": None,
    "max_sets_per_count": 10,
    "split": "published",
    "n_samples": 0,
    "seed": 0,
}


def expected_error_quality(data: TableLike, model: Any, **options: Any) -> dict[str, Any]:
    """How well a calibrated model's expected error predicts the observed completion error.

    ``options``: ``visible_sets``, ``max_sets_per_count``, ``split``, ``n_samples`` and ``seed``
    as in :func:`uncertainty`. Per (visible set, completed modality) pair (``pairs``, keyed
    ``"loc+env>sat"``) and pooled: Spearman(expected error, observed 1 - cosine) beside
    Spearman(sigma_l1, observed error), mean expected and observed error, and the share of rows
    whose cosine falls in the 90% interval (``coverage_90``); ``mean_spearman``/``min_spearman``
    over the pairs; ``reliability`` (mean expected and observed error by decile of expected
    error); ``mean_by_set``; and ``chains`` (each step to a set with one more modality: the mean
    expected error of every modality still hidden, before and after, and whether it falls
    strictly). Raises :class:`~ecomodal.errors.MissingUncertaintyModelError` for a model without
    an uncertainty model.
    """
    runs, names, sets = _prepare(data, model, "uncertainty", **{**_DEFAULTS, **options})
    _require_uncertainty(runs.model)
    return _quality(runs, names, sets)


def _prepare(
    data,
    model,
    task,
    visible_sets,
    max_sets_per_count,
    split,
    n_samples,
    seed,
    leave=0,
    train=None,
    test=None,
):
    """The completions of the evaluation rows, the modalities and the visible sets (by default
    every subset leaving at least ``leave`` modalities hidden, at least one modality seen)."""
    check_optional_count(max_sets_per_count, "max_sets_per_count")
    check_optional_count(n_samples, "n_samples", minimum=0)
    batch, prom3e = _eval_rows(data, model, task, split, seed, train=train, test=test)
    names = [m for m in prom3e.modalities if m in batch.embeddings and batch.present[m].any()]
    if visible_sets is None:
        sizes = set(range(1, max(len(names) - leave, 1) + 1))
        sets = _default_sets(names, max_sets_per_count, seed, sizes=sizes)
    else:
        sets = [parse_modalities(s, names) for s in visible_sets]
    return _Completions(prom3e, batch, n_samples=n_samples, seed=seed), names, sets


def _require_uncertainty(prom3e: Any) -> None:
    if not has_uncertainty_model(prom3e):
        raise MissingUncertaintyModelError(
            CALIBRATE_HINT.replace(", so only sigma_l1 is shown", "")
        )


def next_modality(
    model: Any,
    data: TableLike,
    *,
    target: str | None = None,
    seed: int = 0,
    visible_sets: Sequence[Sequence[str] | str] | None = None,
    max_sets_per_count: int | None = 10,
    split: str | np.ndarray | None = "published",
    n_samples: int = 0,
) -> dict[str, Any]:
    """Which missing modality to add next, chosen by the uncertainty model, against chance.

    For each row and visible set, the missing modalities the row has (other than ``target``) are
    ranked by how much adding each would reduce the expected error of ``target``'s completion
    (the uncertainty model's prediction with the candidate's real embedding added, against
    without); the top one is chosen. ``rate``: how often the choice is the candidate whose
    addition really gave the lowest observed error (1 - cosine to the truth);
    ``random_rate``: the exact expectation of a random choice (mean of 1 / #candidates);
    ``random_draw_rate``: a seeded random draw. Only rows with at least 2 candidates count
    (``trivial_rows`` says how many had one); also per target (``by_target``) and per visible
    set (``by_set``). ``target=None``: every modality in turn. Visible sets default to every
    subset leaving at least two candidates (at most ``max_sets_per_count`` of each size).
    Raises :class:`~ecomodal.errors.MissingUncertaintyModelError` without an uncertainty model.
    """
    runs, names, sets = _prepare(
        data, model, "next_modality", visible_sets=visible_sets,
        max_sets_per_count=max_sets_per_count, split=split, n_samples=n_samples, seed=seed,
        leave=3,
    )  # fmt: skip
    _require_uncertainty(runs.model)
    targets = names if target is None else parse_modalities(target, names)
    return {"targets": list(targets), **_choice(runs, names, sets, targets, seed)}


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
    text = [
        f"Mean sigma_l1 by number of visible modalities: {result['mean_by_count']}. Spearman "
        f"correlation of sigma_l1 with completion error: {result['sigma_error_spearman']:.3f}."
    ]
    quality = result.get("expected_error")
    if quality is None:
        text.append(result.get("calibrate", CALIBRATE_HINT))
    elif quality.get("pairs"):
        rows, more_text, more_figures = _expected_error_parts(quality, result)
        text.extend(more_text)
        figures = [*more_figures, *figures]
    return Section("Uncertainty and informativeness", text, rows, figures)


def _expected_error_parts(quality: Mapping[str, Any], result: Mapping[str, Any]):
    """Table rows, paragraphs and figures of a calibrated model's expected error."""
    pooled = quality["pooled"]
    rows = [{"pair": name, **entry} for name, entry in quality["pairs"].items()]
    chains = quality["chains"]
    failed = [f"{s['from']} -> {s['to']}" for s in chains["steps"] if not s["holds"]]
    text = [
        f"Expected error (uncertainty model) against the observed error 1 - cosine, per (visible "
        f"set > completed modality) pair: mean Spearman {quality['mean_spearman']:.3f} (lowest "
        f"{quality['min_spearman']:.3f}; sigma_l1: {quality['mean_sigma_spearman']:.3f}); "
        f"pooled {pooled['expected_error_spearman']:.3f} (sigma_l1 "
        f"{pooled['sigma_error_spearman']:.3f}). Mean expected error "
        f"{pooled['mean_expected_error']:.3f}, observed {pooled['mean_observed_error']:.3f}; "
        f"90% intervals cover {100 * pooled['coverage_90']:.1f}% of rows.",
        f"Mean expected error falls strictly along every nested step: {chains['all_hold']} "
        f"({len(chains['steps'])} steps, {chains['num_chains']} chains"
        + (f"; not along {', '.join(failed)}" if failed else "")
        + ").",
    ]
    choice = result.get("next_modality_choice")
    if choice:
        text.append(
            f"Next modality to add, chosen by the largest drop of expected error: right "
            f"{choice['rate']:.3f} of the time against {choice['random_rate']:.3f} for a random "
            f"choice (seeded draw {choice['random_draw_rate']:.3f}), {choice['rows']} "
            f"row-target cases. {choice['note']}"
        )
    curve = quality["reliability"]
    figures = [
        reliability_diagram(
            {"all pairs": (curve["expected"], curve["observed"])},
            title="Reliability: observed vs expected error by decile",
        ),
        bar_chart(
            {
                "expected error": {
                    k: v["expected_error_spearman"] for k, v in quality["pairs"].items()
                },
                "sigma_l1": {k: v["sigma_error_spearman"] for k, v in quality["pairs"].items()},
            },
            title="Spearman with the observed error, per pair",
            ylabel="Spearman",
        ),
    ]
    return rows, text, figures


@register_task(
    name="uncertainty",
    description=(
        "ProM3E's sigma_l1 per visible set, the next modality to add, sigma vs error; with an "
        "uncertainty model, expected error vs observed, 90% coverage, reliability and chains."
    ),
    section=_section,
    needs_model=True,
    order=50,
)
def _run(context: EvalContext) -> dict[str, Any]:
    return uncertainty(context.table_rows, context.model, seed=context.seed)
