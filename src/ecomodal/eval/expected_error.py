"""Expected error against observed error: per (visible set, completed modality) pair, a
reliability table, the nested chains of visible sets, and the next-modality choice. The numbers
behind :mod:`ecomodal.eval.uncertainty` for a calibrated model; completions come from its
``_Completions`` runs."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

#: Coverage of the intervals the harness checks.
COVERAGE = 0.9


def _set_name(names: Sequence[str]) -> str:
    return "+".join(names)


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman rank correlation (NaN when either side is constant or fewer than 3 values)."""
    from scipy.stats import spearmanr

    if len(x) < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return float("nan")
    return float(spearmanr(x, y).statistic)


def _pair_entry(done: Any, target: int) -> tuple[dict[str, Any], np.ndarray] | None:
    expected, observed = done.expected[:, target], done.observed[:, target]
    ok = np.isfinite(expected) & np.isfinite(observed)
    if not ok.any():
        return None
    covered = done.covered[ok, target]
    entry = {
        "rows": int(ok.sum()),
        "expected_error_spearman": spearman(expected[ok], observed[ok]),
        "sigma_error_spearman": spearman(done.sigma[ok], observed[ok]),
        "mean_expected_error": float(expected[ok].mean()),
        "mean_observed_error": float(observed[ok].mean()),
        "coverage_90": float(np.nanmean(covered)),
    }
    return entry, ok


def reliability(expected: np.ndarray, observed: np.ndarray, bins: int = 10) -> dict[str, list]:
    """Mean expected and observed error by quantile bin (decile) of the expected error."""
    if len(expected) == 0:
        return {"expected": [], "observed": [], "rows": []}
    edges = np.quantile(expected, np.linspace(0, 1, bins + 1))
    which = np.clip(np.searchsorted(edges, expected, side="right") - 1, 0, bins - 1)
    out: dict[str, list] = {"expected": [], "observed": [], "rows": []}
    for b in range(bins):
        inside = which == b
        if inside.any():
            out["expected"].append(float(expected[inside].mean()))
            out["observed"].append(float(observed[inside].mean()))
            out["rows"].append(int(inside.sum()))
    return out


def _quality(runs: Any, names: Sequence[str], sets: Sequence[Sequence[str]]) -> dict:
    order = runs.order
    pairs: dict[str, Any] = {}
    pooled: dict[str, list[np.ndarray]] = {"expected": [], "observed": [], "sigma": [], "cov": []}
    mean_by_set: dict[str, float] = {}
    for visible in sets:
        done = runs(visible)
        values = done.expected[np.isfinite(done.expected)]
        if values.size:
            mean_by_set[_set_name(visible)] = float(values.mean())
        for target in names:
            if target in visible:
                continue
            t = order.index(target)
            made = _pair_entry(done, t)
            if made is None:
                continue
            entry, ok = made
            pairs[f"{_set_name(visible)}>{target}"] = entry
            pooled["expected"].append(done.expected[ok, t])
            pooled["observed"].append(done.observed[ok, t])
            pooled["sigma"].append(done.sigma[ok])
            pooled["cov"].append(done.covered[ok, t])
    if not pairs:
        return {"pairs": {}, "chains": _chains(runs, names, sets)}
    cat = {k: np.concatenate(v) for k, v in pooled.items()}
    rhos = np.array([p["expected_error_spearman"] for p in pairs.values()], dtype=float)
    sigma_rhos = np.array([p["sigma_error_spearman"] for p in pairs.values()], dtype=float)
    return {
        "pairs": pairs,
        "pooled": {
            "rows": int(len(cat["expected"])),
            "expected_error_spearman": spearman(cat["expected"], cat["observed"]),
            "sigma_error_spearman": spearman(cat["sigma"], cat["observed"]),
            "mean_expected_error": float(cat["expected"].mean()),
            "mean_observed_error": float(cat["observed"].mean()),
            "coverage_90": float(np.nanmean(cat["cov"])),
        },
        "mean_spearman": float(np.nanmean(rhos)) if np.isfinite(rhos).any() else float("nan"),
        "min_spearman": float(np.nanmin(rhos)) if np.isfinite(rhos).any() else float("nan"),
        "mean_sigma_spearman": (
            float(np.nanmean(sigma_rhos)) if np.isfinite(sigma_rhos).any() else float("nan")
        ),
        "reliability": reliability(cat["expected"], cat["observed"]),
        "mean_by_set": mean_by_set,
        "chains": _chains(runs, names, sets),
    }


