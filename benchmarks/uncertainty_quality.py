"""Does the uncertainty model's expected error predict the completion error? (issue 15)

On three test sets, for every (visible set of one or two modalities, completed modality) pair:
Spearman(expected_error, observed 1 - cosine) beside Spearman(sigma_l1, observed error), the
coverage of 90% intervals, the nested chains of mean expected error and the next-modality choice
against a random one (:mod:`ecomodal.eval.uncertainty`):

- ``quickstart``: the quickstart's spatial test split (``--quickstart DIR``: its
  ``embeddings.parquet`` and ``prom3e/best``; the model is COPIED and the copy calibrated on the
  table's val rows, train rows as neighbours), plus two quick baselines fitted on the val rows for
  scale: a ridge regression of the error on ProM3E's hidden tokens and the 50-nearest-neighbour
  average of val errors in the visible embeddings;
- ``random_land``: every row of a random-land table embedded like the quickstart (``--land``),
  completed by the same calibrated copy;
- ``synthetic``: known-truth data (:mod:`ecomodal.data.synthetic`, six modalities): a small ProM3E
  trained on its train rows, calibrated on its val rows, evaluated on its test rows.

Targets (issue 15): mean Spearman >= 0.5 and every pair >= 0.3, coverage 88-92%, chains strict,
the next-modality choice above chance. Writes ``benchmarks/results-uncertainty_quality.json``.

    python benchmarks/uncertainty_quality.py [--quickstart /work/qs-final] \
        [--land /work/exp/land/embeddings.parquet] [--workdir bench-uncertainty] [--calibrated DIR]
"""

from __future__ import annotations

import argparse
import itertools
import json
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np

from ecomodal.eval.uncertainty import expected_error_quality, next_modality, spearman
from ecomodal.io.reader import as_batch
from ecomodal.models import load_model
from ecomodal.training.calibrate import calibrate

RESULTS = Path(__file__).with_name("results-uncertainty_quality.json")


def small_sets(names: list[str]) -> list[list[str]]:
    """Every visible set of one or two modalities."""
    return [list(c) for size in (1, 2) for c in itertools.combinations(names, size)]


def summary(quality: dict[str, Any], choice: dict[str, Any] | None) -> dict[str, Any]:
    pairs = quality["pairs"]
    rhos = {k: v["expected_error_spearman"] for k, v in pairs.items()}
    return {
        "pairs": pairs,
        "pooled": quality["pooled"],
        "mean_spearman": quality["mean_spearman"],
        "min_spearman": quality["min_spearman"],
        "mean_sigma_spearman": quality["mean_sigma_spearman"],
        "pairs_below_0.3": sorted(k for k, v in rhos.items() if not v >= 0.3),
        "coverage_90_range": [
            min(v["coverage_90"] for v in pairs.values()),
            max(v["coverage_90"] for v in pairs.values()),
        ],
        "reliability": quality["reliability"],
        "mean_by_set": quality["mean_by_set"],
        "chains": quality["chains"],
        "next_modality": choice,
    }


def evaluate(model: Any, table: Any, split: str | None, seed: int = 0) -> dict[str, Any]:
    batch = as_batch(table)
    names = [m for m in model.modalities if m in batch.embeddings]
    sets = small_sets(names)
    quality = expected_error_quality(batch, model, visible_sets=sets, split=split, seed=seed)
    choice = next_modality(model, batch, visible_sets=sets, split=split, seed=seed)
    return summary(quality, choice)


def _errors(model: Any, stacked, present, rows, visible: list[str], target: int, hidden=False):
    done = model.complete(
        stacked[rows], visible=visible, n_samples=0, present=present[rows], return_hidden=hidden
    )
    truth = stacked[rows, target]
    cosine = (done.embeddings[:, target] * truth).sum(-1) / np.linalg.norm(truth, axis=-1)
    return 1 - cosine, done


