"""A run folder's encoders: which encoder produced each modality, recorded in ``encoders.json``.

A run folder (``ecomodal quickstart --out DIR``, ``ecomodal train bind --out DIR``) records, per
modality, what :func:`~ecomodal.encoders.registry.load_encoder` needs to rebuild the encoder that
embedded its table, so that :func:`load_encoders` (``ecomodal embed --run DIR``) gives, for any
lat/lon, exactly the run's embeddings. The manifest::

    {"format": "ecomodal-run-encoders", "version": 1,
     "encoders": {
       "loc": {"spec": "geoclip"},
       "env": {"weights": "bind-env/best", "covariates": "default"},
       "sat": {"spec": "bluemarble", "projection": "bind-sat/best"}}}

Per modality: ``spec`` (a registered encoder name or any spec ``load_encoder`` takes), ``weights``
(a folder of trained weights, loaded as ``local-dir:``; replaces ``spec``), ``projection`` (a
folder with a projection trained on ``spec``'s backbone features), ``covariates`` (``"default"``
or a raster) and ``options`` (further keyword options of the loader). Relative paths are relative
to the run folder, so the folder can be moved. Quickstart folders written before the manifest
existed load by the quickstart's layout (``bind-env/best``, ``bind-sat/best``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ecomodal.encoders.base import Encoder
from ecomodal.errors import ModelNotFoundError, RunFolderError, UnknownModalityError
from ecomodal.io.atomic import atomic_path
from ecomodal.modalities import MODALITIES, parse_modalities

#: The manifest's file name inside a run folder.
MANIFEST_NAME = "encoders.json"
MANIFEST_FORMAT = "ecomodal-run-encoders"
MANIFEST_VERSION = 1
#: Keys of one modality's entry, and which of them are folders or files inside the run.
ENTRY_KEYS = ("spec", "weights", "projection", "covariates", "options")
_PATH_KEYS = ("weights", "projection", "covariates")


def quickstart_manifest(
    env_dir: str | Path = "bind-env/best", sat_dir: str | Path = "bind-sat/best"
) -> dict[str, dict[str, Any]]:
    """The encoders of a quickstart run: GeoCLIP ``loc``, the bound SINR ``env`` over the default
    covariates and Blue Marble ``sat`` through the bound projection (folders relative to the run)."""
    return {
        "loc": {"spec": "geoclip"},
        "env": {"weights": env_dir, "covariates": "default"},
        "sat": {"spec": "bluemarble", "projection": sat_dir},
    }


def write_run_encoders(run: str | Path, encoders: Mapping[str, Mapping[str, Any]]) -> Path:
    """Record ``encoders`` (``{modality: entry}``, see the module) in ``run/encoders.json``,
    atomically; paths inside ``run`` are stored relative to it. Returns the manifest's path."""
    run = Path(run)
    path = run / MANIFEST_NAME
    checked = _checked_entries(encoders, path)
    for entry in checked.values():
        for key in _PATH_KEYS:
            value = entry.get(key)
            if isinstance(value, (str, Path)) and value != "default":
                entry[key] = _relative_to(Path(value), run)
    manifest = {"format": MANIFEST_FORMAT, "version": MANIFEST_VERSION, "encoders": checked}
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(manifest, indent=2) + "\n")
    return path


def _relative_to(path: Path, run: Path) -> str:
    try:
        return str(path.resolve().relative_to(run.resolve()))
    except ValueError:
        return str(path)


def run_encoder_entries(run: str | Path) -> dict[str, dict[str, Any]]:
    """``{modality: entry}`` of the run folder ``run``, paths resolved: from its
    ``encoders.json``, else from the quickstart layout; a folder that is neither is a
    :class:`~ecomodal.errors.RunFolderError` naming it."""
    run = Path(run)
    if not run.is_dir():
        what = "is a file, not a folder" if run.exists() else "does not exist"
        raise RunFolderError(f"Run folder {run} {what}; expected a folder with {MANIFEST_NAME}.")
    path = run / MANIFEST_NAME
    if path.is_file():
        entries = _read_manifest(path)
    elif all((run / f"bind-{m}" / "best").is_dir() for m in ("env", "sat")):
        entries = _checked_entries(quickstart_manifest(), path)
    else:
        raise RunFolderError(
            f"{run} is not a run folder: it has no {MANIFEST_NAME} and is not a finished "
            "quickstart run (bind-env/best and bind-sat/best); pass the --out folder of "
            "`ecomodal quickstart` or `ecomodal train bind`."
        )
    for modality, entry in entries.items():
        for key in _PATH_KEYS:
            value = entry.get(key)
            if value is None or value in ("default", "identity"):
                continue
            resolved = run / value
            if not resolved.exists():
                raise ModelNotFoundError(
                    f"{path}: the {modality!r} encoder's {key} {resolved} does not exist."
                )
            entry[key] = str(resolved)
    return entries


