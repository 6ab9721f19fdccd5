"""Species distribution models on embeddings: estimator, metrics, folds, and the Maxent benchmark."""

import json
import runpy
from pathlib import Path

import numpy as np
import pytest
from sklearn.exceptions import NotFittedError
from sklearn.metrics import roc_auc_score, roc_curve

from ecomodal.errors import InvalidEmbeddingsError
from ecomodal.geo.blocks import block_ids, spatial_blocks
from ecomodal.maps.sdm import (
    CLASSIFIERS,
    EmbeddingSDM,
    auc_roc,
    boyce_curve,
    boyce_index,
    cross_validate_sdm,
    max_tss,
    random_folds,
)

BENCHMARK = Path(__file__).resolve().parents[2] / "benchmarks" / "sdm_vs_maxent.py"


def _blobs(seed: int, n_presence: int = 60, n_background: int = 240, dim: int = 8):
    """Presences shifted along the first two axes from standard-normal background points."""
    rng = np.random.default_rng(seed)
    presence = rng.normal(size=(n_presence, dim))
    presence[:, :2] += 2.0
    background = rng.normal(size=(n_background, dim))
    return presence, background


# ---------------------------------------------------------------------------- metrics
def test_auc_by_hand_and_against_sklearn():
    # Pairs (presence > background): 0.35 beats 0.1 only, 0.8 beats both -> 3 of 4.
    assert auc_roc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) == pytest.approx(0.75)
    rng = np.random.default_rng(4)
    y = rng.integers(0, 2, 300)
    score = np.round(rng.normal(size=300) + y, 1)  # rounding makes many ties
    assert auc_roc(y, score) == pytest.approx(roc_auc_score(y, score), abs=1e-12)
    assert auc_roc(y, -score) == pytest.approx(1 - roc_auc_score(y, score), abs=1e-12)


def test_max_tss_by_hand_and_against_the_roc_curve():
    y = [0, 0, 1, 0, 1, 1, 1]
    score = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7]
    # Threshold 0.5: sensitivity 3/4, specificity 3/3 -> 0.75 (0.3 gives 1 + 2/3 - 1).
    tss, threshold = max_tss(y, score)
    assert tss == pytest.approx(0.75) and threshold == pytest.approx(0.5)
    rng = np.random.default_rng(5)
    y = rng.integers(0, 2, 400)
    score = rng.normal(size=400) + 1.5 * y
    fpr, tpr, _ = roc_curve(y, score)
    tss, threshold = max_tss(y, score)
    assert tss == pytest.approx(np.max(tpr - fpr), abs=1e-12)
    predicted = score >= threshold
    sensitivity = predicted[y == 1].mean()
    specificity = (~predicted[y == 0]).mean()
    assert sensitivity + specificity - 1 == pytest.approx(tss)


