"""Multimodal patching: interpolate the binding model between its original and fine-tuned weights.

After unlocked tuning, TaxaBind keeps ``theta(alpha) = alpha * theta_finetuned + (1 - alpha) *
theta_original`` (over the whole state dict) for the alpha whose zero-shot accuracy (photo vs
taxonomic text) on a validation table is best. *Sequential* patching repeats this with several
fine-tuned checkpoints (one per bound modality), each step starting from the model the previous
step kept.

The model side is plain state-dict arithmetic on checkpoint folders in any format ecomodal loads:
open_clip folders (``open_clip_config.json`` + weights) and ecomodal encoder folders
(``config.json`` + ``model.safetensors``). The patched folder is written in the format of the
input, beside ``patching_curve.csv`` / ``patching_curve.png`` (alpha, accuracy of every step).
"""

from __future__ import annotations

import copy
import csv
import json
import logging
import math
import shutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from ecomodal.encoders.clip import OPEN_CLIP_CONFIG, OPEN_CLIP_WEIGHTS
from ecomodal.errors import (
    CheckpointError,
    InvalidArgumentError,
    InvalidInputError,
    MissingColumnError,
    OptionFormatError,
)
from ecomodal.io.atomic import atomic_path
from ecomodal.io.checkpoints import (
    CONFIG_NAME,
    TORCH_WEIGHTS_NAMES,
    WEIGHTS_NAME,
    check_state_dict,
    find_weights,
    read_weights,
)
from ecomodal.options import check_range, parse_linspace, parse_numbers

log = logging.getLogger(__name__)

CURVE_CSV = "patching_curve.csv"
CURVE_PNG = "patching_curve.png"
SUMMARY_JSON = "patching.json"

StateDict = dict[str, torch.Tensor]


# --------------------------------------------------------------------------- alphas


def parse_alphas(text: str | Sequence[float]) -> list[float]:
    """The alphas to try: ``"START:STOP:N"`` gives N evenly spaced values from START to STOP, both
    included (``"0:1:10"`` -> 0, 1/9, ..., 1, as ``numpy.linspace(0, 1, 10)``, the published
    sweep); ``"0,0.25,0.5"`` is an explicit list; a sequence of numbers is taken as it is."""
    if not isinstance(text, str):
        values = [float(v) for v in text]
    else:
        try:
            if ":" in text:
                values = parse_linspace(text, option="--alphas")
            else:
                values = parse_numbers(text, float, option="--alphas")
        except OptionFormatError as err:
            raise OptionFormatError(
                f"Bad --alphas {text!r}; expected START:STOP:N with N >= 1 (e.g. 0:1:10) or a "
                "comma list (e.g. 0,0.5,1)."
            ) from err
    if not values or not all(math.isfinite(v) for v in values):
        raise InvalidArgumentError(f"--alphas must give at least one finite value; got {text!r}.")
    outside = [v for v in values if not 0.0 <= v <= 1.0]
    if outside:
        raise InvalidArgumentError(
            f"--alphas must lie in [0, 1] (0 = original, 1 = fine-tuned weights); got "
            f"{outside[0]:g} in {text!r}."
        )
    return values


# --------------------------------------------------------------------------- checkpoints


@dataclass
class PatchableCheckpoint:
    """A checkpoint folder: its format (``"open_clip"`` or ``"ecomodal"``), weights file and
    tensors."""

    folder: Path
    kind: str
    weights_path: Path
    tensors: StateDict


def read_patchable_checkpoint(folder: str | Path) -> PatchableCheckpoint:
    """Read an open_clip folder or an ecomodal encoder folder (config + weights)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise CheckpointError(f"Checkpoint folder {folder} does not exist.")
    if (folder / OPEN_CLIP_CONFIG).is_file():
        found = [folder / name for name in OPEN_CLIP_WEIGHTS if (folder / name).is_file()]
        if not found:
            raise CheckpointError(
                f"{folder} has no open_clip weights (expected one of "
                f"{', '.join(OPEN_CLIP_WEIGHTS)})."
            )
        kind, weights = "open_clip", found[0]
    elif (folder / CONFIG_NAME).is_file():
        kind, weights = "ecomodal", find_weights(folder)
    else:
        raise CheckpointError(
            f"{folder} is neither an open_clip folder ({OPEN_CLIP_CONFIG}) nor an ecomodal "
            f"checkpoint folder ({CONFIG_NAME} + {WEIGHTS_NAME})."
        )
    return PatchableCheckpoint(folder, kind, weights, read_weights(weights))


def check_compatible(
    original: Mapping[str, torch.Tensor],
    finetuned: Mapping[str, torch.Tensor],
    *,
    source: str = "the fine-tuned checkpoint",
) -> None:
    """Raise :class:`CheckpointError` unless both state dicts have the same names and shapes."""
    check_state_dict(original, finetuned, source=source, target="the original model")


def interpolate_state_dicts(
    original: Mapping[str, torch.Tensor], finetuned: Mapping[str, torch.Tensor], alpha: float
) -> StateDict:
    """``alpha * finetuned + (1 - alpha) * original`` for every floating tensor (computed in float32
    at least, returned in the original dtype); integer buffers keep the original's values."""
    check_compatible(original, finetuned)
    out: StateDict = {}
    for name, base in original.items():
        if not torch.is_floating_point(base):
            out[name] = base.clone()
            continue
        work = torch.promote_types(base.dtype, torch.float32)
        mixed = torch.lerp(base.to(work), finetuned[name].to(work), float(alpha))
        out[name] = mixed.to(base.dtype).contiguous()
    return out


