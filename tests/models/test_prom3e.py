import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from ecomodal.errors import CheckpointError, InvalidEmbeddingsError, UnknownModalityError
from ecomodal.modalities import MODALITIES
from ecomodal.models import ProM3E, ProM3EConfig, load_model

SMALL = dict(input_dim=32, embed_dim=64, heads=4, mlp_dim=96, dropout=0.1)


def _inputs(batch=12, dim=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(batch, 6, dim, generator=g), dim=-1)


def _pair(published, depth=1, **kwargs):
    torch.manual_seed(3)
    config = dict(SMALL, depth=depth, **kwargs)
    oracle = published.PublishedProM3E(**config).eval()
    model = ProM3E(ProM3EConfig(**config)).eval()
    model.load_weights(oracle.state_dict())
    return model, oracle


# The tensor listing of reference §4.1 for the published 1024-wide, depth-1 model.
def _published_listing():
    shapes = {
        "cls_tokens": [2, 1024],
        "register_tokens": [4, 1024],
        "negative_scale": [],
        "negative_shift": [],
        "encoder.0.attn.in_proj_weight": [3072, 1024],
        "encoder.0.attn.in_proj_bias": [3072],
        "encoder.0.attn.out_proj.weight": [1024, 1024],
        "encoder.0.attn.out_proj.bias": [1024],
        "encoder.0.norm1.weight": [1024],
        "encoder.0.norm1.bias": [1024],
        "encoder.0.norm2.weight": [1024],
        "encoder.0.norm2.bias": [1024],
        "encoder.0.mlp.net.0.weight": [1024],
        "encoder.0.mlp.net.0.bias": [1024],
        "encoder.0.mlp.net.1.weight": [2048, 1024],
        "encoder.0.mlp.net.1.bias": [2048],
        "encoder.0.mlp.net.4.weight": [1024, 2048],
        "encoder.0.mlp.net.4.bias": [1024],
    }
    for i in range(6):
        shapes.update(
            {
                f"projectors.{i}.net.0.weight": [512],
                f"projectors.{i}.net.0.bias": [512],
                f"projectors.{i}.net.1.weight": [1024, 512],
                f"projectors.{i}.net.1.bias": [1024],
                f"projectors.{i}.net.4.weight": [1024, 1024],
                f"projectors.{i}.net.4.bias": [1024],
                f"modality_identifiers.{i}": [1024],
                f"decoders.{i}.net.0.weight": [1024],
                f"decoders.{i}.net.0.bias": [1024],
                f"decoders.{i}.net.1.weight": [1024, 1024],
                f"decoders.{i}.net.1.bias": [1024],
                f"decoders.{i}.net.4.weight": [512, 1024],
                f"decoders.{i}.net.4.bias": [512],
            }
        )
    return shapes


def test_published_tensor_names_and_shapes():
    model = ProM3E(ProM3EConfig())
    got = {k: list(v.shape) for k, v in model.state_dict().items()}
    assert got == _published_listing()
    assert round(model.num_parameters() / 1e6, 2) == 27.33


@pytest.mark.parametrize("depth", [1, 2])
@pytest.mark.parametrize(
    "visible", [["image"], ["sat", "loc"], ["image", "env", "audio"], MODALITIES]
)
def test_matches_published_forward(published, depth, visible):
    model, oracle = _pair(published, depth=depth)
    x = _inputs()
    vis = torch.zeros(12, 6, dtype=torch.bool)
    vis[:, [MODALITIES.index(m) for m in visible]] = True
    with torch.no_grad():
        ref = oracle(x, vis, None)
        out = model.encode(x, vis, return_hidden=True)
        fast = model.encode(x, vis)
        decoded = model.decode(out.mu)
    torch.testing.assert_close(out.mu, ref["mu"], atol=1e-5, rtol=0)
    torch.testing.assert_close(out.logvar, ref["logvar"], atol=1e-5, rtol=0)
    torch.testing.assert_close(out.hidden, ref["hidden"], atol=1e-5, rtol=0)
    torch.testing.assert_close(fast.mu, ref["mu"], atol=1e-5, rtol=0)
    torch.testing.assert_close(fast.logvar, ref["logvar"], atol=1e-5, rtol=0)
    torch.testing.assert_close(decoded, ref["reconstruction"], atol=1e-5, rtol=0)


