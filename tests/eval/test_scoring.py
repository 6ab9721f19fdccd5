"""One zero-shot scoring for evaluation and patching: ``ecomodal.scoring.top_k_hits``."""

import numpy as np
import pytest

from ecomodal.errors import InvalidArgumentError
from ecomodal.scoring import top_k_hits
from ecomodal.training.patching import zero_shot_accuracy


def test_ties_favour_the_row_or_follow_argmax():
    scores = np.array([[0.5, 0.5, 0.1], [0.2, 0.9, 0.9], [0.3, 0.1, 0.2]], dtype=np.float32)
    truth = np.array([1, 2, 0])
    assert top_k_hits(scores, truth, (1, 2)) == {"top1": 1.0, "top2": 1.0}
    first = top_k_hits(scores, truth, (1, 2), ties="first")
    assert first == {"top1": 1 / 3, "top2": 1.0}
    assert first["top1"] == float(np.mean(np.argmax(scores, axis=1) == truth))
    with pytest.raises(InvalidArgumentError, match="ties"):
        top_k_hits(scores, truth, (1,), ties="random")


def test_patching_accuracy_is_argmax_accuracy_even_with_ties_and_nan():
    rng = np.random.default_rng(0)
    for trial in range(50):
        queries = rng.integers(-2, 3, (30, 3)).astype(np.float32)
        classes = rng.integers(-2, 3, (5, 3)).astype(np.float32)
        if trial % 2:
            queries[rng.random(queries.shape) < 0.1] = np.nan
        labels = rng.integers(0, 5, 30)
        expected = float(np.mean(np.argmax(queries @ classes.T, axis=1) == labels))
        assert zero_shot_accuracy(queries, classes, labels) == expected
    with pytest.raises(ValueError, match="at least one query"):
        zero_shot_accuracy(np.zeros((0, 3)), classes, np.zeros(0, dtype=int))