def baselines(model: Any, table: Any, seed: int = 0) -> dict[str, Any]:
    """Ridge on the hidden tokens and the 50-NN average of val errors, fitted on val rows,
    Spearman with the observed error on the test rows, per (visible set, completed) pair."""
    from sklearn.linear_model import RidgeCV
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    batch = as_batch(table)
    order = list(model.modalities)
    stacked, present = batch.stack(order, dim=model.config.input_dim)
    stacked = np.nan_to_num(stacked.astype(np.float32))
    split = np.asarray(batch.column("split"), dtype=object)
    out: dict[str, Any] = {}
    for visible in small_sets(order):
        cols = [order.index(m) for m in visible]
        for target in order:
            if target in visible:
                continue
            t = order.index(target)
            has = present[:, cols].all(1) & present[:, t]
            fit, test = (
                np.flatnonzero(has & (split == "val")),
                np.flatnonzero(has & (split == "test")),
            )
            if len(fit) < 60 or len(test) < 3:
                continue
            err_fit, done_fit = _errors(model, stacked, present, fit, visible, t, hidden=True)
            err_test, done_test = _errors(model, stacked, present, test, visible, t, hidden=True)
            ridge = make_pipeline(StandardScaler(), RidgeCV(alphas=[0.1, 1, 10, 100, 1000]))
            ridge.fit(done_fit.hidden.reshape(len(fit), -1), err_fit)
            pred = ridge.predict(done_test.hidden.reshape(len(test), -1))
            query = stacked[test][:, cols].reshape(len(test), -1)
            keys = stacked[fit][:, cols].reshape(len(fit), -1)
            sims = query @ keys.T
            nearest = np.argpartition(-sims, 50, axis=1)[:, :50]
            knn = err_fit[nearest].mean(1)
            out[f"{'+'.join(visible)}>{target}"] = {
                "rows": len(test),
                "ridge_hidden_spearman": spearman(pred, err_test),
                "knn50_spearman": spearman(knn, err_test),
            }
    pairs = list(out.values())
    for key in ("ridge_hidden_spearman", "knn50_spearman"):
        values = [v[key] for v in pairs]
        out[f"mean_{key}"] = float(np.nanmean(values))
        out[f"range_{key}"] = [float(np.nanmin(values)), float(np.nanmax(values))]
    return out


def synthetic(workdir: Path, seed: int = 0) -> dict[str, Any]:
    from ecomodal.data.synthetic import SyntheticConfig, make_synthetic, to_batch
    from ecomodal.io.tables import write_embeddings
    from ecomodal.training.prom3e import train_prom3e

    root = workdir / "synthetic"
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    config = SyntheticConfig(n_species=30, dim=64, val_fraction=0.3, test_fraction=0.2)
    write_embeddings(
        root / "table.parquet", to_batch(make_synthetic(2000, config=config, seed=seed))
    )
    result = train_prom3e(
        root / "table.parquet", root / "run", epochs=8, batch_size=128, lr=1e-3, t0=8, seed=seed,
        model_config={"embed_dim": 64, "heads": 4, "mlp_dim": 128, "dropout": 0.1},
        visible_counts=(1, 2, 3, 4, 5), visible_probs=(0.2,) * 5, show_progress=False,
    )  # fmt: skip
    calibrate(result.best_dir, root / "table.parquet", max_rows_per_set=200, max_neighbours=5000)
    model = load_model(result.best_dir)
    out = {
        "rows": 2000,
        "model": "embed_dim 64, 8 epochs on the train rows; calibrated on val (200 rows per set)",
        **evaluate(model, root / "table.parquet", split="published", seed=seed),
    }
    out["known_truth_bound"] = known_truth_bound(model, config, seed, out)
    return out


