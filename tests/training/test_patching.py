"""Multimodal patching on real checkpoints: a tiny open_clip model whose best alpha is known.

The validation photos are random images; a projection P* is solved so that the tiny model maps
every photo exactly onto its own taxon's text embedding (accuracy 1). The "original" and
"fine-tuned" checkpoints are P* + D and P* - D with a large random D, so the interpolation at
alpha = 0.5 is P* again and is the unique best, while both ends are degraded.
"""

from __future__ import annotations

import copy
import csv
import json
import re

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file
from torch import nn
from typer.testing import CliRunner

from ecomodal.cli import app
from ecomodal.encoders.registry import load_encoder
from ecomodal.errors import CheckpointError
from ecomodal.io.checkpoints import read_weights, save_checkpoint
from ecomodal.training.patching import (
    interpolate_state_dicts,
    parse_alphas,
    patch_model,
    zero_shot_accuracy,
)

CLASSES = [
    "Animalia Chordata Aves Passeriformes Corvidae Corvus corax",
    "Animalia Chordata Aves Passeriformes Paridae Parus major",
    "Animalia Chordata Mammalia Carnivora Canidae Vulpes vulpes",
    "Plantae Tracheophyta Magnoliopsida Fagales Fagaceae Quercus robur",
]
N_VAL = 8


def _clip_folder(folder, state, config_dir):
    folder.mkdir(parents=True)
    (folder / "open_clip_config.json").write_text(
        (config_dir / "open_clip_config.json").read_text()
    )
    save_file(
        {k: v.contiguous() for k, v in state.items()}, str(folder / "open_clip_model.safetensors")
    )
    return folder


@pytest.fixture(scope="module")
def patch_setup(tiny_clip, tmp_path_factory):
    folder, model = tiny_clip
    root = tmp_path_factory.mktemp("patching")
    rng = np.random.default_rng(0)
    paths = []
    for i in range(N_VAL + 3):
        path = root / f"photo{i}.png"
        Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(path)
        paths.append(str(path))
    labels = np.arange(N_VAL) % len(CLASSES)
    texts = [CLASSES[c] for c in labels] + ["Fungi Basidiomycota Agaricomycetes Zzz zzz"] * 3
    split = ["val"] * N_VAL + ["train"] * 3  # train rows must be ignored by the scorer
    val = root / "val.parquet"
    ids = [f"obs{i}" for i in range(len(paths))]
    # A val row whose photo is missing is left out of the score (not counted as wrong).
    columns = {
        "id": [*ids, "lost"],
        "image": [*paths, str(root / "lost.jpg")],
        "text": [*texts, CLASSES[0]],
        "split": [*split, "val"],
    }
    pq.write_table(pa.table(columns), val)

    # Features before the visual projection, with exactly the encoder's preprocessing.
    encoder = load_encoder("image", f"local-dir:{folder}")
    pixels = encoder.prepare({"image": np.asarray(paths[:N_VAL], dtype=object)}).inputs
    bare = copy.deepcopy(model).eval()
    bare.visual.proj = None
    with torch.no_grad():
        features = bare.encode_image(pixels).double()
    class_embeddings = load_encoder("text", f"local-dir:{folder}").encode(CLASSES)
    targets = torch.from_numpy(class_embeddings[labels]).double()
    best = torch.linalg.lstsq(features, targets, driver="gelsd").solution.float()
    gen = torch.Generator().manual_seed(0)
    shift = 20 * best.abs().mean() * torch.randn(best.shape, generator=gen)
    state = {k: v.clone() for k, v in model.state_dict().items()}

    def with_proj(name, proj):
        return _clip_folder(root / name, {**state, "visual.proj": proj}, folder)

    return {
        "val": val,
        "best": best,
        "original": with_proj("original", best + shift),
        "finetuned": with_proj("finetuned", best - shift),
        "finetuned2": with_proj("finetuned2", best + 0.5 * shift),
    }