def _read_manifest(path: Path) -> dict[str, dict[str, Any]]:
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise RunFolderError(f"{path} is not JSON: {err}") from err
    if not isinstance(manifest, Mapping) or manifest.get("format") != MANIFEST_FORMAT:
        raise RunFolderError(
            f'{path} is not an ecomodal run manifest (expected "format": "{MANIFEST_FORMAT}").'
        )
    if manifest.get("version") != MANIFEST_VERSION:
        raise RunFolderError(
            f"{path} has version {manifest.get('version')!r}; this ecomodal reads version "
            f"{MANIFEST_VERSION}."
        )
    return _checked_entries(manifest.get("encoders"), path)


def _checked_entries(encoders: Any, path: Path) -> dict[str, dict[str, Any]]:
    if not isinstance(encoders, Mapping) or not encoders:
        raise RunFolderError(
            f'{path}: "encoders" must map modalities to entries; got {encoders!r}.'
        )
    checked: dict[str, dict[str, Any]] = {}
    for modality, entry in encoders.items():
        if modality not in MODALITIES:
            raise UnknownModalityError(
                f"{path}: unknown modality {modality!r}; expected one of: {', '.join(MODALITIES)}."
            )
        if not isinstance(entry, Mapping) or not ("spec" in entry or "weights" in entry):
            raise RunFolderError(
                f"{path}: the {modality!r} entry needs a 'spec' or 'weights'; got {entry!r}."
            )
        unknown = sorted(set(entry) - set(ENTRY_KEYS))
        if unknown:
            raise RunFolderError(
                f"{path}: the {modality!r} entry has unknown keys {unknown}; expected "
                f"{', '.join(ENTRY_KEYS)}."
            )
        if not isinstance(entry.get("options", {}), Mapping):
            raise RunFolderError(f"{path}: the {modality!r} entry's options must be an object.")
        checked[modality] = {k: (str(v) if isinstance(v, Path) else v) for k, v in entry.items()}
    return {m: checked[m] for m in MODALITIES if m in checked}


def selected_run_entries(
    run: str | Path, modalities: Sequence[str] | str | None = None
) -> dict[str, dict[str, Any]]:
    """The entries of ``modalities`` (default: all) of run folder ``run``
    (:func:`run_encoder_entries`); a modality the run has no encoder for is an
    :class:`~ecomodal.errors.UnknownModalityError` naming the run and what it has."""
    entries = run_encoder_entries(run)
    wanted = list(entries) if modalities is None else parse_modalities(modalities)
    missing = [m for m in wanted if m not in entries]
    if missing:
        raise UnknownModalityError(
            f"Run folder {run} has no encoder for {', '.join(map(repr, missing))}; it has "
            f"{', '.join(entries)}."
        )
    return {m: entries[m] for m in wanted}


def load_run_encoder(
    modality: str, entry: Mapping[str, Any], *, device: str | None = None, precision: str = "fp32"
) -> Encoder:
    """The encoder of one resolved manifest entry (see :func:`run_encoder_entries`)."""
    from ecomodal.encoders.registry import load_encoder

    spec = f"local-dir:{entry['weights']}" if "weights" in entry else entry["spec"]
    options = dict(entry.get("options", {}))
    for key in ("projection", "covariates"):
        if key in entry:
            options[key] = entry[key]
    return load_encoder(modality, spec, device=device, precision=precision, **options)


def load_encoders(
    run: str | Path,
    modalities: Sequence[str] | str | None = None,
    *,
    device: str | None = None,
    precision: str = "fp32",
) -> dict[str, Encoder]:
    """The encoders that produced the run folder ``run``'s embeddings: ``{modality: Encoder}``
    (``modalities``: only those, each of which the run must have). See the module for the
    manifest; old quickstart folders without one load by the quickstart's layout."""
    return {
        modality: load_run_encoder(modality, entry, device=device, precision=precision)
        for modality, entry in selected_run_entries(run, modalities).items()
    }
