import numpy as np
import pytest
import torch

from ecomodal.encoders import load_encoder
from ecomodal.encoders.environment import TAXABIND_BANDS, save_environment_encoder
from ecomodal.errors import CheckpointError
from ecomodal.geo.covariates import DEFAULT_BANDS, CovariateStack
from ecomodal.io.rasters import global_grid, write_geotiff
from ecomodal.models.sinr import SINRResidualMLP


def _sinr(num_inputs: int, seed: int = 0) -> SINRResidualMLP:
    torch.manual_seed(seed)
    return SINRResidualMLP(num_inputs=num_inputs, num_filts=16, depth=2).eval()


def _stack_file(tmp_path, bands):
    values = np.random.default_rng(1).normal(size=(len(bands), 18, 36)).astype(np.float32) * 5 + 3
    values[0, 0, 0] = np.nan
    return write_geotiff(tmp_path / "covariates.tif", global_grid(values, bands))


def test_env_encoder_is_the_sinr_mlp_over_sampled_covariates(tmp_path):
    bands = ["elevation", "bio1", "bio12"]
    tif = _stack_file(tmp_path, bands)
    model = _sinr(3)
    folder = save_environment_encoder(model, tmp_path / "env", covariate_bands=bands)
    encoder = load_encoder("env", f"local-dir:{folder}", covariates=tif)
    assert encoder.modality == "env" and encoder.dim == 16 and encoder.licence == "MIT"
    lat, lon = np.array([85.0, 10.0, -45.0]), np.array([-175.0, 20.0, 100.0])
    stack = CovariateStack.open(tif)
    x = torch.tensor(stack.sample(lat, lon))
    assert x[0, 0] == 0  # the NaN cell is 0 after z-scoring
    with torch.inference_mode():
        expected = torch.nn.functional.normalize(model(x), dim=-1).numpy()
    np.testing.assert_allclose(encoder.encode(lat=lat, lon=lon), expected, atol=1e-6)
    np.testing.assert_allclose(encoder.covariates_at(lat, lon), x.numpy())


def test_bands_are_selected_by_name_and_counts_checked(tmp_path):
    tif = _stack_file(tmp_path, ["bio12", "junk", "elevation"])
    folder = save_environment_encoder(
        _sinr(2), tmp_path / "env", covariate_bands=["elevation", "bio12"]
    )
    encoder = load_encoder("env", str(folder), covariates=tif)
    assert encoder.covariates.band_names == ["elevation", "bio12"]
    unnamed = save_environment_encoder(_sinr(5), tmp_path / "env5")
    with pytest.raises(ValueError, match="takes 5 covariates but the raster .* has 3 bands"):
        load_encoder("env", str(unnamed), covariates=tif)
    with pytest.raises(ValueError, match="pass covariates=PATH"):
        load_encoder("env", str(unnamed))


def test_published_layout_with_species_head_loads_strictly(tmp_path):
    from safetensors.torch import save_file

    torch.manual_seed(0)
    model = SINRResidualMLP(num_inputs=20, num_filts=8, depth=4, num_classes=7).eval()
    folder = tmp_path / "ecoclim"
    folder.mkdir()
    save_file(
        {k: v.contiguous() for k, v in model.state_dict().items()},
        str(folder / "model.safetensors"),
    )
    (folder / "config.json").write_text(
        '{"num_inputs": 20, "num_classes": 7, "num_filts": 8, "depth": 4}'
    )
    grid = np.random.default_rng(0).normal(size=(9, 18, 20)).astype(np.float16)
    np.save(tmp_path / "bioclim_elevation_scaled.npy", grid)
    encoder = load_encoder("env", str(folder), covariates=tmp_path / "bioclim_elevation_scaled.npy")
    assert encoder.covariates.band_names == list(TAXABIND_BANDS)
    out = encoder.encode(lat=[0.0], lon=[0.0])
    with torch.inference_mode():
        x = torch.tensor(grid[4, 9].astype(np.float32))[None]  # the cell at (0, 0), already scaled
        expected = torch.nn.functional.normalize(model.feats(x), dim=-1).numpy()
    np.testing.assert_allclose(out, expected, atol=1e-3)
    (folder / "config.json").write_text('{"num_inputs": 20, "num_filts": 8, "depth": 4}')
    with pytest.raises(CheckpointError, match="unexpected tensors \\['class_emb.weight'\\]"):
        load_encoder("env", str(folder), covariates=tmp_path / "bioclim_elevation_scaled.npy")


def test_env_encoder_on_the_default_stack(tmp_path, default_covariates):
    folder = save_environment_encoder(
        _sinr(len(DEFAULT_BANDS)), tmp_path / "env", covariate_bands=DEFAULT_BANDS
    )
    encoder = load_encoder("env", str(folder), method="bilinear")  # default stack implied
    assert encoder.covariates.method == "bilinear"
    out = encoder.encode(lat=[27.99, 23.0, 91.0], lon=[86.93, 10.0, 0.0], on_error="null")
    assert np.isfinite(out[:2]).all() and np.isnan(out[2]).all()
    assert float(out[0] @ out[1]) < 0.9999  # different places, different climate
