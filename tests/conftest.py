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


@pytest.fixture(scope="session")
def reduced_quickstart(tmp_path_factory, default_covariates):
    """A reduced real-data quickstart run (2,000 places, a 5-degree grid), made once per test
    session: (output folder, what the command printed). Tests must not change the folder."""
    from typer.testing import CliRunner

    from ecomodal.cli import app

    out = tmp_path_factory.mktemp("reduced-quickstart") / "quickstart"
    args = ["quickstart", "--out", str(out), "--n", "2000", "--bind-epochs", "5"]
    args += ["--epochs", "10", "--grid-resolution", "5", "--no-progress"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    return out, result.output


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


class CliResult:
    """What one in-process ``ecomodal`` run gave: exit status and everything it printed."""

    def __init__(self, code: int, output: str):
        self.code, self.output = code, output

    def assert_clear_failure(self, *expected: str, status: int = 2) -> None:
        """Exit ``status``, exactly one line starting ``error:`` naming ``expected``, no traceback."""
        lines = [line for line in self.output.strip().splitlines() if line.strip()]
        assert self.code == status, (self.code, self.output)
        assert "Traceback" not in self.output, self.output
        assert len(lines) == 1 and lines[0].startswith("error: "), self.output
        for text in expected:
            assert text in lines[0], (text, lines[0])


@pytest.fixture
def run_cli(monkeypatch, capsys):
    """``run_cli("complete", "--model", ...)`` runs ``ecomodal.cli.main`` as the console script
    does and returns a :class:`CliResult` (no traceback mode, whatever the environment says);
    ``run_cli.files_under(folder)`` lists the files below a folder (nothing left behind?)."""
    from ecomodal.cli import main

    def run(*args: object) -> CliResult:
        monkeypatch.setattr("sys.argv", ["ecomodal", *map(str, args)])
        monkeypatch.delenv("ECOMODAL_DEBUG", raising=False)
        capsys.readouterr()
        try:
            main()
            code = 0
        except SystemExit as exit_info:
            code = exit_info.code if isinstance(exit_info.code, int) else 1
        captured = capsys.readouterr()
        return CliResult(code, captured.err + captured.out)

    run.files_under = files_under  # type: ignore[attr-defined]
    return run


def files_under(folder: Path) -> list[str]:
    """Every file below ``folder`` (relative, sorted): to assert nothing was left behind."""
    return sorted(str(p.relative_to(folder)) for p in Path(folder).rglob("*") if p.is_file())