def test_mixed_visible_rows_equal_rows_alone(published):
    model, oracle = _pair(published)
    x = _inputs(batch=10).numpy()
    rng = np.random.default_rng(0)
    present = rng.random((10, 6)) < 0.5
    present[np.arange(10), rng.integers(0, 6, 10)] = True
    x[~present] = 0.0
    batch = model.complete(x, visible=None, n_samples=0, return_hidden=True)
    fast = model.complete(x, visible=None, n_samples=0)  # the cls-only last block
    for name in ("embeddings", "mu", "logvar"):
        np.testing.assert_allclose(getattr(fast, name), getattr(batch, name), atol=1e-5)
    for row in range(10):
        alone = model.complete(x[row : row + 1], visible=None, n_samples=0, return_hidden=True)
        np.testing.assert_allclose(batch.embeddings[row], alone.embeddings[0], atol=1e-5)
        np.testing.assert_allclose(batch.mu[row], alone.mu[0], atol=1e-5)
        np.testing.assert_allclose(batch.logvar[row], alone.logvar[0], atol=1e-5)
        tokens = batch.hidden[row][batch.hidden_mask[row]]
        np.testing.assert_allclose(tokens, alone.hidden[0], atol=1e-5)
        # and the oracle agrees with the row alone
        with torch.no_grad():
            ref = oracle(
                torch.as_tensor(x[row : row + 1]), torch.as_tensor(present[row : row + 1]), None
            )
        np.testing.assert_allclose(alone.hidden[0], ref["hidden"][0].numpy(), atol=1e-5)


def test_complete_outputs_and_determinism(published):
    model, _ = _pair(published)
    x = _inputs().numpy()
    a = model.complete(x, visible=["image", "loc"], n_samples=0)
    b = model.complete(x, visible="image,loc", n_samples=0, seed=99)
    np.testing.assert_array_equal(a.embeddings, b.embeddings)  # no noise: seed is irrelevant
    assert isinstance(a.embeddings, np.ndarray) and a.embeddings.shape == (12, 6, 32)
    np.testing.assert_allclose(np.linalg.norm(a.embeddings, axis=-1), 1.0, atol=1e-5)
    np.testing.assert_allclose(a.sigma_l1, np.exp(a.logvar / 2).sum(-1), rtol=1e-5)
    assert a.hidden is None
    s1 = model.complete(x, visible=["image", "loc"], n_samples=5, seed=1)
    s1b = model.complete(x, visible=["image", "loc"], n_samples=5, seed=1)
    s2 = model.complete(x, visible=["image", "loc"], n_samples=5, seed=2)
    np.testing.assert_array_equal(s1.embeddings, s1b.embeddings)
    assert not np.allclose(s1.embeddings, s2.embeddings)
    np.testing.assert_array_equal(s1.mu, a.mu)
    t = model.complete(
        torch.as_tensor(x), visible=["image", "loc"], n_samples=0, return_hidden=True
    )
    assert isinstance(t.embeddings, torch.Tensor)
    assert t.hidden.shape == (12, 6 + 2, 64)
    # completing in several batches gives the same as one
    chunked = model.complete(x, visible=["image", "loc"], n_samples=0, batch_size=5)
    np.testing.assert_allclose(chunked.embeddings, a.embeddings, atol=1e-6)


