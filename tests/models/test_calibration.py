"""Calibration: retrieval-augmented completion, the uncertainty model, their files and CLI."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from ecomodal.data.synthetic import make_synthetic
from ecomodal.errors import CheckpointError, MissingUncertaintyModelError
from ecomodal.io.calibration import MIX_NAME, NEIGHBOURS_NAME, UNCERTAINTY_NAME
from ecomodal.io.writer import write_embeddings
from ecomodal.models.factory import load_model
from ecomodal.models.prom3e import ProM3E
from ecomodal.training.calibrate import calibrate

MODALITIES = ("loc", "env", "sat")


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A small 3-modality table (train/val/test) and an untrained model folder."""
    root = tmp_path_factory.mktemp("calibration")
    data = make_synthetic(1500, seed=3)
    index = [data.modalities.index(m) for m in MODALITIES]
    split = np.asarray(data.columns["split"], dtype=object)
    table = root / "table.parquet"
    write_embeddings(
        table,
        ids=data.ids,
        embeddings={m: data.embeddings[:, i] for m, i in zip(MODALITIES, index, strict=True)},
        columns={"split": split},
    )
    torch.manual_seed(0)
    model = ProM3E(
        input_dim=data.embeddings.shape[-1],
        embed_dim=32,
        heads=2,
        mlp_dim=64,
        num_modalities=3,
        modalities=MODALITIES,
    )
    plain = root / "plain"
    model.save_pretrained(plain)
    calibrated = root / "calibrated"
    shutil.copytree(plain, calibrated)
    result = calibrate(calibrated, table, max_rows_per_set=600, seed=0)
    stacked = np.stack([data.embeddings[:, i] for i in index], axis=1)
    return {
        "table": table,
        "plain": plain,
        "calibrated": calibrated,
        "result": result,
        "stacked": stacked,
        "split": split,
    }


def test_calibration_files_round_trip(setup, tmp_path):
    folder = setup["calibrated"]
    for name in (NEIGHBOURS_NAME, MIX_NAME, UNCERTAINTY_NAME, "uncertainty.json"):
        assert (folder / name).is_file(), name
    model = load_model(folder)
    fitted = setup["result"].calibration
    assert model.calibration is not None
    assert model.calibration.mix.entries == fitted.mix.entries
    assert len(model.calibration.bank) == int((setup["split"] != "test").sum())  # train + val
    for name, tensor in fitted.error_model.tensors.items():
        assert torch.equal(model.calibration.error_model.tensors[name], tensor), name
    # save_pretrained carries the calibration along; the weights file is the published format.
    model.save_pretrained(tmp_path / "copy")
    again = load_model(tmp_path / "copy")
    x = setup["stacked"][setup["split"] == "test"][:50]
    a = model.complete(x, visible=["loc"], n_samples=0)
    b = again.complete(x, visible=["loc"], n_samples=0)
    np.testing.assert_array_equal(a.embeddings, b.embeddings)
    np.testing.assert_array_equal(a.expected_error, b.expected_error)


def test_neighbour_search_in_chunks_equals_one_pass(setup, monkeypatch):
    from ecomodal.models import calibration as calibration_module

    bank = load_model(setup["calibrated"]).calibration.bank
    # The bank read back holds the saved rows (float16 on disk), unit length or zero.
    norms = torch.stack([c.norm(dim=-1) for c in bank.columns], 1)
    assert torch.allclose(norms[bank.present], torch.ones(1), atol=1e-3)
    assert bool((norms[~bank.present] == 0).all())
    queries = torch.as_tensor(setup["stacked"][setup["split"] == "test"][:300])
    whole = bank.search(queries, [0, 2], 20)
    monkeypatch.setattr(calibration_module, "SEARCH_CELLS", 7 * len(bank))  # 43 chunks of 7
    chunked = bank.search(queries, [0, 2], 20)
    assert torch.allclose(whole[0], chunked[0], atol=1e-6)
    assert torch.equal(whole[1], chunked[1])
    expected = (queries[:, 0] @ bank.columns[0].T + queries[:, 2] @ bank.columns[2].T) / 2
    assert torch.equal(whole[1][:, 0], expected.argmax(1))


