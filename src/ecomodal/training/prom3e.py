"""``train_prom3e``: train ProM3E on an embedding table, resumably, on one or many devices."""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import lightning as L

from ecomodal.data.datamodules import EmbeddingDataModule
from ecomodal.deprecation import renamed_arguments
from ecomodal.errors import InvalidArgumentError, InvalidEmbeddingsError, UnknownModalityError
from ecomodal.io.atomic import atomic_path
from ecomodal.models.config import ProM3EConfig, check_noise
from ecomodal.precision import lightning_precision
from ecomodal.training.callbacks import TrainResult, check_trained, fit_resumably
from ecomodal.training.tasks import ProM3ETask, check_visible
from ecomodal.training.trainer import (
    TrainerOptions,
    check_accelerator_available,
    check_training_numbers,
    trainer_from_keywords,
)

log = logging.getLogger(__name__)


@renamed_arguments(progress="show_progress")
def train_prom3e(
    data,
    out: str | Path,
    *,
    epochs: int = 500,
    batch_size: int = 1024,
    seed: int = 0,
    lr: float = 1e-4,
    weight_decay: float = 0.01,
    t0: int = 20,
    val_fraction: float = 0.1,
    model_config: ProM3EConfig | Mapping[str, Any] | None = None,
    modalities: Sequence[str] | None = None,
    visible_counts: Sequence[int] = (1, 2),
    visible_probs: Sequence[float] = (0.9, 0.1),
    masked_only: bool | None = None,
    lambda_kl: float | None = None,
    noise: str | None = None,
    num_workers: int = 0,
    calibrate: bool = True,
    trainer: TrainerOptions | None = None,
    **trainer_options: Any,
) -> TrainResult:
    """Train ProM3E on ``data`` (an embedding-table path or an EmbeddingBatch) into ``out``.

    ``out`` receives ``best/`` and ``last/`` in the published checkpoint format, ``metrics.csv``,
    ``checkpoints/last.ckpt`` (full training state) and ``run.json``. Called again on the same
    ``out`` with ``resume=True``, training continues from the last finished epoch and ends with the
    same weights as an uninterrupted run. Multi-device and multi-node runs use Lightning's own
    strategies (``strategy="ddp"``, ``devices=2``, ``num_nodes=...``; Lightning detects SLURM).
    ``precision="bf16"`` trains in bfloat16 autocast.

    ``masked_only`` (reconstruct only the hidden modalities), ``lambda_kl`` (the KL weight,
    published 1e-3) and ``noise`` (``"per-row"``, published, or ``"per-dimension"`` latent noise)
    are stored in the model's config; given here, they override ``model_config``.

    With ``calibrate=True`` (default), ``best/`` is calibrated at the end on the validation rows
    (:func:`ecomodal.training.calibrate.calibrate`: neighbours from the training rows, the completion
    mix and the uncertainty model), so ``load_model(best_dir).complete`` is retrieval-augmented and
    gives ``expected_error``; the calibration report goes into ``run.json``.

    ``trainer``: devices, precision (``"fp32"`` or ``"bf16"``), ``resume`` and ``show_progress``
    (:class:`~ecomodal.training.trainer.TrainerOptions`); its fields may also be passed as
    keywords (``accelerator="gpu"``, ``show_progress=False`` ...), which override ``trainer``.
    ``progress=`` is the deprecated name of ``show_progress=``.
    """
    options = trainer_from_keywords(trainer, trainer_options, function="train_prom3e")
    check_training_numbers(
        epochs=epochs,
        batch_size=batch_size,
        seed=seed,
        lr=lr,
        weight_decay=weight_decay,
        t0=t0,
        val_fraction=val_fraction,
        num_workers=num_workers,
        lambda_kl=lambda_kl,
    )
    overrides = _config_overrides(masked_only=masked_only, lambda_kl=lambda_kl, noise=noise)
    if not isinstance(model_config, ProM3EConfig):
        sizes = ("input_dim", "embed_dim", "depth", "heads", "mlp_dim", "dropout")
        check_training_numbers(**{k: v for k, v in dict(model_config or {}).items() if k in sizes})
    check_accelerator_available(options)
    out = Path(out)
    if modalities is not None:
        check_modalities(data, modalities)
    if isinstance(model_config, ProM3EConfig):
        config = model_config
    else:
        values = dict(model_config or {})
        if "input_dim" not in values:  # take the embedding dimension from the data
            values["input_dim"] = infer_input_dim(data, modalities)
        config = ProM3EConfig.from_dict(values)
    if modalities is not None:
        config = ProM3EConfig.from_dict(
            {**config.to_dict(), "modalities": list(modalities), "num_modalities": len(modalities)}
        )
    config = dataclasses.replace(config, **overrides)
    check_visible(visible_counts, visible_probs, config.num_modalities)
    datamodule = EmbeddingDataModule(
        data,
        modalities=config.modalities,
        input_dim=config.input_dim,
        batch_size=batch_size,
        val_fraction=val_fraction,
        seed=seed,
        num_workers=num_workers,
    )
    datamodule.setup("fit")  # a table too small to train on is refused before anything is written
    L.seed_everything(seed, workers=True, verbose=False)
    task = ProM3ETask(
        config.to_dict(),
        lr=lr,
        weight_decay=weight_decay,
        t0=t0,
        visible_counts=tuple(visible_counts),
        visible_probs=tuple(visible_probs),
        seed=seed,
    )
    out.mkdir(parents=True, exist_ok=True)
    trainer, result = fit_resumably(
        task,
        datamodule,
        out,
        epochs=epochs,
        trainer=options,
        deterministic=False,
    )
    if trainer.is_global_zero:
        check_trained(result)
        calibration = None
        if calibrate:
            from ecomodal.training.calibrate import calibrate as fit_calibration

            rows = (datamodule.val_rows, datamodule.train_rows)
            calibration = fit_calibration(result.best_dir, data, rows=rows, seed=seed).report
        summary = {
            "best_val_loss": result.best_val_loss,
            "best_epoch": result.best_epoch,
            "epochs": result.epochs,
            "seed": seed,
            "batch_size": batch_size,
            "lr": lr,
            "precision": lightning_precision(options.precision),  # run.json keeps its values
            "model_config": config.to_dict(),
            **({"calibration": calibration} if calibration is not None else {}),
        }
        with atomic_path(out / "run.json") as tmp:
            tmp.write_text(json.dumps(summary, indent=2) + "\n")
    return result


