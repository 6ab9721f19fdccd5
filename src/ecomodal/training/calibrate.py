"""``ecomodal calibrate``: fit a model's retrieval-augmented completion and its uncertainty model.

On a table the model did not train on:

1. the neighbour bank is the table's training rows (``split == "train"``; at most
   ``max_neighbours``, a seeded sample);
2. the calibration rows (``split == <split>``, default ``val``) are halved, seeded: on the first
   half, for every visible set and completed modality, the neighbour count, softmax temperature and
   the weights of (ProM3E, neighbours, reference mean) are chosen by grid search
   (:mod:`ecomodal.training.mix_tuning`);
3. a ridge regression per (visible set, completed modality) predicts ``1 - cosine`` from the
   completion's features; the quantiles of observed / predicted error per pair give
   split-conformal intervals: cross-fitted over spatial blocks when the table has lat/lon (each
   ratio from an error model that never saw the row's block), else from the second half. The
   report's figures (cosines, Spearman, coverage) are measured on the second half.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ecomodal.errors import InvalidArgumentError, MissingColumnError
from ecomodal.models.calibration import (
    Calibration,
    CompletionMix,
    ErrorModel,
    MixEntry,
    NeighbourBank,
    visible_key,
)
from ecomodal.options import check_range
from ecomodal.progress import progress_bar
from ecomodal.training.mix_tuning import tune_mix
from ecomodal.vectors import normalise

LEVELS = np.linspace(0.0, 1.0, 201)


@dataclass
class CalibrationResult:
    """What :func:`calibrate` wrote and measured."""

    folder: Path | None
    files: list[Path]
    calibration: Calibration
    report: dict[str, Any]


def calibrate(
    model: Any,
    data: Any,
    *,
    split: str = "val",
    out: str | os.PathLike[str] | None = None,
    split_column: str = "split",
    max_neighbours: int = 20_000,
    max_rows_per_set: int = 4000,
    n_samples: int = 5,
    error_model: bool = True,
    keep_calibration_rows: bool = True,
    rows: tuple[np.ndarray, np.ndarray] | None = None,
    block_deg: float | None = 10.0,
    seed: int = 0,
    show_progress: bool = False,
) -> CalibrationResult:
    """Fit ``model``'s neighbour mix and uncertainty model on ``data`` and save them.

    ``model``: a model folder (``local-dir:``/path; the files go into it unless ``out`` names
    another folder), an ``hf-hub:`` id (``out`` required) or a :class:`ProM3E` (saved only with
    ``out``). ``data``: an embedding table with the model's modalities. Rows with
    ``split_column == split`` calibrate; rows with ``"train"`` are the neighbours. A table without
    that column splits its rows as ``train_prom3e`` does (a seeded 10% calibrates, the rest are
    neighbours); ``rows=(calibration_rows, neighbour_rows)`` gives the row indices directly.
    ``split`` is the ``--split`` of ``ecomodal calibrate``. With ``block_deg`` and lat/lon
    columns, the interval quantiles come from ratios cross-fitted over 5 folds of whole
    ``block_deg`` spatial blocks (each from an error model that never saw the row's block) and
    the saved error model is fitted on every calibration row; without, the error model is
    fitted on a random half and the quantiles on the other. Once fitted, the saved bank also
    holds the calibration rows (``keep_calibration_rows``), so a completion can draw on every
    labelled row. Writes ``neighbours.safetensors``,
    ``completion.json`` and (with ``error_model``) ``uncertainty.safetensors`` +
    ``uncertainty.json`` into the folder; ``load_model`` then uses them by default.
    """
    from ecomodal.io.calibration import write_calibration
    from ecomodal.io.reader import as_batch
    from ecomodal.models.factory import load_model
    from ecomodal.models.prom3e import ProM3E

    check_range(max_neighbours, "max_neighbours", minimum=1, integer=True)
    check_range(max_rows_per_set, "max_rows_per_set", minimum=10, integer=True)
    check_range(n_samples, "n_samples", minimum=0, integer=True)
    check_range(seed, "seed", integer=True)
    folder = _output_folder(model, out)
    loaded = load_model(model)
    if not isinstance(model, ProM3E):
        loaded.calibration = None  # refit from scratch
    batch = as_batch(data)
    modalities = loaded.modalities
    stacked, present = batch.stack(list(modalities), dim=loaded.config.input_dim)
    stacked = normalise(stacked)
    if rows is None:
        cal_rows, bank_rows = _rows(batch, split, split_column, seed, source=_name(data))
    else:
        cal_rows, bank_rows = (np.asarray(r, dtype=np.int64) for r in rows)
    rng = np.random.default_rng([seed, 7])
    if len(bank_rows) > max_neighbours:
        bank_rows = np.sort(rng.choice(bank_rows, size=max_neighbours, replace=False))
    bank = NeighbourBank(
        torch.as_tensor(stacked[bank_rows]), torch.as_tensor(present[bank_rows]), modalities
    )
    order = rng.permutation(cal_rows)
    half = len(order) // 2
    fit_rows, check_rows = np.sort(order[:half]), np.sort(order[half:])
    if len(fit_rows) < 10 or len(check_rows) < 10:
        raise InvalidArgumentError(
            f"{_name(data)}: only {len(cal_rows)} calibration rows ({split_column} == {split!r}); "
            "calibration needs at least 20."
        )
    sets = _visible_sets(present[cal_rows], modalities)
    completions = {}
    entries: dict[str, MixEntry] = {}
    with progress_bar("Calibrating visible sets", len(sets), enabled=show_progress) as advance:
        for index, vis in enumerate(sets):
            rows = _rows_with(present, vis, fit_rows, check_rows, max_rows_per_set, rng)
            advance(1)
            if rows is None:
                continue
            done = _complete_plain(loaded, stacked, present, rows, vis, n_samples, seed + index)
            completions[vis] = done
            entries.update(tune_mix(bank, done, stacked, present, vis, modalities))
    calibration = Calibration(bank, CompletionMix(entries))
    samples = {
        part: _samples(calibration, completions, stacked, present, part)
        for part in (
            "fit",
            "check",
        )
    }
    report: dict[str, Any] = {
        "split": split,
        "neighbours": len(bank),
        "calibration_rows": int(len(cal_rows)),
        "pairs": _pair_report(samples["check"], modalities),
    }
    if error_model:
        both = {k: torch.cat([samples["fit"][k], samples["check"][k]]) for k in samples["fit"]}
        ratio = None
        if block_deg is not None and _has_places(batch):
            ratio = _cross_fitted_ratios(both, modalities, batch, block_deg, seed)
        if ratio is not None:
            # Cross-fitted by spatial blocks: every ratio comes from an error model that never
            # saw the row's block, as at new places; the saved model is fitted on every row.
            calibration.error_model = _fit_error_model(both, modalities)
            _conformal(calibration, both, ratio)
        else:
            calibration.error_model = _fit_error_model(samples["fit"], modalities)
            _conformal(calibration, samples["check"])
        report["uncertainty"] = _uncertainty_report(calibration, samples["check"])
    if keep_calibration_rows:
        # Fitted: the saved bank also holds the calibration rows (every labelled row a user
        # has), within the same cap.
        every = np.union1d(bank_rows, cal_rows)
        if len(every) > max_neighbours:
            every = np.sort(np.random.default_rng([seed, 8]).choice(every, max_neighbours, False))
        calibration.bank = NeighbourBank(
            torch.as_tensor(stacked[every]), torch.as_tensor(present[every]), modalities
        )
        report["neighbours_saved"] = len(every)
    calibration.report = report
    files = []
    if folder is not None and out is not None and not isinstance(model, ProM3E):
        loaded.calibration = calibration  # a complete calibrated model folder
        loaded.save_pretrained(folder)
        files = sorted(p for p in Path(folder).iterdir() if p.is_file())
    elif folder is not None:
        files = write_calibration(folder, calibration)
    if isinstance(model, ProM3E):
        model.calibration = calibration
    return CalibrationResult(folder, files, calibration, report)


def _name(data: Any) -> str:
    return str(data) if isinstance(data, str | os.PathLike) else "the table"


def _output_folder(model: Any, out: Any) -> Path | None:
    from ecomodal.models.prom3e import ProM3E

    if out is not None:
        return Path(out)
    if isinstance(model, ProM3E):
        return None
    text = os.fspath(model)
    if text.startswith("hf-hub:"):
        raise InvalidArgumentError(
            f"--model {text} is a hub model; give --out FOLDER for the calibrated copy."
        )
    return Path(text.removeprefix("local-dir:"))


def _rows(batch: Any, split: str, column: str, seed: int, *, source: str):
    """Calibration rows and neighbour rows of the table."""
    from ecomodal.data.splits import split_rows

    names = batch.columns.column_names if batch.columns is not None else []
    if column not in names:
        train, val = split_rows(len(batch), val_fraction=0.1, seed=seed)
        return val, train
    labels = np.asarray(batch.columns.column(column).to_pylist(), dtype=object)
    cal = np.flatnonzero(labels == split)
    if split == "train":
        raise InvalidArgumentError(
            "--split train: the training rows are the neighbours; calibrate on rows the model "
            "did not train on (e.g. val)."
        )
    if len(cal) == 0:
        found = sorted({str(v) for v in labels})
        raise MissingColumnError(
            f"{source}: no rows with {column} == {split!r} (values: {', '.join(found)})."
        )
    bank = np.flatnonzero(labels == "train")
    if len(bank) == 0:
        raise MissingColumnError(f"{source}: no rows with {column} == 'train' for neighbours.")
    return cal, bank


def _visible_sets(present: np.ndarray, modalities: Sequence[str]) -> list[tuple[int, ...]]:
    have = [m for m in range(len(modalities)) if present[:, m].any()]
    sets = []
    for size in range(1, len(have)):
        sets.extend(itertools.combinations(have, size))
    return sets


def _rows_with(present, vis, fit_rows, check_rows, cap, rng) -> dict[str, np.ndarray] | None:
    """Calibration rows that have every visible modality and at least one other (capped)."""
    out = {}
    for name, rows in (("fit", fit_rows), ("check", check_rows)):
        ok = present[rows][:, list(vis)].all(1)
        ok &= present[rows].sum(1) > len(vis)
        rows = rows[ok]
        if len(rows) > cap // 2:
            rows = np.sort(rng.choice(rows, size=cap // 2, replace=False))
        if len(rows) < 5:
            return None
        out[name] = rows
    return out


def _complete_plain(model, stacked, present, rows, vis, n_samples, seed) -> dict[str, Any]:
    """ProM3E's own completion of the calibration rows with visible set ``vis``."""
    every = np.concatenate([rows["fit"], rows["check"]])
    names = [model.modalities[m] for m in vis]
    out = model.complete(
        stacked[every],
        visible=names,
        n_samples=n_samples,
        seed=seed,
        present=present[every],
        neighbours=False,
    )
    return {
        "rows": every,
        "fit": np.arange(len(rows["fit"])),
        "check": np.arange(len(rows["fit"]), len(every)),
        "decoded": torch.as_tensor(out.embeddings),
        "sigma_l1": torch.as_tensor(out.sigma_l1),
    }


def _samples(calibration, completions, stacked, present, part) -> dict[str, torch.Tensor]:
    """Features, errors and identities of every (row, completed modality) in a part."""
    chunks: dict[str, list] = {
        k: [] for k in ("features", "error", "own_error", "target", "set", "row")
    }
    n_mod = len(calibration.bank.modalities)
    for vis, done in completions.items():
        idx = done[part]
        rows = done["rows"][idx]
        visible = torch.zeros(len(rows), n_mod, dtype=torch.bool)
        visible[:, list(vis)] = True
        queries = torch.as_tensor(stacked[rows]) * visible.unsqueeze(-1)
        decoded = done["decoded"][idx]
        final, _, features = calibration.apply(
            queries, visible, decoded, done["sigma_l1"][idx], with_error=False
        )
        truth = torch.as_tensor(stacked[rows])
        error = 1 - (final * truth).sum(-1)
        own_error = 1 - (decoded * truth).sum(-1)
        usable = torch.as_tensor(present[rows]) & ~visible & torch.isfinite(features).all(-1)
        r, t = usable.nonzero(as_tuple=True)
        chunks["features"].append(features[r, t])
        chunks["error"].append(error[r, t])
        chunks["own_error"].append(own_error[r, t])
        chunks["target"].append(t)
        chunks["set"].append(torch.full_like(t, sum(1 << m for m in vis)))
        chunks["row"].append(torch.as_tensor(rows)[r])
    return {k: torch.cat(v) for k, v in chunks.items()}


def _keyed_groups(samples, modalities) -> dict[str, torch.Tensor]:
    """Row masks per error-model key: each pair (``"loc>env"``) and each completed modality
    over every visible set (``"*>env"``)."""
    groups = dict(_groups(samples, modalities))
    for t, name in enumerate(modalities):
        mask = samples["target"] == t
        if bool(mask.any()):
            groups[f"*>{name}"] = mask
    return groups


def _fit_error_model(samples, modalities, *, alpha: float = 1.0) -> ErrorModel:
    """One ridge regression (closed form) of the error on the standardised features per key."""
    groups = _keyed_groups(samples, modalities)
    keys = [key for key, mask in groups.items() if int(mask.sum()) >= 10]
    n_features = samples["features"].shape[1]
    mean = torch.zeros(len(keys), n_features)
    std = torch.ones(len(keys), n_features)
    coef = torch.zeros(len(keys), n_features)
    intercept = torch.zeros(len(keys))
    for i, key in enumerate(keys):
        x = samples["features"][groups[key]].double()
        y = samples["error"][groups[key]].double()
        mean[i], std[i] = x.mean(0).float(), x.std(0).clamp(min=1e-6).float()
        xs = (x - mean[i].double()) / std[i].double()
        gram = xs.T @ xs + alpha * torch.eye(n_features, dtype=torch.float64)
        coef[i] = torch.linalg.solve(gram, xs.T @ (y - y.mean())).float()
        intercept[i] = float(y.mean())
    tensors = {
        "feature_mean": mean,
        "feature_std": std,
        "coef": coef,
        "intercept": intercept,
        "levels": torch.as_tensor(LEVELS, dtype=torch.float32),
        "ratio_quantiles": torch.ones(len(keys), len(LEVELS)),
    }
    return ErrorModel(tensors, modalities, keys)


def _predict_samples(model: ErrorModel, samples, modalities) -> torch.Tensor:
    """The error model's expected error for every sample (by its own pair's key)."""
    out = torch.full_like(samples["error"], float("nan"))
    for name, mask in _groups(samples, modalities):
        visible_name, target = name.split(">")
        key = model.key_index(visible_name, target)
        if key is not None:
            out[mask] = model.predict(key, samples["features"][mask])
    return out


def _has_places(batch: Any) -> bool:
    names = [] if batch.columns is None else batch.columns.column_names
    return "lat" in names and "lon" in names


def _cross_fitted_ratios(
    samples, modalities, batch, block_deg: float, seed: int
) -> np.ndarray | None:
    """Observed / expected error of every sample, the expectation from an error model fitted
    on the other folds of whole ``block_deg`` spatial blocks (5 folds, balanced by
    :func:`~ecomodal.data.splits.spatial_block_folds`); None when the rows hold one block."""
    from ecomodal.data.splits import block_ids, spatial_block_folds

    rows = samples["row"].numpy()
    lat, lon = batch.column("lat")[rows], batch.column("lon")[rows]
    n_folds = min(5, len(np.unique(block_ids(lat, lon, block_deg))))
    if n_folds < 2:  # one block: no place is new to any fold, so plain halves it is
        return None
    fold = torch.as_tensor(spatial_block_folds(lat, lon, block_deg, n_folds, seed=[seed, 9]))
    ratio = np.empty(len(rows))
    for f in range(n_folds):
        held = fold == f  # never empty: every fold holds a block
        rest = {k: v[~held] for k, v in samples.items()}
        part = {k: v[held] for k, v in samples.items()}
        model = _fit_error_model(rest, modalities)
        ratio[held.numpy()] = (part["error"] / _predict_samples(model, part, modalities)).numpy()
    return ratio


def _conformal(calibration: Calibration, samples, ratio: np.ndarray | None = None) -> None:
    """Quantiles of observed / expected error per key on the check rows (a key with fewer than
    30 check rows takes its completed modality's pooled quantiles); ``ratio``: the ratios,
    when they come from elsewhere (cross-fitting)."""
    model = calibration.error_model
    modalities = calibration.bank.modalities
    if ratio is None:
        ratio = (samples["error"] / _predict_samples(model, samples, modalities)).numpy()
    groups = _keyed_groups(samples, modalities)
    pooled = np.quantile(ratio, LEVELS)
    table = []
    for key in model.keys:
        mask = groups.get(key)
        if mask is not None and int(mask.sum()) >= 30:
            table.append(np.quantile(ratio[mask.numpy()], LEVELS))
        else:
            target_mask = groups.get(f"*>{key.split('>')[1]}")
            enough = target_mask is not None and int(target_mask.sum()) >= 30
            table.append(np.quantile(ratio[target_mask.numpy()], LEVELS) if enough else pooled)
    model.tensors["ratio_quantiles"] = torch.as_tensor(np.stack(table), dtype=torch.float32)


def _pair_report(samples, modalities) -> dict[str, dict[str, float]]:
    """Mean cosine of ProM3E alone and of the mixed completion, per visible set and target."""
    return {
        name: {
            "rows": int(mask.sum()),
            "prom3e_cosine": float(1 - samples["own_error"][mask].mean()),
            "cosine": float(1 - samples["error"][mask].mean()),
        }
        for name, mask in _groups(samples, modalities)
    }


def _uncertainty_report(calibration, samples) -> dict[str, Any]:
    from ecomodal.eval.uncertainty import spearman

    modalities = calibration.bank.modalities
    expected = _predict_samples(calibration.error_model, samples, modalities).numpy()
    error = samples["error"].numpy()
    target = samples["target"].numpy()
    codes = samples["set"].numpy()
    visible = (codes[:, None] >> np.arange(len(modalities))[None, :]) & 1
    low, high = calibration.error_model.interval(
        _per_modality(expected, target, len(modalities)), visible.astype(bool), 0.9
    )
    low, high = low[np.arange(len(target)), target], high[np.arange(len(target)), target]
    cosine = 1 - error
    covered = (cosine >= low) & (cosine <= high)
    pairs = {
        name: {
            "spearman": spearman(expected[mask.numpy()], error[mask.numpy()]),
            # On the rows the conformal quantiles came from: 0.9 by construction, a sanity check.
            "coverage_90_conformal_rows": float(covered[mask.numpy()].mean()),
        }
        for name, mask in _groups(samples, calibration.bank.modalities)
    }
    return {"spearman_all": spearman(expected, error), "pairs": pairs}


def _per_modality(values: np.ndarray, target: np.ndarray, n_mod: int) -> np.ndarray:
    out = np.full((len(values), n_mod), np.nan)
    out[np.arange(len(values)), target] = values
    return out


def _groups(samples, modalities):
    """(``"loc+env>sat"``, row mask) per visible set and completed modality."""
    keys = torch.stack([samples["set"], samples["target"]], 1)
    for code, target in torch.unique(keys, dim=0).tolist():
        mask = (samples["set"] == code) & (samples["target"] == target)
        name = visible_key(modalities, [(code >> m) & 1 for m in range(len(modalities))])
        yield f"{name}>{modalities[target]}", mask
