"""Land-cover suitability maps judged against the ground: MODIS land cover at each grid cell.

A map of "suitability for class C" should rank the cells whose MODIS land cover is C above the
others. :func:`score_against_land_cover` gives its AUC and Boyce index against those cells and the
mean map value on snow-and-ice cells beside that on the class's own cells.
:func:`covariate_baselines` fits the two models a sceptical ecologist would try first on the raw
covariates, with the same presences and background: a logistic regression and elapid's
``MaxentModel``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import numpy as np

from ecomodal.errors import InvalidArgumentError
from ecomodal.maps.grid import Grid
from ecomodal.maps.sdm import auc_roc, boyce_index

#: The land-cover classes the quickstart maps and ``benchmarks/map_truth.py`` judges (as
#: EcoBench-lite spells them).
MAP_CLASSES = (
    "evergreen broadleaf forest",
    "evergreen needleleaf forest",
    "grassland",
    "cropland",
    "barren",
)
SNOW_AND_ICE = "snow and ice"
#: The covariate baselines of :func:`covariate_baselines`.
BASELINES = ("covariate-logistic", "covariate-maxent")

__all__ = [
    "BASELINES",
    "MAP_CLASSES",
    "class_slug",
    "covariate_baselines",
    "describe_truth",
    "grid_land_cover",
    "score_against_land_cover",
]


def class_slug(name: str) -> str:
    """A file-name form of a class name: ``"evergreen broadleaf forest"`` ->
    ``"evergreen-broadleaf-forest"``."""
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def grid_land_cover(grid: Grid) -> np.ndarray:
    """MODIS IGBP land-cover class name at each cell centre [num_cells] (object array)."""
    from ecomodal.geo.labels import land_cover

    return land_cover(np.asarray(grid.lat), np.asarray(grid.lon))[1]


def score_against_land_cover(
    values: Any, cell_classes: Any, class_name: str, *, n_windows: int = 100
) -> dict[str, Any]:
    """How well a map ranks the cells of ``class_name`` above the other cells.

    Args:
        values: the map [num_cells] (NaN cells are left out).
        cell_classes: the land-cover class of each cell [num_cells] (:func:`grid_land_cover`).
        class_name: the class the map is for.

    Returns:
        ``auc`` (class cells against all other cells), ``boyce`` (continuous Boyce index of the
        class cells against all cells), ``class_mean`` and ``snow_ice_mean`` (mean map value on
        the class's cells and on snow-and-ice cells; NaN when there are none),
        ``snow_ice_below`` (``snow_ice_mean < class_mean``; True for the snow-and-ice class
        itself or when no cell is snow and ice), ``n_class_cells``, ``n_cells``.
    """
    values = np.asarray(values, dtype=np.float64).reshape(-1)
    classes = np.asarray(cell_classes, dtype=object).reshape(-1)
    if values.shape != classes.shape:
        raise InvalidArgumentError(
            f"values has {values.size} cells but cell_classes has {classes.size}."
        )
    finite = np.isfinite(values)
    values, classes = values[finite], classes[finite]
    inside = classes == class_name
    if not inside.any() or inside.all():
        raise InvalidArgumentError(
            f"No map cell {'is' if not inside.any() else 'is outside'} {class_name!r}: the map "
            "cannot be judged against it."
        )
    snow = classes == SNOW_AND_ICE
    class_mean = float(values[inside].mean())
    snow_mean = float(values[snow].mean()) if snow.any() else float("nan")
    return {
        "auc": auc_roc(inside.astype(int), values),
        "boyce": boyce_index(values[inside], values, n_windows=n_windows),
        "class_mean": class_mean,
        "snow_ice_mean": snow_mean,
        "snow_ice_below": bool(
            class_name == SNOW_AND_ICE or not snow.any() or snow_mean < class_mean
        ),
        "n_class_cells": int(inside.sum()),
        "n_cells": int(values.size),
    }


def covariate_baselines(
    presence_lat: Sequence[float],
    presence_lon: Sequence[float],
    background_lat: Sequence[float],
    background_lon: Sequence[float],
    grid: Grid,
    *,
    baselines: Sequence[str] = BASELINES,
    covariates: Any = None,
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """Suitability [num_cells] of ``grid`` from SDMs on the raw covariates (the offline stack:
    elevation and 14 bioclimatic variables, z-scored), fitted on the given presences against
    the given background points.

    ``covariate-logistic``: an L2 logistic regression (C = 1, balanced classes) on the
    standardised covariates. ``covariate-maxent``: elapid's ``MaxentModel`` with its default
    features and regularisation. ``covariates`` is a :class:`~ecomodal.geo.covariates.
    CovariateStack` (default: the offline default stack).
    """
    from ecomodal.geo.covariates import CovariateStack
    from ecomodal.maps.sdm import EmbeddingSDM

    unknown = [name for name in baselines if name not in BASELINES]
    if unknown:
        raise InvalidArgumentError(f"Unknown baselines {unknown}; expected some of {BASELINES}.")
    stack = covariates if covariates is not None else CovariateStack.open("default")
    presence = stack.sample(np.asarray(presence_lat), np.asarray(presence_lon)).astype(np.float64)
    background = stack.sample(np.asarray(background_lat), np.asarray(background_lon)).astype(
        np.float64
    )
    cells = stack.sample(np.asarray(grid.lat), np.asarray(grid.lon)).astype(np.float64)
    out = {}
    if "covariate-logistic" in baselines:
        model = EmbeddingSDM(classifier="logistic", C=1.0, seed=seed).fit(presence, background)
        out["covariate-logistic"] = model.predict(cells)
    if "covariate-maxent" in baselines:
        from elapid import MaxentModel

        X = np.concatenate([presence, background])
        y = np.concatenate([np.ones(len(presence)), np.zeros(len(background))])
        maxent = MaxentModel(random_state=seed, n_cpus=1).fit(X, y)
        out["covariate-maxent"] = np.asarray(maxent.predict(cells), dtype=np.float64).reshape(-1)
    return out


def describe_truth(truth: dict[str, Any]) -> str:
    """One line for a map judged against MODIS (:func:`score_against_land_cover` with a
    ``baselines`` entry of the same per baseline): its AUC beside the baselines' AUCs."""
    others = ", ".join(f"{k} {v['auc']:.3f}" for k, v in truth["baselines"].items())
    return f"AUC against MODIS {truth['auc']:.3f} (covariate baselines: {others})"