def _chains(runs: Any, names: Sequence[str], sets: Sequence[Sequence[str]]) -> dict:
    """Each step A -> A + one modality between evaluated sets: for every modality still hidden
    after the step, its mean expected error over the rows that have the larger set, before and
    after; the step holds when every one falls strictly. Chains: the maximal paths of steps from
    a single modality (steps that leave nothing to complete are skipped)."""
    keys = {runs.key(v) for v in sets}
    steps: dict[tuple, dict[str, Any]] = {}
    for small in keys:
        for extra in names:
            if extra in small:
                continue
            big = runs.key([*small, extra])
            targets = [m for m in names if m not in big]
            if big not in keys or not targets:
                continue
            before, after = runs(small), runs(big)
            means = {}
            for target in targets:
                t = runs.order.index(target)
                ok = (
                    after.rows
                    & np.isfinite(before.expected[:, t])
                    & np.isfinite(after.expected[:, t])
                )
                if ok.any():
                    means[target] = [
                        float(before.expected[ok, t].mean()),
                        float(after.expected[ok, t].mean()),
                    ]
            if means:
                steps[(small, big)] = {
                    "from": _set_name(small),
                    "to": _set_name(big),
                    "mean_expected_error": means,
                    "holds": all(b < a for a, b in means.values()),
                }
    chains: list[dict[str, Any]] = []

    def walk(path: list[tuple[str, ...]]) -> None:
        nexts = [big for (small, big) in steps if small == path[-1]]
        if not nexts and len(path) > 1:
            held = all(steps[(a, b)]["holds"] for a, b in zip(path, path[1:], strict=False))
            chains.append({"chain": [_set_name(p) for p in path], "holds": held})
        for big in sorted(nexts):
            walk([*path, big])

    for start in sorted(k for k in keys if len(k) == 1):
        walk([start])
    listed = sorted(steps.values(), key=lambda s: (s["from"].count("+"), s["from"], s["to"]))
    return {
        "steps": listed,
        "chains": chains[:200],
        "num_chains": len(chains),
        "all_hold": bool(steps) and all(s["holds"] for s in listed),
    }


def _choice(
    runs: Any,
    names: Sequence[str],
    sets: Sequence[Sequence[str]],
    targets: Sequence[str],
    seed: int,
) -> dict[str, Any]:
    """The next-modality choice (see :func:`next_modality`) over ``sets`` and ``targets``."""
    rng = np.random.default_rng([seed, 11])
    order = runs.order
    totals = {"rows": 0, "hits": 0, "random_expected": 0.0, "random_hits": 0, "trivial_rows": 0}
    per_target: dict[str, dict[str, float]] = {}
    per_set: dict[str, dict[str, float]] = {}
    for visible in sets:
        base = runs(visible)
        for target in targets:
            if target in visible:
                continue
            t = order.index(target)
            candidates = [c for c in names if c not in visible and c != target]
            if not candidates:
                continue
            wanted = base.rows & runs.present[:, t]
            exp = np.full((len(wanted), len(candidates)), np.nan)
            obs = np.full_like(exp, np.nan)
            for j, extra in enumerate(candidates):
                more = runs([*visible, extra])
                exp[:, j] = more.expected[:, t]
                obs[:, j] = more.observed[:, t]
            usable = np.isfinite(exp) & np.isfinite(obs)
            count = usable.sum(1)
            totals["trivial_rows"] += int((wanted & (count == 1)).sum())
            rows = np.flatnonzero(wanted & (count >= 2))
            if not len(rows):
                continue
            exp_rows = np.where(usable[rows], exp[rows], np.inf)
            obs_rows = np.where(usable[rows], obs[rows], np.inf)
            chosen = exp_rows.argmin(1)
            best = obs_rows.min(1)
            hits = obs_rows[np.arange(len(rows)), chosen] <= best
            draws = np.array([rng.choice(np.flatnonzero(u)) for u in usable[rows]])
            random_hits = obs_rows[np.arange(len(rows)), draws] <= best
            random_expected = (1.0 / count[rows]).sum()
            for bucket in (
                totals,
                per_target.setdefault(target, dict.fromkeys(totals, 0)),
                per_set.setdefault(_set_name(visible), dict.fromkeys(totals, 0)),
            ):
                bucket["rows"] += len(rows)
                bucket["hits"] += int(hits.sum())
                bucket["random_hits"] += int(random_hits.sum())
                bucket["random_expected"] += float(random_expected)

    def rates(bucket: Mapping[str, float]) -> dict[str, Any]:
        n = bucket["rows"]
        return {
            "rows": int(n),
            "rate": bucket["hits"] / n if n else float("nan"),
            "random_rate": bucket["random_expected"] / n if n else float("nan"),
            "random_draw_rate": bucket["random_hits"] / n if n else float("nan"),
        }

    note = (
        "Rows with at least 2 candidate modalities only (a row seeing 1 of 3 modalities has 1 "
        f"candidate for a given target: trivial); {totals['trivial_rows']} row-target cases with "
        "a single candidate were left out."
    )
    return {
        **rates(totals),
        "trivial_rows": int(totals["trivial_rows"]),
        "note": note,
        "by_target": {k: rates(v) for k, v in per_target.items()},
        "by_set": {k: rates(v) for k, v in per_set.items()},
    }
