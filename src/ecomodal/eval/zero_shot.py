"""Zero-shot classification against candidate taxa text embeddings, at any taxonomic rank."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ecomodal.deprecation import renamed_arguments
from ecomodal.errors import InvalidEmbeddingsError
from ecomodal.eval.common import (
    EvalRows,
    check_counts,
    check_no_rows,
    eval_rows,
    model_inputs,
    normalise,
    resolve_model,
)
from ecomodal.eval.probe import label_values
from ecomodal.eval.registry import EvalContext, TaskOption, register_task
from ecomodal.io.batch import EmbeddingBatch
from ecomodal.io.reader import TableLike
from ecomodal.modalities import parse_modalities
from ecomodal.options import check_range, parse_list
from ecomodal.report import Section, bar_chart
from ecomodal.scoring import top_k_hits

__all__ = ["RANKS", "class_prototypes", "top_k_hits", "zero_shot"]

#: Coarser ranks looked for among the table's columns, finest first.
RANKS = ("genus", "family", "order", "class", "phylum", "kingdom")


def class_prototypes(
    embeddings: np.ndarray, labels: np.ndarray, classes: Sequence[str] | None = None
) -> tuple[list[str], np.ndarray]:
    """The normalised mean embedding of each class (sorted names, or ``classes`` in order)."""
    labels = np.asarray(labels).astype(str)
    names = sorted(set(labels)) if classes is None else [str(c) for c in classes]
    index = {name: i for i, name in enumerate(names)}
    sums = np.zeros((len(names), embeddings.shape[1]), dtype=np.float64)
    keep = np.array([label in index for label in labels], dtype=bool)
    np.add.at(sums, [index[label] for label in labels[keep]], normalise(embeddings[keep]))
    return names, normalise(sums.astype(np.float32))


def _candidates(
    batch: EmbeddingBatch,
    label: str,
    candidates: Sequence[str] | Mapping[str, Any] | None,
    text: str,
) -> tuple[list[str], np.ndarray]:
    if isinstance(candidates, Mapping):
        names = [str(k) for k in candidates]
        return names, normalise(np.stack([np.asarray(v, np.float32) for v in candidates.values()]))
    labels, known = label_values(batch, label)
    rows = known & batch.has_all([text])
    if not rows.any():
        raise InvalidEmbeddingsError(
            f"No row has both a {label!r} value and a {text!r} embedding to build candidates from."
        )
    names, protos = class_prototypes(batch.embeddings[text][rows], labels[rows])
    if candidates is None:
        return names, protos
    wanted = [str(c) for c in candidates]
    missing = [c for c in wanted if c not in names]
    if missing:
        raise InvalidEmbeddingsError(
            f"Candidates {missing[:5]} have no {text!r} embedding in the table (no row with that "
            f"{label!r})."
        )
    return wanted, protos[[names.index(c) for c in wanted]]


def _rank_of_candidates(
    batch: EmbeddingBatch, label: str, rank: str, names: Sequence[str]
) -> np.ndarray:
    """The ``rank`` value (e.g. genus) of each candidate name, by the table's rows."""
    labels, _ = label_values(batch, label)
    coarse = np.asarray([str(v) for v in batch.column(rank)], dtype=object)
    lookup = dict(zip(labels, coarse, strict=True))
    return np.asarray([lookup.get(n, f"?{n}") for n in names], dtype=object)


