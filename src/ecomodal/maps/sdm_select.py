"""Model selection for SDMs: :func:`select_sdm` chooses an :class:`~ecomodal.maps.sdm.EmbeddingSDM`'s
classifier and regularisation by spatial-block cross-validation, and :class:`ModalitySDM` fits one
such SDM per modality (location, environment, satellite, ProM3E hidden features ...) and averages
them: the default SDM of ``species_map(points=...)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.special import expit
from sklearn.base import BaseEstimator
from sklearn.linear_model import LogisticRegression
from sklearn.utils.extmath import randomized_svd
from sklearn.utils.validation import check_is_fitted

from ecomodal.data.splits import block_ids, spatial_block_folds
from ecomodal.errors import InvalidArgumentError, InvalidEmbeddingsError
from ecomodal.maps.sdm import EmbeddingSDM, _check_features, cross_validate_sdm

#: Candidates of the spatial-block model selection (:func:`select_sdm`): L2 logistic regression
#: over four decades of regularisation.
DEFAULT_CANDIDATES: tuple[dict[str, Any], ...] = tuple(
    {"classifier": "logistic", "C": C} for C in (0.0001, 0.001, 0.01, 0.1)
)

__all__ = [
    "DEFAULT_CANDIDATES",
    "ModalitySDM",
    "SDMSelection",
    "default_block_deg",
    "select_sdm",
]


# ---------------------------------------------------------------------------- model selection
def default_block_deg(lat: Any, lon: Any) -> float:
    """Side of the cross-validation blocks when none is given: a tenth of the larger side of
    the points' bounding box, between 0.1 and 10 degrees (10 for global data)."""
    lat, lon = np.asarray(lat, dtype=np.float64), np.asarray(lon, dtype=np.float64)
    extent = max(float(np.ptp(lat)), float(np.ptp(lon))) if len(lat) else 0.0
    return float(np.clip(round(extent / 10.0, 1), 0.1, 10.0))


@dataclass
class SDMSelection:
    """Result of :func:`select_sdm`.

    Attributes:
        best: the chosen :class:`EmbeddingSDM`, fitted on all the points.
        scores: one dict per candidate: its parameters, ``auc`` (mean over the folds) and
            ``auc_sd`` (sample sd over folds), in the order tried.
        block_deg: side of the spatial blocks in degrees.
        n_folds: number of folds.
    """

    best: EmbeddingSDM
    scores: list[dict[str, Any]]
    block_deg: float
    n_folds: int

    def summary(self) -> dict[str, Any]:
        """JSON-ready: the chosen parameters, the block size and every candidate's score."""
        chosen = {k: v for k, v in self.best.get_params().items() if k in ("classifier", "C")}
        return {
            "chosen": chosen,
            "block_deg": self.block_deg,
            "n_folds": self.n_folds,
            "candidates": self.scores,
        }


