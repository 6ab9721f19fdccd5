import time

import numpy as np
import pytest
import torch

from ecomodal.errors import ModelNotFoundError
from ecomodal.hub import parse_model_spec
from ecomodal.models import ProM3E, ProM3EConfig, load_model


def test_parse_model_spec():
    assert parse_model_spec("hf-hub:MVRL/ProM3E").kind == "hf-hub"
    assert parse_model_spec("hf-hub:MVRL/ProM3E@v1").revision == "v1"
    assert parse_model_spec("local-dir:/x/y").location == "/x/y"
    assert parse_model_spec("runs/best").kind == "local-dir"
    with pytest.raises(ValueError, match="Empty model id"):
        parse_model_spec("  ")
    with pytest.raises(ValueError, match="expected 'hf-hub:ORG/NAME'"):
        parse_model_spec("hf-hub:ProM3E")


def test_hub_offline_fails_fast_with_clear_message(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.monotonic()
    with pytest.raises(ModelNotFoundError, match="HF_HUB_OFFLINE is set.*not in the local"):
        load_model("hf-hub:MVRL/ProM3E", cache_dir=tmp_path)
    assert time.monotonic() - start < 10


def test_hub_loads_from_local_cache(tmp_path, monkeypatch):
    """The hf-hub path resolves through huggingface_hub's own cache layout, offline."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    torch.manual_seed(0)
    model = ProM3E(ProM3EConfig(input_dim=16, embed_dim=32, heads=2, mlp_dim=48))
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "models--MVRL--ProM3E"
    model.save_pretrained(repo / "snapshots" / commit)
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    loaded = load_model("hf-hub:MVRL/ProM3E", cache_dir=tmp_path)
    x = np.random.default_rng(0).normal(size=(3, 6, 16)).astype(np.float32)
    np.testing.assert_array_equal(
        model.eval().complete(x, n_samples=0).embeddings, loaded.complete(x, n_samples=0).embeddings
    )


def test_bare_repo_name_hints_at_hub_prefix():
    with pytest.raises(ModelNotFoundError, match="use 'hf-hub:MVRL/ProM3E'"):
        load_model("MVRL/ProM3E")
