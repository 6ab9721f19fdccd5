"""``evaluate``: run the chosen tasks on one table and write ``metrics.json`` + ``report.html``."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ecomodal.data.splits import make_split
from ecomodal.eval.common import fingerprint, resolve_model
from ecomodal.io.reader import TableLike, as_batch
from ecomodal.report import Section, bar_chart, distributions, heatmap, write_report

TASKS = ("zero-shot", "few-shot", "probe", "retrieval", "uncertainty", "gap", "compare")
#: Tasks run by ``tasks="all"`` on one table (``compare`` needs several tables).
SINGLE_TABLE_TASKS = ("zero-shot", "few-shot", "probe", "retrieval", "uncertainty", "gap")
_NEEDS_MODEL = ("uncertainty",)


def _retrieval_section(result: Mapping[str, Any]) -> Section:
    pairs = result["pairs"]
    names = sorted({m for key in pairs for m in key.split("->")})
    rows, figures = [], []
    for key, entry in pairs.items():
        row = {"pair": key, "queries": entry["queries"], "gallery": entry["gallery"]}
        row |= {f"direct {k}": v for k, v in entry["direct"].items()}
        if "mixed" in entry:
            row |= {f"mixed {k}": v for k, v in entry["mixed"].items()}
            row["delta"] = entry["delta"]
        rows.append(row)
    for method in ("direct", "mixed"):
        matrix = np.full((len(names), len(names)), np.nan)
        for key, entry in pairs.items():
            if method in entry:
                a, b = key.split("->")
                matrix[names.index(a), names.index(b)] = 100 * entry[method]["R@1"]
        if np.isfinite(matrix).any():
            figures.append(
                heatmap(
                    matrix,
                    names,
                    names,
                    title=f"Retrieval R@1, {method} queries",
                    xlabel="gallery (target) modality",
                    ylabel="query (source) modality",
                    colorbar="R@1 (%)",
                    fmt="{:.1f}",
                )
            )
    text = (
        "Each query is ranked against the test rows' target embeddings; its own row is the "
        "match. Mixed: q' = (1 - delta) q + delta * ProM3E completion, delta tuned on val."
    )
    return Section("Cross-modal retrieval", text, rows, figures)


def _probe_section(results: Mapping[str, Any]) -> Section:
    rows, bars = [], {}
    for label, result in results.items():
        for feature, scores in result["results"].items():
            rows.append({"label": label, "features": feature, "split": result["split"], **scores})
            if "accuracy" in scores:
                bars.setdefault(feature, {})[label] = 100 * scores["accuracy"]
    figures = [
        bar_chart(bars, title="Linear probe accuracy", ylabel="accuracy (%)", xlabel="label")
    ]
    return Section("Linear probes", "MinMax-scaled features, RidgeClassifierCV.", rows, figures)


def _zero_shot_section(results: Mapping[str, Any]) -> Section:
    rows, bars = [], {}
    for visible, result in results.items():
        for method, by_rank in result["methods"].items():
            for rank, scores in by_rank.items():
                rows.append({"visible": visible, "method": method, "rank": rank, **scores})
                bars.setdefault(f"{method} [{visible}]", {})[rank] = 100 * scores["top1"]
    figure = bar_chart(bars, title="Zero-shot top-1", ylabel="top-1 accuracy (%)", xlabel="rank")
    return Section("Zero-shot classification", "", rows, [figure])


def _few_shot_section(results: Mapping[str, Any]) -> Section:
    rows = []
    for label, result in results.items():
        for feature, by_k in result["results"].items():
            for k, entry in by_k.items():
                for method, stats in entry.items():
                    if isinstance(stats, dict):
                        rows.append(
                            {
                                "label": label,
                                "features": feature,
                                "shots": k,
                                "method": method,
                                **stats,
                            }
                        )
    return Section("Few-shot classification", "Mean and std over seeded draws.", rows)


def _uncertainty_section(result: Mapping[str, Any]) -> Section:
    rows = [
        {
            "visible": name,
            **{k: v for k, v in entry.items() if k != "quantiles"},
            **{f"q{k}": v for k, v in entry["quantiles"].items()},
        }
        for name, entry in result["sets"].items()
    ]
    figures = [
        distributions(
            result["samples"],
            title="sigma_l1 per visible set",
            xlabel="sigma_l1 (sum of sigma)",
            ylabel="visible modalities",
        ),
        bar_chart(
            {"mean drop": result["added_modality"]},
            title="Mean drop of sigma_l1 when a modality is added",
            ylabel="sigma_l1 drop",
            xlabel="added modality",
        ),
    ]
    text = (
        f"Mean sigma_l1 by number of visible modalities: {result['mean_by_count']}. Spearman "
        f"correlation of sigma_l1 with completion error: {result['sigma_error_spearman']:.3f}."
    )
    return Section("Uncertainty and informativeness", text, rows, figures)


def _gap_section(result: Mapping[str, Any]) -> Section:
    rows = []
    for stage, entry in result.items():
        rows.append({"stage": stage, "pair": "separability", "value": entry["separability"]})
        rows += [
            {"stage": stage, "pair": k, "value": v} for k, v in entry["centroid_distance"].items()
        ]
    bars = {stage: entry["centroid_distance"] for stage, entry in result.items()}
    figure = bar_chart(
        bars,
        title="Distance between modality centroids",
        ylabel="Euclidean distance (unit vectors)",
        xlabel="modality pair",
    )
    return Section(
        "Modality gap", "Separability: CV accuracy of telling modalities apart.", rows, [figure]
    )


def compare_section(result: Mapping[str, Any]) -> Section:
    """The report section of :func:`~ecomodal.eval.compare.compare_models`."""
    counts = result["counts"]
    notes = {
        g: f"n={c['images']}, {c['species']} sp., {c['images_per_species']:.1f}/sp."
        for g, c in counts.items()
    }
    rows = [
        {"model": model, "group": g, **scores, **counts[g]}
        for model, groups in result["models"].items()
        for g, scores in groups.items()
    ]
    figures = [
        bar_chart(
            {m: {g: s[key] for g, s in groups.items()} for m, groups in result["models"].items()},
            title=title,
            ylabel=ylabel,
            xlabel="taxon group",
            annotations=notes,
        )
        for key, title, ylabel in (
            ("mean_cosine", "Mean cosine of each image with its species text", "cosine similarity"),
            ("accuracy", "Zero-shot accuracy per taxon group", "top-1 accuracy (fraction)"),
        )
    ]
    return Section(
        "Model comparison", "Counts per group show where species have few images.", rows, figures
    )


def evaluate(
    table: TableLike,
    model: Any = None,
    *,
    tasks: Sequence[str] | str = "all",
    labels: Sequence[str] = ("scientific_name",),
    out: str | os.PathLike[str] | None = None,
    seed: int = 0,
    split: str = "published",
    probe_features: Sequence[str | Sequence[str]] | None = None,
    zero_shot_visible: Sequence[Sequence[str]] | None = None,
    few_shot_features: str | Sequence[str] = ("image",),
    shots: Sequence[int] = (1, 5, 10),
    repeats: int = 5,
    retrieval_pairs: Sequence[str | Sequence[str]] | None = None,
    max_queries: int | None = None,
    compare_tables: Mapping[str, TableLike] | None = None,
    compare_group: str = "group",
    title: str = "ecomodal evaluation",
) -> dict[str, Any]:
    """Run ``tasks`` (names from :data:`TASKS`, or ``"all"``) and return their metrics; with
    ``out``, also write ``metrics.json`` and ``report.html`` there.

    ``labels``: the label columns of the probes and few-shot tasks (the first is zero-shot's).
    ``probe_features`` defaults to each single modality, TaxaBind's fusion of all of them and,
    with a model, ProM3E hidden and completed features. ``zero_shot_visible`` defaults to each
    non-text modality and, if there are several, all of them together. Tasks that need a model
    are skipped (and say so) without one.
    """
    from ecomodal.eval import probe
    from ecomodal.eval.compare import compare_models
    from ecomodal.eval.few_shot import few_shot
    from ecomodal.eval.gap import modality_gap
    from ecomodal.eval.retrieval import retrieval
    from ecomodal.eval.uncertainty import uncertainty
    from ecomodal.eval.zero_shot import zero_shot

    chosen = (
        list(SINGLE_TABLE_TASKS)
        if tasks == "all"
        else [tasks]
        if isinstance(tasks, str)
        else list(tasks)
    )
    unknown = [t for t in chosen if t not in TASKS]
    if unknown:
        raise ValueError(f"Unknown task(s) {unknown}; expected from: {', '.join(TASKS)} or 'all'.")
    batch = as_batch(table)
    prom3e = resolve_model(model)
    present = [m for m in batch.modalities if batch.present[m].any()]
    non_text = [m for m in present if m != "text"]
    metrics: dict[str, Any] = {}
    sections: list[Section] = []
    skipped: dict[str, str] = {}
    for task in chosen:
        if task in _NEEDS_MODEL and prom3e is None:
            skipped[task] = "needs a ProM3E model"
            continue
        if task == "retrieval":
            metrics[task] = retrieval(
                batch,
                prom3e,
                pairs=retrieval_pairs,
                split=split,
                seed=seed,
                max_queries=max_queries,
            )
            sections.append(_retrieval_section(metrics[task]))
        elif task == "probe":
            feature_list = (
                list(probe_features)
                if probe_features
                else (
                    [(m,) for m in non_text]
                    + ([tuple(non_text)] if len(non_text) > 1 else [])
                    + ([probe.HIDDEN, probe.COMPLETED] if prom3e is not None else [])
                )
            )
            sides = make_split(batch, split, seed=seed)
            targets = {label: probe.label_values(batch, label) for label in labels}
            metrics[task] = {label: {"split": split, "results": {}} for label in labels}
            for features in feature_list:  # one feature set in memory at a time, every label
                matrices = probe.feature_sets(batch, features, model=prom3e, seed=seed)
                for label, (values, known) in targets.items():
                    metrics[task][label]["results"].update(
                        probe.fit_probes(matrices, values, known, sides, seed=seed)
                    )
                del matrices
            sections.append(_probe_section(metrics[task]))
        elif task == "zero-shot":
            sets = zero_shot_visible or (
                [[m] for m in non_text] + ([non_text] if len(non_text) > 1 else [])
            )
            metrics[task] = {
                "+".join(v): zero_shot(
                    batch, prom3e, label=labels[0], visible=v, split=split, seed=seed
                )
                for v in sets
            }
            sections.append(_zero_shot_section(metrics[task]))
        elif task == "few-shot":
            metrics[task] = {
                label: few_shot(
                    batch,
                    label=label,
                    features=few_shot_features,
                    model=prom3e,
                    shots=shots,
                    repeats=repeats,
                    split=split,
                    seed=seed,
                )
                for label in labels
            }
            sections.append(_few_shot_section(metrics[task]))
        elif task == "uncertainty":
            metrics[task] = uncertainty(batch, prom3e, split=split, seed=seed)
            sections.append(_uncertainty_section(metrics[task]))
        elif task == "gap":
            metrics[task] = modality_gap(batch, prom3e, split=split, seed=seed)
            sections.append(_gap_section(metrics[task]))
        elif task == "compare":
            tables = dict(compare_tables or {"model": batch})
            metrics[task] = compare_models(tables, group=compare_group, label=labels[0])
            sections.append(compare_section(metrics[task]))
    if skipped:
        metrics["skipped"] = skipped
    if out is not None:
        config = {
            "tasks": chosen,
            "labels": list(labels),
            "split": split,
            "model": None if prom3e is None else prom3e.config.to_dict(),
            "model_spec": None if model is None or prom3e is model else str(model),
            "table": str(table) if isinstance(table, str | Path) else type(table).__name__,
            "rows": len(batch),
            "shots": list(shots),
            "repeats": repeats,
            "max_queries": max_queries,
        }
        write_report(
            out,
            title=title,
            sections=sections,
            metrics=metrics,
            config=config,
            fingerprint=fingerprint(batch),
            seed=seed,
        )
    return metrics