def select_sdm(
    X_presence: Any,
    X_background: Any,
    *,
    presence_lat: Any,
    presence_lon: Any,
    background_lat: Any,
    background_lon: Any,
    candidates: Sequence[dict[str, Any]] | None = None,
    block_deg: float | None = None,
    n_folds: int = 5,
    seed: int = 0,
) -> SDMSelection:
    """Choose an :class:`EmbeddingSDM`'s classifier and regularisation by spatial-block
    cross-validation, then fit the winner on every point.

    Presences and background points are dealt to ``n_folds`` folds by square blocks of
    ``block_deg`` degrees (:func:`~ecomodal.data.splits.spatial_block_folds`; default
    :func:`default_block_deg`), so a candidate is scored on places away from those it was fitted
    on. Each candidate (``EmbeddingSDM`` keyword arguments; default :data:`DEFAULT_CANDIDATES`)
    gets its mean AUC over the folds; the best wins, the simpler (earlier) candidate on ties.
    When the blocks are too few for ``n_folds``, as many folds as blocks allow (at least 2) are
    used.
    """
    presence = _check_features(X_presence, "X_presence")
    background = _check_features(X_background, "X_background", presence.shape[1])
    lat = np.concatenate([np.asarray(presence_lat, float), np.asarray(background_lat, float)])
    lon = np.concatenate([np.asarray(presence_lon, float), np.asarray(background_lon, float)])
    if len(lat) != len(presence) + len(background) or len(lon) != len(lat):
        raise InvalidArgumentError(
            f"presence_lat/lon and background_lat/lon must give one coordinate per point: "
            f"{len(presence)} presences and {len(background)} background points."
        )
    candidates = list(candidates if candidates is not None else DEFAULT_CANDIDATES)
    if not candidates:
        raise InvalidArgumentError("candidates must name at least one EmbeddingSDM setting.")
    block = default_block_deg(lat, lon) if block_deg is None else float(block_deg)
    X = np.concatenate([presence, background])
    y = np.concatenate([np.ones(len(presence), int), np.zeros(len(background), int)])
    folds = _usable_folds(lat, lon, y, block, n_folds, seed)
    scores = []
    for params in candidates:
        model = EmbeddingSDM(**{"seed": seed, **params})
        model._make_classifier()  # a bad candidate is an error before any fit
        if folds is None:
            auc = {"mean": float("nan"), "sd": float("nan")}
        else:
            auc = cross_validate_sdm(model, X, y, folds).summary()["auc"]
        scores.append({**params, "auc": auc["mean"], "auc_sd": auc["sd"]})
    means = np.array([row["auc"] for row in scores], dtype=np.float64)
    winner = int(np.nanargmax(means)) if np.isfinite(means).any() else 0
    best = EmbeddingSDM(**{"seed": seed, **candidates[winner]}).fit(presence, background)
    n_used = 0 if folds is None else len(np.unique(folds))
    return SDMSelection(best=best, scores=scores, block_deg=block, n_folds=n_used)


def principal_axes(
    X: np.ndarray, n_components: int | None, seed: int = 0
) -> tuple[np.ndarray, Any]:
    """(mean [D], leading principal axes [D, k]) of X; axes None when no reduction is asked or
    needed. The randomized SVD is seeded and fixes each axis's sign (sklearn's ``flip_sign``),
    so the same data and seed give the same axes."""
    mean = X.mean(axis=0)
    if n_components is None or n_components >= X.shape[1]:
        return mean, None
    # A seeded randomized SVD (Halko et al.): a few [N, D] x [D, k] products instead of a full
    # decomposition, which LAPACK makes slow and erratic on rank-deficient features.
    _, _, vt = randomized_svd(X - mean, n_components, n_iter=4, random_state=seed)
    axes = vt.T
    flip = np.sign(axes[np.abs(axes).argmax(axis=0), np.arange(axes.shape[1])])
    return mean, axes * np.where(flip == 0, 1.0, flip)


def _usable_folds(
    lat: np.ndarray, lon: np.ndarray, y: np.ndarray, block: float, n_folds: int, seed: int
) -> np.ndarray | None:
    """Spatial-block folds whose test and training parts all hold both classes, with as many
    folds as the blocks allow (from ``n_folds`` down to 2); None when no split works."""
    n_blocks = len(np.unique(block_ids(lat, lon, block)))
    for k in range(min(int(n_folds), n_blocks), 1, -1):
        folds = spatial_block_folds(lat, lon, block, k, seed)
        if all(0 < y[folds == f].sum() < (folds == f).sum() for f in range(k)) and all(
            0 < y[folds != f].sum() < (folds != f).sum() for f in range(k)
        ):
            return folds
    return None