def known_truth_bound(
    model: Any, config: Any, seed: int, measured: dict[str, Any], rows: int = 10_000,
    draws: int = 64,
) -> dict[str, Any]:  # fmt: skip
    """The highest Spearman(expected error, observed error) any uncertainty model could reach on
    synthetic rows, per pair, for the completions the model makes.

    The completed modality's truth holds randomness that nothing visible reveals: its own noise;
    for image and audio when neither is visible, the individual (the world fixes the species
    and the place, not the individual); and when only text is visible, the place too (text is
    the species and nothing else). Redrawing only that (``redraw_modality``) gives each row's mean
    rank of its error over the draws, m_i. Any predictor g built from what is visible has
    corr(rank g, rank error) <= sd(m) / sd(rank error): the part of the error g can follow is its
    conditional mean given the species, the place (unless redrawn), the individual where seen
    and the visible modalities' noise, a superset of what g sees. The bound is generous: it
    grants the predictor the species and place themselves. Measured on ``rows`` fresh
    observations of the benchmark's world (same seed; a precise estimate, where the benchmark's
    400 test rows give each Spearman a standard error of about 0.05)."""
    from ecomodal.data.synthetic import make_synthetic, redraw_modality, to_batch

    order = list(model.modalities)
    stacked, present = to_batch(make_synthetic(rows, config=config, seed=seed)).stack(
        order, dim=model.config.input_dim
    )
    redrawn: dict[tuple[str, bool, bool], np.ndarray] = {}
    pairs: dict[str, Any] = {}
    for visible in small_sets(order):
        done = model.complete(stacked, visible=visible, n_samples=0, seed=seed, present=present)
        sees_individual = bool({"image", "audio"} & set(visible))
        for target in order:
            if target in visible:
                continue
            t = order.index(target)
            key = (target, sees_individual, visible != ["text"])
            if key not in redrawn:
                redrawn[key] = redraw_modality(
                    rows, target, draws=draws, keep_individual=key[1], keep_place=key[2],
                    config=config, seed=seed, draw_seed=len(redrawn),
                )  # fmt: skip
            completion = done.embeddings[:, t]
            completion = completion / np.linalg.norm(completion, axis=-1, keepdims=True)
            error = 1 - (completion * stacked[:, t]).sum(-1)
            drawn = 1 - np.einsum("nd,rnd->rn", completion, redrawn[key])
            u, per_draw = _mid_rank(error, error), _mid_rank(error, drawn)
            m = per_draw.mean(0)
            # Var(m) overstates Var(E[rank | seen]) by the within-row variance / draws.
            signal = max(float(m.var() - per_draw.var(0).mean() / draws), 0.0)
            name = f"{'+'.join(visible)}>{target}"
            pairs[name] = {
                "bound": round(min(float(np.sqrt(signal / u.var())), 1.0), 4),
                "measured_spearman": measured["pairs"][name]["expected_error_spearman"],
            }
    below = sorted(k for k, v in pairs.items() if v["bound"] < 0.3)
    return {
        "rows": rows,
        "draws": draws,
        "pairs": pairs,
        "pairs_with_bound_below_0.3": below,
        "mean_bound": float(np.mean([v["bound"] for v in pairs.values()])),
    }


def _mid_rank(reference: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Each value's mid-rank among ``reference`` (sorted), as a fraction."""
    ordered = np.sort(reference)
    left = np.searchsorted(ordered, values, side="left")
    right = np.searchsorted(ordered, values, side="right")
    return (left + right) / (2 * len(ordered))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quickstart", type=Path, default=Path("quickstart-output"), help="quickstart folder"
    )
    parser.add_argument(
        "--land", type=Path, default=Path("random-land.parquet"),
        help="random-land table embedded with the run's encoders (skipped when absent)",
    )  # fmt: skip
    parser.add_argument("--workdir", type=Path, default=Path("bench-output/uncertainty"))
    parser.add_argument(
        "--calibrated", type=Path, default=None,
        help="An already calibrated copy of the quickstart model (skips calibrating one).",
    )  # fmt: skip
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {}
    table = args.quickstart / "embeddings.parquet"
    started = time.perf_counter()
    if args.calibrated is None:
        copy = args.workdir / "quickstart-model"
        shutil.rmtree(copy, ignore_errors=True)
        shutil.copytree(args.quickstart / "prom3e" / "best", copy)
        calibrate(copy, table)
    else:
        copy = args.calibrated
    calibrated_s = time.perf_counter() - started
    model = load_model(copy)
    results["quickstart"] = {
        "table": str(table),
        "split": "published (the quickstart's spatial split), test rows",
        "calibration_seconds": round(calibrated_s, 1),
        **evaluate(model, table, split="published"),
        "baselines": baselines(model, table),
    }
    print(json.dumps({k: results["quickstart"][k] for k in ("mean_spearman", "min_spearman")}))
    RESULTS.write_text(json.dumps(results, indent=1, default=float) + "\n")
    if args.land.exists():
        results["random_land"] = {
            "table": str(args.land),
            "rows": "all",
            **evaluate(model, args.land, split=None),
        }
        print(json.dumps({k: results["random_land"][k] for k in ("mean_spearman", "min_spearman")}))
        RESULTS.write_text(json.dumps(results, indent=1, default=float) + "\n")
    results["synthetic"] = synthetic(args.workdir)
    print(json.dumps({k: results["synthetic"][k] for k in ("mean_spearman", "min_spearman")}))
    RESULTS.write_text(json.dumps(results, indent=1, default=float) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