def test_completion_mixes_neighbours_and_beats_prom3e_alone(setup):
    model = load_model(setup["calibrated"])
    test = setup["split"] == "test"
    x = setup["stacked"][test]
    out = model.complete(x, visible=["env"], n_samples=0)
    alone = model.complete(x, visible=["env"], n_samples=0, neighbours=False)
    np.testing.assert_allclose(out.prom3e_embeddings, alone.embeddings, atol=1e-6)
    truth = x / np.linalg.norm(x, axis=-1, keepdims=True)
    for target in (0, 2):
        mixed = np.sum(out.embeddings[:, target] * truth[:, target], axis=1).mean()
        own = np.sum(alone.embeddings[:, target] * truth[:, target], axis=1).mean()
        assert mixed > own + 0.05  # an untrained ProM3E knows nothing; the neighbours do
    error = out.expected_error
    assert error.shape == (len(x), 3)
    assert np.isnan(error[:, 1]).all() and np.isfinite(error[:, [0, 2]]).all()
    assert ((error[:, [0, 2]] >= 0) & (error[:, [0, 2]] <= 2)).all()
    low, high = out.interval(0.9)
    assert np.isnan(low[:, 1]).all()
    assert (low[:, [0, 2]] <= high[:, [0, 2]]).all()
    wide_low, wide_high = out.interval(0.99)
    assert (wide_low[:, [0, 2]] <= low[:, [0, 2]] + 1e-6).all()
    assert (wide_high[:, [0, 2]] >= high[:, [0, 2]] - 1e-6).all()


def test_interval_coverage_on_rows_like_the_calibration_rows(setup):
    """Test rows drawn like the val rows: 90% intervals hold for roughly 90% of them."""
    model = load_model(setup["calibrated"])
    x = setup["stacked"][setup["split"] == "test"]
    truth = x / np.linalg.norm(x, axis=-1, keepdims=True)
    covered = []
    for visible in (["loc"], ["env"], ["sat"], ["loc", "env"]):
        out = model.complete(x, visible=visible, n_samples=5)
        low, high = out.interval(0.9)
        for t in range(3):
            if MODALITIES[t] in visible:
                continue
            cosine = np.sum(out.embeddings[:, t] * truth[:, t], axis=1)
            covered.append((cosine >= low[:, t]) & (cosine <= high[:, t]))
    rate = np.concatenate(covered).mean()
    assert 0.8 <= rate <= 0.97, rate


def test_uncalibrated_model_completes_and_says_how_to_calibrate(setup):
    model = load_model(setup["plain"])
    assert model.calibration is None
    out = model.complete(setup["stacked"][:20], visible=["loc"])
    assert out.embeddings.shape == (20, 3, setup["stacked"].shape[-1])
    assert out.prom3e_embeddings is None
    with pytest.raises(MissingUncertaintyModelError, match="ecomodal calibrate --model"):
        _ = out.expected_error
    with pytest.raises(MissingUncertaintyModelError):
        out.interval(0.9)


def test_neighbours_table_argument(setup):
    """An uncalibrated model with neighbours=TABLE mixes in that table's rows (default mix)."""
    model = load_model(setup["plain"])
    x = setup["stacked"][:30]
    out = model.complete(x, visible=["loc"], n_samples=0, neighbours=setup["table"], k=1)
    # With k=1 and the row itself in the table, its own neighbour is itself.
    truth = x[:, 1] / np.linalg.norm(x[:, 1], axis=-1, keepdims=True)
    alone = model.complete(x, visible=["loc"], n_samples=0, neighbours=False).embeddings[:, 1]
    mixed = out.embeddings[:, 1]
    assert np.sum(mixed * truth, 1).mean() > np.sum(alone * truth, 1).mean() + 0.1


