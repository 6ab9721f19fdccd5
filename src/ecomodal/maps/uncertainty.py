"""ProM3E uncertainty maps (the uncertainty model's expected completion error per cell, or
sigma_l1, the published biodiversity proxy) and the regression of sigma against observed species
density (R^2 and Pearson r)."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ecomodal.encoders.base import Encoder
from ecomodal.errors import InvalidArgumentError, MapError, MissingUncertaintyModelError
from ecomodal.maps.cache import DEFAULT_CHUNK_ROWS, GridEmbeddings, grid_embeddings
from ecomodal.maps.completion import iter_completions
from ecomodal.maps.grid import Grid
from ecomodal.maps.output import GridMap
from ecomodal.maps.points import points_lat_lon, read_points
from ecomodal.modalities import parse_modalities
from ecomodal.models.calibration import has_uncertainty_model
from ecomodal.models.factory import load_model
from ecomodal.models.prom3e import ProM3E
from ecomodal.options import check_range

#: The visible set of the published biodiversity map.
DEFAULT_VISIBLE = ("sat", "loc", "env")
#: What an uncertainty map shows: the uncertainty model's expected error (1 - cosine of each
#: completed modality to the truth) or ProM3E's published sigma_l1.
MEASURES = ("expected-error", "sigma-l1")


def _completable(model: ProM3E, names: Sequence[str]) -> list[str]:
    """The modalities the model's calibration completes from ``names`` (those its neighbour bank
    holds, not visible)."""
    calibration = model.calibration
    bank = calibration.bank
    return [
        m
        for i, m in enumerate(model.modalities)
        if m not in names and bool(bank.present[:, i].any())
    ]


def choose_measure(model: ProM3E, names: Sequence[str], measure: str | None) -> str:
    """The measure an uncertainty map shows. ``None``: ``expected-error`` when the model has an
    uncertainty model and the visible set leaves a modality to complete, else ``sigma-l1``. An
    explicit ``expected-error`` on a model without an uncertainty model (or with nothing left to
    complete) raises a clear error."""
    if measure is not None and measure not in MEASURES:
        raise InvalidArgumentError(
            f"measure must be one of {', '.join(MEASURES)}; got {measure!r}."
        )
    calibrated = has_uncertainty_model(model)
    if measure is None:
        return "expected-error" if calibrated and _completable(model, names) else "sigma-l1"
    if measure == "expected-error":
        if not calibrated:
            raise MissingUncertaintyModelError(
                "measure expected-error needs a model with an uncertainty model and this one "
                "has none; fit one with `ecomodal calibrate --model DIR --data TABLE` (or use "
                "measure sigma-l1)."
            )
        if not _completable(model, names):
            raise MapError(
                f"measure expected-error: the visible modalities {', '.join(names)} leave "
                "nothing to complete; make fewer visible (--visible) or use measure sigma-l1."
            )
    return measure


@dataclass
class SigmaMap:
    """sigma_l1 per cell as a map, plus the full sigma vectors [num_cells, E] (NaN where a cell
    could not be completed) used as regression features."""

    map: GridMap
    sigma: np.ndarray


def uncertainty_map(
    model: ProM3E | str | os.PathLike[str],
    grid: Grid,
    *,
    visible: Sequence[str] | str = DEFAULT_VISIBLE,
    embeddings: Mapping[str, GridEmbeddings] | None = None,
    encoders: Mapping[str, Encoder | str | None] | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    n_samples: int = 0,
    seed: int = 0,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    device: str | None = None,
    show_progress: bool = True,
    keep_sigma: bool = False,
    measure: str | None = None,
) -> GridMap | SigmaMap:
    """An uncertainty value per cell from the cell's ``visible`` modalities (grid embeddings
    from ``embeddings`` or computed with ``encoders``, cached).

    ``measure`` (see :func:`choose_measure`; default ``expected-error`` when the model has an
    uncertainty model from ``ecomodal calibrate`` and something is left to complete, else
    ``sigma-l1``):

    - ``"expected-error"``: one band ``<modality>_expected_error`` per completed modality (those
      the model's calibration completes, in the model's order): the expected ``1 - cosine`` of
      the cell's completion of that modality to the truth.
    - ``"sigma-l1"``: one band ``sigma_l1``, ProM3E's ||sigma||_1 = sum(exp(logvar / 2)) (the
      published biodiversity proxy).

    The map's tags name the ``measure``. With ``keep_sigma=True`` (sigma-l1 only) a
    :class:`SigmaMap` that also holds each cell's sigma vector (for :func:`diversity_regression`).
    """
    check_range(n_samples, "n_samples", minimum=0, integer=True)
    check_range(chunk_rows, "chunk_rows", minimum=1, integer=True)
    prom3e = load_model(model, device=device)
    names = parse_modalities(visible, prom3e.modalities)
    if keep_sigma and measure is None:
        measure = "sigma-l1"
    measure = choose_measure(prom3e, names, measure)
    if keep_sigma and measure != "sigma-l1":
        raise InvalidArgumentError("keep_sigma=True needs measure 'sigma-l1'.")
    if measure == "expected-error":
        return _expected_error_map(
            prom3e, grid, names, embeddings=embeddings, encoders=encoders, cache_dir=cache_dir,
            n_samples=n_samples, seed=seed, chunk_rows=chunk_rows, device=device,
            show_progress=show_progress,
        )  # fmt: skip
    cells, parts = _completed_cells(
        prom3e, grid, names, embeddings=embeddings, encoders=encoders, cache_dir=cache_dir,
        n_samples=n_samples, seed=seed, chunk_rows=chunk_rows, device=device,
        show_progress=show_progress,
    )  # fmt: skip
    sigma_l1 = np.full(grid.num_cells, np.nan, dtype=np.float32)
    sigma = (
        np.full((grid.num_cells, prom3e.config.embed_dim), np.nan, np.float32)
        if keep_sigma
        else None
    )
    for part in parts:
        sigma_l1[part.start : part.stop][part.ok] = part.result.sigma_l1
        if sigma is not None:
            sigma[part.start : part.stop][part.ok] = np.exp(0.5 * part.result.logvar)
    tags = {
        "method": "prom3e-sigma-l1",
        "measure": "sigma-l1",
        "visible": names,
        "grid_encoders": {name: item.encoder_id for name, item in cells.items()},
    }
    result = GridMap(
        grid, sigma_l1[None], ["sigma_l1"], tags=tags,
        title=f"ProM3E uncertainty (sigma_l1) from {', '.join(names)}",
    )  # fmt: skip
    return SigmaMap(result, sigma) if keep_sigma else result


def _completed_cells(
    prom3e: ProM3E, grid: Grid, names: list[str], *, embeddings: Any, encoders: Any,
    cache_dir: Any, n_samples: int, seed: int, chunk_rows: int, device: str | None,
    show_progress: bool,
) -> tuple[dict[str, GridEmbeddings], Any]:  # fmt: skip
    """The grid embeddings of ``names`` and an iterator over the completed chunks of cells."""
    cells = grid_embeddings(
        grid, names, embeddings=embeddings, encoders=encoders, cache_dir=cache_dir,
        device=device, show_progress=show_progress,
    )  # fmt: skip
    parts = iter_completions(
        prom3e, cells, visible=names, n_samples=n_samples, seed=seed, chunk_rows=chunk_rows,
        device=device,
    )  # fmt: skip
    return cells, (part for part in parts if part.result is not None)


def _expected_error_map(
    prom3e: ProM3E, grid: Grid, names: list[str], *, embeddings: Any, encoders: Any,
    cache_dir: Any, n_samples: int, seed: int, chunk_rows: int, device: str | None,
    show_progress: bool,
) -> GridMap:  # fmt: skip
    """One band per completed modality: the uncertainty model's expected error per cell."""
    targets = _completable(prom3e, names)
    columns = [prom3e.modalities.index(m) for m in targets]
    cells, parts = _completed_cells(
        prom3e, grid, names, embeddings=embeddings, encoders=encoders, cache_dir=cache_dir,
        n_samples=n_samples, seed=seed, chunk_rows=chunk_rows, device=device,
        show_progress=show_progress,
    )  # fmt: skip
    values = np.full((len(targets), grid.num_cells), np.nan, dtype=np.float32)
    for part in parts:
        expected = np.asarray(part.result.expected_error)[:, columns].T
        values[:, part.start : part.stop][:, part.ok] = expected
    tags = {
        "method": "prom3e-expected-error",
        "measure": "expected-error",
        "visible": names,
        "completed": targets,
        "grid_encoders": {name: item.encoder_id for name, item in cells.items()},
    }
    return GridMap(
        grid, values, [f"{m}_expected_error" for m in targets], tags=tags,
        title=f"Expected completion error (1 - cosine) from {', '.join(names)}",
    )  # fmt: skip