def test_encoder_runs_in_chunks_within_a_batch(published, monkeypatch):
    from ecomodal.models import prom3e as prom3e_module

    model, _ = _pair(published)
    x = _inputs(batch=23).numpy()
    visible = np.zeros((23, 6), dtype=bool)
    visible[:, 0] = True
    visible[::3, 2] = True  # rows of one batch see different modalities
    x = np.where(visible[..., None], x, 0.0).astype(np.float32)
    whole = model.complete(x, n_samples=5, seed=4)
    calls = []
    original = ProM3E.encode
    monkeypatch.setattr(prom3e_module, "FORWARD_ROWS", 5)
    monkeypatch.setattr(
        ProM3E,
        "encode",
        lambda self, e, v, **kw: calls.append(len(e)) or original(self, e, v, **kw),
    )
    chunked = model.complete(x, n_samples=5, seed=4)
    assert calls == [5, 5, 5, 5, 3]  # one batch of 23 rows, encoded 5 at a time
    np.testing.assert_allclose(chunked.embeddings, whole.embeddings, atol=1e-6)
    np.testing.assert_allclose(chunked.logvar, whole.logvar, atol=1e-6)
    calls.clear()
    model.complete(x, n_samples=0, return_hidden=True)
    assert calls == [23]  # the hidden tokens' layout needs the batch in one pass


def test_bf16_completion_stays_close_to_float32(published):
    model, _ = _pair(published)
    x = _inputs(batch=64).numpy()
    full = model.complete(x, visible=["image", "loc"], n_samples=0)
    half = model.complete(x, visible=["image", "loc"], n_samples=0, precision="bf16")
    assert half.embeddings.dtype == np.float32
    assert not np.array_equal(full.embeddings, half.embeddings)  # bf16 really ran
    cosine = (full.embeddings * half.embeddings).sum(-1)
    assert cosine.min() > 0.999
    np.testing.assert_allclose(half.sigma_l1, full.sigma_l1, rtol=2e-2)
    with pytest.raises(ValueError, match="Unknown precision"):
        model.complete(x, visible=["image"], precision="fp16")


def test_sample_latent_uses_one_scalar_per_draw():
    mu = torch.zeros(4, 8)
    logvar = torch.log(torch.full((4, 8), 4.0))
    z = ProM3E.sample_latent(mu, logvar, n_samples=1, generator=torch.Generator().manual_seed(0))
    # sigma is 2 everywhere and eps is one scalar per row: every entry of a row is equal
    assert torch.allclose(z, z[:, :1].expand(-1, 8))
    assert not torch.allclose(z[0], z[1])
    assert torch.equal(ProM3E.sample_latent(mu, logvar, n_samples=0), mu)


def test_complete_input_errors():
    model = ProM3E(ProM3EConfig(**SMALL))
    x = _inputs().numpy()
    with pytest.raises(InvalidEmbeddingsError, match=r"shape \[batch, 6, 32\]"):
        model.complete(x[:, :, :16], visible=["image"])
    bad = x.copy()
    bad[3, 0, 5] = np.nan
    with pytest.raises(InvalidEmbeddingsError, match="Row 3, modality 'image'.*NaN"):
        model.complete(bad, visible=["image"])
    with pytest.raises(UnknownModalityError, match="Unknown modality 'satellite'"):
        model.complete(x, visible=["satellite"])
    holes = x.copy()
    holes[5, 2] = 0.0
    with pytest.raises(InvalidEmbeddingsError, match="Row 5 lacks visible modality 'loc'"):
        model.complete(holes, visible=["image", "loc"])
    empty = x.copy()
    empty[7] = 0.0
    with pytest.raises(InvalidEmbeddingsError, match="Row 7 has no modality"):
        model.complete(empty)


