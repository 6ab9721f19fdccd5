"""``load_encoder(modality, spec)``: every way an encoder can be named, in one place.

A spec is a registered name (``"taxabind"``, ``"geoclip"``, ...; see :func:`list_encoders`), a folder,
``local-dir:PATH`` or ``hf-hub:ORG/NAME``. The registry is data: each entry of
``configs/registry.json`` (``{modality: {name: entry}}``) names its ``loader``
(``"package.module:function"`` or ``"package.module:Class.method"``, imported when first used), the
``checkpoint`` layout its ``spec`` is fetched in (``configs/checkpoints.json``; none for weights
bundled in a package), its ``options`` (keyword arguments of the loader), and an ``offline``
alternative where one exists. Folders and hub ids that are not registered names use the modality's
loader from ``configs/checkpoints.json``.

A new encoder is a JSON entry: :func:`register_encoders` adds a file or mapping of entries, and
the environment variable ``ECOMODAL_ENCODERS`` names further JSON files (separated by ``os.pathsep``).
"""

from __future__ import annotations

import importlib
import inspect
import json
import os
from collections.abc import Callable, Mapping
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

from ecomodal.encoders.base import Encoder
from ecomodal.encoders.taxabind import taxabind_config, taxabind_preprocess  # noqa: F401
from ecomodal.errors import (
    InvalidArgumentError,
    ModelNotFoundError,
    UnknownEncoderError,
    UnknownModalityError,
)
from ecomodal.hub import parse_model_spec, resolve_model_dir
from ecomodal.modalities import check_modality

#: Environment variable naming extra registry files (JSON, ``{modality: {name: entry}}``).
REGISTRY_ENV = "ECOMODAL_ENCODERS"
_REGISTERED: dict[str, dict[str, dict[str, Any]]] = {}


@cache
def _config(name: str) -> dict[str, Any]:
    text = resources.files("ecomodal.encoders").joinpath(f"configs/{name}").read_text()
    return json.loads(text)


def registered_encoders() -> dict[str, dict[str, dict[str, Any]]]:
    """``{modality: {name: entry}}``: ``configs/registry.json``, then the files named by
    ``ECOMODAL_ENCODERS``, then what :func:`register_encoders` added."""
    merged = {modality: dict(entries) for modality, entries in _config("registry.json").items()}
    extra_files = [p for p in os.environ.get(REGISTRY_ENV, "").split(os.pathsep) if p.strip()]
    for source in [*(_read_entries(path) for path in extra_files), _REGISTERED]:
        for modality, entries in source.items():
            merged.setdefault(modality, {}).update(entries)
    return merged


def register_encoders(
    entries: str | os.PathLike[str] | Mapping[str, Mapping[str, Mapping[str, Any]]],
) -> list[tuple[str, str]]:
    """Add registry entries from a JSON file or a mapping ``{modality: {name: entry}}``.

    An entry has the keys of ``configs/registry.json``: ``loader`` (``"module:function"``; default:
    the modality's folder loader), ``spec`` (a folder or hub id, fetched in the ``checkpoint``
    layout when one is named), ``options`` (keyword arguments of the loader), and ``dim``,
    ``licence``, ``description``, ``default`` for ``ecomodal encoders list``. The loader is called
    with the options (the entry's, then the caller's) and those of ``folder``, ``spec``,
    ``modality``, ``encoder_id``, ``licence``, ``device``, ``precision`` and ``cache_dir`` that its
    signature names. A name registered again replaces the earlier entry. Returns the
    ``(modality, name)`` pairs added (see :func:`unregister_encoder`).
    """
    if not isinstance(entries, Mapping):
        entries = _read_entries(entries)
    added = []
    for modality, named in _checked_entries(entries, "register_encoders()").items():
        _REGISTERED.setdefault(modality, {}).update(named)
        added.extend((modality, name) for name in named)
    return added