def species_density(
    grid: Grid, lat: Any, lon: Any, species: Sequence[Any] | None = None
) -> np.ndarray:
    """Observed species density per cell [num_cells]: distinct ``species`` per cell (the number
    of occurrences when no species are given). Points outside the grid's cells are ignored."""
    cell = grid.cell_of(lat, lon)
    inside = cell >= 0
    if species is None:
        return np.bincount(cell[inside], minlength=grid.num_cells).astype(np.float64)
    names = np.asarray(species, dtype=object)[inside]
    _, codes = np.unique(names.astype(str), return_inverse=True)
    pairs = np.unique(np.stack([cell[inside], codes], axis=1), axis=0)
    return np.bincount(pairs[:, 0], minlength=grid.num_cells).astype(np.float64)


@dataclass
class DiversityResult:
    """Out-of-fold fit of log(species density + 1) on sigma: R^2, Pearson r, cells used, the
    ridge penalty chosen, and the per-cell prediction of the model fit on all cells."""

    r2: float
    pearson_r: float
    n_cells: int
    alpha: float
    predicted: np.ndarray = field(repr=False)

    def to_dict(self) -> dict[str, float]:
        return {
            "r2": self.r2,
            "pearson_r": self.pearson_r,
            "n_cells": self.n_cells,
            "alpha": self.alpha,
        }