# ---------------------------------------------------------------------------- several modalities
@dataclass(repr=False, eq=False)
class ModalitySDM(BaseEstimator):
    """Presence/background SDM over several modalities: one :class:`EmbeddingSDM` per modality,
    each with its classifier and regularisation chosen by spatial-block cross-validation
    (:func:`select_sdm`), combined by averaging their standardised decision values.

    Each modality's decision values are z-scored with their mean and sd over the background
    points, so every modality counts the same whatever its dimension or scale; the average is
    mapped to (0, 1) by a one-feature logistic regression fitted on the same presences and
    background (monotone: it changes no ranking).

    Args:
        candidates: ``EmbeddingSDM`` settings tried for every modality (default
            :data:`DEFAULT_CANDIDATES`).
        block_deg: side of the cross-validation blocks (default :func:`default_block_deg`).
        n_folds: cross-validation folds.
        n_components: each modality is first projected on its leading principal components
            (of the presences and background together; None keeps every dimension). Heavily
            regularised SDMs lose nothing by it and fit several times faster.
        seed: seed of the folds and the classifiers.

    Fitted attributes: ``modalities_``, ``projections_`` ({modality: (mean [D], components
    [D, k])}), ``selections_`` ({modality: :class:`SDMSelection`}),
    ``center_``/``scale_`` (background statistics of each modality's decision values),
    ``calibration_`` ((slope, intercept) of the final logistic map).
    """

    candidates: tuple[dict[str, Any], ...] | None = None
    block_deg: float | None = None
    n_folds: int = 5
    n_components: int | None = 64
    seed: int = 0

    def fit(
        self,
        presence: dict[str, Any],
        background: dict[str, Any],
        *,
        presence_lat: Any,
        presence_lon: Any,
        background_lat: Any,
        background_lon: Any,
    ) -> ModalitySDM:
        """Fit on {modality: presence vectors [P, D_m]} and {modality: background [B, D_m]}
        with the points' coordinates (for the spatial blocks); returns ``self``."""
        if not presence or set(presence) != set(background):
            raise InvalidArgumentError(
                "presence and background must give the same modalities (at least one); got "
                f"{sorted(presence)} and {sorted(background)}."
            )
        self.modalities_ = list(presence)
        self.selections_, self.center_, self.scale_, self.projections_ = {}, {}, {}, {}
        presence = {name: _check_features(presence[name], name) for name in self.modalities_}
        background = {name: _check_features(background[name], name) for name in self.modalities_}
        for name in self.modalities_:
            self.projections_[name] = principal_axes(
                np.concatenate([presence[name], background[name]]), self.n_components, self.seed
            )
            presence[name] = self._project(name, presence[name])
            background[name] = self._project(name, background[name])
        for name in self.modalities_:
            selection = select_sdm(
                presence[name],
                background[name],
                presence_lat=presence_lat,
                presence_lon=presence_lon,
                background_lat=background_lat,
                background_lon=background_lon,
                candidates=self.candidates,
                block_deg=self.block_deg,
                n_folds=self.n_folds,
                seed=self.seed,
            )
            back_score = selection.best.decision_function(background[name])
            self.selections_[name] = selection
            self.center_[name] = float(back_score.mean())
            self.scale_[name] = float(back_score.std()) or 1.0
        z_presence, z_background = self._mean_z(presence), self._mean_z(background)
        z = np.concatenate([z_presence, z_background])[:, None]
        y = np.concatenate([np.ones(len(z_presence)), np.zeros(len(z_background))])
        head = LogisticRegression(class_weight="balanced").fit(z, y)
        self.calibration_ = (float(head.coef_[0, 0]), float(head.intercept_[0]))
        return self

    def decision_function(self, features: dict[str, Any]) -> np.ndarray:
        """Mean standardised decision value [N] over the modalities (higher = more suitable)."""
        check_is_fitted(self, "selections_")
        missing = [name for name in self.modalities_ if name not in features]
        if missing:
            raise InvalidArgumentError(
                f"The SDM was fitted on {self.modalities_}; features lack {missing}."
            )
        return self._mean_z(
            {
                name: self._project(name, _check_features(features[name], name))
                for name in self.modalities_
            }
        )

    def _mean_z(self, projected: dict[str, np.ndarray]) -> np.ndarray:
        """Mean over the modalities of each one's decision value, z-scored by its background
        statistics, on features already projected (:meth:`_project`)."""
        total = sum(
            (self.selections_[name].best.decision_function(projected[name]) - self.center_[name])
            / self.scale_[name]
            for name in self.modalities_
        )
        return total / len(self.modalities_)

    def _project(self, name: str, X: np.ndarray) -> np.ndarray:
        mean, axes = self.projections_[name]
        if X.shape[1] != len(mean):
            raise InvalidEmbeddingsError(
                f"{name} features have {X.shape[1]} dimensions; the SDM was fitted on {len(mean)}."
            )
        return X if axes is None else (X - mean) @ axes

    def predict(self, features: dict[str, Any]) -> np.ndarray:
        """Habitat suitability [N] in (0, 1)."""
        slope, intercept = self.calibration_
        return expit(slope * self.decision_function(features) + intercept)

    def summary(self) -> dict[str, Any]:
        """JSON-ready: per modality the chosen classifier and C and every candidate's CV AUC."""
        check_is_fitted(self, "selections_")
        return {name: self.selections_[name].summary() for name in self.modalities_}