def test_metrics_reject_bad_labels():
    with pytest.raises(ValueError, match="both presences"):
        auc_roc([1, 1, 1], [0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match=r"1 \(presence\) and 0"):
        max_tss([0, 2, 1], [0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match="inconsistent lengths"):
        auc_roc([0, 1], [0.1, 0.2, 0.3])


def test_boyce_curve_and_index_by_hand():
    background = np.linspace(0, 1, 11)
    presence = np.array([0.8, 0.85, 0.9])
    # Window width 0.5 x range 1; starts 0, 0.25, 0.5. Background shares 6/11, 5/11, 6/11;
    # presence shares 0, 0, 1.
    centres, ratio = boyce_curve(presence, background, n_windows=2, window=0.5)
    np.testing.assert_allclose(centres, [0.25, 0.5, 0.75])
    np.testing.assert_allclose(ratio, [0.0, 0.0, 11 / 6])
    # Without duplicate removal: Spearman of (1, 2, 3) with (1.5, 1.5, 3) = sqrt(3) / 2.
    raw = boyce_index(presence, background, n_windows=2, window=0.5, remove_duplicates=False)
    assert raw == pytest.approx(np.sqrt(3) / 2)
    # With it, the repeated 0 counts once: two windows, increasing -> 1.
    assert boyce_index(presence, background, n_windows=2, window=0.5) == pytest.approx(1.0)


def test_boyce_is_high_for_a_good_ranking_and_negative_for_a_reversed_one():
    rng = np.random.default_rng(6)
    background = rng.uniform(0, 1, 5000)
    # Presences drawn with probability rising with suitability.
    presence = background[rng.uniform(size=5000) < background**2]
    assert boyce_index(presence, background) > 0.9
    assert boyce_index(1 - presence, background) < -0.9
    assert np.isnan(boyce_index([0.5], np.full(10, 0.5)))
    with pytest.raises(ValueError, match="window"):
        boyce_index(presence, background, window=0)


# ---------------------------------------------------------------------------- estimator
@pytest.mark.parametrize("classifier", CLASSIFIERS)
def test_embedding_sdm_separates_presences_from_background(classifier):
    presence, background = _blobs(0)
    model = EmbeddingSDM(classifier=classifier, seed=1)
    assert model.fit(presence, background) is model
    test_presence, test_background = _blobs(1)
    X = np.concatenate([test_presence, test_background])
    y = np.r_[np.ones(len(test_presence)), np.zeros(len(test_background))]
    suitability = model.predict(X)
    assert suitability.shape == (len(X),)
    assert suitability.min() >= 0 and suitability.max() <= 1
    assert model.score(X, y) > 0.9
    proba = model.predict_proba(X)
    np.testing.assert_allclose(proba[:, 1], suitability)
    np.testing.assert_allclose(proba.sum(1), 1.0)
    # Same seed, same model.
    again = EmbeddingSDM(classifier=classifier, seed=1).fit(presence, background)
    np.testing.assert_array_equal(again.predict(X), suitability)


def test_embedding_sdm_errors_name_the_problem():
    presence, background = _blobs(0)
    with pytest.raises(ValueError, match="'classifier' parameter .* got 'svm'"):
        EmbeddingSDM(classifier="svm").fit(presence, background)
    with pytest.raises(InvalidEmbeddingsError, match="X_background has 3 features .* expects 8"):
        EmbeddingSDM().fit(presence, background[:, :3])
    bad = presence.copy()
    bad[7, 2] = np.nan
    with pytest.raises(InvalidEmbeddingsError, match="X_presence row 7"):
        EmbeddingSDM().fit(bad, background)
    with pytest.raises(NotFittedError):
        EmbeddingSDM().predict(presence)


# ---------------------------------------------------------------------------- folds
def test_spatial_blocks_keep_each_block_in_one_fold():
    rng = np.random.default_rng(7)
    lat, lon = rng.uniform(30, 42, 2000), rng.uniform(-125, -113, 2000)
    folds = spatial_blocks(lat, lon, block_size_deg=1.0, n_folds=4, seed=3)
    assert folds.shape == (2000,) and set(folds) == {0, 1, 2, 3}
    block = np.floor(lat).astype(int) * 1000 + np.floor(lon).astype(int)
    ids = block_ids(lat, lon, 1.0)
    for b in np.unique(block):
        assert len(set(folds[block == b])) == 1
        assert len(set(ids[block == b])) == 1
    assert ids.max() + 1 == len(np.unique(block))
    sizes = np.bincount(folds)
    assert sizes.max() - sizes.min() < 0.1 * len(folds)
    np.testing.assert_array_equal(folds, spatial_blocks(lat, lon, 1.0, 4, seed=3))
    assert not np.array_equal(folds, spatial_blocks(lat, lon, 1.0, 4, seed=4))
    # Longitudes are wrapped: 190 E is the block of -170.
    wrapped = spatial_blocks([0, 0, 50, 50], [190, -170, 0, 0.5], 5.0, 2, seed=0)
    assert wrapped[0] == wrapped[1] and wrapped[2] == wrapped[3] and wrapped[0] != wrapped[2]


def test_spatial_blocks_errors():
    with pytest.raises(ValueError, match="Row 1"):
        spatial_blocks([10, 95], [0, 0], 1.0, 2)
    with pytest.raises(ValueError, match="Only 1 blocks"):
        spatial_blocks([10.1, 10.2], [0.1, 0.2], 1.0, 2)
    with pytest.raises(ValueError, match="block_size_deg"):
        spatial_blocks([10, 20], [0, 0], 0.0, 2)


def test_random_folds_are_stratified_and_seeded():
    y = np.r_[np.ones(50, int), np.zeros(200, int)]
    folds = random_folds(y, n_folds=5, seed=2)
    for fold in range(5):
        assert y[folds == fold].sum() == 10 and (folds == fold).sum() == 50
    np.testing.assert_array_equal(folds, random_folds(y, 5, seed=2))
    assert not np.array_equal(folds, random_folds(y, 5, seed=3))


def test_cross_validation_scores_out_of_fold_predictions():
    presence, background = _blobs(2, n_presence=80, n_background=320)
    X = np.concatenate([presence, background])
    y = np.r_[np.ones(80, int), np.zeros(320, int)]
    folds = random_folds(y, 4, seed=0)
    result = cross_validate_sdm(EmbeddingSDM(seed=0), X, y, folds)
    assert len(result.per_fold) == 4
    # Fold 2 is predicted by a model that never saw it.
    test = folds == 2
    alone = EmbeddingSDM(seed=0).fit(X[~test & (y == 1)], X[~test & (y == 0)])
    np.testing.assert_allclose(result.suitability[test], alone.predict(X[test]))
    assert result.per_fold[2]["auc"] == pytest.approx(auc_roc(y[test], alone.predict(X[test])))
    summary = result.summary()
    aucs = [fold["auc"] for fold in result.per_fold]
    assert summary["auc"]["mean"] == pytest.approx(np.mean(aucs))
    assert summary["auc"]["sd"] == pytest.approx(np.std(aucs, ddof=1))
    assert summary["auc"]["mean"] > 0.9 and summary["tss"]["mean"] > 0.6
    # A test fold of background points only cannot be scored; the error names the fold.
    only_background = folds.copy()
    only_background[y == 0] = 7
    with pytest.raises(ValueError, match="Fold 0: the test set holds only presences"):
        cross_validate_sdm(EmbeddingSDM(), X, y, only_background)


# ---------------------------------------------------------------------------- benchmark
def test_benchmark_on_a_subset_of_ariolimax(tmp_path, default_covariates):
    bench = runpy.run_path(str(BENCHMARK))
    frame = bench["load_ariolimax"](max_points=300, seed=0)
    assert 295 <= len(frame) <= 305
    # Real Californian points after reprojection from UTM 10N; about a quarter are presences.
    assert frame["lat"].between(32, 42.1).all() and frame["lon"].between(-124.5, -114).all()
    assert 0.2 < frame["presence"].mean() < 0.3
    features = bench["build_features"](frame.head(20))
    assert features["geoclip"].shape == (20, 512)
    assert features["era5-covariates"].shape == (20, 15)
    assert features["sinr-random"].shape == (20, 512)
    np.testing.assert_allclose(np.linalg.norm(features["sinr-random"], axis=1), 1.0, rtol=1e-5)
    np.testing.assert_array_equal(
        features["geoclip+era5-covariates"],
        np.concatenate([features["geoclip"], features["era5-covariates"]], axis=1),
    )

    out = tmp_path / "results.json"
    report = bench["main"](
        ["--max-points", "300", "--folds", "3", "--block-size", "1.0", "--C-grid", "0.01,0.1"]
        + ["--json", str(out)]
    )
    assert json.loads(out.read_text()) == json.loads(json.dumps(report))
    assert set(report["results"]) == {"random", "spatial-block"}
    for cv, models in report["results"].items():
        assert set(models) == {
            *(f"embedding-sdm[{name}]" for name in bench["FEATURE_SETS"]),
            "maxent[gpkg-covariates]",
        }
        for name, scores in models.items():
            assert scores["auc"]["n"] == 3, (cv, name)
            # Every model finds the slugs' habitat well above chance on real data.
            assert scores["auc"]["mean"] > 0.75, (cv, name, scores)
            assert 0 < scores["tss"]["mean"] <= 1
            assert len(scores["auc_per_fold"]) == 3
            if name.startswith("embedding-sdm"):  # C chosen inside each training fold
                assert [row["fold"] for row in scores["chosen"]] == [0, 1, 2]
                assert {row["C"] for row in scores["chosen"]} <= {0.01, 0.1}
                assert scores["vs_maxent"]["beats_maxent"] == (
                    scores["vs_maxent"]["mean_difference"] > scores["vs_maxent"]["se_difference"]
                )
    assert sum(report["folds"]["spatial-block"]) == len(frame)
