"""Proof on real data: bind the ``env`` encoder to the pretrained GeoCLIP ``loc`` encoder.

Points: a seeded sample of the ``geoclip`` package's photo-location gallery
(``gps_gallery/coordinates_100K.csv``, real photo locations). Inputs: the offline covariate stack
(ERA5 2000-2025 bioclim + elevation, ``build_default_covariates()``) at each point. Targets: the
pretrained GeoCLIP location encoder (``load_encoder("loc", "geoclip")``). A SINR env encoder is
trained with TaxaBind's loss (random-location negatives, 0.4 / 0.6) on the training rows; on the
held-out test rows (random, or whole 10-degree cells with ``--split spatial``) each env embedding
queries the gallery of the test rows' loc embeddings: R@1 / R@10 against chance (k / N_gallery),
for the trained and the untrained (same seed, same initialisation) encoder.

    python benchmarks/bind_real_proof.py [--points 20000] [--epochs 8] [--split random]
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ecomodal.io.atomic import atomic_path

RESULTS = Path(__file__).resolve().parent / "results-bind_real_proof.json"


def gallery_coordinates() -> tuple[np.ndarray, np.ndarray]:
    """Latitudes and longitudes of the geoclip package's 100k photo-location gallery."""
    import importlib.util

    import pyarrow.csv as pv

    spec = importlib.util.find_spec("geoclip")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("The proof needs `pip install --no-deps geoclip==1.3.0`.")
    path = Path(spec.submodule_search_locations[0]) / "model/gps_gallery/coordinates_100K.csv"
    table = pv.read_csv(path)
    return table.column("LAT").to_numpy().astype(np.float64), table.column("LON").to_numpy().astype(
        np.float64
    )


def run_proof(
    out: str | Path,
    *,
    points: int = 20000,
    split: str = "random",
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
    epochs: int = 8,
    batch_size: int = 512,
    lr: float = 1e-3,
    seed: int = 0,
    show_progress: bool = False,
) -> dict[str, Any]:
    """Build the feature table in ``out``, train, and return the held-out figures."""
    from ecomodal.data.splits import spatial_block_split
    from ecomodal.encoders import load_encoder
    from ecomodal.geo.covariates import CovariateStack, build_default_covariates
    from ecomodal.io.tables import write_embeddings
    from ecomodal.training.bind import train_bind

    out = Path(out)
    lat, lon = gallery_coordinates()
    rng = np.random.default_rng(seed)
    pick = np.sort(rng.choice(len(lat), size=min(points, len(lat)), replace=False))
    lat, lon = lat[pick], lon[pick]
    stack = CovariateStack.open(build_default_covariates())
    started = time.perf_counter()
    env = stack.sample(lat, lon)
    loc = load_encoder("loc", "geoclip").encode(lat=lat, lon=lon)
    embed_s = time.perf_counter() - started
    if split == "spatial":
        labels = spatial_block_split(
            lat, lon, val_fraction=val_fraction, test_fraction=test_fraction, seed=seed
        )
    elif split == "random":
        labels = np.full(len(lat), "train", dtype=object)
        order = rng.permutation(len(lat))
        n_test, n_val = int(test_fraction * len(lat)), int(val_fraction * len(lat))
        labels[order[:n_test]], labels[order[n_test : n_test + n_val]] = "test", "val"
    else:
        raise ValueError(f"split must be 'random' or 'spatial'; got {split!r}.")
    table = write_embeddings(
        out / "gallery_env_loc.parquet",
        ids=[f"gps{i}" for i in pick],
        embeddings={"env": env, "loc": loc},
        columns={"lat": lat, "lon": lon, "split": np.asarray(labels).astype(str)},
    )
    started = time.perf_counter()
    result = train_bind(
        table,
        out / "run",
        modality="env",
        bind_to="loc",
        covariates=stack,
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        seed=seed,
        resume=False,
        show_progress=show_progress,
    )
    train_s = time.perf_counter() - started
    held = result.metrics

    def figures(entry: dict[str, Any]) -> dict[str, float]:
        return {
            "R@1": entry["R@1"],
            "R@10": entry["R@10"],
            "MRR": entry["MRR"],
            "R@10_over_chance": entry["R@10"] / entry["chance_R@10"],
        }

    trained, untrained = figures(held), figures(held["untrained"])
    return {
        "task": "env -> loc retrieval on held-out rows (query: env embedding; gallery: the "
        "test rows' GeoCLIP loc embeddings; match: the same row)",
        "points": int(len(lat)),
        "split": split,
        "rows": {s: int(np.sum(np.asarray(labels) == s)) for s in ("train", "val", "test")},
        "n_gallery": held["n_gallery"],
        "chance": {"R@1": held["chance_R@1"], "R@10": held["chance_R@10"]},
        "trained": trained,
        "untrained": untrained,
        "passes": trained["R@10_over_chance"] >= 10 and untrained["R@10_over_chance"] < 10,
        "best_epoch": result.best_epoch,
        "settings": {
            "epochs": epochs,
            "batch_size": batch_size,
            "negatives_per_batch": batch_size,
            "lr": lr,
            "seed": seed,
            "encoder": "SINR residual MLP (15 covariates -> 512), trained from scratch",
            "covariates": stack.band_names,
            "target": "GeoCLIP location encoder, geoclip 1.3.0 bundled weights",
        },
        "timing_s": {"embed_inputs": round(embed_s, 1), "train": round(train_s, 1)},
        "machine": f"{platform.processor() or platform.machine()}, "
        f"{torch.get_num_threads()} torch threads, CPU shared with other jobs",
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=20000)
    parser.add_argument("--split", choices=("random", "spatial"), default="random")
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work", type=Path, default=None, help="Folder for the table and run.")
    parser.add_argument("--json", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        report = run_proof(
            args.work or tmp,
            points=args.points,
            split=args.split,
            epochs=args.epochs,
            batch_size=args.batch_size,
            lr=args.lr,
            seed=args.seed,
        )
    previous = json.loads(args.json.read_text()) if args.json.is_file() else {}
    previous[args.split] = report
    with atomic_path(args.json) as tmp_json:
        tmp_json.write_text(json.dumps(previous, indent=2) + "\n")
    json.dump(report, sys.stdout, indent=2)
    print()


if __name__ == "__main__":
    main()