def write_patched_checkpoint(
    source: str | Path | PatchableCheckpoint, tensors: Mapping[str, torch.Tensor], out: str | Path
) -> Path:
    """Write ``tensors`` as a checkpoint folder in the format of ``source``: its other files
    (configs, tokenizer files) are copied, the weights are written as safetensors under the
    source's weights name (or the format's safetensors name), every file atomically."""
    from safetensors.torch import save_file

    if isinstance(source, PatchableCheckpoint):
        checkpoint = source
    else:
        checkpoint = read_patchable_checkpoint(source)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    weight_names = {*OPEN_CLIP_WEIGHTS, WEIGHTS_NAME, *TORCH_WEIGHTS_NAMES}
    for path in sorted(checkpoint.folder.iterdir()):
        if path.is_file() and path.name not in weight_names and not path.name.startswith("."):
            with atomic_path(out / path.name) as tmp:
                shutil.copyfile(path, tmp)
    if checkpoint.weights_path.suffix == ".safetensors":
        name = checkpoint.weights_path.name
    else:
        name = OPEN_CLIP_WEIGHTS[0] if checkpoint.kind == "open_clip" else WEIGHTS_NAME
    for stale in weight_names - {name}:  # a rerun into the same folder leaves one weights file
        (out / stale).unlink(missing_ok=True)
    plain = {k: v.detach().cpu().contiguous().clone() for k, v in tensors.items()}
    with atomic_path(out / name) as tmp:
        save_file(plain, str(tmp), metadata={"format": "pt"})
    return out


# --------------------------------------------------------------------------- scoring


def zero_shot_accuracy(
    queries: np.ndarray, class_embeddings: np.ndarray, labels: np.ndarray
) -> float:
    """Top-1 accuracy of ``argmax_c queries @ class_embeddings[c]`` against ``labels`` (class
    indices); rows are expected L2-normalised."""
    from ecomodal.errors import InvalidInputError
    from ecomodal.scoring import top_k_hits

    if len(queries) == 0:
        raise InvalidInputError("Zero-shot accuracy needs at least one query row.")
    return top_k_hits(queries @ class_embeddings.T, labels, (1,), ties="first")["top1"]


def _load_into(module: torch.nn.Module, tensors: Mapping[str, torch.Tensor], source: str) -> None:
    """Load checkpoint tensors into an encoder's module, whose names may carry a prefix
    (``clip.`` for the open_clip towers)."""
    keys = set(module.state_dict())
    first = next(iter(tensors))
    prefixes = {key[: len(key) - len(first)] for key in keys if key.endswith(first)}
    for prefix in sorted(prefixes, key=len):
        if prefix and not prefix.endswith("."):
            continue
        named = {prefix + name: value for name, value in tensors.items()}
        if set(named) <= keys and keys <= set(named):
            module.load_state_dict(named, strict=True)
            return
    raise CheckpointError(
        f"{source}: the checkpoint's tensors do not map onto the encoder loaded from it."
    )