def test_complete_cli_writes_expected_error_columns(setup, run_cli, tmp_path):
    out = tmp_path / "done.parquet"
    result = run_cli(
        "complete", "--model", str(setup["calibrated"]), "--data", str(setup["table"]),
        "--out", str(out), "--visible", "loc", "--no-progress",
    )  # fmt: skip
    assert result.code == 0, result.output
    assert "mean expected error" in result.output
    table = pq.read_table(out)
    for m in MODALITIES:
        assert f"{m}_expected_error" in table.column_names
    loc = np.asarray(table.column("loc_expected_error").to_pylist(), dtype=float)
    env = np.asarray(table.column("env_expected_error").to_pylist(), dtype=float)
    assert np.isnan(loc).all() and np.isfinite(env).all()
    plain = tmp_path / "plain.parquet"
    result = run_cli(
        "complete", "--model", str(setup["plain"]), "--data", str(setup["table"]),
        "--out", str(plain), "--visible", "loc", "--no-progress",
    )  # fmt: skip
    assert result.code == 0, result.output
    assert "env_expected_error" not in pq.read_table(plain).column_names


def test_calibrate_cli_writes_a_complete_model_folder(setup, run_cli, tmp_path):
    out = tmp_path / "calibrated-copy"
    result = run_cli(
        "calibrate", "--model", str(setup["plain"]), "--data", str(setup["table"]),
        "--out", str(out),
    )  # fmt: skip
    assert result.code == 0, result.output
    assert "Spearman" in result.output and "cosine" in result.output
    model = load_model(out)
    assert model.calibration is not None and model.calibration.error_model is not None
    assert not (setup["plain"] / NEIGHBOURS_NAME).exists()  # the source folder is untouched


@pytest.mark.parametrize(
    ("extra", "texts"),
    [
        (["--split", "train"], ["--split train", "neighbours"]),
        (["--split", "holdout"], ["split == 'holdout'", "val"]),
        (["--max-neighbours", "0"], ["--max-neighbours", "got 0"]),
    ],
)
def test_calibrate_cli_bad_inputs(setup, run_cli, tmp_path, extra, texts):
    folder = tmp_path / "model"
    shutil.copytree(setup["plain"], folder)
    result = run_cli("calibrate", "--model", str(folder), "--data", str(setup["table"]), *extra)
    result.assert_clear_failure(*texts)
    assert not (folder / NEIGHBOURS_NAME).exists()


def test_calibrate_hub_model_needs_out(setup):
    with pytest.raises(Exception, match="--out"):
        calibrate("hf-hub:MVRL/ProM3E", setup["table"])


def test_calibration_for_other_modalities_is_refused(setup, tmp_path):
    folder = tmp_path / "model"
    shutil.copytree(setup["calibrated"], folder)
    mix = json.loads((folder / MIX_NAME).read_text())
    mix["modalities"] = ["loc", "env", "image"]
    (folder / MIX_NAME).write_text(json.dumps(mix))
    with pytest.raises(CheckpointError, match="calibrate"):
        load_model(folder)


def test_interval_quantiles_are_cross_fitted_over_spatial_blocks(setup, tmp_path):
    """With lat/lon, the quantiles come from ratios of error models that never saw the row's
    block: wider than the random-half ones on the same rows, seeded, and the saved error model
    is fitted on every calibration row."""
    from ecomodal.training import calibrate as calibrate_module

    data = make_synthetic(1500, seed=3)
    index = [data.modalities.index(m) for m in MODALITIES]
    table = tmp_path / "placed.parquet"
    write_embeddings(
        table,
        ids=data.ids,
        embeddings={m: data.embeddings[:, i] for m, i in zip(MODALITIES, index, strict=True)},
        columns={k: data.columns[k] for k in ("split", "lat", "lon")},
    )
    quantiles = {}
    for name, block in (("random-half", None), ("blocks", 10.0), ("blocks-again", 10.0)):
        folder = tmp_path / name
        shutil.copytree(setup["plain"], folder)
        calibrate(folder, table, max_rows_per_set=600, seed=0, block_deg=block)
        tensors = load_model(folder).calibration.error_model.tensors
        quantiles[name] = tensors["ratio_quantiles"].numpy()
    np.testing.assert_array_equal(quantiles["blocks"], quantiles["blocks-again"])
    assert not np.array_equal(quantiles["blocks"], quantiles["random-half"])
    # Out-of-block ratios spread more: the 95% ratio quantile is higher on average.
    levels = list(calibrate_module.LEVELS)
    top = levels.index(min(levels, key=lambda v: abs(v - 0.95)))
    assert quantiles["blocks"][:, top].mean() > quantiles["random-half"][:, top].mean()