def unregister_encoder(modality: str, name: str) -> None:
    """Remove an entry added by :func:`register_encoders` (built-in entries stay)."""
    entries = _REGISTERED.get(modality, {})
    if name not in entries:
        raise UnknownEncoderError(
            f"No encoder {name!r} was registered for {modality!r} by register_encoders()."
        )
    del entries[name]


def _read_entries(path: str | os.PathLike[str]) -> dict[str, dict[str, dict[str, Any]]]:
    try:
        entries = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"Encoder registry file {path} does not exist.") from None
    except json.JSONDecodeError as err:
        raise InvalidArgumentError(f"Encoder registry file {path} is not JSON: {err}") from err
    return _checked_entries(entries, str(path))


def _checked_entries(entries: Any, source: str) -> dict[str, dict[str, dict[str, Any]]]:
    expected = "{modality: {name: {loader, spec, options, ...}}}"
    if not isinstance(entries, Mapping):
        raise InvalidArgumentError(f"{source}: expected {expected}; got {type(entries).__name__}.")
    checked: dict[str, dict[str, dict[str, Any]]] = {}
    for modality, named in entries.items():
        check_modality(modality)
        if not isinstance(named, Mapping):
            raise InvalidArgumentError(
                f"{source}: {modality!r} holds no entries; expected {expected}."
            )
        for name, entry in named.items():
            if not isinstance(entry, Mapping) or not ("loader" in entry or "spec" in entry):
                raise InvalidArgumentError(
                    f"{source}: encoder {modality}/{name} needs a 'loader' or a 'spec'; got {entry!r}."
                )
            if "loader" in entry:
                _split_loader(str(entry["loader"]))
            checked.setdefault(modality, {})[str(name)] = dict(entry)
    return checked


def list_encoders(modality: str | None = None) -> list[dict[str, Any]]:
    """Registered encoders: modality, name, spec, licence, dimension and a description
    (``modality``: only those of that modality, which must be one ecomodal knows)."""
    if modality is not None:
        check_modality(modality)
    rows = []
    for mod, entries in registered_encoders().items():
        if modality is not None and mod != modality:
            continue
        for name, entry in entries.items():
            rows.append({"modality": mod, "name": name, **entry})
    return rows


def default_encoder_name(modality: str) -> str:
    """The name of the registered default encoder of ``modality`` (the last marked default)."""
    defaults = [
        name
        for name, entry in registered_encoders().get(modality, {}).items()
        if entry.get("default")
    ]
    if not defaults:
        raise UnknownEncoderError(f"No default encoder is registered for modality {modality!r}.")
    return defaults[-1]


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
    if entry is None:
        entry = _bound_folder_entry(modality, name) or {"spec": name}
    if "loader" not in entry:
        entry = {**_folder_entry(modality), **entry}
    target = str(entry.get("spec", name))
    context = {
        "spec": target,
        "modality": modality,
        "encoder_id": name,
        "licence": entry.get("licence", "unknown"),
        "device": device,
        "precision": precision,
        "cache_dir": cache_dir,
    }
    try:
        if entry.get("checkpoint"):
            files = _checkpoint_layout(str(entry["checkpoint"]))
            context["folder"] = resolve_model_dir(
                target, files["required"], cache_dir=cache_dir, optional=files["optional"]
            )
        return _call(
            resolve_loader(str(entry["loader"])), context, {**entry.get("options", {}), **options}
        )
    except ModelNotFoundError as err:
        hint = offline_hint(modality, target)
        if hint is None:
            raise
        raise ModelNotFoundError(f"{err} {hint}") from err


#: What ``ecomodal train bind`` writes into the ``config.json`` of the folders it saves.
TRAINED_BY_BIND = "ecomodal train bind"