@dataclass
class ZeroShotScorer:
    """Zero-shot accuracy of a checkpoint's ``query`` encoder (default ``image``) against the
    ``text`` embeddings of the candidate taxa, on a validation records table.

    The candidates are the distinct taxonomic strings of the validation rows (the ``text`` column,
    or the rank columns). Rows whose input cannot be encoded (a missing photo) are left out, with
    one warning. Class embeddings come from the patched checkpoint's own text tower, or
    from ``text_encoder`` (a fixed encoder spec) when given. Encoders are loaded once from
    ``template`` (a checkpoint folder) and copied; each call loads new weights into the copies.
    """

    template: Path
    val: Path
    query: str = "image"
    text_encoder: str | None = None
    root: Path | None = None
    column_map: Mapping[str, str] | Sequence[str] | None = None
    media: Mapping[str, str] | Sequence[str] | None = None
    split: str | None = "val"
    batch_size: int = 64
    device: str | None = None
    _state: dict = field(default_factory=dict, repr=False)

    def _setup(self) -> dict:
        if self._state:
            return self._state
        from ecomodal.embed import encoder_inputs, parse_media_templates
        from ecomodal.encoders.registry import load_encoder
        from ecomodal.io.records import read_records, taxonomic_strings

        records = read_records(self.val, column_map=self.column_map)
        if self.split and "split" in records.column_names:
            keep = np.asarray(records.column("split").to_pylist(), dtype=object) == self.split
            if keep.any():
                records = records.filter(keep)
        texts = np.asarray(taxonomic_strings(records), dtype=object)
        missing = [i for i, text in enumerate(texts) if not isinstance(text, str) or not text]
        if missing:
            raise MissingColumnError(
                f"{self.val}: row {missing[0]} has no taxon (a text column or rank columns); "
                f"{len(missing)} rows lack one."
            )
        classes, labels = np.unique(texts.astype(str), return_inverse=True)
        spec = f"local-dir:{self.template}"
        query = load_encoder(self.query, spec, device=self.device)
        text = load_encoder("text", self.text_encoder or spec, device=self.device)
        patched = [query] if self.text_encoder else [query, text]
        # Copy the modules together so towers that share one model keep sharing it, and the
        # process-wide model cache is never modified.
        for encoder, module in zip(patched, copy.deepcopy([e.model for e in patched]), strict=True):
            encoder.model = module
        inputs = encoder_inputs(query, records, self.root, parse_media_templates(self.media))
        self._state = {
            "query": query,
            "text": text,
            "patched": patched,
            "inputs": inputs,
            "classes": classes.tolist(),
            "labels": labels,
        }
        return self._state

    def __call__(self, tensors: Mapping[str, torch.Tensor]) -> float:
        """Accuracy of the model with weights ``tensors``."""
        state = self._setup()
        for encoder in state["patched"]:
            _load_into(encoder.model, tensors, str(self.template))
        encoded = state["query"].encode_rows(state["inputs"], batch_size=self.batch_size)
        if not encoded.valid.any():
            first = encoded.errors[0]
            raise InvalidInputError(
                f"{self.val}: no validation row could be encoded (row {first.row}, column "
                f"{first.column!r}: {first.reason})."
            )
        if encoded.errors and not state.get("warned"):
            state["warned"] = True
            log.warning(
                "%s: %d validation rows could not be encoded and are left out (first: row %d, %s).",
                self.val,
                len(encoded.errors),
                encoded.errors[0].row,
                encoded.errors[0].reason,
            )
        class_embeddings = state["text"].encode(
            np.asarray(state["classes"], dtype=object), batch_size=self.batch_size
        )
        valid = encoded.valid
        return zero_shot_accuracy(
            encoded.embeddings[valid], class_embeddings, state["labels"][valid]
        )


# --------------------------------------------------------------------------- sweep


@dataclass
class PatchStep:
    """One patching step: the fine-tuned checkpoint, the accuracy per alpha and the alpha kept."""

    step: int
    modality: str
    finetuned: str
    alphas: list[float]
    accuracies: list[float]
    best_alpha: float
    best_accuracy: float


@dataclass
class PatchResult:
    """Where the patched model and its curves went, and every step's choice."""

    out: Path
    curve_csv: Path
    curve_png: Path
    steps: list[PatchStep]

    @property
    def best_alpha(self) -> float:
        return self.steps[-1].best_alpha

    @property
    def best_accuracy(self) -> float:
        return self.steps[-1].best_accuracy


def sweep_alphas(
    original: Mapping[str, torch.Tensor],
    finetuned: Mapping[str, torch.Tensor],
    alphas: Sequence[float],
    score: Callable[[Mapping[str, torch.Tensor]], float],
) -> tuple[list[float], int]:
    """Score the interpolated model at every alpha; returns the scores and the index of the best
    (ties go to the first, i.e. with the alphas ascending, the one nearest the original)."""
    scores = []
    for alpha in alphas:
        scores.append(float(score(interpolate_state_dicts(original, finetuned, alpha))))
        log.info("alpha %.4f: accuracy %.4f", alpha, scores[-1])
    return scores, int(np.argmax(scores))