def _config_overrides(**values: Any) -> dict[str, Any]:
    """The config fields given as ``train_prom3e`` keywords (None: not given), checked."""
    given = {name: value for name, value in values.items() if value is not None}
    if "masked_only" in given and not isinstance(given["masked_only"], bool):
        raise InvalidArgumentError(
            f"masked_only must be True or False; got {given['masked_only']!r}."
        )
    if "noise" in given:
        check_noise(given["noise"])
    return given


def _dims(data) -> tuple[dict[str, int], str]:
    """The dimension of each embedding column of ``data`` (a table path or a batch), and a name
    for it in messages."""
    if isinstance(data, (str, Path)):
        from ecomodal.io.reader import read_embeddings

        return dict(read_embeddings(data).dims), str(data)
    return {name: values.shape[1] for name, values in data.embeddings.items()}, "the batch"


def check_modalities(data, modalities: Sequence[str]) -> None:
    """An :class:`UnknownModalityError` naming every requested modality that ``data`` lacks."""
    dims, source = _dims(data)
    missing = [name for name in modalities if name not in dims]
    if missing or not modalities:
        raise UnknownModalityError(
            f"modalities {missing or list(modalities)} not found: {source} has the embedding "
            f"columns {sorted(dims)}."
        )


def infer_input_dim(data, modalities: Sequence[str] | None = None) -> int:
    """The common dimension of the table's embedding columns (those in ``modalities``)."""
    dims, source = _dims(data)
    if modalities is not None:
        dims = {k: v for k, v in dims.items() if k in modalities}
    if len(set(dims.values())) != 1:
        raise InvalidEmbeddingsError(
            f"Cannot infer the embedding dimension from {source}: columns have dimensions {dims}."
        )
    return next(iter(dims.values()))
