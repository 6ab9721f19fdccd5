"""Retrieval ranked through a FAISS index: the same ranks as exact search within its depth."""

from __future__ import annotations

import numpy as np
import pytest

from ecomodal.errors import InvalidArgumentError
from ecomodal.eval.retrieval import rank_metrics, ranks_by_index, ranks_of_truth


def _clustered(n: int, dim: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(40, dim))
    gallery = centres[rng.integers(0, 40, n)] + 0.4 * rng.normal(size=(n, dim))
    queries = gallery + 0.3 * rng.normal(size=gallery.shape)
    return queries.astype(np.float32), gallery.astype(np.float32)


@pytest.mark.parametrize("kind", ["exact", "ivf", "hnsw"])
def test_index_ranks_agree_with_exact_ranks_within_the_depth(kind):
    queries, gallery = _clustered(3000, 32, 0)
    exact = ranks_of_truth(queries, gallery)
    approx = ranks_by_index(queries, gallery, depth=10, kind=kind)
    inside = exact <= 10
    agree = np.mean(approx[inside] == exact[inside])
    assert agree >= (1.0 if kind == "exact" else 0.9), agree
    assert (approx[~inside] == 11).all()
    for k in (1, 5, 10):
        assert rank_metrics(approx, [k])[f"R@{k}"] == pytest.approx(
            rank_metrics(exact, [k])[f"R@{k}"], abs=0.0 if kind == "exact" else 0.05
        )
    # Truncated MRR is never below the exact one, and at most 1/11 above it.
    gap = rank_metrics(approx)["MRR"] - rank_metrics(exact)["MRR"]
    assert -0.05 <= gap <= 1 / 11 + 1e-9


def test_truth_rows_are_honoured():
    queries, gallery = _clustered(500, 16, 1)
    truth = np.arange(500)[::-1].copy()
    shuffled = gallery[::-1].copy()
    np.testing.assert_array_equal(
        ranks_by_index(queries, shuffled, truth, depth=5, kind="exact"),
        np.minimum(ranks_of_truth(queries, shuffled, truth), 6),
    )


def test_retrieval_ranks_through_an_index_like_exact(synthetic_run):
    from ecomodal.eval.retrieval import retrieval

    table, model, _ = synthetic_run
    pairs = ["sat->loc", "loc->env"]
    exact = retrieval(table, model, pairs=pairs)["pairs"]
    indexed = retrieval(table, model, pairs=pairs, ranking="hnsw")["pairs"]
    for pair in pairs:
        assert indexed[pair]["ranking"] == "hnsw index, top 10"
        for variant in ("direct", "mixed"):
            for k in ("R@1", "R@5", "R@10"):
                assert indexed[pair][variant][k] == pytest.approx(
                    exact[pair][variant][k], abs=0.02
                ), (pair, variant, k)
    with pytest.raises(InvalidArgumentError, match="ranking"):
        retrieval(table, model, pairs=pairs, ranking="fast")
