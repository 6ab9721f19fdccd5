"""Several embedding models of the same observations side by side, per taxon group."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from ecomodal.errors import InvalidArgumentError, InvalidEmbeddingsError
from ecomodal.eval.common import eval_table, normalise
from ecomodal.eval.probe import label_values
from ecomodal.eval.registry import EvalContext, TaskOption, register_task
from ecomodal.eval.zero_shot import class_prototypes
from ecomodal.io.reader import TableLike
from ecomodal.options import parse_key_values, parse_list
from ecomodal.report import Section, bar_chart
from ecomodal.scoring import top_k_hits


def group_counts(labels: np.ndarray, groups: np.ndarray) -> dict[str, dict[str, float]]:
    """Per group: images, species, mean images per species and species with a single image."""
    out = {}
    for group in sorted(set(groups)):
        names, counts = np.unique(labels[groups == group], return_counts=True)
        out[str(group)] = {
            "images": int(counts.sum()),
            "species": len(names),
            "images_per_species": float(counts.mean()),
            "species_with_one_image": int((counts == 1).sum()),
        }
    return out


def compare_models(
    tables: Mapping[str, TableLike],
    *,
    group: str = "group",
    label: str = "scientific_name",
    image: str = "image",
    text: str = "text",
    within_group: bool = True,
) -> dict[str, Any]:
    """Compare embedding tables of the same observations (joined on ``id``) per taxon ``group``.

    For each model and group: ``mean_cosine`` of each image with its correct species text
    embedding (the normalised mean ``text`` embedding of that species in that model's table) and
    ``accuracy``, zero-shot top-1 among the group's species (all species with
    ``within_group=False``). ``counts`` gives per group the images, species, images per species
    and species with one image, so groups with few images per species stand out. Only the ids
    present, with image, text, label and group, in every table are used.
    """
    if not tables:
        raise InvalidArgumentError("compare_models needs at least one table (name -> table).")
    batches = {name: eval_table(t, f"compare ({name})") for name, t in tables.items()}
    common: set[str] | None = None
    for batch in batches.values():
        _, known = label_values(batch, label)
        usable = known & batch.has_all([image, text])
        ids = set(batch.ids[usable].tolist())
        common = ids if common is None else common & ids
    if not common:
        raise InvalidEmbeddingsError(
            "The tables share no observation (id) that has image, text and label in all of them."
        )
    ordered = sorted(common)
    models: dict[str, Any] = {}
    counts: dict[str, Any] = {}
    for name, batch in batches.items():
        position = {i: k for k, i in enumerate(batch.ids.tolist())}
        sub = batch.select(np.array([position[i] for i in ordered], dtype=np.int64))
        labels, _ = label_values(sub, label)
        groups = np.asarray([str(v) for v in sub.column(group)], dtype=object)
        images = normalise(sub.embeddings[image])
        per_group = {}
        for g in sorted(set(groups)):
            rows = groups == g
            pool = rows if within_group else np.ones(len(sub), dtype=bool)
            names, protos = class_prototypes(sub.embeddings[text][pool], labels[pool])
            truth = np.array([names.index(v) for v in labels[rows]])
            own = np.einsum("nd,nd->n", images[rows], protos[truth])
            per_group[g] = {
                "mean_cosine": float(own.mean()),
                "accuracy": top_k_hits(images[rows] @ protos.T, truth, (1,))["top1"],
                "candidates": len(names),
            }
        models[name] = per_group
        counts = group_counts(labels, groups)
    return {"rows": len(ordered), "models": models, "counts": counts}


def compare_section(result: Mapping[str, Any]) -> Section:
    """The report section of :func:`compare_models`."""
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


def _parse_tables(text: str) -> dict[str, str]:
    return parse_key_values(parse_list(text), option="--option tables", key="NAME", value="PATH")


@register_task(
    name="compare",
    description="Several embedding tables of the same observations side by side, per group.",
    options=[
        TaskOption("tables", None, "NAME=PATH,... (default: the table itself)", _parse_tables),
        TaskOption("group", "group", "the taxon-group column"),
    ],
    section=compare_section,
    in_all=False,
    order=70,
)
def _run(
    context: EvalContext, tables: Mapping[str, TableLike] | None, group: str
) -> dict[str, Any]:
    tables = dict(tables or {"model": context.batch})
    return compare_models(tables, group=group, label=context.labels[0])
