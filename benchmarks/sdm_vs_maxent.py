"""Embedding SDMs against elapid's Maxent on the real ``ariolimax`` data shipped with elapid.

Data: ``elapid/data/ariolimax.gpkg`` (banana slugs, California): 1,595 presences and 4,990
background points in EPSG:32610, reprojected here to EPSG:4326 for lat/lon, with 6 covariates
(surface temperature, LAI and cloud cover, mean and SD).

Models, all scored on the same folds (stratified random K-fold and spatial-block K-fold):

- ``embedding-sdm[geoclip]``: :class:`EmbeddingSDM` on GeoCLIP location embeddings (512-d,
  pretrained weights bundled in the ``geoclip`` package) of each point.
- ``embedding-sdm[era5-covariates]``: the same on the offline covariate stack sampled at each
  point (elevation + 14 ERA5 bioclim variables at 0.25 degrees, z-scored; the raw covariate values).
- ``embedding-sdm[sinr-random]``: the same covariates through a SINR residual MLP env encoder
  (512 wide, 4 residual layers) with seeded *random, untrained* weights, i.e. random nonlinear
  features of the covariates (the published ``MVRL/ecoclim`` weights are not available offline).
- ``embedding-sdm[gpkg-covariates]``: the same classifier on the gpkg's own 6 covariates (a
  control: Maxent's inputs with the embedding SDM's classifier).
- With ``--run DIR`` (a finished quickstart output folder): ``embedding-sdm[bound-env]``, the
  run's env encoder (bound to GeoCLIP, ``DIR/bind-env/best``) at each point, and
  ``embedding-sdm[prom3e-hidden]``, the run's ProM3E hidden tokens with loc, env and sat visible
  (every token flattened, as the linear probe's ``prom3e-hidden`` features). Without ``--run``
  these sets are skipped, with a printed line saying so.
- Concatenations ``A+B`` of the above (see ``FEATURE_SETS`` and ``RUN_FEATURE_SETS``).
- ``maxent[gpkg-covariates]``: elapid's ``MaxentModel`` (default settings) on the 6 covariates.

Every embedding SDM picks its classifier and ``C`` inside each outer training fold by nested
cross-validation (:func:`select_params`): an inner spatial-block CV (``--inner-folds`` folds of
``--block-size`` blocks, seeded) on that training fold only, optionally on a seeded stratified
subsample of it (``--inner-max-points``); the outer test fold is never seen. The choice per outer
fold is recorded. Each model's per-fold AUCs are compared with Maxent's on the same folds
(:func:`paired_difference`: mean difference, its standard error and ``beats_maxent``).

    python benchmarks/sdm_vs_maxent.py [--run DIR] [--max-points N] [--folds 5]
        [--block-size 1.0] [--classifiers logistic] [--C-grid 0.001,0.01,0.1,1]
        [--inner-folds 3] [--inner-max-points 1500] [--seed 0]
        [--json benchmarks/results-sdm_vs_maxent.json]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import platform
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ecomodal.data.splits import random_folds, spatial_block_folds
from ecomodal.maps.sdm import (
    EmbeddingSDM,
    SDMCrossValidation,
    auc_roc,
    boyce_index,
    cross_validate_sdm,
    max_tss,
)

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
# Feature sets that need a finished quickstart run (--run).
RUN_FEATURE_SETS = (
    "bound-env",
    "prom3e-hidden",
    "bound-env+gpkg-covariates",
    "prom3e-hidden+gpkg-covariates",
    "geoclip+bound-env",
)
RUN_PARTS = ("bound-env", "prom3e-hidden")
C_GRID = (0.001, 0.01, 0.1, 1.0)
MAXENT = "maxent[gpkg-covariates]"
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


def run_features(frame, run: str | Path, names: Sequence[str] = RUN_PARTS) -> dict:
    """Features [N, D] of each point from the quickstart run in folder ``run``: ``bound-env``
    (the run's bound env encoder) and ``prom3e-hidden`` (its ProM3E hidden tokens with loc, env
    and sat visible, flattened as the linear probe flattens them)."""
    from ecomodal import load_model
    from ecomodal.quickstart import quickstart_encoders

    lat, lon = frame["lat"].to_numpy(), frame["lon"].to_numpy()
    encoders = quickstart_encoders(run)
    needed = ("loc", "env", "sat") if "prom3e-hidden" in names else ("env",)
    embedded = {name: encoders[name].encode(lat=lat, lon=lon) for name in needed}
    out = {}
    if "bound-env" in names:
        out["bound-env"] = embedded["env"]
    if "prom3e-hidden" in names:
        model = load_model(Path(run) / "prom3e" / "best")
        visible = ["loc", "env", "sat"]
        x = np.zeros((len(frame), len(model.modalities), model.config.input_dim), np.float32)
        for name in visible:
            x[:, model.modalities.index(name)] = embedded[name]
        done = model.complete(x, visible=visible, n_samples=0, return_hidden=True)
        out["prom3e-hidden"] = done.hidden.reshape(len(frame), -1)
    return out


def build_features(
    frame,
    names: Sequence[str] = FEATURE_SETS,
    seed: int = 0,
    run: str | Path | None = None,
) -> dict[str, np.ndarray]:
    """Feature matrices [N, D] for each named feature set (see the module docstring); the sets
    of ``RUN_FEATURE_SETS`` need ``run``, a finished quickstart output folder."""
    unknown = sorted(set(names) - set(FEATURE_SETS) - set(RUN_FEATURE_SETS))
    if unknown:
        raise ValueError(
            f"Unknown feature sets {unknown}; expected some of {FEATURE_SETS + RUN_FEATURE_SETS}."
        )
    wanted = {part for name in names for part in name.split("+")}
    if run is None and wanted & set(RUN_PARTS):
        raise ValueError(f"Feature sets with {sorted(wanted & set(RUN_PARTS))} need run=.")
    lat, lon = frame["lat"].to_numpy(), frame["lon"].to_numpy()
    parts: dict[str, np.ndarray] = {}
    if "geoclip" in wanted:
        from ecomodal.encoders import load_encoder

        parts["geoclip"] = load_encoder("loc", "geoclip").encode(lat=lat, lon=lon)
    if "era5-covariates" in wanted:
        from ecomodal.geo.covariates import CovariateStack

        parts["era5-covariates"] = CovariateStack.open("default").sample(lat, lon)
    if "sinr-random" in wanted:
        parts["sinr-random"] = random_sinr_features(lat, lon, seed)
    if wanted & set(RUN_PARTS):
        parts.update(run_features(frame, run, sorted(wanted & set(RUN_PARTS))))
    parts["gpkg-covariates"] = frame[list(GPKG_COVARIATES)].to_numpy(dtype=np.float64)
    return {
        name: np.concatenate([parts[part] for part in name.split("+")], axis=1) for name in names
    }


# ---------------------------------------------------------------------------- nested selection
def param_grid(
    classifiers: Sequence[str] = ("logistic",), C_grid: Sequence[float] = C_GRID
) -> list[dict]:
    """Every (classifier, C) to try; a random forest ignores C, so it is tried once."""
    return [
        {"classifier": name, "C": float(C)}
        for name in classifiers
        for C in (C_grid if name != "random_forest" else C_grid[:1])
    ]


def stratified_subsample(y: np.ndarray, max_points: int | None, seed: int) -> np.ndarray:
    """Sorted row indices of a seeded subsample of at most ``max_points`` rows that keeps the
    presence share (all rows when ``max_points`` is None or not smaller)."""
    if max_points is None or max_points >= len(y):
        return np.arange(len(y))
    rng = np.random.default_rng(seed)
    keep = [
        rng.choice(rows, max(2, round(len(rows) * max_points / len(y))), replace=False)
        for rows in (np.flatnonzero(y == 1), np.flatnonzero(y == 0))
    ]
    return np.sort(np.concatenate(keep))


def select_params(
    X: np.ndarray,
    y: np.ndarray,
    lat: np.ndarray,
    lon: np.ndarray,
    grid: Sequence[dict],
    *,
    inner_folds: int = 3,
    block_size_deg: float = 1.0,
    max_points: int | None = None,
    seed: int = 0,
) -> tuple[dict, list[float]]:
    """The :class:`EmbeddingSDM` parameters of ``grid`` with the best mean AUC in an inner
    spatial-block CV on these rows only (a training fold), and the inner AUC of each entry.

    The inner folds are ``block_size_deg`` blocks dealt with ``seed`` over a seeded stratified
    subsample of at most ``max_points`` rows. Ties go to the earlier entry of ``grid``.
    """
    rows = stratified_subsample(y, max_points, seed)
    folds = spatial_block_folds(lat[rows], lon[rows], block_size_deg, inner_folds, seed)
    # An inner fold whose blocks hold one class only joins another fold (blocks stay whole).
    both = [f for f in np.unique(folds) if len(np.unique(y[rows][folds == f])) == 2]
    if len(both) < 2:
        raise ValueError(
            f"Fewer than 2 of the {inner_folds} inner spatial-block folds hold both presences "
            "and background points; use fewer inner folds or smaller blocks."
        )
    folds = np.where(np.isin(folds, both), folds, both[0])
    scores = [
        cross_validate_sdm(EmbeddingSDM(seed=seed, **params), X[rows], y[rows], folds).summary()[
            "auc"
        ]["mean"]
        for params in grid
    ]
    return dict(grid[int(np.argmax(scores))]), scores


def nested_cross_validation(
    X: np.ndarray,
    y: np.ndarray,
    lat: np.ndarray,
    lon: np.ndarray,
    folds: np.ndarray,
    grid: Sequence[dict],
    **inner: Any,
) -> dict:
    """Outer CV over ``folds`` of an :class:`EmbeddingSDM` whose parameters are chosen in each
    training fold by :func:`select_params` (``inner`` are its keyword arguments; ``seed`` also
    seeds the model). Returns the metric summary, the per-fold AUCs and the choice per fold."""
    scores: list[dict] = []
    chosen: list[dict] = []
    for fold in np.unique(folds):
        train, test = folds != fold, folds == fold
        params, inner_auc = select_params(X[train], y[train], lat[train], lon[train], grid, **inner)
        model = EmbeddingSDM(seed=inner.get("seed", 0), **params).fit_labels(X[train], y[train])
        suitability = model.predict(X[test])
        tss, threshold = max_tss(y[test], suitability)
        is_presence = y[test] == 1
        scores.append(
            {
                "auc": auc_roc(y[test], suitability),
                "tss": tss,
                "tss_threshold": threshold,
                "boyce": boyce_index(suitability[is_presence], suitability[~is_presence]),
            }
        )
        chosen.append({"fold": int(fold), **params, "inner_auc": [round(a, 4) for a in inner_auc]})
    summary = SDMCrossValidation(folds=folds, per_fold=scores).summary()
    return {
        **{metric: summary[metric] for metric in ("auc", "tss", "boyce")},
        "auc_per_fold": [row["auc"] for row in scores],
        "chosen": chosen,
    }


def paired_difference(auc: Sequence[float], baseline: Sequence[float]) -> dict:
    """Mean of the per-fold differences ``auc - baseline``, its standard error (sample sd of the
    differences / sqrt(folds)) and ``beats_maxent``: the mean difference exceeds one SE."""
    diff = np.asarray(auc, dtype=np.float64) - np.asarray(baseline, dtype=np.float64)
    mean = float(diff.mean())
    se = float(diff.std(ddof=1) / np.sqrt(len(diff)))
    return {"mean_difference": mean, "se_difference": se, "beats_maxent": bool(mean > se)}


def run_benchmark(
    frame,
    *,
    feature_sets: Sequence[str] = FEATURE_SETS,
    run: str | Path | None = None,
    maxent: bool = True,
    n_folds: int = 5,
    block_size_deg: float = 1.0,
    classifiers: Sequence[str] = ("logistic",),
    C_grid: Sequence[float] = C_GRID,
    inner_folds: int = 3,
    inner_max_points: int | None = 1500,
    seed: int = 0,
) -> dict:
    """Cross-validate every model on the same random and spatial-block folds, the embedding SDMs
    with their classifier and C chosen inside each training fold (:func:`nested_cross_validation`).

    Returns ``{"conditions", "folds": {cv: fold sizes}, "results": {cv: {model: {"auc"|"tss"|
    "boyce": {"mean", "sd", "n"}, "auc_per_fold", "chosen" (embedding SDMs), "vs_maxent",
    "seconds"}}}, "summary": {cv: the best embedding SDM against Maxent}, "done_when"}``.
    """
    y = frame["presence"].to_numpy().astype(np.int64)
    lat, lon = frame["lat"].to_numpy(), frame["lon"].to_numpy()
    folds = {
        "random": random_folds(y, n_folds, seed),
        "spatial-block": spatial_block_folds(lat, lon, block_size_deg, n_folds, seed),
    }
    features = build_features(frame, feature_sets, seed, run)
    grid = param_grid(classifiers, C_grid)
    inner = {
        "inner_folds": inner_folds,
        "block_size_deg": block_size_deg,
        "max_points": inner_max_points,
        "seed": seed,
    }
    results: dict[str, dict] = {}
    for cv_name, fold_index in folds.items():
        results[cv_name] = {}
        if maxent:
            from elapid import MaxentModel

            start = time.perf_counter()
            gpkg = frame[list(GPKG_COVARIATES)].to_numpy(dtype=np.float64)
            cv = cross_validate_sdm(MaxentModel(random_state=seed, n_cpus=1), gpkg, y, fold_index)
            summary = cv.summary()
            results[cv_name][MAXENT] = {
                **{metric: summary[metric] for metric in ("auc", "tss", "boyce")},
                "auc_per_fold": [fold["auc"] for fold in cv.per_fold],
                "seconds": round(time.perf_counter() - start, 2),
            }
        for name, X in features.items():
            start = time.perf_counter()
            scores = nested_cross_validation(X, y, lat, lon, fold_index, grid, **inner)
            if maxent:
                baseline = results[cv_name][MAXENT]["auc_per_fold"]
                scores["vs_maxent"] = paired_difference(scores["auc_per_fold"], baseline)
            scores["seconds"] = round(time.perf_counter() - start, 2)
            results[cv_name][f"embedding-sdm[{name}]"] = scores
    report = {
        "conditions": {
            "data": "elapid ariolimax.gpkg (reprojected EPSG:32610 -> EPSG:4326)",
            "n_points": len(frame),
            "n_presence": int(y.sum()),
            "n_folds": n_folds,
            "block_size_deg": block_size_deg,
            "run": str(run) if run is not None else None,
            "selection": {
                "what": "classifier and C of each embedding SDM, by mean AUC of an inner "
                "spatial-block CV on the outer training fold only",
                "grid": grid,
                "inner_folds": inner_folds,
                "inner_block_size_deg": block_size_deg,
                "inner_max_points": inner_max_points,
            },
            "maxent": "elapid MaxentModel, default settings",
            "seed": seed,
            "sd": "sample standard deviation over folds (ddof=1)",
            "se_difference": "sample sd of the per-fold AUC differences / sqrt(folds)",
            "machine": f"{platform.machine()} CPU, shared with other jobs (timings are noisy)",
        },
        "folds": {name: np.bincount(index).tolist() for name, index in folds.items()},
        "results": results,
    }
    if maxent and features:
        report.update(best_against_maxent(results))
    return report


def best_against_maxent(results: dict) -> dict:
    """The embedding SDM with the best mean AUC per CV scheme against Maxent, and whether the
    issue's done-when holds: on spatial blocks it beats Maxent by more than one SE of the
    difference, on random folds by any margin."""
    summary = {}
    for cv_name, models in results.items():
        sdms = {name: row for name, row in models.items() if name.startswith("embedding-sdm")}
        best = max(sdms, key=lambda name: sdms[name]["auc"]["mean"])
        summary[cv_name] = {
            "best_embedding_sdm": best,
            "auc": sdms[best]["auc"]["mean"],
            "maxent_auc": models[MAXENT]["auc"]["mean"],
            **sdms[best]["vs_maxent"],
        }
    spatial, random = summary.get("spatial-block"), summary.get("random")
    holds = bool(spatial and random and spatial["beats_maxent"] and random["mean_difference"] > 0)
    return {"summary": summary, "done_when": holds}


def format_table(report: dict) -> str:
    """AUC and TSS (mean +/- sd over folds) and the AUC difference to Maxent (mean +/- SE, ``*``
    when it exceeds one SE) side by side for each model and CV scheme."""
    cvs = list(report["results"])
    models = list(report["results"][cvs[0]])
    width = max(len(name) for name in models)
    columns = ("AUC", "TSS", "dAUC vs maxent")
    head = f"{'model':<{width}}" + "".join(
        f" | {cv + ' ' + col:>28}" for cv in cvs for col in columns
    )
    lines = [head, "-" * len(head)]
    for model in models:
        cells = []
        for cv in cvs:
            row = report["results"][cv][model]
            for metric in ("auc", "tss"):
                cells.append(f"{row[metric]['mean']:.3f} +/- {row[metric]['sd']:.3f}")
            versus = row.get("vs_maxent")
            cells.append(
                f"{versus['mean_difference']:+.4f} +/- {versus['se_difference']:.4f}"
                + (" *" if versus["beats_maxent"] else "  ")
                if versus
                else ""
            )
        lines.append(f"{model:<{width}}" + "".join(f" | {cell:>28}" for cell in cells))
    for cv, best in report.get("summary", {}).items():
        lines.append(
            f"{cv}: best embedding SDM {best['best_embedding_sdm']} AUC {best['auc']:.4f} vs "
            f"maxent {best['maxent_auc']:.4f} (difference {best['mean_difference']:+.4f}, "
            f"SE {best['se_difference']:.4f})"
        )
    if "done_when" in report:
        lines.append(f"done-when holds: {report['done_when']}")
    return "\n".join(lines)


def write_report(report: dict, path: str | Path) -> Path:
    """Write the report as JSON, atomically."""
    from ecomodal.io.atomic import atomic_path

    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(report, indent=2) + "\n")
    return Path(path)


def main(argv: Sequence[str] | None = None) -> dict:
    from ecomodal.options import parse_list, parse_numbers

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", default=None, help="a finished quickstart output folder")
    parser.add_argument("--max-points", type=int, default=None, help="seeded stratified subset")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--block-size", type=float, default=1.0, help="block side in degrees")
    parser.add_argument("--features", default=None, help="comma list (default: every set)")
    parser.add_argument("--classifiers", default="logistic", help="comma list to choose from")
    parser.add_argument("--C-grid", default=",".join(map(str, C_GRID)), help="comma list of C")
    parser.add_argument("--inner-folds", type=int, default=3)
    parser.add_argument("--inner-max-points", type=int, default=1500)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-maxent", action="store_true")
    parser.add_argument("--json", default=str(DEFAULT_JSON))
    args = parser.parse_args(argv)
    names = parse_list(args.features) or list(FEATURE_SETS + RUN_FEATURE_SETS)
    if args.run is None:
        skipped = [name for name in names if set(name.split("+")) & set(RUN_PARTS)]
        if skipped:
            print(f"skipping {', '.join(skipped)}: they need --run DIR (a quickstart output)")
        names = [name for name in names if name not in skipped]
    frame = load_ariolimax(args.max_points, args.seed)
    report = run_benchmark(
        frame,
        feature_sets=names,
        run=args.run,
        maxent=not args.no_maxent,
        n_folds=args.folds,
        block_size_deg=args.block_size,
        classifiers=parse_list(args.classifiers),
        C_grid=parse_numbers(args.C_grid, float, option="--C-grid"),
        inner_folds=args.inner_folds,
        inner_max_points=args.inner_max_points,
        seed=args.seed,
    )
    print(format_table(report))
    write_report(report, args.json)
    print(f"wrote {args.json}")
    return report


if __name__ == "__main__":
    main()
