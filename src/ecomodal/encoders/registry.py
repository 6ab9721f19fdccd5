"""``load_encoder(modality, spec)``: every way an encoder can be named, in one place.

A spec is a registered name (``"taxabind"``, ``"geoclip"``, ...; see :func:`list_encoders`), a folder,
``local-dir:PATH`` or ``hf-hub:ORG/NAME``. Registered names map to hub ids or to weights bundled in
installed packages, as listed in ``configs/*.json``.
"""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

from ecomodal.encoders.base import Encoder
from ecomodal.errors import UnknownModalityError
from ecomodal.hub import parse_model_spec, resolve_model_dir
from ecomodal.io.checkpoints import CONFIG_NAME, TORCH_WEIGHTS_NAMES, WEIGHTS_NAME
from ecomodal.modalities import check_modality


@cache
def taxabind_config() -> dict[str, Any]:
    """The TaxaBind configuration (``MVRL/taxabind-config``): hub ids and preprocessing."""
    text = resources.files("ecomodal.encoders").joinpath("configs/taxabind.json").read_text()
    return json.loads(text)


def taxabind_preprocess(kind: str = "image"):
    """The photo (``"image"``) or tile (``"sat"``) preprocessing TaxaBind trained with: resize,
    centre-crop and normalisation from :func:`taxabind_config`."""
    from ecomodal.io.media import ImagePreprocess

    config = taxabind_config()
    size = int(config[f"{kind}_resize"])
    return ImagePreprocess(
        resize=(size, size),
        crop=int(config[f"{kind}_crop"]),
        mean=tuple(config["normalize_mean"]),
        std=tuple(config["normalize_std"]),
    )


@cache
def registered_encoders() -> dict[str, dict[str, dict[str, Any]]]:
    """``{modality: {name: entry}}`` from ``configs/registry.json``."""
    text = resources.files("ecomodal.encoders").joinpath("configs/registry.json").read_text()
    return json.loads(text)


def list_encoders(modality: str | None = None) -> list[dict[str, Any]]:
    """Registered encoders: modality, name, spec, licence, dimension and a description."""
    rows = []
    for mod, entries in registered_encoders().items():
        if modality is not None and mod != modality:
            continue
        for name, entry in entries.items():
            rows.append({"modality": mod, "name": name, **entry})
    return rows


def default_encoder_name(modality: str) -> str:
    entries = registered_encoders().get(modality, {})
    for name, entry in entries.items():
        if entry.get("default"):
            return name
    raise ValueError(f"No default encoder is registered for modality {modality!r}.")


def load_encoder(
    modality: str,
    spec: str | Path | None = None,
    *,
    device: str | None = None,
    precision: str = "fp32",
    cache_dir: str | Path | None = None,
    **options: Any,
) -> Encoder:
    """Load the encoder of ``modality`` named by ``spec`` (default: the registry's default).

    Examples: ``load_encoder("loc", "geoclip")`` (weights bundled in the geoclip package),
    ``load_encoder("loc", "hf-hub:MVRL/ecogeo")``, ``load_encoder("env", "local-dir:runs/env",
    covariates="default")``. Options (e.g. ``covariates=``, ``method=`` for env) go to the
    modality's loader.
    """
    check_modality(modality)
    name = str(spec) if spec is not None else default_encoder_name(modality)
    entry = registered_encoders().get(modality, {}).get(name)
    encoder_id = name
    if entry is not None:
        target = entry["spec"]
        options = {**entry.get("options", {}), **options}
    else:
        target = name
    if modality == "loc":
        from ecomodal.encoders.location import load_location_encoder

        if target == "package:geoclip":
            return load_location_encoder(None, device=device, precision=precision, **options)
        folder = _checkpoint_folder(target, cache_dir)
        return load_location_encoder(
            folder, encoder_id=encoder_id, device=device, precision=precision, **options
        )
    if modality == "env":
        from ecomodal.encoders.environment import load_environment_encoder

        folder = _checkpoint_folder(target, cache_dir)
        return load_environment_encoder(
            folder, encoder_id=encoder_id, device=device, precision=precision, **options
        )
    if target in ("package:efficientnet-lite0", "package:minilm", "package:bluemarble"):
        from ecomodal.encoders.offline import load_offline_encoder

        return load_offline_encoder(
            modality, encoder_id=encoder_id, device=device, precision=precision, **options
        )
    if modality in ("image", "text"):
        from ecomodal.encoders.clip import OPEN_CLIP_CONFIG, OPEN_CLIP_WEIGHTS, load_clip_encoder

        folder = resolve_model_dir(
            target, [OPEN_CLIP_CONFIG], cache_dir=cache_dir, optional=list(OPEN_CLIP_WEIGHTS)
        )
        if modality == "text":
            options.pop("preprocess", None)
        return load_clip_encoder(
            modality,
            folder,
            encoder_id=encoder_id,
            licence=(entry or {}).get("licence", "unknown"),
            device=device,
            precision=precision,
            **options,
        )
    if modality in ("sat", "audio"):
        from ecomodal.encoders.audio import load_audio_encoder
        from ecomodal.encoders.satellite import load_satellite_encoder

        folder = resolve_model_dir(
            target,
            ["config.json"],
            cache_dir=cache_dir,
            optional=["model.safetensors", "pytorch_model.bin", "preprocessor_config.json"],
        )
        loader = load_satellite_encoder if modality == "sat" else load_audio_encoder
        return loader(
            folder,
            encoder_id=encoder_id,
            licence=(entry or {}).get("licence", "unknown"),
            device=device,
            precision=precision,
            **options,
        )
    raise UnknownModalityError(
        f"No encoder is registered for modality {modality!r}; pass an Encoder instance instead."
    )


def _checkpoint_folder(spec: str, cache_dir: str | Path | None) -> Path:
    parsed = parse_model_spec(spec)
    if parsed.kind == "hf-hub":
        return resolve_model_dir(
            spec,
            [],
            cache_dir=cache_dir,
            optional=[CONFIG_NAME, WEIGHTS_NAME, *TORCH_WEIGHTS_NAMES],
        )
    return resolve_model_dir(spec, [], cache_dir=cache_dir)
