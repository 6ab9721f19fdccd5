"""The synthetic quickstart: ProM3E end to end on the synthetic benchmark with known truth.

Builds the synthetic table, trains ProM3E, completes the held-out rows and reports how well the
model completes masked modalities against simple baselines and how its uncertainty falls as
modalities are added. A second run reuses the table and the finished training. The real-data
quickstart (``ecomodal quickstart``) is :mod:`ecomodal.quickstart`.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from ecomodal.data.synthetic import SyntheticConfig, make_synthetic, to_batch
from ecomodal.eval.completion import evaluate_completion, sigma_by_visible_count
from ecomodal.inference import complete_table
from ecomodal.io.atomic import atomic_path
from ecomodal.io.writer import write_embeddings
from ecomodal.models.factory import load_model
from ecomodal.training.prom3e import train_prom3e

log = logging.getLogger(__name__)

#: A ProM3E small enough to train in minutes on two CPU cores.
QUICKSTART_MODEL = {"embed_dim": 256, "heads": 4, "mlp_dim": 512, "depth": 1, "dropout": 0.1}
#: Training mask of the quickstart: 1 to 5 visible modalities, equally often. The published mask
#: (1 visible with p=0.9, else 2) never shows the model 3 or more modalities, and with it the mean
#: sigma_l1 does not fall as modalities are added (measured: 303.93, 303.97, 304.31 for 1, 2, 3);
#: with every size seen in training it falls at each step, at the same completion quality.
QUICKSTART_VISIBLE_COUNTS = (1, 2, 3, 4, 5)
QUICKSTART_VISIBLE_PROBS = (0.2, 0.2, 0.2, 0.2, 0.2)


def run_synthetic_quickstart(
    out: str | Path,
    *,
    n: int = 12_000,
    epochs: int = 40,
    seed: int = 0,
    n_species: int = 100,
    batch_size: int = 256,
    lr: float = 1e-3,
    model_config: dict[str, Any] | None = None,
    show_progress: bool = True,
) -> dict[str, Any]:
    """Run the synthetic quickstart into ``out`` and return (and write) its metrics."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    data = make_synthetic(n, config=SyntheticConfig(n_species=n_species), seed=seed)
    table_path = out / "synthetic.parquet"
    if not table_path.is_file():
        write_embeddings(table_path, to_batch(data))
    test = data.split("test")
    train = data.split("train")
    test_path = out / "synthetic_test.parquet"
    if not test_path.is_file():
        write_embeddings(test_path, to_batch(test))

    result = train_prom3e(
        table_path,
        out / "run",
        epochs=epochs,
        batch_size=batch_size,
        seed=seed,
        lr=lr,
        t0=max(epochs, 1),
        model_config=model_config or QUICKSTART_MODEL,
        visible_counts=QUICKSTART_VISIBLE_COUNTS,
        visible_probs=QUICKSTART_VISIBLE_PROBS,
        # The synthetic benchmark checks ProM3E itself against the published criteria.
        calibrate=False,
        show_progress=show_progress,
    )
    model = load_model(result.best_dir)

    completion = evaluate_completion(
        model, test.embeddings, test.present, train.embeddings, train.present, seed=seed
    )
    sigma = sigma_by_visible_count(model, test.embeddings, test.present, seed=seed)
    summary_complete = complete_table(
        model,
        test_path,
        out / "completed_test.parquet",
        n_samples=0,
        seed=seed,
        show_progress=show_progress,
    )
    average = completion["average"]
    best_baseline_cosine = max(average["mean_cosine"], average["nn_cosine"])
    best_baseline_r1 = max(average["mean_r1"], average["nn_r1"])
    counts = sorted(sigma)
    summary = {
        "completion_cosine": {
            "prom3e": round(average["model_cosine"], 4),
            "mean_of_visible": round(average["mean_cosine"], 4),
            "nearest_neighbour": round(average["nn_cosine"], 4),
        },
        "completion_r1": {
            "prom3e": round(average["model_r1"], 4),
            "mean_of_visible": round(average["mean_r1"], 4),
            "nearest_neighbour": round(average["nn_r1"], 4),
        },
        "beats_best_baseline": bool(
            average["model_cosine"] > best_baseline_cosine
            and average["model_r1"] > best_baseline_r1
        ),
        "mean_sigma_l1_by_visible_count": {str(k): round(sigma[k], 3) for k in counts},
        "sigma_falls_with_more_modalities": bool(
            all(sigma[a] > sigma[b] for a, b in zip(counts, counts[1:], strict=False))
        ),
        "best_val_loss": round(result.best_val_loss, 4),
        "best_epoch": result.best_epoch,
    }
    metrics = {
        "summary": summary,
        "completion": completion,
        "sigma_l1_by_visible_count": sigma,
        "config": {
            "n": n,
            "epochs": epochs,
            "seed": seed,
            "n_species": n_species,
            "batch_size": batch_size,
            "lr": lr,
            "model": model_config or QUICKSTART_MODEL,
            "visible_counts": list(QUICKSTART_VISIBLE_COUNTS),
            "visible_probs": list(QUICKSTART_VISIBLE_PROBS),
            "test_rows": len(test),
            "train_rows": len(train),
        },
        "outputs": {
            "model": str(result.best_dir),
            "completed_test": str(summary_complete.path),
            "training_metrics": str(result.metrics_path),
        },
    }
    with atomic_path(out / "metrics.json") as tmp:
        tmp.write_text(json.dumps(metrics, indent=2, default=_json_default) + "\n")
    return metrics


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
