"""Model ids: a folder path, ``local-dir:PATH`` or ``hf-hub:ORG/NAME[@REVISION]``.

Hub downloads go through ``huggingface_hub`` and honour ``HF_HUB_OFFLINE``: offline, a model that
is not already in the local cache fails at once with a message that says so, never a hang.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ecomodal.errors import InvalidArgumentError, ModelNotFoundError

HF_PREFIX = "hf-hub:"
LOCAL_PREFIX = "local-dir:"


@dataclass(frozen=True)
class ModelSpec:
    """A parsed model id: ``kind`` is ``"local-dir"`` or ``"hf-hub"``."""

    kind: str
    location: str
    revision: str | None = None


def parse_model_spec(spec: str | os.PathLike[str]) -> ModelSpec:
    """Parse a model id. A bare string is a folder path."""
    if isinstance(spec, os.PathLike):
        return ModelSpec("local-dir", os.fspath(spec))
    if not isinstance(spec, str) or not spec.strip():
        raise InvalidArgumentError(
            f"Empty model id {spec!r}; expected a folder, 'local-dir:PATH' or 'hf-hub:ORG/NAME'."
        )
    spec = spec.strip()
    if spec.startswith(HF_PREFIX):
        repo = spec[len(HF_PREFIX) :]
        repo, _, revision = repo.partition("@")
        if repo.count("/") != 1 or not all(repo.split("/")):
            raise InvalidArgumentError(
                f"Bad hub id {spec!r}; expected 'hf-hub:ORG/NAME' (e.g. hf-hub:MVRL/ProM3E)."
            )
        return ModelSpec("hf-hub", repo, revision or None)
    if spec.startswith(LOCAL_PREFIX):
        return ModelSpec("local-dir", spec[len(LOCAL_PREFIX) :])
    return ModelSpec("local-dir", spec)


def hub_offline() -> bool:
    """True when ``HF_HUB_OFFLINE`` asks for no network."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}


def resolve_model_dir(
    spec: str | os.PathLike[str],
    filenames: Sequence[str],
    *,
    cache_dir: str | os.PathLike[str] | None = None,
    optional: Sequence[str] = (),
) -> Path:
    """A local folder holding ``filenames`` for the model id ``spec``, downloading if needed.

    ``optional`` names further files (or glob patterns) fetched from the hub when present.
    """
    parsed = parse_model_spec(spec)
    if parsed.kind == "local-dir":
        folder = Path(parsed.location).expanduser()
        if folder.exists() and not folder.is_dir():
            hint = ""
            if folder.name in filenames:
                hint = f" (it is one of the model's files: pass its folder, {folder.parent})"
            raise ModelNotFoundError(
                f"Model {folder} is a file{hint}; expected a folder holding {', '.join(filenames)}."
            )
        if not folder.is_dir():
            hint = ""
            if not folder.exists() and parsed.location.count("/") == 1 and not _is_path_like(spec):
                hint = f" To load it from the Hugging Face hub, use 'hf-hub:{parsed.location}'."
            raise ModelNotFoundError(f"Model folder {folder} does not exist.{hint}")
        return folder
    return _download(parsed, filenames, cache_dir, optional)


def _is_path_like(spec: str | os.PathLike[str]) -> bool:
    text = os.fspath(spec)
    return text.startswith((".", "/", "~")) or text.startswith(LOCAL_PREFIX)


def _download(
    spec: ModelSpec, filenames: Sequence[str], cache_dir, optional: Sequence[str] = ()
) -> Path:
    from huggingface_hub import snapshot_download

    offline = hub_offline()
    try:
        folder = snapshot_download(
            repo_id=spec.location,
            revision=spec.revision,
            allow_patterns=[*filenames, *optional],
            cache_dir=cache_dir,
            local_files_only=offline,
            etag_timeout=10,
        )
    except Exception as err:  # huggingface_hub raises many types for "not reachable / not cached"
        if offline:
            reason = (
                "HF_HUB_OFFLINE is set and the model is not in the local Hugging Face cache; "
                "download it once with network access, or pass a local folder "
                "('local-dir:PATH')."
            )
        else:
            reason = (
                "the Hugging Face hub could not be reached or has no such model "
                f"({type(err).__name__}: {err}); check the id and the network, or pass a local "
                "folder ('local-dir:PATH')."
            )
        raise ModelNotFoundError(f"Cannot load 'hf-hub:{spec.location}': {reason}") from err
    folder = Path(folder)
    missing = [name for name in filenames if not (folder / name).is_file()]
    if missing:
        raise ModelNotFoundError(
            f"'hf-hub:{spec.location}' has no {', '.join(missing)} (looked in {folder})."
        )
    return folder
