"""Land-cover suitability maps against the ground: MODIS land cover at each grid cell.

For each class of ``ecomodal.maps.truth.MAP_CLASSES``, on a finished quickstart run (``--run``):
presences are the run's train+val places of the class; background, the grid cells drawn by the
default rule (10,000 cells, seed 0; at 2 degrees every one of the 5,391 land cells). Four maps
with those presences and background, judged on every land cell of the grid:

- ``default``: the quickstart's map, ``species_map(points=...)`` (the SDM over loc, env, sat and
  ProM3E hidden features, chosen by spatial-block CV);
- ``prototype``: the previous default, cosine of each cell's sat embedding to the mean sat
  embedding of the presences minus that of the background;
- ``covariate-logistic`` and ``covariate-maxent``: a logistic regression and elapid's
  ``MaxentModel`` on the 15 raw covariates.

Reported per class and map: AUC (class cells against all other land cells) and Boyce index; the
mean map value on snow/ice cells against the class's own cells; and whether the issue's bar holds
(default AUC >= the better baseline for every class, mean AUC >= 0.85, snow/ice below the class).
With ``--held-out-classes``, also the default map and both baselines for every other land-cover
class with at least 30 places and 20 grid cells (not water, urban or snow): classes no choice of
the default SDM was made on.

    python benchmarks/map_truth.py --run QUICKSTART_OUT [--held-out-classes] \
        [--json benchmarks/results-map_truth.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np

DEFAULT_JSON = Path(__file__).with_name("results-map_truth.json")


def run_benchmark(run: Path, work: Path, *, seed: int = 0, held_out_classes: bool = False) -> dict:
    from ecomodal.maps import make_grid, species_map
    from ecomodal.maps.embedding import sample_cells
    from ecomodal.maps.sdm_map import DEFAULT_N_BACKGROUND
    from ecomodal.maps.truth import MAP_CLASSES, grid_land_cover, score_against_land_cover
    from ecomodal.models.factory import load_model
    from ecomodal.quickstart import QuickstartConfig, draw_maps, quickstart_encoders

    config = QuickstartConfig(seed=seed)
    cache = run / "maps" / "grid-cache"
    if cache.is_dir() and not (work / "grid-cache").exists():
        shutil.copytree(cache, work / "grid-cache")
    bound = {m: SimpleNamespace(best_dir=run / f"bind-{m}" / "best") for m in ("env", "sat")}
    model = load_model(run / "prom3e" / "best")
    table = run / "embeddings.parquet"
    start = time.perf_counter()
    maps = draw_maps(table, model, bound, work, config, show_progress=False)
    seconds_default = time.perf_counter() - start

    import pyarrow.parquet as pq

    frame = pq.read_table(table, columns=["lat", "lon", "land_cover", "split"]).to_pandas()
    fit = frame[frame["split"].isin(["train", "val"])]
    grid = make_grid(resolution=config.grid_resolution, land_only=True)
    cell_classes = grid_land_cover(grid)
    rows = sample_cells(grid.num_cells, DEFAULT_N_BACKGROUND, seed)
    background = (grid.lat[rows], grid.lon[rows])
    encoders = quickstart_encoders(run)
    classes = {}
    for map_class in MAP_CLASSES:
        entry = next((e for e in maps.values() if e.get("class") == map_class), None)
        if entry is None:
            continue
        truth = entry["against_modis"]
        places = fit[fit["land_cover"] == map_class]
        prototype = species_map(
            grid,
            points=(places["lat"].to_numpy(), places["lon"].to_numpy()),
            background=background,
            modality="sat",
            encoder=encoders["sat"],
            cache_dir=work / "grid-cache",
            method="prototype",
            show_progress=False,
        )
        scores = {
            "default": {k: truth[k] for k in ("auc", "boyce", "class_mean", "snow_ice_mean")},
            "prototype": score_against_land_cover(prototype.values[0], cell_classes, map_class),
            **truth["baselines"],
        }
        best_baseline = max(truth["baselines"][name]["auc"] for name in truth["baselines"])
        classes[map_class] = {
            "n_presence": len(places),
            "n_class_cells": truth["n_class_cells"],
            "maps": {
                name: {k: float(v[k]) for k in ("auc", "boyce", "class_mean", "snow_ice_mean")}
                for name, v in scores.items()
            },
            "default_beats_baselines": bool(truth["auc"] >= best_baseline),
            "snow_ice_below": bool(truth["snow_ice_below"]),
            "sdm_selection": json.loads(_tag(entry["geotiff"], "sdm_selection")),
        }
    mean_auc = float(np.mean([c["maps"]["default"]["auc"] for c in classes.values()]))
    held_out = (
        _held_out_classes(fit, cell_classes, table, model, bound, work, config)
        if held_out_classes
        else None
    )
    return {
        "conditions": {
            "run": str(run),
            "grid_resolution_deg": config.grid_resolution,
            "grid_cells": grid.num_cells,
            "background": f"{len(rows)} grid cells drawn at random without replacement "
            f"(seed {seed})",
            "presences": "the run's train+val places of each class",
            "truth": "MODIS MCD12C1 2019 IGBP class at each cell centre",
            "seconds_default_maps": round(seconds_default, 1),
            "machine": f"{platform.machine()} CPU, {platform.python_version()}",
        },
        "classes": classes,
        "summary": {
            "mean_auc_default": mean_auc,
            "mean_auc": {
                name: float(np.mean([c["maps"][name]["auc"] for c in classes.values()]))
                for name in next(iter(classes.values()))["maps"]
            },
            "default_beats_baselines_every_class": all(
                c["default_beats_baselines"] for c in classes.values()
            ),
            "mean_auc_at_least_0_85": mean_auc >= 0.85,
            "snow_ice_below_every_class": all(c["snow_ice_below"] for c in classes.values()),
        },
        **({} if held_out is None else {"held_out_classes": held_out}),
    }


#: Classes never used to choose the default SDM: too few places or cells below these.
HELD_OUT_MIN_PLACES, HELD_OUT_MIN_CELLS = 30, 20
NOT_HABITATS = ("water", "urban and built-up", "snow and ice")


def _held_out_classes(fit, cell_classes, table, model, bound, work, config) -> dict:
    """The default map against MODIS and the covariate baselines for every other land-cover
    class with enough places and cells: classes no design choice of the default SDM looked at,
    so its AUC there is an honest check that the default is not tuned to the five. The maps are
    the quickstart's own (:func:`~ecomodal.quickstart.draw_maps` with these classes)."""
    from dataclasses import replace

    from ecomodal.maps.truth import MAP_CLASSES
    from ecomodal.quickstart import draw_maps

    held = [
        name
        for name in sorted(set(fit["land_cover"]) - set(MAP_CLASSES) - set(NOT_HABITATS))
        if (fit["land_cover"] == name).sum() >= HELD_OUT_MIN_PLACES
        and (cell_classes == name).sum() >= HELD_OUT_MIN_CELLS
    ]
    if not held:
        return {}
    config = replace(config, map_classes=tuple(held))
    maps = draw_maps(table, model, bound, work, config, show_progress=False)
    out = {}
    for entry in maps.values():
        if not isinstance(entry, dict) or entry.get("class") not in held:
            continue
        truth = entry["against_modis"]
        out[entry["class"]] = {
            "n_presence": int((fit["land_cover"] == entry["class"]).sum()),
            "n_class_cells": int(truth["n_class_cells"]),
            "auc": {
                "default": float(truth["auc"]),
                **{name: float(b["auc"]) for name, b in truth["baselines"].items()},
            },
        }
    out = dict(sorted(out.items()))
    names = list(next(iter(out.values()))["auc"])
    return {
        "classes": out,
        "mean_auc": {n: float(np.mean([c["auc"][n] for c in out.values()])) for n in names},
        "default_beats_baselines": int(
            sum(
                c["auc"]["default"] >= max(v for k, v in c["auc"].items() if k != "default")
                for c in out.values()
            )
        ),
        "n_classes": len(out),
    }


