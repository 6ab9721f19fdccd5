"""A model folder's calibration files: the neighbour bank, the completion mix and the error model.

Beside ``config.json`` and ``model.safetensors`` (the published files, untouched):

- ``neighbours.safetensors``: ``embeddings`` float16 [N, M, D] and ``present`` uint8 [N, M];
- ``completion.json``: the mix per visible set and completed modality, and the fit's report;
- ``uncertainty.safetensors`` + ``uncertainty.json``: the error model (MLP weights, feature
  scaling, conformal ratio quantiles) and its description.

Each file is written to a temporary name and renamed, so a folder never holds half a file.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ecomodal.errors import CheckpointError
from ecomodal.io.atomic import atomic_path
from ecomodal.models.calibration import (
    FEATURES,
    Calibration,
    CompletionMix,
    ErrorModel,
    MixEntry,
    NeighbourBank,
)

NEIGHBOURS_NAME = "neighbours.safetensors"
MIX_NAME = "completion.json"
UNCERTAINTY_NAME = "uncertainty.safetensors"
UNCERTAINTY_CONFIG_NAME = "uncertainty.json"
FORMAT_VERSION = 1


def has_calibration(folder: str | Path) -> bool:
    folder = Path(folder)
    return (folder / NEIGHBOURS_NAME).is_file() and (folder / MIX_NAME).is_file()


def write_calibration(folder: str | Path, calibration: Calibration) -> list[Path]:
    """Write ``calibration`` into the model folder ``folder``; returns the files written."""
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    bank = calibration.bank
    written = []
    with atomic_path(folder / NEIGHBOURS_NAME) as tmp:
        save_file(
            {
                "embeddings": bank.embeddings.to(torch.float16).contiguous(),
                "present": bank.present.to(torch.uint8).contiguous(),
            },
            str(tmp),
            metadata={"modalities": ",".join(bank.modalities)},
        )
    written.append(folder / NEIGHBOURS_NAME)
    mix = {
        "format_version": FORMAT_VERSION,
        "modalities": list(bank.modalities),
        "neighbours": len(bank),
        "mix": {key: entry.to_dict() for key, entry in sorted(calibration.mix.entries.items())},
        "report": calibration.report,
    }
    written.append(_write_json(folder / MIX_NAME, mix))
    if calibration.error_model is not None:
        model = calibration.error_model
        with atomic_path(folder / UNCERTAINTY_NAME) as tmp:
            tensors = {name: t.contiguous() for name, t in model.tensors.items()}
            save_file(tensors, str(tmp))
        written.append(folder / UNCERTAINTY_NAME)
        description = {
            "format_version": FORMAT_VERSION,
            "method": model.method,
            "modalities": list(model.modalities),
            "keys": model.keys,
            "features": list(FEATURES),
            "target": "1 - cosine(completion, truth), per completed modality",
            "interval": "split-conformal quantiles of observed / expected error per key",
        }
        written.append(_write_json(folder / UNCERTAINTY_CONFIG_NAME, description))
    return written


def _write_json(path: Path, values: dict[str, Any]) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(values, indent=2, default=_plain))
    return path


def _plain(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def _read_bank(path: Path, modalities: tuple[str, ...], chunk_rows: int = 8192) -> NeighbourBank:
    """The bank, read in blocks of rows straight into its float32 columns. The file is opened
    once per block: a memory map holds every page it has touched until it is closed, which
    would put the whole file beside the columns."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as file:
        shape = file.get_slice("embeddings").get_shape()
        present = file.get_tensor("present").bool()
    if len(shape) != 3 or shape[1] != len(modalities):
        raise ValueError(f"expected [rows, {len(modalities)}, dim] embeddings; got {shape}")
    n_rows, _, dim = shape
    columns = [torch.empty(n_rows, dim) for _ in modalities]
    for start in range(0, n_rows, chunk_rows):
        with safe_open(str(path), framework="pt") as file:
            block = file.get_slice("embeddings")[start : start + chunk_rows]
        for m, column in enumerate(columns):
            column[start : start + len(block)] = block[:, m]
    return NeighbourBank.from_columns(columns, present, modalities)


def read_calibration(folder: str | Path, modalities: tuple[str, ...]) -> Calibration | None:
    """The calibration in a model folder (``None`` when it has none); errors name the file."""
    from safetensors.torch import load_file

    folder = Path(folder)
    if not has_calibration(folder):
        return None
    mix_path = folder / MIX_NAME
    try:
        values = json.loads(mix_path.read_text())
        entries = {key: MixEntry.from_dict(e) for key, e in values["mix"].items()}
        stored = tuple(values["modalities"])
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise CheckpointError(f"{mix_path}: not a valid completion mix ({err}).") from err
    if stored != tuple(modalities):
        raise CheckpointError(
            f"{mix_path}: calibrated for modalities {list(stored)}, but the model has "
            f"{list(modalities)}; run `ecomodal calibrate` again."
        )
    bank_path = folder / NEIGHBOURS_NAME
    try:
        bank = _read_bank(bank_path, stored)
    except Exception as err:  # safetensors raises its own error types
        raise CheckpointError(f"{bank_path}: not a valid neighbour bank ({err}).") from err
    if len(bank.columns) != len(stored):
        raise CheckpointError(f"{bank_path}: expected {len(stored)} modalities per row.")
    error_model = None
    if (folder / UNCERTAINTY_NAME).is_file():
        error_path = folder / UNCERTAINTY_NAME
        try:
            description = json.loads((folder / UNCERTAINTY_CONFIG_NAME).read_text())
            error_model = ErrorModel(
                load_file(str(error_path)),
                stored,
                description["keys"],
                method=description["method"],
            )
        except Exception as err:
            raise CheckpointError(f"{error_path}: not a valid uncertainty model ({err}).") from err
    return Calibration(bank, CompletionMix(entries), error_model, values.get("report", {}))
