"""The ariolimax benchmark's nested model selection and its paired statistics against Maxent,
on a tiny synthetic presence/background set (benchmarks/sdm_vs_maxent.py)."""

from __future__ import annotations

import math

import numpy as np
import pytest


@pytest.fixture(scope="module")
def bench(benchmark_module):
    return benchmark_module("sdm_vs_maxent")


def _region(rng, n: int, lon0: float, kind: str):
    """n points in three 1-degree blocks east of ``lon0``. ``linear``: presence rises with
    x0 - x1 (a logistic regression's boundary); ``band``: presence where |x0| < 0.6 (no linear
    boundary, a random forest's)."""
    lat = rng.uniform(10, 11, n)
    lon = lon0 + rng.integers(0, 3, n) + rng.uniform(0, 1, n)
    X = rng.normal(size=(n, 4))
    if kind == "linear":
        y = (X[:, 0] - X[:, 1] + 0.3 * rng.normal(size=n) > 0.5).astype(int)
    else:
        y = (np.abs(X[:, 0]) < 0.6).astype(int)
    return X, y, lat, lon


def test_paired_difference_by_hand(bench):
    baseline = [0.90, 0.80, 0.70]
    # Differences 0.03, 0.01, 0.02: mean 0.02, sd 0.01, SE 0.01 / sqrt(3) = 0.00577 < 0.02.
    out = bench.paired_difference([0.93, 0.81, 0.72], baseline)
    assert out["mean_difference"] == pytest.approx(0.02)
    assert out["se_difference"] == pytest.approx(0.01 / math.sqrt(3))
    assert out["beats_maxent"] is True
    # Differences 0.04, -0.02, 0.01: mean 0.01, sd 0.03, SE 0.0173 > 0.01: ahead but not beaten.
    out = bench.paired_difference([0.94, 0.78, 0.71], baseline)
    assert out["mean_difference"] == pytest.approx(0.01)
    assert out["se_difference"] == pytest.approx(0.03 / math.sqrt(3))
    assert out["beats_maxent"] is False


def test_nested_selection_sees_the_training_fold_only(bench):
    rng = np.random.default_rng(0)
    parts = [_region(rng, 200, 0.0, "linear"), _region(rng, 200, 20.0, "band")]
    X, y, lat, lon = (np.concatenate(column) for column in zip(*parts, strict=True))
    folds = np.repeat([0, 1], 200)  # outer fold 0 = the linear region, fold 1 = the band
    grid = bench.param_grid(("logistic", "random_forest"), (1.0,))
    assert grid == [
        {"classifier": "logistic", "C": 1.0},
        {"classifier": "random_forest", "C": 1.0},  # a forest ignores C: tried once
    ]

    own = {  # the selection on each region alone
        region: bench.select_params(*(a[folds == region] for a in (X, y, lat, lon)), grid, seed=0)
        for region in (0, 1)
    }
    # Each region alone prefers its own classifier ...
    assert own[0][0]["classifier"] == "logistic"
    assert own[1][0]["classifier"] == "random_forest"
    out = bench.nested_cross_validation(X, y, lat, lon, folds, grid, seed=0)
    # ... so the choice for each outer fold is the *other* region's (its training fold), never
    # the one its test rows would pick, and it repeats the selection on the training rows exactly.
    assert [row["classifier"] for row in out["chosen"]] == ["random_forest", "logistic"]
    for row in out["chosen"]:
        params, scores = own[1 - row["fold"]]  # the training fold is the other region
        assert {"classifier": row["classifier"], "C": row["C"]} == params
        assert row["inner_auc"] == [round(score, 4) for score in scores]
    # The wrong model for each test region ranks it no better than chance.
    assert len(out["auc_per_fold"]) == 2 and max(out["auc_per_fold"]) < 0.6
    assert out["auc"]["mean"] == pytest.approx(np.mean(out["auc_per_fold"]))


def test_inner_folds_with_one_class_join_another(bench):
    rng = np.random.default_rng(1)
    X, y, lat, lon = _region(rng, 120, 0.0, "linear")
    # A fourth block far away holding background points only: its inner fold is merged.
    X = np.concatenate([X, rng.normal(size=(30, 4))])
    y = np.concatenate([y, np.zeros(30, int)])
    lat = np.concatenate([lat, np.full(30, 50.5)])
    lon = np.concatenate([lon, np.full(30, 50.5)])
    params, scores = bench.select_params(
        X, y, lat, lon, bench.param_grid(("logistic",), (0.01, 1.0)), inner_folds=4, seed=0
    )
    assert params["classifier"] == "logistic" and len(scores) == 2
    assert min(scores) > 0.8
    # Three blocks, none holding both classes: no inner fold can score a model.
    with pytest.raises(ValueError, match="inner spatial-block folds hold both"):
        bench.select_params(
            X[:4], np.r_[1, 0, 0, 0], np.full(4, 10.5), np.r_[0.5, 1.5, 2.5, 2.6], [{}], seed=0
        )


def test_best_against_maxent_and_the_done_when(bench):
    def row(auc, difference, se):
        return {
            "auc": {"mean": auc},
            "vs_maxent": {
                "mean_difference": difference,
                "se_difference": se,
                "beats_maxent": difference > se,
            },
        }

    results = {
        "random": {
            bench.MAXENT: {"auc": {"mean": 0.98}},
            "embedding-sdm[a]": row(0.99, 0.01, 0.02),
        },
        "spatial-block": {
            bench.MAXENT: {"auc": {"mean": 0.92}},
            "embedding-sdm[a]": row(0.93, 0.01, 0.02),
            "embedding-sdm[b]": row(0.95, 0.03, 0.01),
        },
    }
    out = bench.best_against_maxent(results)
    assert out["summary"]["spatial-block"]["best_embedding_sdm"] == "embedding-sdm[b]"
    assert out["summary"]["spatial-block"]["maxent_auc"] == 0.92
    assert out["done_when"] is True
    results["random"]["embedding-sdm[a]"] = row(0.97, -0.01, 0.02)  # loses on random folds
    assert bench.best_against_maxent(results)["done_when"] is False


def test_run_feature_sets_need_a_run(bench):
    with pytest.raises(ValueError, match=r"\['prom3e-hidden'\] need run="):
        bench.build_features(None, ["prom3e-hidden+gpkg-covariates"])
