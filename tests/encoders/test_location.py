import time

import numpy as np
import pyarrow as pa
import pytest
import torch
from safetensors.torch import save_file

from ecomodal.encoders import InvalidInputError, load_encoder
from ecomodal.errors import CheckpointError, EcomodalError, ModelNotFoundError
from ecomodal.models.geoclip import GeoCLIPLocationEncoder, equal_earth_projection


@pytest.fixture(scope="module")
def geoclip_encoder():
    return load_encoder("loc", "geoclip")


@pytest.fixture(scope="module")
def points():
    rng = np.random.default_rng(0)
    lat = np.concatenate([rng.uniform(-90, 90, 3000), [90.0, -90.0, 0.0, 45.0, -33.9]])
    lon = np.concatenate([rng.uniform(-180, 180, 3000), [0.0, 179.99, -180.0, 7.5, 151.2]])
    return lat, lon


def test_geoclip_matches_the_packages_own_location_encoder(geoclip_encoder, points):
    geoclip = pytest.importorskip("geoclip")
    lat, lon = points
    reference = geoclip.LocationEncoder().eval()
    with torch.inference_mode():
        expected = reference(torch.tensor(np.stack([lat, lon], 1), dtype=torch.float32))
    expected = torch.nn.functional.normalize(expected, dim=-1).numpy()
    ours = geoclip_encoder.encode(lat=lat, lon=lon)
    assert ours.shape == (len(lat), 512) and ours.dtype == np.float32
    cosine = (ours * expected).sum(1)
    assert cosine.min() > 0.9999
    assert np.allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)


def test_geoclip_bf16_stays_close_to_float32(geoclip_encoder, points):
    lat, lon = points
    full = geoclip_encoder.encode(lat=lat, lon=lon)
    half = geoclip_encoder.encode(lat=lat, lon=lon, precision="bf16")
    assert (full * half).sum(1).min() >= 0.999
    assert not np.array_equal(full, half)  # bf16 really ran


def test_bf16_reads_the_smooth_branch_off_a_table(geoclip_encoder, points):
    from ecomodal.models.geoclip import TabulatedBranch, equal_earth_projection

    assert geoclip_encoder.model.sigmas[0] == pytest.approx(1.0, rel=0.1)
    half = geoclip_encoder.model_for("bf16")
    assert isinstance(half.LocEnc0, TabulatedBranch)
    assert not isinstance(half.LocEnc1, TabulatedBranch)  # sigma 16 and 256 are computed
    assert geoclip_encoder.model_for("bf16") is half  # built once
    lat, lon = points
    projected = equal_earth_projection(torch.tensor(lat).float(), torch.tensor(lon).float())
    with torch.inference_mode():
        exact = geoclip_encoder.model.LocEnc0(projected)
        table = half.LocEnc0(projected)
    error = (table - exact).norm(dim=1) / exact.norm(dim=1)
    assert error.max() < 0.03 and error.mean() < 0.006


def test_encoder_reports_id_dim_and_licence(geoclip_encoder):
    assert geoclip_encoder.id == "geoclip"
    assert geoclip_encoder.modality == "loc"
    assert geoclip_encoder.dim == 512
    assert geoclip_encoder.licence == "MIT"
    assert "geoclip" in repr(geoclip_encoder)


def test_inputs_by_keyword_table_and_batch_size_agree(geoclip_encoder):
    lat, lon = [10.0, -45.5, 60.1], [20.0, 170.0, -3.3]
    by_keyword = geoclip_encoder.encode(lat=lat, lon=lon)
    by_dict = geoclip_encoder.encode({"lat": lat, "lon": lon, "other": [1, 2, 3]})
    by_arrow = geoclip_encoder.encode(pa.table({"lat": lat, "lon": lon}), batch_size=1)
    np.testing.assert_allclose(by_keyword, by_dict, atol=1e-6)
    np.testing.assert_allclose(by_keyword, by_arrow, atol=1e-5)


def test_longitude_is_wrapped(geoclip_encoder):
    a = geoclip_encoder.encode(lat=[12.0, 12.0], lon=[190.0, -540.0])
    b = geoclip_encoder.encode(lat=[12.0, 12.0], lon=[-170.0, 180.0])
    np.testing.assert_allclose(a, b, atol=1e-5)


def test_invalid_latitude_is_an_error_naming_the_row(geoclip_encoder):
    with pytest.raises(InvalidInputError, match=r"row 1, column 'lat'.*91"):
        geoclip_encoder.encode(lat=[0.0, 91.0, 5.0], lon=[0.0, 0.0, 0.0])
    with pytest.raises(InvalidInputError, match=r"row 0, column 'lon'"):
        geoclip_encoder.encode(lat=[0.0], lon=[float("nan")])
    with pytest.raises(TypeError, match="lon=") as info:
        geoclip_encoder.encode(lat=[0.0])
    assert isinstance(info.value, EcomodalError)
    with pytest.raises(TypeError, match="unexpected input 'latitude'"):
        geoclip_encoder.encode(latitude=[0.0], lon=[0.0])


