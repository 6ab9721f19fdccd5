"""``env``: SINR's residual MLP over covariates sampled from a raster stack at each point."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ecomodal.encoders.base import Encoder, EncoderInfo, Prepared
from ecomodal.encoders.location import check_coordinates, numeric_degrees
from ecomodal.errors import CheckpointError, InvalidArgumentError
from ecomodal.geo.covariates import DEFAULT_BANDS, CovariateStack
from ecomodal.io.checkpoints import (
    CONFIG_NAME,
    find_weights,
    load_state_dict_strict,
    read_config,
    read_weights,
    save_checkpoint,
    strip_prefix,
)
from ecomodal.models.sinr import SINRResidualMLP

#: The 20 inputs of the published TaxaBind env encoder (``MVRL/ecoclim``), in order.
TAXABIND_BANDS = ("elevation", *(f"bio{i}" for i in range(1, 20)))
SINR_ARGS = ("num_inputs", "num_filts", "depth", "num_classes", "dropout")


class EnvironmentEncoder(Encoder):
    """Covariates at ``lat=``/``lon=`` -> SINR residual MLP -> [N, num_filts]."""

    input_columns = ("lat", "lon")
    default_batch_size = 4096

    def __init__(self, model: SINRResidualMLP, info: EncoderInfo, covariates: CovariateStack, **kw):
        if covariates.num_bands != model.num_inputs:
            raise InvalidArgumentError(
                f"The env encoder takes {model.num_inputs} covariates but the raster "
                f"{covariates.raster.source or '(in memory)'} has {covariates.num_bands} bands "
                f"({', '.join(covariates.band_names)})."
            )
        super().__init__(model, info, **kw)
        self.covariates = covariates

    def covariates_at(self, lat: Any, lon: Any) -> np.ndarray:
        """The z-scored model inputs [N, C] at the points (missing values 0)."""
        return self.covariates.sample(np.asarray(lat, float), np.asarray(lon, float))

    def prepare(self, columns: Mapping[str, np.ndarray]) -> Prepared:
        good, lon, errors = check_coordinates(columns["lat"], columns["lon"])
        lat = numeric_degrees(columns["lat"], "lat")[good]
        x = self.covariates.sample(lat, lon[good])
        return Prepared(torch.as_tensor(x, device=self.device), good, errors)

    def forward(self, model: torch.nn.Module, inputs: Any) -> torch.Tensor:
        return model(inputs)


def sinr_config(config: Mapping[str, Any]) -> dict[str, Any]:
    return {key: config[key] for key in SINR_ARGS if key in config}


def load_environment_encoder(
    folder: str | Path,
    *,
    covariates: str | Path | CovariateStack | None = None,
    method: str | None = None,
    encoder_id: str | None = None,
    device: str | None = None,
    precision: str = "fp32",
) -> EnvironmentEncoder:
    """An env encoder from a checkpoint folder (``config.json`` with SINR's constructor arguments
    plus optional ``covariate_bands``, and weights).

    ``covariates`` is a raster path, an open :class:`CovariateStack` or ``"default"`` (the offline
    stack). When omitted, the checkpoint's ``covariates`` entry is used; a checkpoint that takes
    the default bands uses the offline stack.
    """
    folder = Path(folder)
    config = read_config(folder / CONFIG_NAME) if (folder / CONFIG_NAME).is_file() else {}
    try:
        model = SINRResidualMLP(**sinr_config(config))
    except TypeError as err:
        raise CheckpointError(f"{folder / CONFIG_NAME}: {err}") from err
    weights = find_weights(folder)
    tensors = strip_prefix(read_weights(weights), set(model.state_dict()))
    load_state_dict_strict(
        model,
        tensors,
        source=str(weights),
        config_summary=f"a SINR MLP with {model.num_inputs} inputs and width {model.num_filts}",
    )
    bands = config.get("covariate_bands")
    if bands is None and model.num_inputs == len(TAXABIND_BANDS):
        bands = list(TAXABIND_BANDS)
    if covariates is None:
        covariates = config.get("covariates")
        if covariates is None:
            if bands is not None and tuple(bands) == DEFAULT_BANDS:
                covariates = "default"
            else:
                raise InvalidArgumentError(
                    f"The env encoder in {folder} takes {model.num_inputs} covariates "
                    f"({', '.join(bands or ['unnamed'])}); pass covariates=PATH to a raster with "
                    "those bands (e.g. TaxaBench-8k's bioclim_elevation_scaled.npy or a WorldClim "
                    "GeoTIFF stack)."
                )
    stack = (
        covariates if isinstance(covariates, CovariateStack) else CovariateStack.open(covariates)
    )
    if method is not None:
        stack.method = method
    if bands is not None and set(bands) <= set(stack.band_names):
        stack = stack.select(bands)
    info = EncoderInfo(
        id=encoder_id or str(folder),
        modality="env",
        dim=model.num_filts,
        licence=str(config.get("license", config.get("licence", "unknown"))),
        source=str(folder),
        description=(
            f"SINR residual MLP over {stack.num_bands} covariates ({stack.method} cell of "
            f"{stack.raster.source or 'an in-memory raster'})"
        ),
    )
    return EnvironmentEncoder(model, info, stack, device=device, precision=precision)


def save_environment_encoder(
    model: SINRResidualMLP,
    folder: str | Path,
    *,
    covariate_bands: Sequence[str] | None = None,
    licence: str = "MIT",
    extra: Mapping[str, Any] | None = None,
) -> Path:
    """Write an env encoder checkpoint (``config.json`` + ``model.safetensors``)."""
    config: dict[str, Any] = {
        "num_inputs": model.num_inputs,
        "num_filts": model.num_filts,
        "depth": len(model.feats) - 2,
        "num_classes": model.class_emb.out_features if model.class_emb is not None else 0,
        "license": licence,
    }
    if covariate_bands is not None:
        config["covariate_bands"] = list(covariate_bands)
    config.update(extra or {})
    return save_checkpoint(model, config, folder)
