"""Completion quality against the simple baselines, on the quickstart's test split and on random land.

For the six ordered pairs of {loc, env, sat} (one modality visible, another completed): cosine to
the truth and R@10 among the test rows of four completions: the model's default (retrieval-
augmented when calibrated, as ``ecomodal complete`` gives it), ProM3E alone (``neighbours=False``),
the nearest-neighbour lookup (the quickstart training row nearest in the visible modality, its
embedding copied) and the constant training mean. Two test sets: the quickstart's spatial test split
(reference rows = ``split != "test"``, the rows the calibrated bank holds) and every row of a random-land table (training rows: the
quickstart table's). ``wins`` per pair: the default beats the lookup on cosine and on R@10 and beats
the training mean on cosine (the issue's bar).

The run's model is used as it is when calibrated; otherwise a copy (under ``--work``) is calibrated
on the quickstart table first (``ecomodal.training.calibrate``). The run folder is only read.

    python benchmarks/completion_quality.py --run quickstart-output \
        --random-land land/embeddings.parquet [--out benchmarks/results-completion_quality.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ecomodal.data.splits import make_split
from ecomodal.eval.common import model_inputs
from ecomodal.eval.completion import (
    REPORTED,
    closer_counts,
    evaluate_completion,
    nearest_neighbour,
)
from ecomodal.io.calibration import has_calibration
from ecomodal.io.reader import as_batch
from ecomodal.models.factory import load_model

MODALITIES = ("loc", "env", "sat")


def calibrated_model(model_dir: Path, table: Path, work: Path) -> tuple[Any, dict[str, Any]]:
    """The run's model if calibrated, else a calibrated copy under ``work``."""
    if has_calibration(model_dir):
        return load_model(f"local-dir:{model_dir}"), {
            "calibrated_by": "the run",
            "folder": str(model_dir),
        }
    from ecomodal.training.calibrate import calibrate

    copy = work / "model"
    if copy.exists():
        shutil.rmtree(copy)
    shutil.copytree(model_dir, copy)
    start = time.perf_counter()
    result = calibrate(f"local-dir:{copy}", table, split="val")
    info = {
        "calibrated_by": "this benchmark (a copy of the run's model, split val)",
        "folder": str(copy),
        "seconds": round(time.perf_counter() - start, 1),
        "neighbours": result.report.get("neighbours"),
        "calibration_rows": result.report.get("calibration_rows"),
    }
    return load_model(f"local-dir:{copy}"), info


def scored(
    model: Any, test: Any, train: Any, n_samples: int, seed: int
) -> dict[str, dict[str, Any]]:
    """Per pair ``"loc->env"``: rows, the four completions' cosine and R@10, and the wins."""
    emb, present = model_inputs(test, model)
    ref, ref_present = model_inputs(train, model)
    raw = evaluate_completion(
        model,
        emb,
        present,
        ref,
        ref_present,
        visible_sets=[[m] for m in MODALITIES],
        n_samples=n_samples,
        seed=seed,
    )
    pairs: dict[str, dict[str, Any]] = {}
    for pair, entry in raw.items():
        if pair == "average":
            continue
        out: dict[str, Any] = {"rows": int(entry["rows"])}
        for key, _ in REPORTED:
            out[key] = {
                "cosine": round(entry[f"{key}_cosine"], 4),
                "r10": round(entry[f"{key}_r10"], 4),
            }
        out["wins"] = {
            "cosine_vs_lookup": bool(entry["model_cosine"] > entry["nn_cosine"]),
            "r10_vs_lookup": bool(entry["model_r10"] > entry["nn_r10"]),
            "cosine_vs_mean": bool(entry["model_cosine"] > entry["train_mean_cosine"]),
        }
        out["wins"]["all"] = all(out["wins"].values())
        pairs[pair] = out
    for pair, interval in paired_differences(
        model, emb, present, ref, ref_present, n_samples, seed
    ):
        pairs[pair]["default_minus_lookup"] = interval
    return pairs


