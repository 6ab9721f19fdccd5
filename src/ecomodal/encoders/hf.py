"""Loading transformers models from local folders (never the network, never remote code)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ecomodal.encoders.base import EncoderInfo
from ecomodal.errors import CheckpointError


def load_transformers_model(model_class: Any, folder: str | Path) -> Any:
    """``model_class.from_pretrained(folder)`` offline, with errors that name the folder."""
    folder = Path(folder)
    if not (folder / "config.json").is_file():
        raise CheckpointError(f"{folder} has no config.json; it is not a transformers model.")
    if not any((folder / name).is_file() for name in ("model.safetensors", "pytorch_model.bin")):
        raise CheckpointError(f"{folder} has no model.safetensors (or pytorch_model.bin).")
    try:
        with _quiet_transformers():  # its load report is ours to give (check_loading_info)
            model, loading = model_class.from_pretrained(
                str(folder),
                local_files_only=True,
                trust_remote_code=False,
                output_loading_info=True,
            )
    except (OSError, ValueError, KeyError, RuntimeError) as err:
        raise CheckpointError(
            f"{folder} is not a {model_class.__name__} checkpoint: {err}"
        ) from err
    check_loading_info(folder, model_class.__name__, loading)
    return model.eval()


@contextlib.contextmanager
def _quiet_transformers() -> Iterator[None]:
    """No transformers load report or progress bar on the terminal while a model loads."""
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()


def check_loading_info(folder: Path, architecture: str, loading: dict[str, Any]) -> None:
    """A checkpoint whose tensors do not fit the architecture built from its config (weights
    missing, so left random, or left over) is an error naming both lists of keys."""
    missing = sorted(loading.get("missing_keys") or [])
    unexpected = sorted(loading.get("unexpected_keys") or [])
    mismatched = [str(item[0]) for item in loading.get("mismatched_keys") or []]
    if not (missing or unexpected or mismatched):
        return
    parts = []
    for label, keys in (
        ("missing", missing),
        ("unexpected", unexpected),
        ("of the wrong shape", mismatched),
    ):
        if keys:
            more = f" and {len(keys) - 5} more" if len(keys) > 5 else ""
            parts.append(f"{len(keys)} {label} ({', '.join(keys[:5])}{more})")
    raise CheckpointError(
        f"{folder}: its weights do not fit the {architecture} its config.json describes: "
        f"{'; '.join(parts)} keys. It would run with random weights; is it the right folder "
        "for this modality?"
    )


def load_projection_model(
    model_class: Any,
    folder: str | Path,
    *,
    encoder_id: str,
    modality: str,
    licence: str,
    description: str,
) -> tuple[Any, EncoderInfo]:
    """A transformers model with a projection head (``config.projection_dim``) from ``folder``,
    and the :class:`EncoderInfo` that describes it."""
    model = load_transformers_model(model_class, folder)
    info = EncoderInfo(
        id=encoder_id,
        modality=modality,
        dim=int(model.config.projection_dim),
        licence=licence,
        source=str(folder),
        description=description,
    )
    return model, info