def test_best_alpha_is_the_known_interior_optimum(patch_setup, tmp_path):
    out = tmp_path / "patched"
    result = patch_model(
        patch_setup["original"],
        patch_setup["finetuned"],
        patch_setup["val"],
        out,
        alphas="0:1:5",
    )
    (step,) = result.steps
    assert step.alphas == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert step.best_alpha == 0.5
    assert step.best_accuracy == 1.0
    assert step.accuracies[0] < 1.0 and step.accuracies[-1] < 1.0

    # The patched folder loads like the input and holds the interpolated (= P*) weights.
    weights = load_file(str(out / "open_clip_model.safetensors"))
    torch.testing.assert_close(weights["visual.proj"], patch_setup["best"], atol=1e-5, rtol=0)
    original = load_file(str(patch_setup["original"] / "open_clip_model.safetensors"))
    torch.testing.assert_close(weights["text_projection"], original["text_projection"])
    photos = pq.read_table(patch_setup["val"]).column("image").to_pylist()[:N_VAL]
    queries = load_encoder("image", f"local-dir:{out}").encode(photos)
    texts = load_encoder("text", f"local-dir:{out}").encode(CLASSES)
    assert zero_shot_accuracy(queries, texts, np.arange(N_VAL) % len(CLASSES)) == 1.0
    # Scoring never changed the models loaded (and cached) from the input folders.
    tower = load_encoder("image", f"local-dir:{patch_setup['original']}").model
    torch.testing.assert_close(tower.clip.visual.proj.detach(), original["visual.proj"])

    with open(out / "patching_curve.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert [float(r["alpha"]) for r in rows] == step.alphas
    assert [float(r["accuracy"]) for r in rows] == step.accuracies
    assert [r["best"] for r in rows] == ["0", "0", "1", "0", "0"]
    assert (out / "patching_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    summary = json.loads((out / "patching.json").read_text())
    assert summary["steps"][0]["best_alpha"] == 0.5


def _unboxed(output: str) -> str:
    """CLI output without rich's box characters and line wrapping: its words, one space apart."""
    return " ".join(re.sub(r"[│╭╮╰╯─]", " ", output).split())


def _patch_cli(setup, *finetuned_and_names, out, alphas):
    """Run `ecomodal patch`; each path in ``finetuned_and_names`` becomes a --finetuned."""
    steps = []
    for item in finetuned_and_names:
        steps += ["--finetuned", str(item)] if not isinstance(item, str) else [item]
    return CliRunner().invoke(
        app,
        [
            "patch",
            "--original",
            str(setup["original"]),
            *steps,
            "--val",
            str(setup["val"]),
            "--alphas",
            alphas,
            "--out",
            str(out),
        ],
    )


def test_cli_sequential_patching_over_two_modalities(patch_setup, tmp_path):
    out = tmp_path / "patched"
    result = _patch_cli(
        patch_setup,
        patch_setup["finetuned"],
        "--modality",
        "loc",
        patch_setup["finetuned2"],
        "--modality",
        "sat",
        out=out,
        alphas="0,0.5,1",
    )
    assert result.exit_code == 0, result.output
    assert "step 1 (loc): best alpha 0.5000, zero-shot accuracy 1.0000" in result.output
    # Step 2 starts from P*: any move towards finetuned2 can only lose, so alpha 0 is kept.
    assert "step 2 (sat): best alpha 0.0000, zero-shot accuracy 1.0000" in result.output
    with open(out / "patching_curve.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert [(r["step"], r["modality"]) for r in rows] == [("1", "loc")] * 3 + [("2", "sat")] * 3
    weights = load_file(str(out / "open_clip_model.safetensors"))
    torch.testing.assert_close(weights["visual.proj"], patch_setup["best"], atol=1e-5, rtol=0)


def test_ecomodal_checkpoint_folders_and_custom_score(tmp_path):
    torch.manual_seed(0)
    first, second = nn.Linear(3, 2), nn.Linear(3, 2)
    config = {"in_features": 3, "out_features": 2}
    save_checkpoint(first, config, tmp_path / "a")
    save_checkpoint(second, config, tmp_path / "b")
    target = (first.weight + 0.75 * (second.weight - first.weight)).detach()

    def score(tensors):
        return -float(((tensors["weight"] - target) ** 2).sum())

    result = patch_model(
        tmp_path / "a", tmp_path / "b", None, tmp_path / "out", alphas="0:1:5", score=score
    )
    assert result.best_alpha == 0.75
    assert json.loads((tmp_path / "out" / "config.json").read_text()) == config
    weights = read_weights(tmp_path / "out" / "model.safetensors")
    torch.testing.assert_close(weights["weight"], target)


def test_interpolation_by_hand():
    original = {"w": torch.tensor([0.0, 2.0], dtype=torch.float16), "n": torch.tensor([3])}
    finetuned = {"w": torch.tensor([4.0, 6.0], dtype=torch.float16), "n": torch.tensor([7])}
    mixed = interpolate_state_dicts(original, finetuned, 0.25)
    assert mixed["w"].dtype == torch.float16
    assert mixed["w"].tolist() == [1.0, 3.0]
    assert mixed["n"].tolist() == [3]  # integer buffers keep the original's values
    with pytest.raises(CheckpointError, match="'w' has shape \\[3\\]"):
        interpolate_state_dicts(original, {**finetuned, "w": torch.zeros(3)}, 0.5)
    with pytest.raises(CheckpointError, match="missing tensors \\['n'\\]"):
        interpolate_state_dicts(original, {"w": finetuned["w"]}, 0.5)


def test_alpha_grammar():
    assert parse_alphas("0:1:10") == pytest.approx(np.linspace(0, 1, 10).tolist())
    assert len(parse_alphas("0:1:11")) == 11 and parse_alphas("0:1:11")[1] == pytest.approx(0.1)
    assert parse_alphas("0, 0.3,1") == [0.0, 0.3, 1.0]
    for bad in ("0:1", "0:1:0", "a,b", "0:1:x", ""):
        with pytest.raises(ValueError, match="--alphas"):
            parse_alphas(bad)


def test_bad_inputs_name_the_problem(patch_setup, tmp_path):
    with pytest.raises(CheckpointError, match="nope"):
        patch_model(tmp_path / "nope", patch_setup["finetuned"], patch_setup["val"], tmp_path)
    with pytest.raises(ValueError, match="2 --modality names for 1 --finetuned"):
        patch_model(
            patch_setup["original"],
            [patch_setup["finetuned"]],
            patch_setup["val"],
            tmp_path,
            modalities=["loc", "sat"],
        )
    result = _patch_cli(patch_setup, patch_setup["finetuned"], out=tmp_path / "x", alphas="0:1")
    assert result.exit_code == 2
    assert "START:STOP:N" in _unboxed(result.output)
    with pytest.raises(ValueError, match="needs a validation table"):
        patch_model(patch_setup["original"], patch_setup["finetuned"], None, tmp_path)
    assert "0:1:10 = 10 values" in _unboxed(CliRunner().invoke(app, ["patch", "--help"]).output)
