"""Shared map fixtures: a small land grid over California and the real GeoCLIP loc encoder."""

import numpy as np
import pytest
import torch

from ecomodal.encoders import load_encoder
from ecomodal.encoders.environment import save_environment_encoder
from ecomodal.io.rasters import global_grid, write_geotiff
from ecomodal.maps import make_grid
from ecomodal.models import ProM3E, ProM3EConfig
from ecomodal.models.sinr import SINRResidualMLP

CALIFORNIA = (-125.0, 32.0, -114.0, 42.0)


@pytest.fixture(scope="session")
def loc_encoder():
    return load_encoder("loc", "geoclip")


@pytest.fixture(scope="session")
def ca_grid():
    return make_grid(CALIFORNIA, resolution=1.0)


@pytest.fixture(scope="session")
def env_encoder_16(tmp_path_factory):
    """A small SINR env encoder (16 wide) over a random covariate raster written here."""
    folder = tmp_path_factory.mktemp("env16")
    bands = ["elevation", "bio1", "bio12"]
    values = np.random.default_rng(3).normal(size=(3, 36, 72)).astype(np.float32)
    tif = write_geotiff(folder / "covariates.tif", global_grid(values, bands))
    torch.manual_seed(0)
    model = SINRResidualMLP(num_inputs=3, num_filts=16, depth=1).eval()
    checkpoint = save_environment_encoder(model, folder / "env", covariate_bands=bands)
    return load_encoder("env", f"local-dir:{checkpoint}", covariates=tif)


@pytest.fixture(scope="session")
def small_prom3e():
    """A random ProM3E over 512-wide embeddings (the loc encoder's width)."""
    torch.manual_seed(0)
    config = ProM3EConfig(input_dim=512, embed_dim=64, heads=4, mlp_dim=96, dropout=0.0)
    return ProM3E(config).eval()
