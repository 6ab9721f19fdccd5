"""Cross-modal retrieval: direct and ProM3E-mixed queries, R@k and MRR, streamed over the gallery."""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ecomodal.deprecation import renamed_arguments
from ecomodal.errors import InvalidArgumentError
from ecomodal.eval.common import (
    check_counts,
    check_optional_count,
    eval_rows,
    model_inputs,
    normalise,
    resolve_model,
)
from ecomodal.eval.registry import EvalContext, TaskOption, register_task
from ecomodal.io.reader import TableLike
from ecomodal.options import check_range, parse_list
from ecomodal.report import Section, heatmap

DEFAULT_DELTAS = tuple(round(0.1 * i, 1) for i in range(11))
DEFAULT_KS = (1, 5, 10)


def ranks_of_truth(
    queries: np.ndarray,
    gallery: np.ndarray,
    truth: np.ndarray | None = None,
    *,
    query_block: int = 1024,
    gallery_block: int = 16384,
) -> np.ndarray:
    """1-based rank of each query's true gallery item under cosine similarity.

    ``truth[i]`` is the gallery index of query i's match (default: i). The rank is 1 + the number
    of gallery items strictly more similar than the true one (ties count in the query's favour).
    Gallery and queries are read in blocks, so memory is ``query_block * gallery_block`` floats
    whatever the gallery size; ``gallery`` may be a numpy memmap.
    """
    queries = normalise(np.asarray(queries, dtype=np.float32))
    n_gallery = len(gallery)
    truth = np.arange(len(queries)) if truth is None else np.asarray(truth, dtype=np.int64)
    if len(truth) != len(queries):
        raise InvalidArgumentError(f"{len(truth)} truth indices for {len(queries)} queries.")
    if len(truth) and (truth.min() < 0 or truth.max() >= n_gallery):
        raise InvalidArgumentError(f"truth indices must lie in [0, {n_gallery}).")
    true_items = normalise(np.asarray(gallery[truth], dtype=np.float32))
    own = np.einsum("nd,nd->n", queries, true_items) + 1e-6
    ranks = np.ones(len(queries), dtype=np.int64)
    for g_start in range(0, n_gallery, gallery_block):
        block = normalise(np.asarray(gallery[g_start : g_start + gallery_block], dtype=np.float32))
        for q_start in range(0, len(queries), query_block):
            sims = queries[q_start : q_start + query_block] @ block.T
            ranks[q_start : q_start + query_block] += np.count_nonzero(
                sims > own[q_start : q_start + query_block, None], axis=1
            )
    return ranks


#: Gallery sizes above which ``retrieval(index="auto")`` ranks through an approximate index.
INDEX_AUTO_THRESHOLD = 200_000
#: Ways ``retrieval`` ranks a gallery.
RANKINGS = ("exact", "auto", "ivf", "hnsw")


def ranks_by_index(
    queries: np.ndarray,
    gallery: np.ndarray,
    truth: np.ndarray | None = None,
    *,
    depth: int = 10,
    kind: str = "auto",
    seed: int = 0,
) -> np.ndarray:
    """Like :func:`ranks_of_truth`, through a FAISS index of the gallery (see
    :func:`ecomodal.index.build_index`; ``kind`` as there): the rank of each query's true item
    among its top ``depth`` results, ``depth + 1`` when it is not among them. R@k for k <=
    ``depth`` is then exact up to the index's recall, and MRR counts ranks past ``depth`` as
    ``depth + 1`` (at most 1/(depth + 1) above the exact MRR)."""
    import tempfile

    from ecomodal.index import build_index
    from ecomodal.io.batch import EmbeddingBatch

    check_range(depth, "depth", minimum=1, integer=True)
    gallery = np.asarray(gallery, dtype=np.float32)
    truth = np.arange(len(queries)) if truth is None else np.asarray(truth, dtype=np.int64)
    rows = EmbeddingBatch(
        ids=np.arange(len(gallery)).astype(str).astype(object),
        embeddings={"gallery": gallery},
        present={"gallery": np.ones(len(gallery), dtype=bool)},
    )
    with tempfile.TemporaryDirectory(prefix="ecomodal-retrieval-") as folder:
        index = build_index(rows, "gallery", f"{folder}/index", kind=kind, seed=seed)
        found = index.search(np.asarray(queries, dtype=np.float32), min(depth, len(gallery))).rows
    hits = found == truth[:, None]
    return np.where(hits.any(axis=1), hits.argmax(axis=1) + 1, depth + 1).astype(np.int64)


