"""``loc``: the GeoCLIP location encoder, from ``lat=``/``lon=`` in degrees."""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ecomodal.encoders.base import Encoder, EncoderInfo, Prepared
from ecomodal.errors import CheckpointError, InvalidInputError
from ecomodal.io.checkpoints import (
    CONFIG_NAME,
    find_weights,
    load_state_dict_strict,
    read_config,
    read_weights,
    strip_prefix,
)
from ecomodal.models.geoclip import GeoCLIPLocationEncoder, TabulatedBranch


def check_coordinates(lat: np.ndarray, lon: np.ndarray) -> tuple[np.ndarray, np.ndarray, list]:
    """Validate degrees: returns (good row offsets, wrapped longitudes, [(offset, column, reason)]).

    Latitude must be finite and within [-90, 90]; longitude must be finite and is wrapped into
    [-180, 180).
    """
    lat = numeric_degrees(lat, "lat")
    lon = numeric_degrees(lon, "lon")
    errors: list[tuple[int, str, str]] = []
    bad_lat = ~np.isfinite(lat) | (np.abs(lat) > 90.0)
    bad_lon = ~np.isfinite(lon)
    for offset in np.flatnonzero(bad_lat):
        value = float(lat[offset])
        reason = (
            "latitude is missing or not a number"
            if np.isnan(value)
            else f"latitude {value:g} is not within [-90, 90]"
        )
        errors.append((int(offset), "lat", reason))
    for offset in np.flatnonzero(bad_lon & ~bad_lat):
        errors.append(
            (int(offset), "lon", f"longitude {float(lon[offset]):g} is not a finite number")
        )
    good = np.flatnonzero(~(bad_lat | bad_lon))
    with np.errstate(invalid="ignore"):  # non-finite longitudes are reported above
        wrapped = np.where(np.isfinite(lon), np.mod(lon + 180.0, 360.0) - 180.0, lon)
    return good, wrapped, sorted(errors)


def numeric_degrees(values: np.ndarray, column: str) -> np.ndarray:
    """Degrees as float64 [N]; entries that are not numbers become NaN (row errors), but nested
    values (a 2-D array, a list per row) are an :class:`InvalidInputError` naming the shape."""
    try:
        out = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        out = np.full(len(values), np.nan)
        for i, value in enumerate(values):
            if np.ndim(value) > 0 and not isinstance(value, str | bytes):
                raise InvalidInputError(
                    f"{column}= must be one number per row (shape (N,)); row {i} holds a "
                    f"{type(value).__name__} of shape {np.shape(value)}."
                ) from None
            with contextlib.suppress(TypeError, ValueError):
                out[i] = float(value)
        return out
    if out.ndim != 1:
        raise InvalidInputError(
            f"{column}= must be one number per row (shape (N,)); got shape {out.shape}."
        )
    return out


class LocationEncoder(Encoder):
    """GeoCLIP location encoder: ``encode(lat=[...], lon=[...])`` -> [N, 512].

    With ``precision="bf16"`` the two fine branches run in bfloat16 and the smooth sigma = 1
    branch is read off a float32 table of its own outputs (128 x 64 grid over the projected
    plane, built once from the weights); the vectors stay within cosine 0.9999 of float32.
    """

    input_columns = ("lat", "lon")
    default_batch_size = 4096

    def model_for(self, precision: str) -> torch.nn.Module:
        half = super().model_for(precision)
        smooth = bool(self.model.sigmas) and self.model.sigmas[0] <= 1.5  # fine to tabulate
        if precision == "bf16" and smooth and not isinstance(half.LocEnc0, TabulatedBranch):
            half.LocEnc0 = TabulatedBranch(self.model.LocEnc0)
        return half

    def prepare(self, columns: Mapping[str, np.ndarray]) -> Prepared:
        good, lon, errors = check_coordinates(columns["lat"], columns["lon"])
        lat = numeric_degrees(columns["lat"], "lat")
        inputs = (
            torch.as_tensor(lat[good], dtype=torch.float32, device=self.device),
            torch.as_tensor(lon[good], dtype=torch.float32, device=self.device),
        )
        return Prepared(inputs, good, errors)

    def forward(self, model: torch.nn.Module, inputs: Any) -> torch.Tensor:
        lat, lon = inputs
        return model(lat, lon)


def geoclip_package_weights() -> Path:
    """The pretrained location-encoder state dict bundled in the ``geoclip`` wheel."""
    from ecomodal.io.packaged import package_file

    hint = "`pip install --no-deps geoclip==1.3.0` to use the bundled GeoCLIP weights."
    try:
        return package_file(
            "geoclip", "model", "weights", "location_encoder_weights.pth", install_hint=hint
        )
    except (ImportError, FileNotFoundError) as err:
        raise CheckpointError(str(err)) from None


def load_geoclip_module(weights: str | Path) -> GeoCLIPLocationEncoder:
    """A :class:`GeoCLIPLocationEncoder` with the tensors of ``weights``; its sizes (branches,
    Fourier features, widths) are read off the tensors, so smaller test checkpoints load too."""
    tensors = read_weights(weights)
    if not any(key.startswith("LocEnc") for key in tensors):
        tensors = strip_prefix(tensors, {"LocEnc0.capsule.0.b"})
    branches = sorted({int(k.split(".")[0][6:]) for k in tensors if k.startswith("LocEnc")})
    try:
        b = tensors["LocEnc0.capsule.0.b"]
        hidden = tensors["LocEnc0.capsule.1.weight"].shape[0]
        out_dim = tensors["LocEnc0.head.0.weight"].shape[0]
    except KeyError as err:
        raise CheckpointError(
            f"{weights} is not a GeoCLIP location encoder: it has no tensor {err} "
            "(expected names like LocEnc0.capsule.0.b, LocEnc0.capsule.1.weight, LocEnc0.head.0.weight)."
        ) from None
    model = GeoCLIPLocationEncoder(
        # B is drawn from N(0, sigma^2): its spread gives back each branch's sigma.
        sigmas=[float(tensors[f"LocEnc{i}.capsule.0.b"].float().std()) for i in branches],
        n_features=b.shape[0],
        hidden=hidden,
        out_dim=out_dim,
    )
    load_state_dict_strict(model, tensors, source=str(weights), config_summary="GeoCLIP's layout")
    return model


def load_location_encoder(
    folder: str | Path | None = None,
    *,
    encoder_id: str = "geoclip",
    device: str | None = None,
    precision: str = "fp32",
) -> LocationEncoder:
    """A location encoder from a checkpoint folder (``config.json`` optional + weights), or from
    the ``geoclip`` package's bundled weights when ``folder`` is None."""
    if folder is None:
        module = load_geoclip_module(geoclip_package_weights())
        source, licence = "geoclip package (bundled weights)", "MIT"
    else:
        folder = Path(folder)
        config = read_config(folder / CONFIG_NAME) if (folder / CONFIG_NAME).is_file() else {}
        module = load_geoclip_module(find_weights(folder))
        source, licence = str(folder), str(config.get("license", config.get("licence", "MIT")))
    info = EncoderInfo(
        id=encoder_id,
        modality="loc",
        dim=module.out_dim,
        licence=licence,
        source=source,
        description="GeoCLIP location encoder (Equal Earth + random Fourier features + MLPs)",
    )
    return LocationEncoder(module, info, device=device, precision=precision)