def _tag(path: str, name: str) -> str:
    import rasterio

    with rasterio.open(path) as dataset:
        return dataset.tags()[name]


def format_table(report: dict) -> str:
    names = list(next(iter(report["classes"].values()))["maps"])
    head = f"{'class':<28}" + "".join(f" | {n:>18}" for n in names) + " | snow<class"
    lines = [head, "-" * len(head)]
    for cls, entry in report["classes"].items():
        cells = "".join(
            f" | {entry['maps'][n]['auc']:.3f} ({entry['maps'][n]['boyce']:+.2f})".rjust(21)
            for n in names
        )
        lines.append(f"{cls:<28}{cells} | {entry['snow_ice_below']}")
    summary = report["summary"]
    lines.append("mean AUC: " + ", ".join(f"{n} {v:.3f}" for n, v in summary["mean_auc"].items()))
    return "\n".join(lines)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", required=True, type=Path, help="a finished quickstart folder")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON)
    parser.add_argument(
        "--held-out-classes",
        action="store_true",
        help="also map every other land-cover class with enough places (a check that the "
        "default is not tuned to the five classes)",
    )
    args = parser.parse_args(argv)
    from ecomodal.io.atomic import atomic_path

    with tempfile.TemporaryDirectory() as work:
        report = run_benchmark(
            args.run, Path(work), seed=args.seed, held_out_classes=args.held_out_classes
        )
    with atomic_path(args.json) as tmp:
        tmp.write_text(json.dumps(report, indent=2) + "\n")
    print(format_table(report))
    print(json.dumps(report["summary"], indent=2))
    if "held_out_classes" in report:
        print(json.dumps({k: v for k, v in report["held_out_classes"].items() if k != "classes"}))
    return report


if __name__ == "__main__":
    main()
