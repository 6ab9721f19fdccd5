"""The uncertainty task with a calibrated model: expected error ranks noisy rows, 90% intervals
cover exchangeable rows, nested chains, and the next-modality choice beats a random one."""

import numpy as np
import pyarrow as pa
import pytest

from ecomodal.data.synthetic import SyntheticConfig, make_synthetic
from ecomodal.errors import MissingUncertaintyModelError
from ecomodal.eval import expected_error_quality, next_modality, uncertainty
from ecomodal.eval.uncertainty import CALIBRATE_HINT, _section, spearman
from ecomodal.io.tables import EmbeddingBatch, write_embeddings
from ecomodal.models import load_model
from ecomodal.training.calibrate import calibrate
from ecomodal.training.prom3e import train_prom3e

#: Four of the synthetic modalities keep calibration (every visible subset) quick; from one
#: visible modality a target still has two candidates to add, so the choice is not trivial.
KEEP = ("image", "sat", "loc", "env")


@pytest.fixture(scope="module")
def calibrated(tmp_path_factory):
    """(table path, uncalibrated model, calibrated model, test-row arrays)."""
    root = tmp_path_factory.mktemp("expected-error")
    config = SyntheticConfig(n_species=30, dim=64, val_fraction=0.35, test_fraction=0.25)
    data = make_synthetic(1200, config=config, seed=0)
    keep = [data.modalities.index(m) for m in KEEP]
    batch = EmbeddingBatch.from_stacked(
        data.ids, data.embeddings[:, keep], data.present[:, keep], list(KEEP),
        columns=pa.table({"split": list(data.columns["split"])}),
    )  # fmt: skip
    table = root / "table.parquet"
    write_embeddings(table, batch)
    run = train_prom3e(
        table, root / "run", epochs=3, batch_size=128, lr=1e-3, t0=3, seed=0,
        model_config={"embed_dim": 64, "heads": 4, "mlp_dim": 128, "dropout": 0.1},
        visible_counts=(1, 2, 3), visible_probs=(0.4, 0.3, 0.3), show_progress=False,
    )  # fmt: skip
    plain = load_model(run.best_dir)
    plain.calibration = None
    calibrate(run.best_dir, table, max_rows_per_set=80, max_neighbours=2000)
    model = load_model(run.best_dir)
    test = np.asarray(data.columns["split"], dtype=object) == "test"
    x = np.zeros((int(test.sum()), len(model.modalities), 64), np.float32)
    for name in KEEP:
        x[:, model.modalities.index(name)] = data.embeddings[test, data.modalities.index(name)]
    return table, plain, model, x


def test_expected_error_ranks_rows_by_noise_in_a_visible_modality(calibrated):
    _, _, model, x = calibrated
    env, sat = model.modalities.index("env"), model.modalities.index("sat")
    rng = np.random.default_rng(0)
    level = rng.uniform(0.0, 1.5, len(x))
    noise = rng.standard_normal(x[:, env].shape).astype(np.float32)
    noisy = x.copy()
    noisy[:, env] += level[:, None] * noise / np.linalg.norm(noise, axis=1, keepdims=True)
    noisy[:, env] /= np.linalg.norm(noisy[:, env], axis=1, keepdims=True)
    out = model.complete(noisy, visible=["env"], n_samples=0)
    observed = 1 - (out.embeddings[:, sat] * x[:, sat]).sum(1)
    assert spearman(observed, level) > 0.1  # the noise really hurts the completion
    assert spearman(out.expected_error[:, sat], level) > 0.5
    assert spearman(out.sigma_l1, level) < 0.5  # what sigma_l1 alone does not do


def test_intervals_cover_exchangeable_rows_and_the_report_has_every_part(calibrated):
    table, _, model, _ = calibrated
    result = uncertainty(table, model, max_sets_per_count=None)
    quality = result["expected_error"]
    assert 0.80 <= quality["pooled"]["coverage_90"] <= 0.97
    assert set(quality["pairs"]) >= {"env>sat", "image+loc>env", "loc>image"}
    pair = quality["pairs"]["env>sat"]
    assert pair["rows"] == result["sets"]["env"]["rows"]
    assert {"expected_error_spearman", "sigma_error_spearman", "mean_expected_error",
            "mean_observed_error", "coverage_90"} <= set(pair)  # fmt: skip
    assert quality["pooled"]["expected_error_spearman"] > quality["pooled"]["sigma_error_spearman"]
    curve = quality["reliability"]
    assert len(curve["expected"]) == 10 and sum(curve["rows"]) == quality["pooled"]["rows"]
    assert curve["expected"] == sorted(curve["expected"])  # by decile of expected error
    chains = quality["chains"]
    steps = {(s["from"], s["to"]) for s in chains["steps"]}
    assert ("env", "sat+env") in steps and ("sat+loc+env", "image+sat+loc+env") not in steps
    assert chains["num_chains"] == 24 and chains["all_hold"] == all(
        c["holds"] for c in chains["chains"]
    )
    step = next(s for s in chains["steps"] if (s["from"], s["to"]) == ("env", "sat+env"))
    before, after = step["mean_expected_error"]["loc"]
    assert step["holds"] == (before > after and step["mean_expected_error"]["image"][1]
                             < step["mean_expected_error"]["image"][0])  # fmt: skip
    assert result["next_modality_choice"]["rows"] > 0
    section = _section(result)
    assert len(section.figures) == 4 and "90% intervals cover" in " ".join(section.text)
    # every direct call agrees with the task's output
    alone = expected_error_quality(table, model, visible_sets=["env"])
    assert alone["pairs"]["env>sat"] == pair


def test_next_modality_beats_a_random_choice(calibrated):
    table, _, model, _ = calibrated
    result = next_modality(model, table, seed=0)
    assert sorted(result["targets"]) == sorted(KEEP)
    assert result["rows"] > 200
    assert result["random_rate"] == pytest.approx(0.5)  # two candidates per row
    assert abs(result["random_draw_rate"] - 0.5) < 0.1
    assert result["rate"] > result["random_rate"] + 0.1
    one = next_modality(model, table, target="sat", seed=0)
    assert set(one["by_target"]) == {"sat"} and one["rows"] == result["by_target"]["sat"]["rows"]


def test_an_uncalibrated_model_shows_sigma_and_says_how_to_calibrate(calibrated):
    table, plain, _, _ = calibrated
    result = uncertainty(table, plain, visible_sets=["env"])
    assert result["expected_error"] is None and result["calibrate"] == CALIBRATE_HINT
    assert "ecomodal calibrate" in " ".join(_section(result).text)
    assert "sigma_error_spearman" in result["sets"]["env"]
    with pytest.raises(MissingUncertaintyModelError, match="ecomodal calibrate"):
        next_modality(plain, table)