def diversity_regression(
    sigma: np.ndarray,
    density: np.ndarray,
    *,
    min_occurrences: float = 1.0,
    folds: int = 5,
    alphas: Sequence[float] = (0.01, 0.1, 1.0, 10.0, 100.0),
    seed: int = 0,
) -> DiversityResult:
    """Regress log(density + 1) on ProM3E's sigma (RidgeCV, as published) over the cells with at
    least ``min_occurrences``; R^2 and Pearson r are of out-of-fold predictions (``folds``-fold,
    shuffled with ``seed``). ``sigma`` is [num_cells, E] (or [num_cells] sigma_l1)."""
    from scipy.stats import pearsonr
    from sklearn.linear_model import RidgeCV
    from sklearn.metrics import r2_score
    from sklearn.model_selection import KFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    check_range(folds, "folds", minimum=2, integer=True)
    features = np.asarray(sigma, dtype=np.float64)
    features = features[:, None] if features.ndim == 1 else features
    density = np.asarray(density, dtype=np.float64)
    if features.shape[0] != density.shape[0]:
        raise MapError(f"sigma has {features.shape[0]} cells but density has {density.shape[0]}.")
    used = (density >= min_occurrences) & np.isfinite(features).all(axis=1)
    n_cells = int(used.sum())
    if n_cells < max(folds, 3):
        raise MapError(
            f"Only {n_cells} cells have at least {min_occurrences} occurrences and a finite "
            f"sigma; the regression needs at least {max(folds, 3)}."
        )
    x, y = features[used], np.log1p(density[used])
    model = make_pipeline(StandardScaler(), RidgeCV(alphas=list(alphas)))
    splitter = KFold(n_splits=folds, shuffle=True, random_state=seed)
    held_out = cross_val_predict(model, x, y, cv=splitter)
    model.fit(x, y)
    predicted = np.full(features.shape[0], np.nan)
    finite = np.isfinite(features).all(axis=1)
    predicted[finite] = model.predict(features[finite])
    r = float(pearsonr(held_out, y).statistic) if np.ptp(held_out) > 0 else float("nan")
    return DiversityResult(
        r2=float(r2_score(y, held_out)),
        pearson_r=r,
        n_cells=n_cells,
        alpha=float(model[-1].alpha_),
        predicted=predicted,
    )


def diversity_map(
    model: ProM3E | str | os.PathLike[str],
    grid: Grid,
    occurrences: str | os.PathLike[str] | tuple[Any, Any, Any],
    *,
    visible: Sequence[str] | str = DEFAULT_VISIBLE,
    seed: int = 0,
    folds: int = 5,
    min_occurrences: float = 1.0,
    **kwargs: Any,
) -> tuple[GridMap, DiversityResult]:
    """The uncertainty map plus the regression of sigma against the observed species density of
    ``occurrences`` (a CSV/Parquet with lat, lon and optionally species columns, or (lat, lon,
    species) arrays). Bands: ``sigma_l1``, ``species_density``, ``predicted_log_density``; the
    metadata holds R^2 and Pearson r. ``kwargs`` go to :func:`uncertainty_map`."""
    check_range(folds, "folds", minimum=2, integer=True)
    if isinstance(occurrences, str | os.PathLike):
        lat, lon, table = read_points(occurrences)
        species = None
        for name in ("species", "scientific_name", "text"):
            if name in table.column_names:
                species = table.column(name).to_pylist()
                break
    else:
        lat, lon, species = occurrences
        lat, lon = points_lat_lon((lat, lon))
    sigma = uncertainty_map(
        model, grid, visible=visible, seed=seed, keep_sigma=True, measure="sigma-l1", **kwargs
    )
    density = species_density(grid, lat, lon, species)
    fit = diversity_regression(
        sigma.sigma, density, min_occurrences=min_occurrences, folds=folds, seed=seed
    )
    values = np.stack([sigma.map.band(0), density, fit.predicted])
    tags = {
        **sigma.map.tags,
        "diversity_regression": fit.to_dict(),
        "species_column": species is not None,
    }
    result = GridMap(
        grid, values, ["sigma_l1", "species_density", "predicted_log_density"], tags=tags,
        title=f"Diversity from ProM3E sigma (R^2 {fit.r2:.2f}, r {fit.pearson_r:.2f})",
    )  # fmt: skip
    return result, fit
