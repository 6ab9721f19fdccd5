"""ProM3E's training options for completion: per-dimension latent noise (``--noise``), the KL
weight (``--lambda-kl``) and ``--masked-only``; each reaches the saved config.json, and a
published config.json (no ``noise`` key) still loads and saves exactly as before."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from run_checks import weights

from ecomodal.data.synthetic import SyntheticConfig, make_synthetic, to_batch
from ecomodal.errors import CheckpointError, EcomodalError, InvalidArgumentError
from ecomodal.io.tables import write_embeddings
from ecomodal.models import load_model
from ecomodal.models.config import ProM3EConfig
from ecomodal.models.prom3e import ProM3E
from ecomodal.training.prom3e import train_prom3e

SMALL = {"input_dim": 16, "embed_dim": 16, "heads": 2, "mlp_dim": 32}
#: The keys of a published config.json, in the published order.
PUBLISHED_KEYS = [
    "input_dim", "embed_dim", "num_modalities", "depth", "heads", "mlp_dim",
    "num_register_tokens", "num_cls_tokens", "masked_only", "dropout", "lambda_kl", "modalities",
]  # fmt: skip
CLI_SMALL = ("--embed-dim", "16", "--heads", "2", "--mlp-dim", "32", "--no-progress")


@pytest.fixture(scope="module")
def table(tmp_path_factory):
    """A 200-row table of the six modalities (dimension 16) with a split column."""
    path = tmp_path_factory.mktemp("noise") / "small.parquet"
    write_embeddings(
        path, to_batch(make_synthetic(200, config=SyntheticConfig(n_species=5, dim=16), seed=0))
    )
    return path


# ------------------------------------------------------------------ sampling
def _latent(noise, n_samples=1, seed=0, batch=5, dim=8):
    mu = torch.zeros(batch, dim)
    logvar = torch.log(torch.full((batch, dim), 4.0))  # sigma = 2
    generator = torch.Generator().manual_seed(seed)
    return ProM3E.sample_latent(mu, logvar, n_samples, generator, noise=noise)


def test_per_row_noise_is_one_scalar_per_row_and_per_dimension_is_not():
    row, dim = _latent("per-row"), _latent("per-dimension")
    assert row.shape == dim.shape == (5, 8)
    assert torch.equal(row, row[:, :1].expand(-1, 8))  # one draw for every latent dimension
    assert not torch.allclose(row[0], row[1])
    # per dimension: the draws within a row differ, and are N(0, sigma^2 = 4) draws
    assert (dim.std(dim=1) > 0.1).all()
    big = _latent("per-dimension", batch=2000, dim=64)
    assert abs(float(big.mean())) < 0.05 and abs(float(big.std()) - 2.0) < 0.05
    # the published default, and the same draws as before: eps = randn(B, n).mean(1)
    assert torch.equal(ProM3E.sample_latent(torch.zeros(5, 8), torch.log(torch.full((5, 8), 4.0)), 1, torch.Generator().manual_seed(0)), row)  # fmt: skip
    assert torch.equal(row[:, 0], 2 * torch.randn(5, 1, generator=torch.Generator().manual_seed(0))[:, 0])  # fmt: skip


def test_noise_is_deterministic_with_a_seed_and_averages_samples():
    for noise in ("per-row", "per-dimension"):
        assert torch.equal(_latent(noise, seed=3), _latent(noise, seed=3))
        assert not torch.equal(_latent(noise, seed=3), _latent(noise, seed=4))
        # averaging n draws shrinks the spread by sqrt(n)
        spread = _latent(noise, n_samples=16, batch=4000).std()
        assert abs(float(spread) - 2.0 / 4) < 0.05
    assert torch.equal(_latent("per-dimension", n_samples=0), torch.zeros(5, 8))
    # a given eps of either shape is the noise
    mu, logvar = torch.zeros(2, 3), torch.zeros(2, 3)
    eps = torch.arange(6.0).view(2, 3)
    assert torch.equal(ProM3E.sample_latent(mu, logvar, eps=eps), eps)
    assert torch.equal(ProM3E.sample_latent(mu, logvar, eps=eps[:, 0]), eps[:, :1].expand(-1, 3))
    with pytest.raises(InvalidArgumentError, match="Unknown noise 'gaussian'.*per-row, per-dimension"):  # fmt: skip
        _latent("gaussian")


def test_the_model_samples_with_its_own_noise_kind():
    torch.manual_seed(0)
    row = ProM3E(ProM3EConfig(**SMALL)).eval()
    dim = ProM3E(ProM3EConfig(**SMALL, noise="per-dimension")).eval()
    dim.load_state_dict(row.state_dict())
    mu, logvar = torch.zeros(4, 16), torch.zeros(4, 16)
    z = dim.sample_latent(mu, logvar, 1, torch.Generator().manual_seed(0))
    assert torch.equal(z, ProM3E.sample_latent(mu, logvar, 1, torch.Generator().manual_seed(0), noise="per-dimension"))  # fmt: skip
    assert torch.equal(row.sample_latent(mu, logvar, 1, torch.Generator().manual_seed(0)), _latent("per-row", batch=4, dim=16) / 2)  # fmt: skip
    # a caller's own keyword still wins
    assert torch.equal(dim.sample_latent(mu, logvar, 1, torch.Generator().manual_seed(0), noise="per-row"), row.sample_latent(mu, logvar, 1, torch.Generator().manual_seed(0)))  # fmt: skip
    x = torch.nn.functional.normalize(torch.randn(6, 6, 16), dim=-1)
    visible = torch.zeros(6, 6, dtype=torch.bool)
    visible[:, 0] = True
    with torch.no_grad():
        out_row = row(x, visible, generator=torch.Generator().manual_seed(1))
        out_dim = dim(x, visible, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(out_row["mu"], out_dim["mu"])  # same weights, same encoder
    noise_row = (out_row["z"] - out_row["mu"]) / torch.exp(0.5 * out_row["logvar"])
    noise_dim = (out_dim["z"] - out_dim["mu"]) / torch.exp(0.5 * out_dim["logvar"])
    torch.testing.assert_close(noise_row, noise_row[:, :1].expand(-1, 16))
    assert float(noise_dim.std(dim=1).min()) > 0.1
    # complete draws with the model's noise too; without noise the two agree
    done_row = row.complete(x.numpy(), visible=["image"], n_samples=3, seed=0)
    done_dim = dim.complete(x.numpy(), visible=["image"], n_samples=3, seed=0)
    assert not np.allclose(done_row.embeddings, done_dim.embeddings)
    np.testing.assert_array_equal(
        row.complete(x.numpy(), visible=["image"], n_samples=0).embeddings,
        dim.complete(x.numpy(), visible=["image"], n_samples=0).embeddings,
    )


# ------------------------------------------------------------------ config
def test_config_round_trip_and_the_published_format(tmp_path):
    config = ProM3EConfig(**SMALL, noise="per-dimension", lambda_kl=1e-4, masked_only=True)
    assert ProM3EConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    # per-row writes exactly the published keys, no "noise"
    assert list(ProM3EConfig(**SMALL).to_dict()) == PUBLISHED_KEYS
    assert list(ProM3EConfig(**SMALL, noise="per-row").to_dict()) == PUBLISHED_KEYS
    assert list(config.to_dict()) == [*PUBLISHED_KEYS, "noise"]
    torch.manual_seed(0)
    model = ProM3E(config)
    model.save_pretrained(tmp_path / "dim")
    assert json.loads((tmp_path / "dim" / "config.json").read_text())["noise"] == "per-dimension"
    loaded = load_model(tmp_path / "dim")
    assert loaded.config == config
    x = torch.nn.functional.normalize(torch.randn(8, 6, 16), dim=-1).numpy()
    np.testing.assert_array_equal(
        model.complete(x, visible=["loc"], n_samples=4, seed=2).embeddings,
        loaded.complete(x, visible=["loc"], n_samples=4, seed=2).embeddings,
    )
    # a published config.json (no "noise" key) loads as per-row and saves byte for byte the same
    published = tmp_path / "published"
    ProM3E(ProM3EConfig(**SMALL)).save_pretrained(published)
    text = (published / "config.json").read_text()
    assert "noise" not in json.loads(text)
    again = load_model(published)
    assert again.config.noise == "per-row"
    again.save_pretrained(tmp_path / "again")
    assert (tmp_path / "again" / "config.json").read_text() == text


def test_a_config_json_with_a_bad_noise_is_refused(tmp_path):
    folder = tmp_path / "bad"
    ProM3E(ProM3EConfig(**SMALL)).save_pretrained(folder)
    values = json.loads((folder / "config.json").read_text())
    for bad in ("per-pixel", 3, None):
        (folder / "config.json").write_text(json.dumps({**values, "noise": bad}))
        with pytest.raises(CheckpointError, match=r"config\.json.*'noise' must be one of per-row, per-dimension"):  # fmt: skip
            load_model(folder)


# ------------------------------------------------------------------ training
def test_per_dimension_noise_changes_training(table, tmp_path):
    """The same seed, one optimiser step (all 160 training rows in one batch): the weights
    differ with per-dimension noise, and are repeated exactly with the same noise."""
    kwargs = dict(epochs=1, batch_size=256, seed=5, model_config=SMALL, show_progress=False)
    runs = {
        name: train_prom3e(table, tmp_path / name, noise=noise, **kwargs)
        for name, noise in (("row", "per-row"), ("row2", None), ("dim", "per-dimension"))
    }
    row, row2, dim = (weights(runs[n].last_dir) for n in ("row", "row2", "dim"))
    differ = [name for name in row if not torch.equal(row[name], dim[name])]
    assert any(n.startswith("decoders") for n in differ)
    assert any(n.startswith("encoder") for n in differ)  # the gradient through logvar differs
    assert all(torch.equal(row[n], row2[n]) for n in row)  # per-row is the default
    assert load_model(runs["dim"].best_dir).config.noise == "per-dimension"
    assert "noise" not in json.loads((runs["row"].best_dir / "config.json").read_text())


def test_the_api_keywords_reach_the_saved_config(table, tmp_path):
    result = train_prom3e(
        table, tmp_path / "run", epochs=1, batch_size=64, show_progress=False,
        model_config={**SMALL, "lambda_kl": 0.5, "masked_only": False},
        masked_only=True, lambda_kl=1e-4, noise="per-dimension",
    )  # fmt: skip
    config = json.loads((result.best_dir / "config.json").read_text())
    assert (config["masked_only"], config["lambda_kl"], config["noise"]) == (True, 1e-4, "per-dimension")  # fmt: skip
    run = json.loads((tmp_path / "run" / "run.json").read_text())
    assert run["model_config"]["noise"] == "per-dimension"
    # a ProM3EConfig is overridden the same way
    result = train_prom3e(
        table, tmp_path / "run2", epochs=1, batch_size=64, show_progress=False,
        model_config=ProM3EConfig(**SMALL), lambda_kl=0.0,
    )  # fmt: skip
    config = json.loads((result.best_dir / "config.json").read_text())
    assert (config["lambda_kl"], config["masked_only"], "noise" in config) == (0.0, False, False)


def test_cli_flags_reach_the_saved_config(run_cli, table, tmp_path):
    out = tmp_path / "cli"
    flags = ("--noise", "per-dimension", "--lambda-kl", "1e-4", "--masked-only")
    result = run_cli("train", "prom3e", "--data", table, "--out", out, "--epochs", "1", "--batch-size", "64", *CLI_SMALL, *flags)  # fmt: skip
    assert result.code == 0, result.output
    config = json.loads((out / "best" / "config.json").read_text())
    assert (config["noise"], config["lambda_kl"], config["masked_only"]) == ("per-dimension", 1e-4, True)  # fmt: skip
    # the defaults write the published config: per-row (no key), KL weight 1e-3, all reconstructed
    out = tmp_path / "defaults"
    result = run_cli("train", "prom3e", "--data", table, "--out", out, "--epochs", "1", "--batch-size", "64", *CLI_SMALL)  # fmt: skip
    assert result.code == 0, result.output
    config = json.loads((out / "best" / "config.json").read_text())
    assert list(config) == PUBLISHED_KEYS
    assert (config["lambda_kl"], config["masked_only"]) == (1e-3, False)


BAD = [
    (("--noise", "gaussian"), ("--noise", "'gaussian'", "per-row, per-dimension")),
    (("--noise", "PER-ROW"), ("--noise", "'PER-ROW'", "per-row, per-dimension")),
    (("--noise", ""), ("--noise", "''", "per-row, per-dimension")),
    (("--lambda-kl", "-1"), ("--lambda-kl must be >= 0", "got -1")),
    (("--lambda-kl", "nan"), ("--lambda-kl must be a finite number", "got nan")),
    (("--lambda-kl", "inf"), ("--lambda-kl must be a finite number", "got inf")),
]


@pytest.mark.parametrize(("args", "expected"), BAD)
def test_bad_values_fail_clearly(run_cli, table, tmp_path, args, expected):
    out = tmp_path / "run"
    result = run_cli("train", "prom3e", "--data", table, "--out", out, *CLI_SMALL, *args)
    result.assert_clear_failure(*expected)
    assert not out.exists() or run_cli.files_under(out) == []


def test_the_api_checks_the_same(table, tmp_path):
    out = tmp_path / "run"
    calls = [
        (dict(noise="gaussian"), "Unknown noise 'gaussian'; expected one of: per-row, per-dimension"),
        (dict(lambda_kl=-1.0), "lambda_kl must be >= 0; got -1.0"),
        (dict(lambda_kl=float("inf")), "lambda_kl must be a finite number"),
        (dict(masked_only="yes"), "masked_only must be True or False; got 'yes'"),
        (dict(model_config={**SMALL, "noise": "x"}), "'noise' must be one of per-row, per-dimension"),
    ]  # fmt: skip
    for kwargs, message in calls:
        with pytest.raises(EcomodalError) as info:
            train_prom3e(table, out, epochs=1, **{"model_config": SMALL, **kwargs})
        assert message in str(info.value)
        assert not out.exists()