def _bound_folder_entry(modality: str, spec: str) -> dict[str, Any] | None:
    """For a folder written by ``ecomodal train bind``: the entry that loads it as what it is.

    A projection bound on an offline backbone's features (``sat``, ``image``, ``text``) loads as
    that backbone plus the projection; the folders of ``env`` (SINR) and ``loc`` (GeoCLIP) load
    with their modality's own folder loader. A folder bound for another modality is an error."""
    from ecomodal.encoders.offline import BOUND_BACKBONES

    if parse_model_spec(spec).kind != "local-dir":
        return None
    folder = Path(parse_model_spec(spec).location).expanduser()
    config_path = folder / "config.json"
    try:
        config = json.loads(config_path.read_text()) if config_path.is_file() else None
    except (OSError, json.JSONDecodeError):
        return None  # the modality's loader reports an unreadable config
    if not isinstance(config, Mapping) or config.get("trained_by") != TRAINED_BY_BIND:
        return None
    trained = config.get("modality")
    if trained and trained != modality:
        raise InvalidArgumentError(
            f"{folder} holds the {trained!r} encoder bound by `ecomodal train bind`, not one "
            f"for {modality!r}; load it as --encoder {trained}=local-dir:{folder}."
        )
    if modality not in BOUND_BACKBONES or "in_dim" not in config:
        return None
    backbone = registered_encoders()[modality][BOUND_BACKBONES[modality]]
    return {
        **{k: v for k, v in backbone.items() if k not in ("default", "offline")},
        "spec": str(folder),
        "loader": "ecomodal.encoders.offline:load_bound_encoder",
        "description": f"{backbone.get('description', '')}; projection bound in {folder}",
    }


def offline_hint(modality: str, spec: str) -> str | None:
    """For a hub id of a registered encoder with an ``offline`` alternative: a sentence naming it."""
    if parse_model_spec(spec).kind != "hf-hub":
        return None
    for entry in registered_encoders().get(modality, {}).values():
        offline = entry.get("offline")
        if entry.get("spec") == spec and offline:
            name = offline["alternative"]
            note = f" {offline['note']}" if offline.get("note") else ""
            return (
                f"`--encoder {modality}={name}` (load_encoder({modality!r}, {name!r})) works "
                f"offline{note}."
            )
    return None


def resolve_loader(path: str) -> Callable[..., Encoder]:
    """The callable named ``"package.module:attribute[.attribute]"``, imported now."""
    module_name, attributes = _split_loader(path)
    try:
        target: Any = importlib.import_module(module_name)
    except ModuleNotFoundError as err:
        if err.name is None or not module_name.startswith(err.name):
            raise
        raise InvalidArgumentError(f"Encoder loader {path!r}: no module {module_name!r}.") from err
    for attribute in attributes.split("."):
        if not hasattr(target, attribute):
            raise InvalidArgumentError(
                f"Encoder loader {path!r}: {module_name} has no {attributes!r}."
            )
        target = getattr(target, attribute)
    return target


def _split_loader(path: str) -> tuple[str, str]:
    module_name, sep, attributes = path.partition(":")
    if not sep or not module_name or not attributes:
        raise InvalidArgumentError(
            f"Bad encoder loader {path!r}; expected 'package.module:function' "
            "(e.g. 'ecomodal.encoders.location:load_location_encoder')."
        )
    return module_name, attributes


def _call(loader: Callable[..., Encoder], context: Mapping[str, Any], options: Mapping[str, Any]):
    """``loader(**options)`` plus the entries of ``context`` that its signature names."""
    names = inspect.signature(loader).parameters
    given = {key: value for key, value in context.items() if key in names}
    return loader(**{**given, **options})


def _folder_entry(modality: str) -> dict[str, Any]:
    folders = _config("checkpoints.json")["folders"]
    if modality not in folders:
        raise UnknownModalityError(
            f"No encoder is registered for modality {modality!r}; pass an Encoder instance instead."
        )
    return folders[modality]


def _checkpoint_layout(name: str) -> dict[str, list[str]]:
    layouts = _config("checkpoints.json")["layouts"]
    if name not in layouts:
        raise InvalidArgumentError(
            f"Unknown checkpoint layout {name!r}; expected one of: {', '.join(layouts)}."
        )
    return layouts[name]
