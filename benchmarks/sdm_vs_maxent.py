"""Embedding SDMs against elapid's Maxent on the real ``ariolimax`` data shipped with elapid.

Data: ``elapid/data/ariolimax.gpkg`` (banana slugs, California): 1,595 presences and 4,990
background points in EPSG:32610, reprojected here to EPSG:4326 for lat/lon, with 6 covariates
(surface temperature, LAI and cloud cover, mean and SD).

Models, all scored on the same folds (stratified random K-fold and spatial-block K-fold):

- ``embedding-sdm[geoclip]``: :class:`EmbeddingSDM` on GeoCLIP location embeddings (512-d,
  pretrained weights bundled in the ``geoclip`` package) of each point.
- ``embedding-sdm[era5-covariates]``: the same on the offline covariate stack sampled at each
  point (elevation + 14 ERA5 bioclim variables at 0.25 degrees, z-scored; the raw covariate values,
  since no pretrained env encoder is available offline).
- ``embedding-sdm[sinr-random]``: the same covariates through a SINR residual MLP env encoder
  (512 wide, 4 residual layers) with seeded *random, untrained* weights, i.e. random nonlinear
  features of the covariates (the published ``MVRL/ecoclim`` weights are not available offline).
- ``embedding-sdm[geoclip+era5-covariates]``, ``embedding-sdm[geoclip+sinr-random]``: GeoCLIP and
  covariate features concatenated.
- ``embedding-sdm[gpkg-covariates]``: the same classifier on the gpkg's own 6 covariates (a
  control: Maxent's inputs with the embedding SDM's classifier).
- ``maxent[gpkg-covariates]``: elapid's ``MaxentModel`` (default settings) on the 6 covariates.

    python benchmarks/sdm_vs_maxent.py [--max-points N] [--folds 5] [--block-size 1.0]
        [--classifier logistic] [--C 0.1] [--seed 0] [--json benchmarks/results-sdm_vs_maxent.json]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import platform
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ecomodal.data.splits import random_folds, spatial_block_folds
from ecomodal.maps.sdm import EmbeddingSDM, cross_validate_sdm

GPKG_COVARIATES = (
    "SurfaceTempMean",
    "SurfaceTempStdv",
    "LAIMean",
    "LAIStdv",
    "CloudCoverMean",
    "CloudCoverStdv",
)
FEATURE_SETS = (
    "geoclip",
    "era5-covariates",
    "sinr-random",
    "geoclip+era5-covariates",
    "geoclip+sinr-random",
    "gpkg-covariates",
)
DEFAULT_JSON = Path(__file__).with_name("results-sdm_vs_maxent.json")


def ariolimax_path() -> Path:
    """Path of ``ariolimax.gpkg`` inside the installed elapid package."""
    spec = importlib.util.find_spec("elapid")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("This benchmark needs elapid: `pip install elapid`.")
    path = Path(spec.submodule_search_locations[0], "data", "ariolimax.gpkg")
    if not path.is_file():
        raise FileNotFoundError(f"The installed elapid has no {path}.")
    return path


def load_ariolimax(max_points: int | None = None, seed: int = 0):
    """The ariolimax points as a DataFrame: ``lat``, ``lon`` (EPSG:4326), ``presence`` (1/0) and
    the 6 covariates. ``max_points`` keeps a seeded random subset with the same presence share."""
    import geopandas as gpd

    frame = gpd.read_file(ariolimax_path()).to_crs(epsg=4326)
    frame["lat"], frame["lon"] = frame.geometry.y, frame.geometry.x
    frame = frame.drop(columns="geometry")
    if max_points is not None and max_points < len(frame):
        rng = np.random.default_rng(seed)
        share = max_points / len(frame)
        keep = []
        for label in (1, 0):
            rows = np.flatnonzero(frame["presence"].to_numpy() == label)
            keep.append(rng.choice(rows, max(2, round(len(rows) * share)), replace=False))
        frame = frame.iloc[np.sort(np.concatenate(keep))]
    return frame.reset_index(drop=True)[["lat", "lon", "presence", *GPKG_COVARIATES]]


def random_sinr_features(lat: np.ndarray, lon: np.ndarray, seed: int = 0) -> np.ndarray:
    """Embeddings [N, 512] of a seeded, untrained SINR env encoder over the offline covariates,
    loaded through ``load_encoder("env", "local-dir:...")`` from a checkpoint written here."""
    import tempfile

    import torch

    from ecomodal.encoders import load_encoder
    from ecomodal.encoders.environment import save_environment_encoder
    from ecomodal.geo.covariates import DEFAULT_BANDS
    from ecomodal.models.sinr import SINRResidualMLP

    torch.manual_seed(seed)
    model = SINRResidualMLP(num_inputs=len(DEFAULT_BANDS), num_filts=512, depth=4).eval()
    with tempfile.TemporaryDirectory() as folder:
        checkpoint = save_environment_encoder(
            model, Path(folder) / "env", covariate_bands=DEFAULT_BANDS
        )
        encoder = load_encoder("env", f"local-dir:{checkpoint}", covariates="default")
        return encoder.encode(lat=lat, lon=lon)


def build_features(
    frame, names: Sequence[str] = FEATURE_SETS, seed: int = 0
) -> dict[str, np.ndarray]:
    """Feature matrices [N, D] for each named feature set (see the module docstring)."""
    unknown = sorted(set(names) - set(FEATURE_SETS))
    if unknown:
        raise ValueError(f"Unknown feature sets {unknown}; expected some of {FEATURE_SETS}.")
    lat, lon = frame["lat"].to_numpy(), frame["lon"].to_numpy()
    parts: dict[str, np.ndarray] = {}
    if any("geoclip" in name for name in names):
        from ecomodal.encoders import load_encoder

        parts["geoclip"] = load_encoder("loc", "geoclip").encode(lat=lat, lon=lon)
    if any("era5" in name for name in names):
        from ecomodal.geo.covariates import CovariateStack

        parts["era5-covariates"] = CovariateStack.open("default").sample(lat, lon)
    if any("sinr-random" in name for name in names):
        parts["sinr-random"] = random_sinr_features(lat, lon, seed)
    parts["gpkg-covariates"] = frame[list(GPKG_COVARIATES)].to_numpy(dtype=np.float64)
    return {
        name: np.concatenate([parts[part] for part in name.split("+")], axis=1) for name in names
    }


def run_benchmark(
    frame,
    *,
    feature_sets: Sequence[str] = FEATURE_SETS,
    maxent: bool = True,
    n_folds: int = 5,
    block_size_deg: float = 1.0,
    classifier: str = "logistic",
    C: float = 0.1,
    seed: int = 0,
) -> dict:
    """Cross-validate every model on the same random and spatial-block folds.

    Returns ``{"conditions": ..., "folds": {cv: fold sizes}, "results": {cv: {model:
    {"auc"|"tss"|"boyce": {"mean", "sd", "n"}, "seconds": ...}}}}``.
    """
    y = frame["presence"].to_numpy().astype(np.int64)
    folds = {
        "random": random_folds(y, n_folds, seed),
        "spatial-block": spatial_block_folds(
            frame["lat"].to_numpy(), frame["lon"].to_numpy(), block_size_deg, n_folds, seed
        ),
    }
    features = build_features(frame, feature_sets, seed)
    models = {
        f"embedding-sdm[{name}]": (EmbeddingSDM(classifier=classifier, C=C, seed=seed), X)
        for name, X in features.items()
    }
    if maxent:
        from elapid import MaxentModel

        gpkg = frame[list(GPKG_COVARIATES)].to_numpy(dtype=np.float64)
        models["maxent[gpkg-covariates]"] = (MaxentModel(random_state=seed, n_cpus=1), gpkg)
    results: dict[str, dict] = {}
    for cv_name, fold_index in folds.items():
        results[cv_name] = {}
        for model_name, (model, X) in models.items():
            start = time.perf_counter()
            summary = cross_validate_sdm(model, X, y, fold_index).summary()
            results[cv_name][model_name] = {
                "auc": summary["auc"],
                "tss": summary["tss"],
                "boyce": summary["boyce"],
                "seconds": round(time.perf_counter() - start, 2),
            }
    return {
        "conditions": {
            "data": "elapid ariolimax.gpkg (reprojected EPSG:32610 -> EPSG:4326)",
            "n_points": len(frame),
            "n_presence": int(y.sum()),
            "n_folds": n_folds,
            "block_size_deg": block_size_deg,
            "classifier": classifier,
            "C": C,
            "seed": seed,
            "sd": "sample standard deviation over folds (ddof=1)",
            "machine": f"{platform.machine()} CPU, shared with other jobs (timings are noisy)",
        },
        "folds": {name: np.bincount(index).tolist() for name, index in folds.items()},
        "results": results,
    }


def format_table(report: dict) -> str:
    """AUC and TSS (mean +/- sd over folds) side by side for each model and CV scheme."""
    cvs = list(report["results"])
    models = list(report["results"][cvs[0]])
    width = max(len(name) for name in models)
    head = f"{'model':<{width}}" + "".join(
        f" | {cv + ' AUC':>17} | {cv + ' TSS':>17}" for cv in cvs
    )
    lines = [head, "-" * len(head)]
    for model in models:
        cells = []
        for cv in cvs:
            for metric in ("auc", "tss"):
                value = report["results"][cv][model][metric]
                cells.append(f"{value['mean']:.3f} +/- {value['sd']:.3f}".rjust(17))
        lines.append(f"{model:<{width}}" + "".join(f" | {cell}" for cell in cells))
    return "\n".join(lines)


def write_report(report: dict, path: str | Path) -> Path:
    """Write the report as JSON, atomically."""
    from ecomodal.io.atomic import atomic_path

    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(report, indent=2) + "\n")
    return Path(path)


def main(argv: Sequence[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-points", type=int, default=None, help="seeded stratified subset")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--block-size", type=float, default=1.0, help="block side in degrees")
    parser.add_argument("--classifier", default="logistic")
    parser.add_argument("--C", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-maxent", action="store_true")
    parser.add_argument("--json", default=str(DEFAULT_JSON))
    args = parser.parse_args(argv)
    frame = load_ariolimax(args.max_points, args.seed)
    report = run_benchmark(
        frame,
        maxent=not args.no_maxent,
        n_folds=args.folds,
        block_size_deg=args.block_size,
        classifier=args.classifier,
        C=args.C,
        seed=args.seed,
    )
    print(format_table(report))
    write_report(report, args.json)
    print(f"wrote {args.json}")
    return report


if __name__ == "__main__":
    main()
