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
def published():
    """The straightforward published ProM3E implementation (oracle)."""
    return load_benchmark_module("published_prom3e")


@pytest.fixture(scope="session")
def default_covariates():
    """The offline default covariate stack (ERA5 bioclim + elevation), built once per run."""
    from ecomodal.geo.covariates import build_default_covariates

    return build_default_covariates()