def rank_metrics(ranks: np.ndarray, ks: Sequence[int] = DEFAULT_KS) -> dict[str, float]:
    """``R@k`` (fraction of queries whose match ranks within k) for each k, and ``MRR``."""
    ranks = np.asarray(ranks)
    out = {f"R@{k}": float(np.mean(ranks <= k)) for k in ks}
    out["MRR"] = float(np.mean(1.0 / ranks))
    return out


def mixed_queries(queries: np.ndarray, completions: np.ndarray, delta: float) -> np.ndarray:
    """The mixed query q' = (1 - delta) q + delta * completion (both normalised first)."""
    return (1.0 - delta) * normalise(queries) + delta * normalise(completions)


def tune_delta(
    queries: np.ndarray,
    gallery: np.ndarray,
    completions: np.ndarray,
    deltas: Sequence[float] = DEFAULT_DELTAS,
    *,
    metric: str = "MRR",
) -> tuple[float, dict[str, float]]:
    """The delta of :func:`mixed_queries` with the best ``metric`` (ties: the smaller delta),
    and the metric at every delta; query i's match is gallery item i."""
    scores = {
        float(d): rank_metrics(ranks_of_truth(mixed_queries(queries, completions, d), gallery))[
            metric
        ]
        for d in deltas
    }
    best = max(scores, key=lambda d: (scores[d], -d))
    return best, {str(d): v for d, v in scores.items()}


def parse_pair(pair: str | Sequence[str]) -> tuple[str, str]:
    """``"sat->loc"`` or ``("sat", "loc")`` as a (source, target) tuple."""
    parts = pair.split("->") if isinstance(pair, str) else list(pair)
    if len(parts) != 2 or not all(parts) or parts[0] == parts[1]:
        raise InvalidArgumentError(
            f"A retrieval pair is SOURCE->TARGET of two modalities; got {pair!r}."
        )
    return parts[0].strip(), parts[1].strip()