def paired_differences(
    model: Any, emb, present, ref, ref_present, n_samples: int, seed: int, resamples: int = 2000
):
    """Per pair: the default's cosine and R@10 minus the lookup's, with a 95% paired bootstrap
    interval over the test rows (each row's hit is scored among all the rows' truths, once; the
    bootstrap resamples rows). An interval that straddles 0 means the test rows cannot tell the
    two apart."""
    names = list(model.modalities)
    rng = np.random.default_rng([seed, 31])
    for visible in MODALITIES:
        v = names.index(visible)
        for target in MODALITIES:
            t = names.index(target)
            rows = present[:, v] & present[:, t]
            if target == visible or rows.sum() < 2:
                continue
            done = model.complete(
                emb[rows], visible=[visible], n_samples=n_samples, seed=seed, present=present[rows]
            )
            lookup = nearest_neighbour(emb[rows], [v], t, ref, ref_present)
            truth = emb[rows, t]
            default_cosine, default_closer = closer_counts(done.embeddings[:, t], truth)
            lookup_cosine, lookup_closer = closer_counts(lookup, truth)
            diffs = {}
            for metric, per_row in {
                "cosine": default_cosine - lookup_cosine,
                "r10": (default_closer < 10).astype(np.float64) - (lookup_closer < 10),
            }.items():
                draws = rng.integers(0, len(per_row), (resamples, len(per_row)))
                means = per_row.astype(np.float64)[draws].mean(1)
                diffs[metric] = {
                    "difference": round(float(per_row.mean()), 4),
                    "ci95": [round(float(q), 4) for q in np.quantile(means, [0.025, 0.975])],
                }
            yield f"{visible}->{target}", diffs


def summary(name: str, pairs: dict[str, dict[str, Any]]) -> str:
    won = [p for p, e in pairs.items() if e["wins"]["all"]]
    lost = {p: [k for k, v in e["wins"].items() if k != "all" and not v] for p, e in pairs.items()}
    lost = {p: v for p, v in lost.items() if v}
    mean = {k: np.mean([e[k]["cosine"] for e in pairs.values()]) for k, _ in REPORTED}
    text = (
        f"{name}: default wins {len(won)}/{len(pairs)} pairs; mean cosine default "
        f"{mean['model']:.3f}, ProM3E alone {mean['prom3e']:.3f}, lookup {mean['nn']:.3f}, "
        f"training mean {mean['train_mean']:.3f}"
    )
    return text + (f"; lost: {lost}" if lost else "")


def main() -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--run", type=Path, default=Path("quickstart-output"), help="quickstart folder"
    )
    parser.add_argument(
        "--random-land", type=Path, default=None, help="random-land embedding table"
    )
    parser.add_argument(
        "--out", type=Path, default=Path("benchmarks/results-completion_quality.json")
    )
    parser.add_argument("--work", type=Path, default=Path("bench-output/completion_quality"))
    parser.add_argument("--n-samples", type=int, default=5, help="as `ecomodal complete` (5)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    args.work.mkdir(parents=True, exist_ok=True)
    table = args.run / "embeddings.parquet"
    model, calibration = calibrated_model(args.run / "prom3e" / "best", table, args.work)

    batch = as_batch(table)
    labels = make_split(batch, "published")
    # The lookup draws on the same rows as the calibrated bank: every labelled (train + val) row.
    train = batch.select(labels != "test")
    sets = {"quickstart_spatial_test": batch.select(labels == "test")}
    if args.random_land is not None:
        sets["random_land"] = as_batch(args.random_land)
    results: dict[str, Any] = {
        "run": str(args.run),
        "random_land": None if args.random_land is None else str(args.random_land),
        "calibration": calibration,
        "n_samples": args.n_samples,
        "seed": args.seed,
        "train_rows": len(train),
        "machine": f"{platform.machine()}, {torch.get_num_threads()} torch threads",
        "sets": {},
        "summary": [],
    }
    for name, test in sets.items():
        start = time.perf_counter()
        pairs = scored(model, test, train, args.n_samples, args.seed)
        results["sets"][name] = {
            "test_rows": len(test),
            "seconds": round(time.perf_counter() - start, 1),
            "pairs": pairs,
            "all_wins": all(e["wins"]["all"] for e in pairs.values()),
        }
        results["summary"].append(summary(name, pairs))
    results["done"] = all(s["all_wins"] for s in results["sets"].values())
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    for line in results["summary"]:
        print(line)
    return results


if __name__ == "__main__":
    main()
