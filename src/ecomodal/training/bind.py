"""``train_bind``: TaxaBind binding (reference §3), aligning one modality's encoder to another's.

The trained modality's encoder maps its *inputs* (covariates for ``env``, cached backbone
features for image-like encoders, latitude/longitude for ``loc``) to the shared space; the binding
modality's embeddings are fixed targets (locked tuning) or pass through a trainable head
initialised to the identity (unlocked tuning). Losses follow TaxaBind: random-location negatives
for ``loc``/``env`` (0.4 / 0.6), supervised contrastive for ``sat``, symmetric CLIP otherwise,
with a learnable temperature (start 1/0.07, capped at 100).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning as L
import torch

from ecomodal.data.bind import (  # noqa: F401  (also importable from here, as before)
    BindData,
    BindDataModule,
    RandomLocations,
    embed_targets,
    load_bind_data,
    open_covariates,
    species_codes,
)
from ecomodal.deprecation import renamed_arguments
from ecomodal.errors import InvalidArgumentError, TrainingError
from ecomodal.io.atomic import atomic_path
from ecomodal.models.bind import HEADS, BoundEncoder, build_encoder, check_head  # noqa: F401
from ecomodal.models.losses import RANDOM_NEGATIVE_WEIGHTS, SYMMETRIC_WEIGHTS
from ecomodal.options import check_range
from ecomodal.training.callbacks import TrainResult, check_trained, fit_resumably
from ecomodal.training.tasks import BindTask, retrieval_metrics  # noqa: F401
from ecomodal.training.trainer import (
    TrainerOptions,
    check_accelerator_available,
    check_training_numbers,
    trainer_from_keywords,
)

log = logging.getLogger(__name__)

LOSSES = ("auto", "random-negatives", "supcon", "clip")
#: Modalities whose published loss appends random-location negatives.
LOCATION_MODALITIES = ("loc", "env")


# ---------------------------------------------------------------------------- API
@dataclass
class BindResult(TrainResult):
    """Where a binding run left its outputs, and its held-out retrieval figures.

    ``metrics`` holds, on the test rows (the validation rows when there are none), retrieval
    modality -> bind_to: ``R@1``, ``R@10``, ``MRR``, the chance levels, ``n_gallery``, and the
    same figures for the untrained encoder under ``untrained``.
    """

    metrics: dict[str, Any] = field(default_factory=dict)


def resolve_loss(loss: str, modality: str) -> str:
    """``auto``: random-location negatives for ``loc``/``env``, supervised contrastive for
    ``sat``, symmetric CLIP otherwise."""
    if loss not in LOSSES:
        raise InvalidArgumentError(f"Unknown loss {loss!r}; expected one of: {', '.join(LOSSES)}.")
    if loss != "auto":
        return loss
    if modality in LOCATION_MODALITIES:
        return "random-negatives"
    return "supcon" if modality == "sat" else "clip"


def _held_out(model: BoundEncoder, data: BindData) -> dict[str, Any]:
    label = "test" if len(data.rows("test")) >= 2 else "val"
    rows = data.rows(label)
    was_training = model.training
    model.eval()
    with torch.no_grad():
        queries = model.embed(torch.from_numpy(data.features[rows])).numpy()
        gallery = model.embed_bind(torch.from_numpy(data.targets[rows])).numpy()
    model.train(was_training)
    return {"split": label, "n_gallery": len(rows), **retrieval_metrics(queries, gallery)}


@renamed_arguments(progress="show_progress")
def train_bind(
    data: Any,
    out: str | Path,
    *,
    modality: str = "env",
    bind_to: str = "image",
    head: str | None = None,
    hidden: int = 0,
    locked: bool = True,
    loss: str = "auto",
    direction_weights: tuple[float, float] | None = None,
    num_negatives: int | None = None,
    covariates: Any = None,
    bind_to_encoder: str | None = None,
    species_column: str = "species",
    split_column: str = "split",
    val_fraction: float = 0.1,
    epochs: int = 20,
    batch_size: int = 512,
    lr: float = 1e-4,
    weight_decay: float = 0.01,
    t0: int = 20,
    accumulate: int = 1,
    seed: int = 0,
    trainer: TrainerOptions | None = None,
    **trainer_options: Any,
) -> BindResult:
    """Bind ``modality``'s encoder to ``bind_to`` (TaxaBind §3) on ``data``; outputs go to ``out``.

    ``data``: an embedding/feature table (``io/tables.py`` format; its ``modality`` column holds the
    trained encoder's inputs (covariates for ``env``, cached backbone features otherwise) and its
    ``bind_to`` column the target embeddings), an observation table (CSV/Parquet with ``lat``,
    ``lon`` and media; env covariates and the targets are computed with ``covariates`` and
    ``load_encoder(bind_to, bind_to_encoder)``), or an :class:`EmbeddingBatch`. Optional columns:
    ``species`` (same-species rows are positives / never negatives), ``split`` (train/val/test).

    ``head``: ``sinr`` (default for ``env``: the whole SINR env encoder, saved so that
    ``load_encoder("env", "local-dir:RUN/best", covariates=...)`` loads it), ``linear`` (default
    otherwise: the fast path, a projection on cached features saved in the ``projection=PATH``
    format of the offline encoders), ``mlp`` (``hidden`` units) or ``geoclip`` (fine-tune the
    packaged GeoCLIP on ``lat``/``lon``). ``locked=False`` also trains a linear head on the
    binding side (initialised to the identity, saved in ``best/bind_head``).

    ``trainer``: devices, precision (``"fp32"`` or ``"bf16"``), ``resume`` and ``show_progress``
    (:class:`~ecomodal.training.trainer.TrainerOptions`); its fields may also be passed as
    keywords (``accelerator="gpu"``, ``precision="bf16"``, ``show_progress=False`` ...), which
    override ``trainer``. ``progress=`` is the deprecated name of ``show_progress=``.

    ``out`` receives ``best/`` (lowest validation loss), ``last/``, ``metrics.csv``,
    ``checkpoints/last.ckpt`` (resumes exactly with ``resume=True``) and ``run.json``. A
    non-finite loss raises :class:`TrainingError` naming the step, before any weight changes.
    Published settings: lr 1e-4, 20 epochs, batch 512 (loc, env) or 256, ``accumulate=8``.
    """
    options = trainer_from_keywords(trainer, trainer_options, function="train_bind")
    check_training_numbers(
        epochs=epochs,
        batch_size=batch_size,
        accumulate=accumulate,
        seed=seed,
        lr=lr,
        weight_decay=weight_decay,
        t0=t0,
        val_fraction=val_fraction,
        hidden=hidden,
        num_negatives=num_negatives,
    )
    if direction_weights is not None:
        if len(direction_weights) != 2:
            raise InvalidArgumentError(
                f"direction_weights must be two numbers; got {list(direction_weights)}."
            )
        for weight in direction_weights:
            check_range(weight, "direction_weights", minimum=0)
    check_accelerator_available(options)
    out = Path(out)
    head = check_head(head or ("sinr" if modality == "env" else "linear"))
    kind = resolve_loss(loss, modality)
    stack = None
    if modality == "env" and (kind == "random-negatives" or head == "sinr"):
        stack = open_covariates(covariates)
    rows = load_bind_data(
        data,
        modality=modality,
        bind_to=bind_to,
        head=head,
        covariates=stack,
        bind_to_encoder=bind_to_encoder,
        species_column=species_column,
        split_column=split_column,
        val_fraction=val_fraction,
        seed=seed,
    )
    negatives = None
    if kind == "random-negatives":
        if head == "geoclip":
            negatives = RandomLocations()
        elif stack is not None:
            if rows.features.shape[1] != stack.num_bands:
                raise TrainingError(
                    f"The {modality!r} inputs have {rows.features.shape[1]} values but the "
                    f"covariate stack has {stack.num_bands} bands; random-location negatives "
                    "need the same covariates (pass covariates=PATH)."
                )
            negatives = RandomLocations(stack)
        else:
            log.warning("No way to draw random-location negatives for %s; none are used.", modality)
    save_config = {"modality": modality, "bind_to": bind_to, "trained_by": "ecomodal train bind"}
    if head == "sinr" and stack is not None:
        save_config["covariate_bands"] = stack.band_names
        if stack.raster.source and Path(stack.raster.source).resolve() != _default_stack_path():
            save_config["covariates"] = str(stack.raster.source)
    elif head in ("linear", "mlp"):
        save_config.update(in_dim=rows.features.shape[1], out_dim=rows.targets.shape[1])
        save_config["hidden"] = hidden
    L.seed_everything(seed, workers=True, verbose=False)
    encoder = build_encoder(
        head, rows.features.shape[1], rows.targets.shape[1], hidden=hidden, seed=seed
    )
    model = BoundEncoder(
        encoder, rows.targets.shape[1], head=head, unlocked=not locked, save_config=save_config
    )
    untrained = _held_out(model, rows)
    weights = direction_weights or (
        RANDOM_NEGATIVE_WEIGHTS if kind == "random-negatives" else SYMMETRIC_WEIGHTS
    )
    task = BindTask(
        model,
        loss=kind,
        weights=tuple(weights),
        negatives=negatives,
        num_negatives=num_negatives,
        lr=lr,
        weight_decay=weight_decay,
        t0=t0,
        seed=seed,
    )
    out.mkdir(parents=True, exist_ok=True)
    trainer, trained = fit_resumably(
        task,
        BindDataModule(rows, batch_size=batch_size, seed=seed),
        out,
        epochs=epochs,
        trainer=options,
        accumulate_grad_batches=accumulate,
    )
    result = BindResult(**vars(trained))
    if trainer.is_global_zero:
        check_trained(result)
        model = model.cpu()
        if (result.best_dir / "model.safetensors").is_file():
            model.load_encoder_weights(result.best_dir)
        result.metrics = {**_held_out(model, rows), "untrained": untrained}
        summary = {
            "modality": modality,
            "bind_to": bind_to,
            "head": head,
            "loss": kind,
            "direction_weights": list(weights),
            "locked": locked,
            "best_val_loss": result.best_val_loss,
            "best_epoch": result.best_epoch,
            "epochs": result.epochs,
            "seed": seed,
            "batch_size": batch_size,
            "lr": lr,
            "rows": {s: len(rows.rows(s)) for s in ("train", "val", "test")},
            "held_out": result.metrics,
        }
        with atomic_path(out / "run.json") as tmp:
            tmp.write_text(json.dumps(summary, indent=2) + "\n")
        _record_encoder(out, modality, head)
    return result


def _record_encoder(out: Path, modality: str, head: str) -> None:
    """``out/encoders.json`` (:func:`ecomodal.load_encoders`) where ``best/`` loads as an encoder
    by itself: the SINR env encoder, or a projection on an offline backbone's features."""
    from ecomodal.encoders.offline import BOUND_BACKBONES
    from ecomodal.encoders.runs import write_run_encoders

    if head == "sinr" or (head in ("linear", "mlp") and modality in BOUND_BACKBONES):
        write_run_encoders(out, {modality: {"weights": out / "best"}})


def _default_stack_path() -> Path:
    from ecomodal.geo.covariates import default_covariates_path

    return default_covariates_path().resolve()