@renamed_arguments(table="data")
def retrieval(
    data: TableLike | None = None,
    model: Any = None,
    *,
    train: TableLike | None = None,
    test: TableLike | None = None,
    pairs: Sequence[tuple[str, str]] | None = None,
    deltas: Sequence[float] = DEFAULT_DELTAS,
    split: str | np.ndarray = "published",
    ks: Sequence[int] = DEFAULT_KS,
    tune_on: str = "MRR",
    n_samples: int = 0,
    seed: int = 0,
    max_queries: int | None = None,
    ranking: str = "exact",
) -> dict[str, Any]:
    """Cross-modal retrieval for each ordered pair of modalities (``"sat->loc"``...).

    On the test rows that have both modalities, each query embedding of the source modality is
    ranked against the gallery of target embeddings (its own row is the match): R@k and MRR.
    With a ProM3E ``model`` the mixed query q' = (1 - delta) q + delta * fhat (fhat = the query's
    completion into the target modality) is scored too, with delta chosen on the validation rows
    by ``tune_on`` and reported. ``pairs`` defaults to every ordered pair present. ``max_queries``
    takes a seeded sample of queries (the gallery stays whole). Ties count in the query's favour,
    so with a ``text`` gallery (one embedding per species) a query counts as found when it ranks
    its species first. The table is loaded in memory; for galleries beyond memory call
    :func:`ranks_of_truth` on a memory-mapped array. With ``train`` and ``test`` instead of
    ``data``, the queries and the gallery are every row of ``test`` and delta is tuned on the
    training table's validation rows (see :func:`~ecomodal.eval.common.eval_rows`).

    ``ranking="exact"`` (default) ranks every query against the whole gallery; ``"ivf"`` or
    ``"hnsw"`` (``"auto"``: IVF for galleries over ``INDEX_AUTO_THRESHOLD`` rows) through a FAISS
    index (:func:`ranks_by_index`, depth max(ks)): many times faster on large galleries, with R@k
    as exact as the index's recall and MRR truncated at max(ks) (each entry says which).
    """
    if ranking not in RANKINGS:
        raise InvalidArgumentError(f"ranking must be one of {RANKINGS}; got {ranking!r}.")
    max_queries = check_optional_count(max_queries, "max_queries")
    ks = check_counts(ks, "ks")
    for delta in deltas:
        check_range(delta, "deltas", minimum=0, maximum=1)
    check_range(n_samples, "n_samples", minimum=0, integer=True)
    rows_in = eval_rows(data, train, test, task="retrieval", split=split, seed=seed)
    batch = rows_in.batch
    names = [m for m in batch.modalities if batch.present[m].any()]
    if pairs is None:
        pairs = list(itertools.permutations(names, 2))
    pairs = [parse_pair(pair) for pair in pairs]
    prom3e = resolve_model(model)
    labels = rows_in.sides(seed=seed)
    results: dict[str, Any] = {}
    rng = np.random.default_rng(seed)
    cache: dict[str, tuple[np.ndarray, np.ndarray]] = {}

    def completed(source: str, idx: np.ndarray) -> np.ndarray:
        """Every modality completed from ``source`` for rows ``idx`` [n, M, D], each row once."""
        done_rows, done = cache.get(source, (np.array([], np.int64), None))
        missing = np.setdiff1d(idx, done_rows)
        if len(missing):
            emb, present = model_inputs(batch.select(missing), prom3e)
            new = prom3e.complete(
                emb, visible=[source], n_samples=n_samples, seed=seed, present=present
            ).embeddings
            done_rows = np.concatenate([done_rows, missing])
            done = new if done is None else np.concatenate([done, new])
            order = np.argsort(done_rows)
            done_rows, done = done_rows[order], done[order]
            cache[source] = (done_rows, done)
        return done[np.searchsorted(done_rows, idx)]

    for source, target in pairs:
        rows = batch.has_all([source, target])
        test = np.flatnonzero(rows & (labels == "test"))
        val = np.flatnonzero(rows & (labels == "val"))
        if len(test) < 2:
            continue
        if max_queries is not None and len(test) > max_queries:
            query_rows = np.sort(rng.choice(len(test), max_queries, replace=False))
        else:
            query_rows = np.arange(len(test))
        if max_queries is not None and len(val) > max_queries:
            val = np.sort(rng.choice(val, max_queries, replace=False))
        usable = prom3e is not None and {source, target} <= set(prom3e.modalities)

        def completion(idx: np.ndarray, src: str = source, tgt: str = target) -> np.ndarray:
            return completed(src, idx)[:, list(prom3e.modalities).index(tgt)]

        gallery = batch.embeddings[target][test]
        queries = batch.embeddings[source][test[query_rows]]
        # Query i's match is gallery item query_rows[i] (its own row).
        entry: dict[str, Any] = {"queries": len(queries), "gallery": len(gallery)}
        use_index = ranking in ("ivf", "hnsw") or (
            ranking == "auto" and len(gallery) > INDEX_AUTO_THRESHOLD
        )

        def ranks(
            q: np.ndarray,
            use_index: bool = use_index,
            gallery: np.ndarray = gallery,
            truth: np.ndarray = query_rows,
        ) -> np.ndarray:
            if not use_index:
                return ranks_of_truth(q, gallery, truth)
            kind = "ivf" if ranking == "auto" else ranking
            return ranks_by_index(q, gallery, truth, depth=max(ks), kind=kind, seed=seed)

        if use_index:
            entry["ranking"] = f"{'ivf' if ranking == 'auto' else ranking} index, top {max(ks)}"
            entry["ranking_note"] = f"MRR counts ranks past {max(ks)} as {max(ks) + 1}"
        entry["direct"] = rank_metrics(ranks(queries), ks)
        if usable:
            if len(val) >= 2:
                best, by_delta = tune_delta(
                    batch.embeddings[source][val],
                    batch.embeddings[target][val],
                    completion(val),
                    deltas,
                    metric=tune_on,
                )
                entry["delta"] = best
                entry[f"val_{tune_on}_by_delta"] = by_delta
            else:
                entry["delta"] = 0.5
                entry["delta_note"] = "no validation rows with both modalities: delta fixed at 0.5"
            completions = completion(test[query_rows])
            mixed = mixed_queries(queries, completions, entry["delta"])
            entry["mixed"] = rank_metrics(ranks(mixed), ks)
            entry["completion_only"] = rank_metrics(ranks(completions), ks)
        results[f"{source}->{target}"] = entry
    return {"pairs": results, "split": rows_in.split_name}


def _section(result: Mapping[str, Any]) -> Section:
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


@register_task(
    name="retrieval",
    description="Cross-modal retrieval between pairs of modalities, direct and ProM3E-mixed.",
    options=[
        TaskOption(
            "pairs", None, "e.g. sat->loc,loc->sat (default: every ordered pair)", parse_list
        ),
        TaskOption("max_queries", None, "a seeded sample of queries per pair", int),
        TaskOption(
            "ranking", "exact", "exact, auto (an IVF index for large galleries), ivf or hnsw"
        ),
    ],
    section=_section,
    order=40,
)
def _run(
    context: EvalContext,
    pairs: Sequence[str | Sequence[str]] | None,
    max_queries: int | None,
    ranking: str = "exact",
) -> dict[str, Any]:
    return retrieval(
        context.table_rows,
        context.model,
        pairs=pairs,
        split=context.split,
        seed=context.seed,
        max_queries=max_queries,
        ranking=ranking,
    )