def test_bad_rows_become_nan_with_reasons(geoclip_encoder):
    result = geoclip_encoder.encode_rows(
        lat=[0.0, float("inf"), 5.0, "north"], lon=[0.0, 1.0, 2.0, 3.0], batch_size=2
    )
    assert result.valid.tolist() == [True, False, True, False]
    assert np.isnan(result.embeddings[1]).all() and np.isfinite(result.embeddings[2]).all()
    assert [(e.row, e.column) for e in result.errors] == [(1, "lat"), (3, "lat")]
    nulls = geoclip_encoder.encode(lat=[0.0, 95.0], lon=[0.0, 0.0], on_error="null")
    assert np.isnan(nulls[1]).all()


def _small_geoclip(seed: int = 0) -> GeoCLIPLocationEncoder:
    torch.manual_seed(seed)
    return GeoCLIPLocationEncoder(sigmas=[1.0, 8.0], n_features=8, hidden=16, out_dim=12).eval()


def test_small_checkpoint_in_the_published_layouts_loads(tmp_path):
    model = _small_geoclip()
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    # Hub layout (PyTorchModelHubMixin): model.safetensors, no config needed.
    hub = tmp_path / "ecogeo"
    hub.mkdir()
    save_file(state, str(hub / "model.safetensors"))
    # The geoclip wheel's layout: a plain torch state dict, here with a module prefix.
    wheel = tmp_path / "wheel"
    wheel.mkdir()
    torch.save({f"location_encoder.{k}": v for k, v in state.items()}, wheel / "model.pth")
    lat, lon = np.array([10.0, -70.0]), np.array([100.0, -20.0])
    with torch.inference_mode():
        expected = torch.nn.functional.normalize(
            model(torch.tensor(lat), torch.tensor(lon)), dim=-1
        ).numpy()
    for spec in (f"local-dir:{hub}", str(wheel)):
        encoder = load_encoder("loc", spec)
        assert encoder.dim == 12
        np.testing.assert_allclose(encoder.encode(lat=lat, lon=lon), expected, atol=1e-6)


def test_corrupt_or_foreign_checkpoints_are_clear_errors(tmp_path):
    (tmp_path / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(CheckpointError, match="model.safetensors"):
        load_encoder("loc", f"local-dir:{tmp_path}")
    other = tmp_path / "other"
    other.mkdir()
    save_file({"weight": torch.zeros(2)}, str(other / "model.safetensors"))
    with pytest.raises(CheckpointError, match="not a GeoCLIP location encoder"):
        load_encoder("loc", str(other))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(CheckpointError, match="no weights file"):
        load_encoder("loc", str(empty))


def test_hub_id_fails_fast_offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.monotonic()
    with pytest.raises(ModelNotFoundError, match="HF_HUB_OFFLINE"):
        load_encoder("loc", "hf-hub:MVRL/ecogeo")
    with pytest.raises(ModelNotFoundError, match="HF_HUB_OFFLINE"):
        load_encoder("loc")  # the default is TaxaBind's published encoder
    assert time.monotonic() - start < 10


def test_equal_earth_projection_spans_the_unit_box():
    lat = torch.tensor([0.0, 90.0, -90.0, 0.0])
    lon = torch.tensor([180.0, 0.0, 0.0, -180.0])
    xy = equal_earth_projection(lat, lon)
    np.testing.assert_allclose(xy[0, 0].item(), 1.0, atol=1e-4)  # SF is chosen so |x| <= 1
    np.testing.assert_allclose(xy[1, 1].item(), -xy[2, 1].item(), atol=1e-6)
    assert 0.48 < xy[1, 1].item() < 0.49


def test_coordinate_reasons_read_as_numbers():
    from ecomodal.encoders.location import check_coordinates

    good, _, errors = check_coordinates(
        np.array([95.0, np.nan, 10.0, 1.0]), np.array([0.0, 0.0, np.inf, 2.0])
    )
    assert good.tolist() == [3]
    assert errors == [
        (0, "lat", "latitude 95 is not within [-90, 90]"),
        (1, "lat", "latitude is missing or not a number"),
        (2, "lon", "longitude inf is not a finite number"),
    ]


def test_encoders_list_refuses_an_unknown_modality(run_cli):
    run_cli("encoders", "list", "--modality", "bogus").assert_clear_failure(
        "Unknown modality 'bogus'"
    )