def test_save_and_load_round_trip(tmp_path):
    torch.manual_seed(0)
    model = ProM3E(ProM3EConfig(**SMALL)).eval()
    model.save_pretrained(tmp_path / "ckpt")
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == [
        "config.json",
        "model.safetensors",
    ]
    config = json.loads((tmp_path / "ckpt" / "config.json").read_text())
    for key in (
        "input_dim",
        "embed_dim",
        "num_modalities",
        "depth",
        "heads",
        "mlp_dim",
        "num_register_tokens",
        "num_cls_tokens",
        "masked_only",
        "dropout",
        "lambda_kl",
    ):
        assert key in config
    for spec in (str(tmp_path / "ckpt"), f"local-dir:{tmp_path / 'ckpt'}", tmp_path / "ckpt"):
        loaded = load_model(spec)
        for name, tensor in model.state_dict().items():
            assert torch.equal(tensor, loaded.state_dict()[name]), name
    x = _inputs().numpy()
    np.testing.assert_array_equal(
        model.complete(x, visible=["text"], n_samples=0).embeddings,
        loaded.complete(x, visible=["text"], n_samples=0).embeddings,
    )


def test_published_checkpoint_written_by_oracle_loads(tmp_path, published):
    """A folder in the published format (written without ecomodal) loads and matches."""
    torch.manual_seed(1)
    config = dict(
        SMALL,
        depth=1,
        num_modalities=6,
        num_register_tokens=4,
        num_cls_tokens=2,
        masked_only=False,
        lambda_kl=1e-3,
        some_future_key="ignored",
    )
    oracle = published.PublishedProM3E(**config).eval()
    folder = tmp_path / "ProM3E"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(config))
    save_file(
        {k: v.contiguous() for k, v in oracle.state_dict().items()}, folder / "model.safetensors"
    )
    model = load_model(f"local-dir:{folder}")
    x = _inputs()
    vis = torch.zeros(12, 6, dtype=torch.bool)
    vis[:, [0, 1]] = True
    with torch.no_grad():
        ref = oracle(x, vis, None)
    out = model.complete(x, visible=["image", "sat"], n_samples=0, return_hidden=True)
    torch.testing.assert_close(out.mu, ref["mu"], atol=1e-5, rtol=0)
    torch.testing.assert_close(out.hidden, ref["hidden"], atol=1e-5, rtol=0)
    torch.testing.assert_close(out.embeddings, ref["reconstruction"], atol=1e-5, rtol=0)


def test_checkpoint_errors(tmp_path):
    model = ProM3E(ProM3EConfig(**SMALL))
    folder = model.save_pretrained(tmp_path / "good")
    # config that does not match the tensors
    wrong = tmp_path / "wrong"
    wrong.mkdir()
    (wrong / "model.safetensors").write_bytes((folder / "model.safetensors").read_bytes())
    (wrong / "config.json").write_text(json.dumps(dict(SMALL, embed_dim=128)))
    with pytest.raises(
        CheckpointError, match=r"tensor 'cls_tokens' has shape \[2, 64\].*embed_dim=128"
    ):
        load_model(wrong)
    fewer = tmp_path / "fewer"
    fewer.mkdir()
    (fewer / "model.safetensors").write_bytes((folder / "model.safetensors").read_bytes())
    (fewer / "config.json").write_text(json.dumps(dict(SMALL, depth=2)))
    with pytest.raises(CheckpointError, match=r"missing tensors \['encoder.1"):
        load_model(fewer)
    # corrupt weights
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    (corrupt / "config.json").write_text((folder / "config.json").read_text())
    (corrupt / "model.safetensors").write_bytes(b"\x00garbage" * 10)
    with pytest.raises(CheckpointError, match=r"corrupt/model.safetensors is not a readable"):
        load_model(corrupt)
    # broken JSON, missing files, missing folder
    (corrupt / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="config.json is not valid JSON"):
        load_model(corrupt)
    (corrupt / "config.json").unlink()
    with pytest.raises(CheckpointError, match="has no config.json"):
        load_model(corrupt)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_model(tmp_path / "nowhere")


def test_config_validation():
    with pytest.raises(CheckpointError, match="not divisible by heads"):
        ProM3EConfig(embed_dim=100, heads=8)
    with pytest.raises(CheckpointError, match="num_cls_tokens must be 2"):
        ProM3EConfig(num_cls_tokens=1)
    custom = ProM3EConfig(num_modalities=3, modalities=("a", "b", "c"))
    assert custom.modalities == ("a", "b", "c")