def patch_model(
    original: str | Path,
    finetuned: str | Path | Sequence[str | Path],
    val: str | Path | None,
    out: str | Path,
    *,
    alphas: str | Sequence[float] = "0:1:10",
    modalities: Sequence[str] | None = None,
    query: str = "image",
    text_encoder: str | None = None,
    root: str | Path | None = None,
    column_map: Mapping[str, str] | Sequence[str] | None = None,
    media: Mapping[str, str] | Sequence[str] | None = None,
    split: str | None = "val",
    batch_size: int = 64,
    device: str | None = None,
    score: Callable[[Mapping[str, torch.Tensor]], float] | None = None,
) -> PatchResult:
    """Patch the binding model ``original`` with one or more fine-tuned checkpoints, in order.

    Each step interpolates the current model (first ``original``) towards the step's fine-tuned
    checkpoint at every alpha of ``alphas`` (see :func:`parse_alphas`), scores each by zero-shot
    accuracy on ``val`` (a records table, its ``split == "val"`` rows when it has a split column;
    see :class:`ZeroShotScorer`) and keeps the best. ``modalities`` names the steps (the modality
    each fine-tuned checkpoint was bound with). ``out`` receives the patched checkpoint in the
    format of ``original``, ``patching_curve.csv`` (step, modality, alpha, accuracy, best),
    ``patching_curve.png`` (one curve per step) and ``patching.json``. ``score`` replaces the
    zero-shot scorer (a callable from a state dict to a number, higher is better).
    """
    finetuned_list = [finetuned] if isinstance(finetuned, (str, Path)) else list(finetuned)
    if not finetuned_list:
        raise InvalidArgumentError(
            "patch_model needs at least one fine-tuned checkpoint (--finetuned)."
        )
    names = list(modalities) if modalities else [f"step{i + 1}" for i in range(len(finetuned_list))]
    if len(names) != len(finetuned_list):
        raise InvalidArgumentError(
            f"Got {len(names)} --modality names for {len(finetuned_list)} --finetuned "
            "checkpoints; give one name per checkpoint (or none)."
        )
    alpha_values = parse_alphas(alphas)
    check_range(batch_size, "batch_size", minimum=1, integer=True)
    if Path(out).exists() and not Path(out).is_dir():
        raise InvalidArgumentError(
            f"out {out} is a file; the patched model is written to a folder."
        )
    base = read_patchable_checkpoint(original)
    tuned = [read_patchable_checkpoint(path) for path in finetuned_list]
    for path, checkpoint in zip(finetuned_list, tuned, strict=True):
        check_compatible(base.tensors, checkpoint.tensors, source=str(path))
    if score is None:
        if val is None:
            raise InvalidArgumentError(
                "patch_model needs a validation table (--val) to score the alphas."
            )
        score = ZeroShotScorer(
            template=base.folder,
            val=Path(val),
            query=query,
            text_encoder=text_encoder,
            root=Path(root) if root is not None else None,
            column_map=column_map,
            media=media,
            split=split,
            batch_size=batch_size,
            device=device,
        )
    current = base.tensors
    steps = []
    for index, (name, path, checkpoint) in enumerate(
        zip(names, finetuned_list, tuned, strict=True), start=1
    ):
        scores, best = sweep_alphas(current, checkpoint.tensors, alpha_values, score)
        steps.append(
            PatchStep(
                index, name, str(path), alpha_values, scores, alpha_values[best], scores[best]
            )
        )
        current = interpolate_state_dicts(current, checkpoint.tensors, alpha_values[best])
    out = Path(out)
    write_patched_checkpoint(base, current, out)
    result = PatchResult(out, out / CURVE_CSV, out / CURVE_PNG, steps)
    write_curve_csv(steps, result.curve_csv)
    plot_curves(steps, result.curve_png)
    with atomic_path(out / SUMMARY_JSON) as tmp:
        summary = {"original": str(original), "steps": [asdict(step) for step in steps]}
        tmp.write_text(json.dumps(summary, indent=2) + "\n")
    return result


def write_curve_csv(steps: Sequence[PatchStep], path: str | Path) -> Path:
    """``step, modality, alpha, accuracy, best`` (best is 1 on the kept alpha of each step)."""
    with atomic_path(path) as tmp, tmp.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["step", "modality", "alpha", "accuracy", "best"])
        for step in steps:
            for alpha, accuracy in zip(step.alphas, step.accuracies, strict=True):
                best = int(alpha == step.best_alpha)
                writer.writerow([step.step, step.modality, alpha, accuracy, best])
    return Path(path)


def plot_curves(steps: Sequence[PatchStep], path: str | Path) -> Path:
    """Accuracy against alpha, one line per step, the kept alpha marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for step in steps:
        label = f"step {step.step}: {step.modality}"
        (line,) = ax.plot(step.alphas, step.accuracies, marker="o", label=label)
        ax.scatter(
            [step.best_alpha],
            [step.best_accuracy],
            s=120,
            facecolors="none",
            edgecolors=line.get_color(),
        )
    ax.set_title("Multimodal patching: zero-shot accuracy by alpha")
    ax.set_xlabel("alpha (0 = original, 1 = fine-tuned)")
    ax.set_ylabel("zero-shot top-1 accuracy")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
    return Path(path)
