"""Ranking scores shared by evaluation and training (numpy only, no table or model code)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ecomodal.errors import InvalidArgumentError

__all__ = ["TIES", "top_k_hits"]

#: How a tie with the true column counts: ``"favour"`` (for the row, within 1e-7) or ``"first"``
#: (broken by column order, as ``np.argmax`` does; NaN counts as the largest score).
TIES = ("favour", "first")


def top_k_hits(
    scores: np.ndarray, truth: np.ndarray, ks: Sequence[int], *, ties: str = "favour"
) -> dict[str, float]:
    """Top-k accuracy for each k: ``truth[i]`` (a column index) among the k best of row i.

    With ``ties="favour"`` the rank is 1 + the number of candidates better by more than 1e-7;
    with ``ties="first"`` candidates that score the same as the true one count as better when
    they come first, so ``top1`` is the accuracy of ``argmax(scores, axis=1)``.
    """
    if ties not in TIES:
        raise InvalidArgumentError(f"ties must be one of {TIES}; got {ties!r}.")
    truth = np.asarray(truth)
    own = scores[np.arange(len(scores)), truth]
    if ties == "favour":
        better = scores > own[:, None] + 1e-7
    else:
        nan, own_nan = np.isnan(scores), np.isnan(own)[:, None]
        earlier = np.arange(scores.shape[1])[None, :] < truth[:, None]
        with np.errstate(invalid="ignore"):
            better = (nan & ~own_nan) | (scores > own[:, None])
            better |= earlier & ((nan & own_nan) | (scores == own[:, None]))
    rank = 1 + np.count_nonzero(better, axis=1)
    return {f"top{k}": float(np.mean(rank <= k)) for k in ks}
