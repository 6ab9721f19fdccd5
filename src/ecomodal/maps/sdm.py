"""Species distribution models (SDMs) on embeddings, their metrics and cross-validation.

:class:`EmbeddingSDM` is an sklearn-style presence/background classifier over any feature vectors
(location, covariate or multimodal embeddings): ``fit(X_presence, X_background)`` then
``predict(X)`` gives a suitability in [0, 1]. The metrics are the usual SDM ones: AUC-ROC
(:func:`auc_roc`), the maximum true skill statistic with its threshold (:func:`max_tss`) and the
continuous Boyce index (:func:`boyce_index`, Hirzel et al. 2006). :func:`cross_validate_sdm` scores
a model over random (:func:`~ecomodal.data.splits.random_folds`) or spatial-block
(:func:`~ecomodal.data.splits.spatial_block_folds`) folds.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.special import expit
from scipy.stats import rankdata, spearmanr
from sklearn.base import BaseEstimator, clone
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression, RidgeClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.validation import check_is_fitted

from ecomodal.data.splits import random_folds
from ecomodal.errors import InvalidArgumentError, InvalidEmbeddingsError

CLASSIFIERS = ("logistic", "ridge", "random_forest")
METRICS = ("auc", "tss", "tss_threshold", "boyce")

__all__ = [
    "CLASSIFIERS",
    "METRICS",
    "EmbeddingSDM",
    "SDMCrossValidation",
    "auc_roc",
    "boyce_curve",
    "boyce_index",
    "cross_validate_sdm",
    "max_tss",
    "random_folds",
]


# ---------------------------------------------------------------------------- input checks
def _check_features(X: Any, name: str, n_features: int | None = None) -> np.ndarray:
    """``X`` as a finite float64 [N, D] array with at least one row, or a clear error."""
    array = np.asarray(X, dtype=np.float64)
    if array.ndim != 2 or array.shape[0] == 0:
        raise InvalidEmbeddingsError(
            f"{name} must be a 2-D array [n_samples, n_features] with at least one row; "
            f"got shape {array.shape}."
        )
    if n_features is not None and array.shape[1] != n_features:
        raise InvalidEmbeddingsError(
            f"{name} has {array.shape[1]} features but the model expects {n_features}."
        )
    bad = ~np.isfinite(array).all(axis=1)
    if bad.any():
        raise InvalidEmbeddingsError(
            f"{name} row {int(np.flatnonzero(bad)[0])} has NaN or infinite values "
            f"({int(bad.sum())} such rows); drop or impute them first."
        )
    return array


def _check_labels_scores(y: Any, score: Any) -> tuple[np.ndarray, np.ndarray]:
    """Binary labels (1 = presence) and finite scores of one length, both classes present."""
    y = np.asarray(y).reshape(-1)
    score = np.asarray(score, dtype=np.float64).reshape(-1)
    if y.shape != score.shape:
        raise InvalidArgumentError(
            f"Found labels and scores of inconsistent lengths: [{y.shape[0]}, {score.shape[0]}]."
        )
    values = set(np.unique(y).tolist())
    if not values <= {0, 1}:
        raise InvalidArgumentError(
            f"y must hold 1 (presence) and 0 (background) only; got {sorted(values)}."
        )
    if len(values) < 2:
        raise InvalidArgumentError("y must contain both presences (1) and background points (0).")
    if not np.isfinite(score).all():
        raise InvalidArgumentError(
            f"score row {int(np.flatnonzero(~np.isfinite(score))[0])} is not finite."
        )
    return y.astype(bool), score


def _check_features_labels(X: Any, y: Any) -> tuple[np.ndarray, np.ndarray]:
    """Features [N, D] and boolean labels [N] (True = presence) of one length."""
    X = _check_features(X, "X")
    y = np.asarray(y).reshape(-1)
    if len(y) != len(X):
        raise InvalidArgumentError(f"Found X and y of inconsistent lengths: [{len(X)}, {len(y)}].")
    y, _ = _check_labels_scores(y, np.zeros(len(y)))
    return X, y


# ---------------------------------------------------------------------------- estimator
@dataclass(repr=False, eq=False)  # the __init__ sklearn asks for: it only stores the arguments
class EmbeddingSDM(BaseEstimator):
    """Presence/background SDM on embedding vectors, in the sklearn style.

    Args:
        classifier: ``"logistic"`` (L2 logistic regression), ``"ridge"`` (ridge classifier on
            +/-1 targets; its decision value is squashed to (0, 1) by a logistic function, so the
            suitability ranks points but is not a calibrated probability) or ``"random_forest"``
            (200 trees; ``C`` is ignored).
        C: inverse regularisation strength (ridge uses ``alpha = 1 / C``).
        class_weight: ``"balanced"`` (presences and background weigh the same in total) or
            None.
        standardize: z-score each feature with training statistics first (linear models).
        max_iter: iteration cap of the logistic solver.
        seed: seed of every random choice (solver, forest).

    Fitted attributes: ``model_`` (the sklearn pipeline), ``n_features_in_``.
    """

    classifier: str = "logistic"
    C: float = 1.0
    class_weight: str | None = "balanced"
    standardize: bool = True
    max_iter: int = 2000
    seed: int = 0

    def _make_classifier(self) -> Any:
        if self.classifier not in CLASSIFIERS:
            raise InvalidArgumentError(
                f"The 'classifier' parameter of EmbeddingSDM must be one of {CLASSIFIERS}; "
                f"got {self.classifier!r}."
            )
        if self.class_weight not in ("balanced", None):
            raise InvalidArgumentError(
                f"class_weight must be 'balanced' or None; got {self.class_weight!r}."
            )
        if self.classifier == "random_forest":
            return RandomForestClassifier(
                n_estimators=200,
                min_samples_leaf=2,
                class_weight=self.class_weight,
                random_state=self.seed,
                n_jobs=1,
            )
        if not self.C > 0:
            raise InvalidArgumentError(f"C must be positive; got {self.C}.")
        if self.classifier == "logistic":
            head = LogisticRegression(
                C=self.C,
                class_weight=self.class_weight,
                max_iter=self.max_iter,
                random_state=self.seed,
            )
        else:
            head = RidgeClassifier(alpha=1.0 / self.C, class_weight=self.class_weight)
        return make_pipeline(StandardScaler(), head) if self.standardize else head

    def fit(self, X_presence: Any, X_background: Any) -> EmbeddingSDM:
        """Fit on presence vectors [P, D] and background vectors [B, D]; returns ``self``."""
        presence = _check_features(X_presence, "X_presence")
        background = _check_features(X_background, "X_background", presence.shape[1])
        X = np.concatenate([presence, background])
        y = np.concatenate([np.ones(len(presence), int), np.zeros(len(background), int)])
        self.model_ = self._make_classifier().fit(X, y)
        self.n_features_in_ = presence.shape[1]
        return self

    def fit_labels(self, X: Any, y: Any) -> EmbeddingSDM:
        """Fit on vectors [N, D] with labels y (1 = presence, 0 = background)."""
        X, y = _check_features_labels(X, y)
        return self.fit(X[y], X[~y])

    def decision_function(self, X: Any) -> np.ndarray:
        """Unbounded presence score [N] (higher = more suitable)."""
        check_is_fitted(self, "model_")
        X = _check_features(X, "X", self.n_features_in_)
        if self.classifier == "random_forest":
            return self.model_.predict_proba(X)[:, 1]
        return self.model_.decision_function(X)

    def linear_weights(self) -> tuple[np.ndarray, float]:
        """(w [D], b) with ``decision_function(X) == X @ w + b`` for the linear classifiers
        (the standardisation folded in): scoring millions of cells is then one float32 product."""
        check_is_fitted(self, "model_")
        if self.classifier == "random_forest":
            raise InvalidArgumentError("a random forest has no linear weights.")
        head = self.model_[-1] if hasattr(self.model_, "steps") else self.model_
        w = np.asarray(head.coef_, dtype=np.float64).ravel()
        b = float(np.ravel(head.intercept_)[0])
        if hasattr(self.model_, "steps"):
            scaler = self.model_[0]
            w = w / scaler.scale_
            b -= float(w @ scaler.mean_)
        return w, b

    def predict(self, X: Any) -> np.ndarray:
        """Habitat suitability [N] in [0, 1] (higher = more suitable)."""
        score = self.decision_function(X)
        if self.classifier == "random_forest":
            return score
        # Ridge decisions estimate +/-1 targets; double them to a logit-like scale.
        return expit(score if self.classifier == "logistic" else 2.0 * score)

    def predict_proba(self, X: Any) -> np.ndarray:
        """[N, 2]: columns background, presence (``predict`` is the second column)."""
        suitability = self.predict(X)
        return np.stack([1.0 - suitability, suitability], axis=1)

    def score(self, X: Any, y: Any) -> float:
        """AUC-ROC of the suitability against labels y (1 = presence, 0 = background)."""
        return auc_roc(y, self.predict(X))


# ---------------------------------------------------------------------------- metrics
def auc_roc(y: Any, score: Any) -> float:
    """Area under the ROC curve: the probability that a random presence scores above a random
    background point (ties count one half), from the Mann-Whitney rank sum."""
    y, score = _check_labels_scores(y, score)
    ranks = rankdata(score)  # average ranks share ties
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def max_tss(y: Any, score: Any) -> tuple[float, float]:
    """Maximum true skill statistic and its threshold.

    TSS = sensitivity + specificity - 1 for the rule "presence if score >= threshold"; every
    distinct score is tried as the threshold and the best (the lowest on ties) is returned as
    ``(tss, threshold)``.
    """
    y, score = _check_labels_scores(y, score)
    positives, negatives = np.sort(score[y]), np.sort(score[~y])
    thresholds = np.unique(score)
    true_pos = len(positives) - np.searchsorted(positives, thresholds, side="left")
    true_neg = np.searchsorted(negatives, thresholds, side="left")
    tss = true_pos / len(positives) + true_neg / len(negatives) - 1.0
    best = int(np.argmax(tss))
    return float(tss[best]), float(thresholds[best])


def boyce_curve(
    score_presence: Any,
    score_background: Any,
    *,
    n_windows: int = 100,
    window: float = 0.1,
) -> tuple[np.ndarray, np.ndarray]:
    """Predicted-to-expected ratios of the continuous Boyce index over a moving window.

    ``n_windows + 1`` windows of width ``window`` x (range of the background scores) slide from
    the lowest to the highest score (both sets); in each, F = (share of presences inside) /
    (share of background inside), ends included. Windows with no background point are dropped.

    Returns:
        (window centres, F), both [n_kept].
    """
    presence = np.asarray(score_presence, dtype=np.float64).reshape(-1)
    background = np.asarray(score_background, dtype=np.float64).reshape(-1)
    for name, values in (("score_presence", presence), ("score_background", background)):
        if values.size == 0 or not np.isfinite(values).all():
            raise InvalidArgumentError(f"{name} must be a non-empty array of finite scores.")
    if int(n_windows) != n_windows or n_windows < 1:
        raise InvalidArgumentError(f"n_windows must be a positive integer; got {n_windows}.")
    if not 0 < window <= 1:
        raise InvalidArgumentError(
            f"window must be a fraction of the score range in (0, 1]; got {window}."
        )
    low = min(presence.min(), background.min())
    high = max(presence.max(), background.max())
    width = window * (background.max() - background.min())
    if width <= 0:
        width = window * max(high - low, 1e-12)
    starts = np.linspace(low, max(high - width, low), int(n_windows) + 1)
    ends = starts + width

    def share(values: np.ndarray) -> np.ndarray:
        # Points in [start, end] for each window: sorted counts, ends inclusive.
        ordered = np.sort(values)
        inside = np.searchsorted(ordered, ends, "right") - np.searchsorted(ordered, starts, "left")
        return inside / len(values)

    expected = share(background)
    kept = expected > 0
    ratio = share(presence)[kept] / expected[kept]
    return (starts[kept] + ends[kept]) / 2.0, ratio


def boyce_index(
    score_presence: Any,
    score_background: Any,
    *,
    n_windows: int = 100,
    window: float = 0.1,
    remove_duplicates: bool = True,
) -> float:
    """Continuous Boyce index (Hirzel et al. 2006; as in ecospat's ``ecospat.boyce``).

    The Spearman correlation between the window centre and the predicted-to-expected ratio F
    (:func:`boyce_curve`): near 1 when presences are ever more over-represented at higher
    suitability, near 0 for a random model, negative for a reversed one. ``score_background`` is
    the suitability over the study area (background points, or all points). With
    ``remove_duplicates`` successive equal F values count once (ecospat's default), so flat runs
    do not inflate the correlation. NaN when fewer than two distinct windows remain.
    """
    centres, ratio = boyce_curve(
        score_presence, score_background, n_windows=n_windows, window=window
    )
    if remove_duplicates and len(ratio):
        keep = np.append(ratio[:-1] != ratio[1:], True)
        centres, ratio = centres[keep], ratio[keep]
    if len(ratio) < 2 or np.ptp(ratio) == 0:
        return float("nan")
    return float(spearmanr(centres, ratio).statistic)


# ---------------------------------------------------------------------------- cross-validation
@dataclass
class SDMCrossValidation:
    """Result of :func:`cross_validate_sdm`.

    Attributes:
        folds: fold index of each sample [N].
        per_fold: one dict per fold with ``auc``, ``tss``, ``tss_threshold``, ``boyce``,
            ``n_train``, ``n_test``, ``n_test_presence``.
        suitability: out-of-fold suitability of each sample [N].
    """

    folds: np.ndarray
    per_fold: list[dict[str, float]] = field(default_factory=list)
    suitability: np.ndarray | None = None

    def summary(self) -> dict[str, dict[str, float]]:
        """Mean and sample standard deviation (ddof=1) over folds of each metric; NaN folds
        (e.g. an undefined Boyce index) are left out and ``n`` says how many counted."""
        out = {}
        for metric in METRICS:
            values = np.array([fold[metric] for fold in self.per_fold], dtype=np.float64)
            values = values[np.isfinite(values)]
            out[metric] = {
                "mean": float(values.mean()) if len(values) else float("nan"),
                "sd": float(values.std(ddof=1)) if len(values) > 1 else float("nan"),
                "n": len(values),
            }
        return out


def _suitability(model: Any, X: np.ndarray) -> np.ndarray:
    """Presence suitability [N] from an EmbeddingSDM or any sklearn-style classifier."""
    if isinstance(model, EmbeddingSDM):
        return model.predict(X)
    if hasattr(model, "predict_proba"):
        return np.asarray(model.predict_proba(X))[:, 1]
    return np.asarray(model.decision_function(X)).reshape(-1)


def cross_validate_sdm(
    model: Any,
    X: Any,
    y: Any,
    folds: int | Sequence[int] | np.ndarray = 5,
    *,
    seed: int = 0,
    n_windows: int = 100,
) -> SDMCrossValidation:
    """Cross-validated AUC-ROC, max-TSS and Boyce index of an SDM.

    Args:
        model: an :class:`EmbeddingSDM` (fitted with ``fit(X_presence, X_background)``) or any
            sklearn-style classifier with ``fit(X, y)`` and ``predict_proba`` (e.g. elapid's
            ``MaxentModel``). A fresh clone is fitted in each fold.
        X: features [N, D].
        y: labels [N], 1 = presence, 0 = background.
        folds: a number of stratified random folds (seeded by ``seed``), or a fold index per
            sample (from :func:`~ecomodal.data.splits.random_folds` or
            :func:`~ecomodal.data.splits.spatial_block_folds`).
        seed: seed of the random folds when ``folds`` is a number.
        n_windows: moving windows of the Boyce index (on the test fold's background).

    Every test fold must hold presences and background points; the error names the fold.
    """
    X, y = _check_features_labels(X, y)
    if np.isscalar(folds):
        fold_index = random_folds(y, int(folds), seed)
    else:
        fold_index = np.asarray(folds).reshape(-1)
        if len(fold_index) != len(y):
            raise InvalidArgumentError(
                f"folds must give one fold index per sample: got {len(fold_index)} for "
                f"{len(y)} samples."
            )
    result = SDMCrossValidation(folds=fold_index, suitability=np.full(len(y), np.nan))
    for fold in np.unique(fold_index):
        test = fold_index == fold
        train = ~test
        for part, mask in (("test", test), ("training", train)):
            if y[mask].all() or not y[mask].any():
                raise InvalidArgumentError(
                    f"Fold {fold}: the {part} set holds only "
                    f"{'presences' if y[mask].any() else 'background points'}; "
                    "use fewer folds or other blocks."
                )
        fitted = clone(model)
        if isinstance(fitted, EmbeddingSDM):
            fitted.fit_labels(X[train], y[train])
        else:
            fitted.fit(X[train], y[train].astype(np.int64))
        score = _suitability(fitted, X[test])
        result.suitability[test] = score
        tss, threshold = max_tss(y[test], score)
        result.per_fold.append(
            {
                "fold": int(fold),
                "auc": auc_roc(y[test], score),
                "tss": tss,
                "tss_threshold": threshold,
                "boyce": boyce_index(score[y[test]], score[~y[test]], n_windows=n_windows),
                "n_train": int(train.sum()),
                "n_test": int(test.sum()),
                "n_test_presence": int(y[test].sum()),
            }
        )
    return result
