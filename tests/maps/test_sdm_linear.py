"""EmbeddingSDM.linear_weights: the fitted linear model as one weight vector and bias."""

from __future__ import annotations

import numpy as np
import pytest

from ecomodal.errors import InvalidArgumentError
from ecomodal.maps.sdm import EmbeddingSDM


@pytest.mark.parametrize("classifier", ["logistic", "ridge"])
@pytest.mark.parametrize("standardize", [True, False])
def test_linear_weights_reproduce_the_decision_function(classifier, standardize):
    rng = np.random.default_rng(0)
    presence = rng.normal(0.5, 1.0, (60, 8)) * np.arange(1, 9)
    background = rng.normal(0.0, 2.0, (300, 8)) + 3.0
    sdm = EmbeddingSDM(classifier=classifier, C=0.5, standardize=standardize).fit(
        presence, background
    )
    w, b = sdm.linear_weights()
    X = rng.normal(0.0, 2.0, (50, 8))
    np.testing.assert_allclose(X @ w + b, sdm.decision_function(X), rtol=1e-9, atol=1e-9)


def test_a_forest_has_no_linear_weights():
    rng = np.random.default_rng(1)
    sdm = EmbeddingSDM(classifier="random_forest").fit(
        rng.normal(1, 1, (20, 3)), rng.normal(0, 1, (40, 3))
    )
    with pytest.raises(InvalidArgumentError, match="linear weights"):
        sdm.linear_weights()
