"""Tuning a calibrated model's completion mix (:class:`~ecomodal.models.calibration.MixEntry`):
per visible set and completed modality, the neighbour count, softmax temperature and weights of
(ProM3E's completion, the neighbours' average, the reference mean), chosen on calibration rows by
mean cosine to the truth and R@10 among them. Used by :func:`ecomodal.training.calibrate.calibrate`.
"""

from __future__ import annotations

import itertools

import numpy as np
import torch
import torch.nn.functional as F

from ecomodal.models.calibration import MixEntry, NeighbourBank, visible_key

K_GRID = (1, 3, 5, 10, 20, 50)
TEMPERATURE_GRID = (0.01, 0.02, 0.05, 0.1)
WEIGHT_STEP = 0.1
#: How much mean cosine the tuned mix may give up for a better R@10 (see ``_choose``).
COSINE_SLACK = 0.03


def tune_mix(bank: NeighbourBank, done, stacked, present, vis, modalities) -> dict[str, MixEntry]:
    """Grid search of (k, temperature, weights) per completed modality on the fit rows.

    Every candidate's mean cosine comes from dot products computed once per modality (the
    neighbours' dots with the truth, ProM3E's completion and the mean, and their Gram matrix), so
    the grid costs little more than one neighbour search."""
    idx = done["fit"]
    rows = done["rows"][idx]
    queries = torch.as_tensor(stacked[rows])
    sims, index = bank.search(queries, list(vis), max(K_GRID))
    grid = weight_grid()
    name = visible_key(modalities, [m in vis for m in range(len(modalities))])
    entries = {}
    for target in range(len(modalities)):
        if target in vis or not bool(bank.present[:, target].any()):
            continue
        has = torch.as_tensor(present[rows, target])
        if int(has.sum()) < 5:
            continue
        truth = torch.as_tensor(stacked[rows, target])[has]
        own = done["decoded"][idx, target][has].float()
        mean = bank.mean[target]
        nb = bank.columns[target][index[has]]  # [N, K, D]
        dots = {
            "truth": torch.einsum("nkd,nd->nk", nb, truth),
            "own": torch.einsum("nkd,nd->nk", nb, own),
            "mean": nb @ mean,
        }
        gram_nb = torch.einsum("nkd,njd->nkj", nb, nb)
        fixed = {
            "own_truth": (own * truth).sum(-1),
            "mean_truth": truth @ mean,
            "own_mean": own @ mean,
        }
        available = bank.present[index[has], target]
        ranks = RankCheck(own, truth, mean, nb, seed=len(entries))
        cosines, weights_of = {}, {}
        for k, temperature in itertools.product(K_GRID, TEMPERATURE_GRID):
            logits = (sims[has, :k] / temperature).masked_fill(~available[:, :k], float("-inf"))
            w = torch.softmax(logits, dim=1).nan_to_num(0.0)
            norm = torch.einsum("nk,nkj,nj->n", w, gram_nb[:, :k, :k], w).clamp(min=1e-12).sqrt()
            avg = {key: (w * d[:, :k]).sum(1) / norm for key, d in dots.items()}
            to_truth = torch.stack([fixed["own_truth"], avg["truth"], fixed["mean_truth"]], 1)
            gram = _gram(avg["own"], fixed["own_mean"], avg["mean"])
            cosines[k, temperature] = _grid_cosines(to_truth.numpy(), gram, grid)
            weights_of[k, temperature] = w
        # R@10 only for the candidates within reach of the best cosine (the costly part).
        floor = max(float(c.max()) for c in cosines.values()) - COSINE_SLACK
        candidates = []
        for (k, temperature), cosine in cosines.items():
            near = np.flatnonzero(cosine >= floor)
            if len(near) == 0:
                continue
            recall = ranks.recall_at_10(weights_of[k, temperature], grid[near])
            candidates.extend(
                (
                    float(cosine[g]),
                    float(r),
                    MixEntry(k, temperature, tuple(float(x) for x in grid[g])),
                )
                for g, r in zip(near, recall, strict=True)
            )
        best = _choose(candidates)
        entries[f"{name}>{modalities[target]}"] = best
    return entries