@renamed_arguments(table="data")
def zero_shot(
    data: TableLike | None = None,
    model: Any = None,
    *,
    train: TableLike | None = None,
    test: TableLike | None = None,
    label: str = "scientific_name",
    visible: Sequence[str] | str = ("image",),
    ranks: Sequence[str] | None = None,
    candidates: Sequence[str] | Mapping[str, Any] | None = None,
    text: str = "text",
    split: str | np.ndarray | None = "published",
    ks: Sequence[int] = (1, 5),
    n_samples: int = 0,
    seed: int = 0,
) -> dict[str, Any]:
    """Zero-shot top-k accuracy of ``label`` from the ``visible`` modalities.

    Candidates are text embeddings: by default every ``label`` value of the table, embedded as the
    normalised mean ``text`` embedding of its rows; a list restricts them (rows whose true label is
    not a candidate are left out and counted); a mapping gives name -> embedding. Methods:
    ``direct`` (cosine of the one visible modality, or of TaxaBind's fusion of several, with the
    candidates) and, with a ProM3E ``model``, ``prom3e`` (the decoded ``text`` slot). ``ranks``
    (default: ``label`` and the coarser rank columns present, e.g. genus, family) scores a rank by
    its best-scoring candidate. Rows: the test rows of ``split`` (``None``: every row), or
    every row of ``test`` when ``train`` and ``test`` are given instead of ``data`` (nothing is
    trained: the default candidates are the ``label`` values of both tables).
    """
    ks = check_counts(ks, "ks")
    check_range(n_samples, "n_samples", minimum=0, integer=True)
    table_rows = eval_rows(
        data, train, test, task="zero-shot", split=split, columns=[label], seed=seed
    )
    batch = table_rows.batch
    vis = parse_modalities(visible, batch.modalities)
    prom3e = resolve_model(model)
    names, protos = _candidates(batch, label, candidates, text)
    labels, known = label_values(batch, label)
    rows = known & batch.has_all(vis)
    if table_rows.split is not None:
        rows &= table_rows.sides(seed=seed) == "test"
    is_candidate = np.isin(labels, names)
    excluded = int((rows & ~is_candidate).sum())
    rows &= is_candidate
    kind = "rows" if table_rows.split is None else f"test rows ({_split_name(table_rows)})"
    check_no_rows(
        rows,
        "zero-shot",
        f"{kind} with a {label!r} value among the candidates and "
        f"{' and '.join(map(repr, vis))} embeddings",
    )
    sub = batch.select(np.flatnonzero(rows))
    scores = {"direct": sub.fuse(vis) @ protos.T}
    if prom3e is not None:
        emb, present = model_inputs(sub, prom3e)
        done = prom3e.complete(emb, visible=vis, n_samples=n_samples, seed=seed, present=present)
        decoded = done.embeddings[:, list(prom3e.modalities).index(text)]
        scores["prom3e"] = normalise(decoded) @ protos.T
    if ranks is None:
        extra = [] if batch.columns is None else batch.columns.column_names
        ranks = [label] + [r for r in RANKS if r in extra and r != label]
    name_index = {n: i for i, n in enumerate(names)}
    truth = np.array([name_index[v] for v in labels[rows]], dtype=np.int64)
    results: dict[str, dict[str, Any]] = {}
    for rank in ranks:
        if rank == label:
            for method, s in scores.items():
                results.setdefault(method, {})[rank] = top_k_hits(s, truth, ks)
            continue
        groups = _rank_of_candidates(batch, label, rank, names)
        group_names = sorted(set(groups))
        member = np.array([group_names.index(g) for g in groups])
        group_truth = member[truth]
        for method, s in scores.items():
            grouped = np.full((len(s), len(group_names)), -np.inf, dtype=np.float32)
            for g in range(len(group_names)):
                grouped[:, g] = s[:, member == g].max(axis=1)
            results.setdefault(method, {})[rank] = top_k_hits(grouped, group_truth, ks)
    return {
        "label": label,
        "visible": vis,
        "candidates": len(names),
        "rows": int(rows.sum()),
        "rows_with_label_not_a_candidate": excluded,
        "methods": results,
    }


def _split_name(rows: EvalRows) -> str:
    if rows.two_tables:
        return f"{rows.tables[1]}"
    return f"split {rows.split!r}" if isinstance(rows.split, str) else "split given as an array"


def _section(results: Mapping[str, Any]) -> Section:
    rows, bars = [], {}
    for visible, result in results.items():
        for method, by_rank in result["methods"].items():
            for rank, scores in by_rank.items():
                rows.append({"visible": visible, "method": method, "rank": rank, **scores})
                bars.setdefault(f"{method} [{visible}]", {})[rank] = 100 * scores["top1"]
    figure = bar_chart(bars, title="Zero-shot top-1", ylabel="top-1 accuracy (%)", xlabel="rank")
    return Section("Zero-shot classification", "", rows, [figure])


def _parse_visible(text: str) -> list[list[str]]:
    return [parse_list(part) for part in text.split(";") if part.strip()]


@register_task(
    name="zero-shot",
    description="Top-k accuracy of the first label against text embeddings of the taxa.",
    options=[
        TaskOption(
            "visible",
            None,
            "visible sets, e.g. 'image;image,sat' (default: each non-text modality and all)",
            _parse_visible,
        )
    ],
    section=_section,
    order=10,
)
def _run(context: EvalContext, visible: Sequence[Sequence[str]] | None) -> dict[str, Any]:
    non_text = context.non_text
    sets = visible or ([[m] for m in non_text] + ([non_text] if len(non_text) > 1 else []))
    return {
        "+".join(v): zero_shot(
            context.table_rows,
            context.model,
            label=context.labels[0],
            visible=v,
            split=context.split,
            seed=context.seed,
        )
        for v in sets
    }
