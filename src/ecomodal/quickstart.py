"""The real-data quickstart: EcoBench-lite end to end, offline, on a laptop CPU.

1. Build EcoBench-lite (real places, loc/env/sat, real labels; :mod:`ecomodal.data.ecobench`).
2. Bind ``env`` (SINR over covariates) and ``sat`` (a projection of Blue Marble features) to the
   pretrained GeoCLIP ``loc`` encoder (:func:`ecomodal.training.bind.train_bind`).
3. Train ProM3E on {loc, env, sat}.
4. Evaluate on the spatially separated test split: linear probes of land cover and climate zone
   from each modality, from all three and from ProM3E hidden features; retrieval between every
   pair, direct and mixed; sigma_l1 for every visible set.
5. Draw a land-cover suitability map and an uncertainty (sigma_l1) map as GeoTIFF + PNG.
6. Write ``report.html`` and ``metrics.json``.

Every step is cached in the output folder, so a second run only redoes what is missing.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ecomodal.maps.truth import MAP_CLASSES

log = logging.getLogger(__name__)

MODALITIES = ("loc", "env", "sat")
#: Probe labels: land cover (IGBP) and climate zone (Koppen-Geiger).
PROBE_LABELS = ("land_cover", "koppen")
#: ProM3E small enough to train in minutes on two CPU cores; every visible count is seen.
QUICKSTART_MODEL = {"embed_dim": 256, "heads": 4, "mlp_dim": 512, "depth": 1, "dropout": 0.1}
VISIBLE_COUNTS = (1, 2, 3)
VISIBLE_PROBS = (1 / 3, 1 / 3, 1 / 3)


@dataclass
class QuickstartConfig:
    """Sizes of the quickstart (defaults: the full run; tests use a reduced one)."""

    n: int = 20_000
    seed: int = 0
    bind_epochs: int = 8
    bind_batch_size: int = 512
    bind_lr: float = 1e-3
    epochs: int = 30
    batch_size: int = 256
    lr: float = 1e-3
    grid_resolution: float = 2.0
    #: Land-cover classes mapped, as EcoBench-lite spells them.
    map_classes: tuple[str, ...] = MAP_CLASSES


def _write_once(path: Path, make) -> Path:
    if not path.is_file():
        make(path)
    return path


def _bind_features(built_table: Path, out: Path) -> Path:
    """The binding inputs: env = covariates, sat = backbone features, loc = targets."""
    from ecomodal.io.reader import read_embeddings
    from ecomodal.io.writer import write_embeddings

    def make(path: Path) -> None:
        batch = read_embeddings(built_table).load()
        extra = batch.columns
        write_embeddings(
            path,
            ids=batch.ids,
            embeddings={
                "loc": batch.embeddings["loc"],
                "env": batch.embeddings["env_covariates"],
                "sat": batch.embeddings["sat_features"],
            },
            columns={
                "lat": extra.column("lat"),
                "lon": extra.column("lon"),
                "split": extra.column("split_spatial"),
            },
            encoders={"loc": "geoclip", "env": "covariates", "sat": "bluemarble features"},
        )

    return _write_once(out / "bind-features.parquet", make)


def bound_table(
    built_table: str | Path, env_dir: str | Path, sat_dir: str | Path, out_path: str | Path
) -> Path:
    """Embed a built EcoBench-lite table (photo or ``places="random-land"``) with bound encoders.

    ``env`` = the table's ``env_covariates`` through the env encoder in ``env_dir`` (``ecomodal
    train bind`` output), ``sat`` = its ``sat_features`` through the projection in ``sat_dir``,
    ``loc`` kept; every label column is kept, ``split`` becomes the spatial split and the random
    split moves to ``split_random`` (the quickstart's ProM3E table). Written to ``out_path``.
    """
    import pyarrow as pa

    from ecomodal.data.ecobench import embed_env_covariates, project_sat_features
    from ecomodal.encoders.runs import load_run_encoder, quickstart_manifest
    from ecomodal.io.reader import read_embeddings
    from ecomodal.io.writer import write_embeddings

    batch = read_embeddings(built_table).load()
    # The same entries the run records in encoders.json, so load_encoders(run) re-embeds alike.
    manifest = quickstart_manifest(env_dir, sat_dir)
    env_encoder = load_run_encoder("env", manifest["env"])
    sat_encoder = load_run_encoder("sat", manifest["sat"])
    env = embed_env_covariates(env_encoder.model, batch.embeddings["env_covariates"])
    sat = project_sat_features(sat_encoder.model.projection, batch.embeddings["sat_features"])
    extra = batch.columns
    columns = {name: extra.column(name) for name in extra.column_names if name != "split"}
    columns["split"] = extra.column("split_spatial")
    columns["split_random"] = extra.column("split")
    return write_embeddings(
        out_path,
        ids=batch.ids,
        embeddings={"loc": batch.embeddings["loc"], "env": env, "sat": sat},
        columns=pa.table(columns),
        encoders={"loc": "geoclip", "env": str(env_dir), "sat": f"bluemarble+{sat_dir}"},
    )


def _bound_embeddings(built_table: Path, env_dir: Path, sat_dir: Path, out: Path) -> Path:
    """The ProM3E table ``out/embeddings.parquet`` (:func:`bound_table`), made once."""
    return _write_once(
        out / "embeddings.parquet", lambda path: bound_table(built_table, env_dir, sat_dir, path)
    )


def quickstart_encoders(out: str | Path) -> dict[str, Any]:
    """The ``loc``, ``env`` and ``sat`` encoders of the quickstart run in folder ``out`` (GeoCLIP, the
    bound env encoder over the default covariates, Blue Marble through the bound projection), as
    :func:`ecomodal.load_encoders` reads them: they embed any lat/lon as the run embedded its table."""
    from ecomodal.encoders.runs import load_encoders

    return load_encoders(out, MODALITIES)


def bind_encoders(
    features: Path, out: Path, config: QuickstartConfig, *, show_progress: bool = True
) -> dict[str, Any]:
    """Step 2: bind ``env`` and ``sat`` to ``loc`` on the binding inputs ``features`` (into
    ``out/bind-env`` and ``out/bind-sat``) and record the run's encoders in ``out/encoders.json``.
    Returns ``{modality: BindResult}``."""
    from ecomodal.encoders.runs import quickstart_manifest, write_run_encoders
    from ecomodal.training.bind import train_bind

    bound = {}
    for modality in ("env", "sat"):
        bound[modality] = train_bind(
            features, out / f"bind-{modality}", modality=modality, bind_to="loc",
            epochs=config.bind_epochs, batch_size=config.bind_batch_size, lr=config.bind_lr,
            t0=config.bind_epochs, seed=config.seed, show_progress=show_progress,
        )  # fmt: skip
    write_run_encoders(out, quickstart_manifest(bound["env"].best_dir, bound["sat"].best_dir))
    return bound


def run_quickstart(
    out: str | Path,
    *,
    config: QuickstartConfig | None = None,
    show_progress: bool = True,
) -> dict[str, Any]:
    """Run the real-data quickstart into ``out``; returns the metrics (also in metrics.json)."""
    from ecomodal.data.ecobench import build_ecobench_lite
    from ecomodal.eval import fingerprint
    from ecomodal.io.reader import read_embeddings
    from ecomodal.models.factory import load_model
    from ecomodal.training.prom3e import train_prom3e

    config = config or QuickstartConfig()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    say = _Say(show_progress)

    say("1/6 EcoBench-lite")
    built = build_ecobench_lite(
        out / "ecobench-lite", n=config.n, seed=config.seed, show_progress=show_progress
    )
    features = _bind_features(built.table, out)

    say("2/6 binding env and sat to loc")
    bound = bind_encoders(features, out, config, show_progress=show_progress)
    table = _bound_embeddings(built.table, bound["env"].best_dir, bound["sat"].best_dir, out)

    say("3/6 ProM3E on loc, env, sat")
    run = train_prom3e(
        table,
        out / "prom3e",
        epochs=config.epochs,
        batch_size=config.batch_size,
        lr=config.lr,
        t0=config.epochs,
        seed=config.seed,
        modalities=list(MODALITIES),
        model_config=QUICKSTART_MODEL,
        visible_counts=VISIBLE_COUNTS,
        visible_probs=VISIBLE_PROBS,
        show_progress=show_progress,
    )
    model = load_model(run.best_dir)

    say("4/6 evaluation on the spatial test split")
    batch = read_embeddings(table).load()
    harness = _harness_metrics(batch, model, seed=config.seed)
    evaluation = _quickstart_view(harness)

    say("5/6 maps")
    maps = draw_maps(table, model, bound, out / "maps", config, show_progress=show_progress)

    say("6/6 report")
    metrics = {
        "summary": evaluation["summary"],
        "evaluation": evaluation,
        "binding": {m: r.metrics for m, r in bound.items()},
        "prom3e": {"best_val_loss": run.best_val_loss, "best_epoch": run.best_epoch},
        "maps": maps,
        "outputs": {
            "table": str(table),
            "ecobench_lite": str(built.table),
            "provenance": str(built.provenance),
            "prom3e": str(run.best_dir),
            "env_encoder": str(bound["env"].best_dir),
            "sat_projection": str(bound["sat"].best_dir),
        },
    }
    paths = write_quickstart_report(
        out, metrics, config, evaluation=harness, fingerprint=fingerprint(batch)
    )
    metrics["outputs"].update({name: str(path) for name, path in paths.items()})
    return metrics


class _Say:
    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled

    def __call__(self, text: str) -> None:
        if self.enabled:
            print(f"[ecomodal quickstart] {text}", flush=True)
        log.info(text)


def _harness_metrics(batch: Any, model: Any, *, seed: int = 0) -> dict[str, Any]:
    """The evaluation harness's probes, retrieval and uncertainty on the spatial test split."""
    from ecomodal.eval import evaluate
    from ecomodal.eval.probe import HIDDEN

    return evaluate(
        batch,
        model,
        tasks=["probe", "retrieval", "completion", "uncertainty"],
        labels=PROBE_LABELS,
        seed=seed,
        probe_features=[*[(m,) for m in MODALITIES], MODALITIES, HIDDEN],
        options={"probe": {"visible": MODALITIES}},
    )


def _quickstart_view(harness: dict[str, Any]) -> dict[str, Any]:
    """The harness's metrics as the quickstart reports them, with the issue's checks."""
    probes = {
        label: {name: r["accuracy"] for name, r in entry["results"].items()}
        for label, entry in harness["probe"].items()
    }
    ret, unc = harness["retrieval"], harness["uncertainty"]
    summary = quickstart_checks(probes, ret, unc)
    view = {"summary": summary, "probes": probes, "retrieval": ret, "uncertainty": unc}
    if "completion" in harness:
        view["completion"] = harness["completion"]
    return view


def evaluate_quickstart(table: Path, model: Any, *, seed: int = 0) -> dict[str, Any]:
    """Probes, retrieval and uncertainty on the spatial test split, with the issue's checks."""
    from ecomodal.io.reader import read_embeddings

    batch = read_embeddings(table).load()
    return _quickstart_view(_harness_metrics(batch, model, seed=seed))


def quickstart_checks(
    probes: dict[str, dict[str, float]], ret: dict[str, Any], unc: dict[str, Any]
) -> dict[str, Any]:
    """The issue's three claims, each with its numbers."""
    probe_checks = {}
    for label, scores in probes.items():
        single = max(scores[m] for m in MODALITIES if m in scores)
        combined = {k: v for k, v in scores.items() if k not in MODALITIES}
        best_name = max(combined, key=combined.get)
        probe_checks[label] = {
            "best_single": single,
            "best_combined": combined[best_name],
            "best_combined_features": best_name,
            "beats_best_single": bool(combined[best_name] > single),
        }
    pairs = _retrieval_pairs(ret)
    mixed_wins = sum(1 for p in pairs.values() if p["mixed_mrr"] > p["direct_mrr"])
    by_count = {int(k): float(v) for k, v in unc["mean_by_count"].items()}
    counts = sorted(by_count)
    return {
        "probes": probe_checks,
        "retrieval_pairs": pairs,
        "mixed_beats_direct_pairs": mixed_wins,
        "mixed_beats_direct_at_least_4": bool(mixed_wins >= 4),
        "mean_sigma_l1_by_visible_count": by_count,
        "sigma_falls_with_more_modalities": bool(
            all(by_count[a] > by_count[b] for a, b in zip(counts, counts[1:], strict=False))
        ),
    }


def _retrieval_pairs(ret: dict[str, Any]) -> dict[str, dict[str, float]]:
    pairs = {}
    for name, result in ret["pairs"].items():
        pairs[name] = {
            "direct_mrr": float(result["direct"]["MRR"]),
            "mixed_mrr": float(result["mixed"]["MRR"]),
            "direct_r10": float(result["direct"]["R@10"]),
            "mixed_r10": float(result["mixed"]["R@10"]),
            "delta": float(result["delta"]),
        }
    return pairs


def draw_maps(
    table: Path,
    model: Any,
    bound: dict[str, Any],
    out: Path,
    config: QuickstartConfig,
    *,
    show_progress: bool = True,
) -> dict[str, Any]:
    """Land-cover suitability maps and ProM3E uncertainty maps over a global land grid.

    One suitability map per class of :data:`~ecomodal.maps.truth.MAP_CLASSES` with at least 5
    train+val places: the default SDM of :func:`~ecomodal.maps.species_map` (presences: those
    places; background: grid cells; features: loc, env, sat and ProM3E hidden features), judged
    against MODIS land cover on the grid cells beside the covariate logistic regression and
    Maxent fitted on the same presences and background. Then sigma_l1 from {sat, loc, env} and,
    for a calibrated model, the expected error of sat completed from loc and env."""
    import pyarrow.parquet as pq

    from ecomodal.geo.covariates import CovariateStack
    from ecomodal.maps import make_grid, preview_png, species_map, uncertainty_map, write_map
    from ecomodal.maps.embedding import sample_cells
    from ecomodal.maps.sdm_map import DEFAULT_N_BACKGROUND
    from ecomodal.maps.truth import (
        class_slug,
        covariate_baselines,
        grid_land_cover,
        score_against_land_cover,
    )
    from ecomodal.models.calibration import has_uncertainty_model

    out.mkdir(parents=True, exist_ok=True)
    frame = pq.read_table(table, columns=["lat", "lon", "land_cover", "split"]).to_pandas()
    fit = frame[frame["split"].isin(["train", "val"])]
    grid = make_grid(resolution=config.grid_resolution, land_only=True)
    encoders = quickstart_encoders(Path(bound["env"].best_dir).parent.parent)
    cache = out / "grid-cache"
    cell_classes = grid_land_cover(grid)
    rows = sample_cells(grid.num_cells, DEFAULT_N_BACKGROUND, config.seed)
    covariates = CovariateStack.open("default")  # read once for every class's baselines
    drawn = []
    for map_class in config.map_classes:
        places = fit[fit["land_cover"] == map_class]
        if len(places) < 5 or not (cell_classes == map_class).any():
            log.info(
                "No map for %s: %d places, too few or no grid cell of it", map_class, len(places)
            )
            continue
        lat, lon = places["lat"].to_numpy(), places["lon"].to_numpy()
        suitability = species_map(
            grid,
            points=(lat, lon),
            encoders=encoders,
            model=model,
            visible=list(MODALITIES),
            cache_dir=cache,
            seed=config.seed,
            show_progress=show_progress,
        )
        suitability.tags["class"] = map_class
        truth = score_against_land_cover(suitability.values[0], cell_classes, map_class)
        baselines = covariate_baselines(
            lat, lon, grid.lat[rows], grid.lon[rows], grid, covariates=covariates, seed=config.seed
        )
        truth["baselines"] = {
            name: score_against_land_cover(values, cell_classes, map_class)
            for name, values in baselines.items()
        }
        suitability.tags["auc_against_modis"] = round(truth["auc"], 4)
        title = f"Suitability for {map_class} (SDM over loc, env, sat, ProM3E hidden; {len(places)} places)"
        drawn.append(
            (
                f"suitability-{class_slug(map_class)}",
                suitability,
                title,
                "viridis",
                map_class,
                truth,
            )
        )
    sigma = uncertainty_map(
        model,
        grid,
        visible=list(MODALITIES),
        encoders=encoders,
        cache_dir=cache,
        show_progress=show_progress,
        measure="sigma-l1",
    )
    drawn.append(("uncertainty", sigma, "ProM3E sigma_l1 from sat, loc, env", "magma", None, None))
    if has_uncertainty_model(model):
        # The uncertainty that predicts error: completing sat from loc and env.
        expected = uncertainty_map(
            model,
            grid,
            visible=["loc", "env"],
            encoders=encoders,
            cache_dir=cache,
            show_progress=show_progress,
            measure="expected-error",
        )
        title = "Expected error (1 - cosine) of sat completed from loc, env"
        drawn.append(("expected-error", expected, title, "magma", None, None))
    maps: dict[str, Any] = {}
    for name, grid_map, title, cmap, map_class, truth in drawn:
        tif = write_map(out / f"{name}.tif", grid_map, tags={"title": title, "colormap": cmap})
        png = preview_png(grid_map, out / f"{name}.png", title=title, cmap=cmap)
        values = grid_map.values[0]
        maps[name] = {
            "geotiff": str(tif),
            "preview": str(png),
            "title": title,
            "cells": int(np.isfinite(values).sum()),
            "min": float(np.nanmin(values)),
            "max": float(np.nanmax(values)),
        }
        if map_class is not None:
            maps[name].update({"class": map_class, "against_modis": truth})
    maps["grid"] = {"resolution_deg": config.grid_resolution, "cells": grid.num_cells}
    return maps


def write_quickstart_report(
    out: Path,
    metrics: dict[str, Any],
    config: QuickstartConfig,
    *,
    evaluation: dict[str, Any] | None = None,
    fingerprint: str | None = None,
) -> dict[str, Path]:
    """``report.html`` (figures embedded) and ``metrics.json`` for a quickstart run: the
    evaluation harness's report of ``evaluation`` (its metrics; default: rebuilt from
    ``metrics["evaluation"]``, probe accuracies only) plus the quickstart's own summary,
    binding and map sections."""
    from dataclasses import asdict

    from ecomodal.eval.harness import sections as task_sections
    from ecomodal.report import write_report

    if evaluation is None:
        own = metrics["evaluation"]
        evaluation = {
            "probe": {
                label: {"split": "published", "results": {f: {"accuracy": a} for f, a in s.items()}}
                for label, s in own["probes"].items()
            },
            "retrieval": own["retrieval"],
            **({"completion": own["completion"]} if "completion" in own else {}),
            "uncertainty": own["uncertainty"],
        }
    sections = [
        _summary_section(metrics["summary"]),
        _binding_section(metrics["binding"]),
        *task_sections(evaluation),
        *_map_sections(metrics.get("maps", {})),
    ]
    return write_report(
        out,
        title="ecomodal quickstart: EcoBench-lite",
        sections=sections,
        metrics=metrics,
        config=asdict(config),
        fingerprint=fingerprint,
        seed=config.seed,
    )


def _summary_section(summary: dict[str, Any]) -> Any:
    """What the run shows: the issue's three claims, each met or not, with its numbers."""
    from ecomodal.report import Section

    verdicts = []
    for label, check in summary["probes"].items():
        verdicts.append(
            f"Probe of {label}: best combined ({check['best_combined_features']}) "
            f"{check['best_combined']:.3f} vs best single modality {check['best_single']:.3f}: "
            + ("met." if check["beats_best_single"] else "NOT met (shown as measured).")
        )
    verdicts.append(
        f"Mixed retrieval beats direct (MRR) for {summary['mixed_beats_direct_pairs']} of "
        f"{len(summary['retrieval_pairs'])} ordered pairs (target: at least 4): "
        + ("met." if summary["mixed_beats_direct_at_least_4"] else "NOT met.")
    )
    sigma = summary["mean_sigma_l1_by_visible_count"]
    verdicts.append(
        "Mean sigma_l1 by number of visible modalities: "
        + ", ".join(f"{k}: {v:.2f}" for k, v in sorted(sigma.items()))
        + (
            " - falls as modalities are added: met."
            if summary["sigma_falls_with_more_modalities"]
            else " - does NOT fall at every step."
        )
    )
    return Section(
        "What this run shows",
        [
            "EcoBench-lite: real photo locations (GeoCLIP gallery) with GeoCLIP loc "
            "embeddings, env from ERA5 bioclim + elevation, sat from Blue Marble patches; "
            "labels from MODIS land cover and Koppen-Geiger. Everything below is measured on "
            "the spatially separated test split (whole 5-degree blocks held out).",
            *verdicts,
        ],
    )


def _binding_section(binding: dict[str, Any]) -> Any:
    from ecomodal.report import Section

    rows = []
    for modality, held in binding.items():
        untrained = held.get("untrained", {})
        rows.append(
            {
                "encoder": f"{modality} -> loc",
                "gallery": held.get("n_gallery"),
                "R@1": held.get("R@1"),
                "R@10": held.get("R@10"),
                "R@10 untrained": untrained.get("R@10"),
                "R@10 chance": held.get("chance_R@10"),
            }
        )
    return Section(
        "Binding env and sat to loc",
        "Held-out retrieval of each bound encoder's embedding against GeoCLIP loc "
        "embeddings, before (untrained) and after binding.",
        table=rows,
    )


def _map_sections(maps: dict[str, Any]) -> list[Any]:
    from ecomodal.maps.truth import describe_truth
    from ecomodal.report import Section, _pyplot

    sections = []
    judged = [entry for entry in maps.values() if entry.get("against_modis")]
    if judged:
        rows = []
        for entry in judged:
            truth = entry["against_modis"]
            rows.append(
                {
                    "class": entry["class"],
                    "AUC (ecomodal SDM)": round(truth["auc"], 3),
                    **{f"AUC ({k})": round(v["auc"], 3) for k, v in truth["baselines"].items()},
                    "Boyce": round(truth["boyce"], 3),
                    "mean on class cells": round(truth["class_mean"], 3),
                    "mean on snow/ice cells": round(truth["snow_ice_mean"], 3),
                }
            )
        text = (
            "Each suitability map against MODIS land cover at the grid cells' centres (AUC: the "
            "class's cells against all other land cells), beside a logistic regression and "
            "elapid's Maxent on the 15 raw covariates with the same presences and background."
        )
        sections.append(Section("Maps against MODIS land cover", text, table=rows))
    for name, entry in maps.items():
        png = entry.get("preview")
        if not png:
            continue
        plt = _pyplot()
        image = plt.imread(png)
        fig, ax = plt.subplots(figsize=(10, 10 * image.shape[0] / image.shape[1]))
        ax.imshow(image)
        ax.set_axis_off()
        fig.tight_layout(pad=0)
        text = [f"GeoTIFF: {entry.get('geotiff')}"]
        truth = entry.get("against_modis")
        if truth:
            text.append(describe_truth(truth) + ".")
        sections.append(Section(entry.get("title", name), text, figures=[fig]))
    return sections