def _gram(own_avg: torch.Tensor, own_mean: torch.Tensor, avg_mean: torch.Tensor) -> np.ndarray:
    """Gram matrices [N, 3, 3] of (ProM3E, neighbour average, mean), all unit vectors."""
    n = own_avg.shape[0]
    gram = np.ones((n, 3, 3))
    for (a, b), value in {(0, 1): own_avg, (0, 2): own_mean, (1, 2): avg_mean}.items():
        gram[:, a, b] = gram[:, b, a] = value.numpy()
    return gram


def weight_grid() -> np.ndarray:
    """Every (ProM3E, neighbours, mean) weighting on the simplex in steps of ``WEIGHT_STEP``."""
    steps = int(round(1 / WEIGHT_STEP))
    grid = [
        (a / steps, b / steps, (steps - a - b) / steps)
        for a in range(steps + 1)
        for b in range(steps + 1 - a)
    ]
    return np.array(grid)


def _grid_cosines(to_truth, gram, grid) -> np.ndarray:
    """Mean cosine to the truth [G] of each grid weighting of (ProM3E, neighbours, mean), from
    each row's cosines to the truth [N, 3] and Gram matrix [N, 3, 3]."""
    numerator = to_truth @ grid.T  # [N, G]
    norm_sq = np.einsum("gv,nvw,gw->ng", grid, gram, grid)
    return (numerator / np.sqrt(np.maximum(norm_sq, 1e-12))).mean(0)


def _choose(candidates) -> MixEntry:
    """Among the candidates within ``COSINE_SLACK`` of the best mean cosine, the one with the
    best R@10 (then cosine): a completion should be close to its truth and stay specific to its
    row rather than drift to the mean, which would cost R@10 against the lookup."""
    best_cosine = max(c[0] for c in candidates)
    near = [c for c in candidates if c[0] >= best_cosine - COSINE_SLACK]
    return max(near, key=lambda c: (round(c[1], 3), c[0]))[2]


class RankCheck:
    """R@10 among a sample of fit rows' truths, for every grid weighting at once: the rank of
    row i's own truth depends only on a * P_i.T_j + b * K_i.T_j + c * mean.T_j (the norm of the
    mix is the same for all j). Up to 1,500 rows: on 800 the R@10 of close mixes differed by
    its noise, and the chosen mix lost R@10 on held-out rows it won on the sample."""

    def __init__(self, own, truth, mean, neighbours, *, seed: int, size: int = 1500):
        n = own.shape[0]
        pick = np.sort(np.random.default_rng([seed, 11]).permutation(n)[: min(size, n)])
        self.pick = torch.as_tensor(pick)
        truth = truth[self.pick]
        self.own = (own[self.pick] @ truth.T).numpy()  # [S, S]
        self.mean = (truth @ mean).numpy()  # [S]
        self.truth = truth
        self.neighbours = neighbours  # [N, K, D], every fit row's (no [S, K, S] dots are kept)

    @staticmethod
    def _recall(scores: np.ndarray) -> float:
        own = np.diagonal(scores, axis1=-2, axis2=-1)[..., None]
        return (np.sum(scores > own, axis=-1) < 10).mean(-1)

    def recall_at_10(self, weights: torch.Tensor, grid: np.ndarray) -> np.ndarray:
        """R@10 of every ``grid`` weighting, with the neighbours' softmax (``weights`` [N, k])
        average normalised, as the completion uses it."""
        k = weights.shape[1]
        avg = torch.einsum("nk,nkd->nd", weights, self.neighbours[:, :k])[self.pick]
        avg = (F.normalize(avg, dim=-1) @ self.truth.T).numpy()  # [S, S]
        out = np.empty(len(grid))
        for g, (a, b, c) in enumerate(grid):
            out[g] = self._recall(a * self.own + b * avg + c * self.mean[None, :])
        return out
