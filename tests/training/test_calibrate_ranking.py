"""The mix tuner's R@10 shortcut must rank rows exactly as the completion it scores would."""

import numpy as np
import torch
import torch.nn.functional as F

from ecomodal.training.mix_tuning import RankCheck, weight_grid


def _explicit_recall(own, truth, mean, neighbours, weights, mix) -> float:
    """R@10 of the completions built the way Calibration.apply builds them."""
    k = weights.shape[1]
    avg = F.normalize(torch.einsum("nk,nkd->nd", weights, neighbours[:, :k]), dim=-1)
    a, b, c = mix
    queries = F.normalize(a * own + b * avg + c * mean, dim=-1)
    scores = (queries @ truth.T).numpy()
    own_score = np.diagonal(scores)[:, None]
    return float(((scores > own_score).sum(1) < 10).mean())


def test_rank_check_matches_explicit_completions():
    gen = torch.Generator().manual_seed(0)
    n, k, d = 300, 5, 16
    truth = F.normalize(torch.randn(n, d, generator=gen), dim=-1)
    own = F.normalize(truth + 1.5 * torch.randn(n, d, generator=gen), dim=-1)
    neighbours = F.normalize(truth[:, None] + 1.2 * torch.randn(n, k, d, generator=gen), dim=-1)
    # Neighbours of very different concentration, so the average's norm varies by row.
    neighbours[: n // 2] = F.normalize(truth[: n // 2, None] + 0.1 * neighbours[: n // 2], dim=-1)
    mean = F.normalize(truth.mean(0) + 0.3, dim=-1)
    weights = torch.softmax(torch.randn(n, k, generator=gen) * 3, dim=1)
    check = RankCheck(own, truth, mean, neighbours, seed=0, size=n)
    grid = weight_grid()
    got = check.recall_at_10(weights, grid)
    want = np.array(
        [_explicit_recall(own, truth, mean, neighbours, weights, tuple(g)) for g in grid]
    )
    np.testing.assert_allclose(got, want, atol=1e-9)
    assert want.std() > 0  # the grid's mixes really differ in R@10
