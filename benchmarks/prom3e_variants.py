"""ProM3E training variants on the quickstart's table, one change at a time.

Trains ProM3E with the quickstart's settings (``ecomodal.quickstart``: its model size, 30 epochs,
batch 256, lr 1e-3, visible counts 1, 2, 3 with equal probabilities, seed 0) on loc, env and sat,
changing one thing per run: the published settings (per-row noise, KL weight 1e-3, every modality
reconstructed), per-dimension noise, KL weight 1e-4, masked-only reconstruction. For each it
reports the best epoch and validation loss and, on the test rows (``split == "test"``), the mean
cosine to the truth of completing each ordered pair of modalities (one visible, ``n_samples=0``)
and Spearman(sigma_l1, 1 - cosine); for scale, the same cosine of the nearest training row in the
visible modality (its target embedding copied) and of the training mean.

    .venv/bin/python benchmarks/prom3e_variants.py --data /work/qs-final/embeddings.parquet \\
        --out /work/exp

Runs go to ``OUT/noise-NAME`` (an interrupted run resumes); results to
``benchmarks/results-prom3e_variants.json``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from scipy.stats import spearmanr

from ecomodal.eval.completion import completion_scores, nearest_neighbour
from ecomodal.io.reader import read_embeddings
from ecomodal.models import load_model
from ecomodal.quickstart import MODALITIES, QUICKSTART_MODEL, VISIBLE_COUNTS, VISIBLE_PROBS
from ecomodal.training.prom3e import train_prom3e
from ecomodal.vectors import normalise

#: Each variant: the train_prom3e keywords it changes from the published settings.
VARIANTS: dict[str, dict[str, object]] = {
    "published": {},
    "per-dimension": {"noise": "per-dimension"},
    "lambda-kl-1e-4": {"lambda_kl": 1e-4},
    "masked-only": {"masked_only": True},
}
RESULTS = Path(__file__).with_name("results-prom3e_variants.json")


def train(data: Path, out: Path, changes: dict[str, object], epochs: int) -> dict[str, object]:
    start = time.perf_counter()
    result = train_prom3e(
        data,
        out,
        epochs=epochs,
        batch_size=256,
        lr=1e-3,
        t0=epochs,
        seed=0,
        modalities=list(MODALITIES),
        model_config=QUICKSTART_MODEL,
        visible_counts=VISIBLE_COUNTS,
        visible_probs=VISIBLE_PROBS,
        show_progress=False,
        **changes,
    )
    return {
        "best_epoch": result.best_epoch,
        "best_val_loss": result.best_val_loss,
        "epochs": result.epochs,
        "train_seconds": round(time.perf_counter() - start, 1),
        "model": str(result.best_dir),
    }


def split_arrays(data: Path) -> dict[str, np.ndarray]:
    """[N, 3, D] normalised embeddings of the train and test rows, in the quickstart's order."""
    batch = read_embeddings(data).load(modalities=list(MODALITIES), columns=["split"])
    split = batch.column("split").astype(str)
    stacked = normalise(np.stack([batch.modality(m) for m in MODALITIES], axis=1))
    return {name: stacked[split == name] for name in ("train", "test")}


def score(model_dir: str, arrays: dict[str, np.ndarray]) -> dict[str, dict[str, float]]:
    """Per ordered pair: the model's cosine, Spearman(sigma_l1, 1 - cosine), and the lookup's
    and the training mean's cosine."""
    model = load_model(model_dir)
    test, train_rows = arrays["test"], arrays["train"]
    present = np.ones(train_rows.shape[:2], dtype=bool)
    pairs: dict[str, dict[str, float]] = {}
    for v, visible in enumerate(MODALITIES):
        out = model.complete(test, visible=[visible], n_samples=0)
        for t, target in enumerate(MODALITIES):
            if t == v:
                continue
            cosine = np.einsum("nd,nd->n", normalise(out.embeddings[:, t]), test[:, t])
            lookup = nearest_neighbour(test, [v], t, train_rows, present)
            mean = normalise(train_rows[:, t].mean(axis=0, keepdims=True))
            pairs[f"{visible}->{target}"] = {
                "cosine": float(cosine.mean()),
                "spearman_sigma_error": float(spearmanr(out.sigma_l1, 1 - cosine).statistic),
                "mean_sigma_l1": float(np.mean(out.sigma_l1)),
                "lookup_cosine": completion_scores(lookup, test[:, t])["cosine"],
                "train_mean_cosine": float((test[:, t] @ mean[0]).mean()),
            }
    pairs["average"] = {
        key: float(np.mean([p[key] for p in pairs.values()])) for key in next(iter(pairs.values()))
    }
    return pairs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, required=True, help="the quickstart's embeddings")
    parser.add_argument("--out", type=Path, required=True, help="folder of the training runs")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated names")
    parser.add_argument("--results", type=Path, default=RESULTS)
    args = parser.parse_args()
    arrays = split_arrays(args.data)
    results = json.loads(args.results.read_text()) if args.results.is_file() else {}
    results.setdefault("variants", {})
    results["settings"] = {
        "data": str(args.data),
        "epochs": args.epochs,
        "batch_size": 256,
        "lr": 1e-3,
        "seed": 0,
        "model": QUICKSTART_MODEL,
        "visible_counts": list(VISIBLE_COUNTS),
        "rows": {name: len(values) for name, values in arrays.items()},
    }
    for name in args.variants.split(","):
        changes = VARIANTS[name]
        print(f"{name}: training {changes or 'published settings'}", flush=True)
        run = train(args.data, args.out / f"noise-{name}", changes, args.epochs)
        run["changes"] = changes
        run["pairs"] = score(str(run["model"]), arrays)
        results["variants"][name] = run
        average = run["pairs"]["average"]
        print(
            f"{name}: best epoch {run['best_epoch']}, val loss {run['best_val_loss']:.4f}, "
            f"mean cosine {average['cosine']:.4f}, Spearman {average['spearman_sigma_error']:.3f}",
            flush=True,
        )
        args.results.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
