"""Shared fixtures. No test reaches the network: the hub is forced offline here."""

from __future__ import annotations

import importlib.util
import os
import sys
import tempfile
from pathlib import Path

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
# Tests never write into the user's cache; the default covariate stack is built once per run.
os.environ["ECOMODAL_CACHE_DIR"] = tempfile.mkdtemp(prefix="ecomodal-test-cache-")

ROOT = Path(__file__).resolve().parents[1]


def load_benchmark_module(name: str):
    """Import ``benchmarks/<name>.py`` (the published-forward oracle lives there)."""
    path = ROOT / "benchmarks" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"benchmarks_{name}", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def benchmark_module():
    """``benchmark_module(name)`` imports ``benchmarks/<name>.py``."""
    return load_benchmark_module


@pytest.fixture(scope="session")
def published():
    """The straightforward published ProM3E implementation (oracle)."""
    return load_benchmark_module("published_prom3e")


@pytest.fixture(scope="session")
def default_covariates():
    """The offline default covariate stack (ERA5 bioclim + elevation), built once per run."""
    from ecomodal.geo.covariates import build_default_covariates

    return build_default_covariates()


TINY = {
    "embed_dim": 16,
    "vision_cfg": {"image_size": 224, "layers": 1, "width": 32, "patch_size": 32, "head_width": 16},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}


@pytest.fixture(scope="session")
def tiny_clip(tmp_path_factory):
    """A random-weight open_clip checkpoint in the hub layout of MVRL/taxabind-vit-b-16."""
    import json

    import open_clip
    import torch
    from safetensors.torch import save_file

    torch.manual_seed(0)
    model = open_clip.model.CLIP(**TINY).eval()
    folder = tmp_path_factory.mktemp("taxabind-tiny")
    (folder / "open_clip_config.json").write_text(json.dumps({"model_cfg": TINY}))
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(folder / "open_clip_model.safetensors"))
    return folder, model


@pytest.fixture(scope="session")
def photos(tmp_path_factory):
    import numpy as np
    from PIL import Image

    folder = tmp_path_factory.mktemp("photos")
    rng = np.random.default_rng(0)
    paths = []
    for i, (size, fmt) in enumerate(
        [((640, 480), "JPEG"), ((300, 500), "PNG"), ((256, 256), "JPEG")]
    ):
        pixels = rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
        path = folder / f"photo{i}.{fmt.lower()}"
        Image.fromarray(pixels).save(path, format=fmt)
        paths.append(str(path))
    corrupt = folder / "corrupt.jpg"
    corrupt.write_bytes(Path(paths[0]).read_bytes()[:200])
    empty = folder / "empty.jpg"
    empty.write_bytes(b"")
    return paths, str(corrupt), str(empty)