@pytest.mark.parametrize("depth", [1, 2])
def test_training_gradients_match_published(published, depth):
    """One SGD step from the same weights on the same batch gives the same weights: one visible
    modality, two, and rows with different visible sets."""
    from ecomodal.models.layers import batched_linear, cls_projection
    from ecomodal.models.losses import prom3e_loss

    model, oracle = _pair(published, depth=depth, dropout=0.0)
    model.train()
    oracle.train()
    x = _inputs(batch=16)
    eps = torch.randn(16, generator=torch.Generator().manual_seed(4))
    present = torch.ones(16, 6, dtype=torch.bool)
    present[:3, 5] = False
    mixed = torch.zeros(16, 6, dtype=torch.bool)
    mixed[:, 1] = True
    mixed[::2, 4] = True
    mixed[::3, 1] = False
    mixed[::3, 0] = True
    for vis in (_columns([2]), _columns([0, 3]), mixed):
        for net in (model, oracle):
            net.zero_grad()
            out = net(x, vis, eps=eps)
            loss = prom3e_loss(out, x, present, net.negative_scale, net.negative_shift)["loss"]
            loss.backward()
            with torch.no_grad():
                for p in net.parameters():
                    if p.grad is not None:
                        p -= p.grad
        ours, ref = model.state_dict(), oracle.state_dict()
        for name in ref:
            torch.testing.assert_close(ours[name], ref[name], atol=1e-5, rtol=1e-4, msg=name)
    # and the custom batched linear has exact gradients
    g = torch.Generator().manual_seed(0)
    args = (
        torch.randn(3, 4, 5, dtype=torch.float64, generator=g, requires_grad=True),
        torch.randn(3, 6, 5, dtype=torch.float64, generator=g, requires_grad=True),
        torch.randn(3, 6, dtype=torch.float64, generator=g, requires_grad=True),
    )
    assert torch.autograd.gradcheck(batched_linear, args)
    # and so has the last block's projection (cls queries, no visible keys), shared special
    # tokens (1 row) or one set per row (3 rows)
    for n_rows in (1, 3):
        args = (
            torch.randn(n_rows, 4, 8, dtype=torch.float64, generator=g, requires_grad=True),
            torch.randn(5, 8, dtype=torch.float64, generator=g, requires_grad=True),
            torch.randn(24, 8, dtype=torch.float64, generator=g, requires_grad=True),
            torch.randn(24, dtype=torch.float64, generator=g, requires_grad=True),
            2,
            2,
        )
        assert torch.autograd.gradcheck(cls_projection, args)


def _columns(cols, batch=16):
    vis = torch.zeros(batch, 6, dtype=torch.bool)
    vis[:, cols] = True
    return vis


def test_dropout_masks_rate_scale_seed_and_gradient():
    from ecomodal.models.layers import Dropout, dropout

    x = torch.ones(200_000, requires_grad=True)
    torch.manual_seed(0)
    y = dropout(x, 0.1)
    dropped = (y == 0).float().mean().item()
    # 200k Bernoulli(0.1) draws: standard error 0.00067
    assert abs(dropped - 0.1) < 0.003
    kept = y[y != 0]
    torch.testing.assert_close(kept, torch.full_like(kept, 1 / 0.9))
    y.sum().backward()
    torch.testing.assert_close(x.grad, y.detach())  # d(out)/d(in) is the scaled mask
    torch.manual_seed(0)
    assert torch.equal(dropout(x, 0.1), y)  # same seed, same mask
    assert not torch.equal(dropout(x, 0.1), y)  # the generator moved on
    odd = torch.ones(3, 5, 7)
    assert dropout(odd, 0.5).shape == odd.shape
    assert torch.equal(dropout(odd, 0.5, training=False), odd)
    module = Dropout(0.3).eval()
    assert torch.equal(module(odd), odd)
    assert torch.equal(dropout(odd, 1.0), torch.zeros_like(odd))
    with pytest.raises(ValueError, match="dropout probability"):
        Dropout(1.5)
