import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from ecomodal.cli import app
from ecomodal.encoders import list_encoders, load_encoder, register_encoders, unregister_encoder
from ecomodal.encoders.base import Encoder, EncoderInfo, Prepared
from ecomodal.errors import InvalidArgumentError, ModelNotFoundError, UnknownModalityError

runner = CliRunner()


class ToyEncoder(Encoder):
    """Places -> [lat, lon] times a fixed matrix: a whole encoder defined in a test module."""

    input_columns = ("lat", "lon")

    @classmethod
    def from_config(cls, *, encoder_id, dim, scale=1.0, device=None, precision="fp32"):
        model = torch.nn.Linear(2, dim, bias=False)
        model.weight.data = scale * torch.arange(2 * dim, dtype=torch.float32).reshape(dim, 2)
        info = EncoderInfo(id=encoder_id, modality="loc", dim=dim, licence="CC0")
        return cls(model, info, device=device, precision=precision)

    def prepare(self, columns):
        xy = np.stack([columns["lat"], columns["lon"]], axis=1).astype(np.float32)
        return Prepared(torch.from_numpy(xy), np.arange(len(xy)), [])

    def forward(self, model, inputs):
        return model(inputs.to(self.device))


def test_a_toy_encoder_is_registered_by_a_json_entry_alone(tmp_path):
    entry = {
        "loc": {
            "toy": {
                "spec": "package:none",
                "loader": f"{__name__}:ToyEncoder.from_config",
                "options": {"dim": 4, "scale": 0.5},
                "licence": "CC0",
                "dim": 4,
                "description": "Toy encoder of the registry test",
            }
        }
    }
    path = tmp_path / "toy.json"
    path.write_text(json.dumps(entry))
    assert register_encoders(path) == [("loc", "toy")]
    try:
        encoder = load_encoder("loc", "toy", scale=2.0)  # the caller's options win
        assert (encoder.id, encoder.dim, encoder.licence) == ("toy", 4, "CC0")
        got = encoder.encode(lat=[1.0, 0.0], lon=[0.0, 1.0], normalize=False)
        np.testing.assert_allclose(got, [[0, 4, 8, 12], [2, 6, 10, 14]])
        result = runner.invoke(app, ["encoders", "list", "--modality", "loc"])
        assert result.exit_code == 0, result.output
        assert "toy" in result.output and "Toy encoder of the registry test" in result.output
    finally:
        unregister_encoder("loc", "toy")
    assert "toy" not in [row["name"] for row in list_encoders("loc")]
    assert "toy" not in runner.invoke(app, ["encoders", "list"]).output


def test_registry_files_named_by_the_environment(tmp_path, monkeypatch):
    # An existing loader under another name: the packaged GeoCLIP weights.
    entry = {"loc": {"geoclip-again": {"loader": "ecomodal.encoders.location:load_location_encoder",
                                       "spec": "package:geoclip", "licence": "MIT", "dim": 512,
                                       "description": "GeoCLIP, registered from a file"}}}  # fmt: skip
    path = tmp_path / "extra.json"
    path.write_text(json.dumps(entry))
    monkeypatch.setenv("ECOMODAL_ENCODERS", str(path))
    again = load_encoder("loc", "geoclip-again")
    assert again.id == "geoclip-again"
    points = {"lat": [10.0, -33.9], "lon": [20.0, 151.2]}
    np.testing.assert_array_equal(
        again.encode(**points), load_encoder("loc", "geoclip").encode(**points)
    )
    result = runner.invoke(app, ["encoders", "list"])
    assert result.exit_code == 0 and "geoclip-again" in result.output
    monkeypatch.delenv("ECOMODAL_ENCODERS")
    assert "geoclip-again" not in [row["name"] for row in list_encoders()]


def test_bad_entries_are_clear_errors(tmp_path):
    with pytest.raises(UnknownModalityError):
        register_encoders({"satellite": {"x": {"loader": "a.b:c"}}})
    with pytest.raises(InvalidArgumentError, match="expected 'package.module:function'"):
        register_encoders({"loc": {"x": {"loader": "no_colon"}}})
    with pytest.raises(InvalidArgumentError, match="needs a 'loader' or a 'spec'"):
        register_encoders({"loc": {"x": {"dim": 3}}})
    register_encoders({"loc": {"missing": {"loader": f"{__name__}:NoSuchLoader"}}})
    try:
        with pytest.raises(InvalidArgumentError, match="has no 'NoSuchLoader'"):
            load_encoder("loc", "missing")
    finally:
        unregister_encoder("loc", "missing")


def test_offline_failure_names_the_offline_alternative(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelNotFoundError, match=r"HF_HUB_OFFLINE.*`--encoder loc=geoclip`"):
        load_encoder("loc", cache_dir=tmp_path)
    with pytest.raises(ModelNotFoundError, match="works offline") as info:
        load_encoder("loc", "hf-hub:MVRL/ecogeo", cache_dir=tmp_path)
    assert "weights bundled in the geoclip package" in str(info.value)
    with pytest.raises(ModelNotFoundError) as info:  # env has no offline alternative
        load_encoder("env", cache_dir=tmp_path)
    assert "works offline" not in str(info.value)

    records = tmp_path / "obs.csv"
    records.write_text("id,lat,lon\na,10,20\n")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    args = [sys.executable, "-m", "ecomodal", "embed", "--records", str(records),
            "--modalities", "loc", "--out", str(tmp_path / "emb.parquet"), "--no-progress"]  # fmt: skip
    done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2, done.stderr[-2000:]
    assert "hf-hub:MVRL/ecogeo" in done.stderr and "`--encoder loc=geoclip`" in done.stderr
    assert "Traceback" not in done.stderr
