"""Cluster discrimination (UNICOM-style): k-means pseudo-classes and a margin-softmax head.

For each cluster count K: the binding embeddings of the train rows are clustered into K
pseudo-classes with seeded FAISS k-means (spherical, on L2-normalised vectors); a head
(:class:`~ecomodal.models.heads.ProjectionHead`) is trained on the feature column to put each row
near its cluster centre with a margin-based softmax
(:class:`~ecomodal.models.heads.MarginClassifier`); the head's outputs are then scored by
zero-shot accuracy (against the taxa's ``text`` embeddings, when the table has them) and k-shot
nearest-centroid accuracy on the test rows, next to the same scores of a reference column
(e.g. BioCLIP embeddings). :func:`cluster_sweep` runs a whole sweep (e.g. K = 100 ... 10000) and
writes ``cluster_sweep.csv`` / ``.json`` / ``.png``: which K comes closest to the reference.
"""

from __future__ import annotations

import contextlib
import csv
import json
import logging
import math
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from ecomodal.data.datamodules import EpochShuffleSampler
from ecomodal.data.splits import make_split
from ecomodal.deprecation import renamed_arguments
from ecomodal.errors import CheckpointError, InvalidArgumentError, InvalidEmbeddingsError
from ecomodal.io.atomic import atomic_path
from ecomodal.io.batch import EmbeddingBatch
from ecomodal.io.checkpoints import save_checkpoint
from ecomodal.io.reader import TableLike, as_batch
from ecomodal.models.heads import MarginClassifier, ProjectionHead
from ecomodal.options import parse_numbers
from ecomodal.training.callbacks import fit_resumably, load_resume_state
from ecomodal.training.trainer import (
    TrainerOptions,
    check_accelerator_available,
    check_training_numbers,
    trainer_from_keywords,
)
from ecomodal.vectors import normalise

log = logging.getLogger(__name__)

#: The cluster counts of the encoder study (reference section 7).
STUDY_KS = (100, 500, 1000, 2000, 3000, 5000, 10000)
SWEEP_CSV = "cluster_sweep.csv"
SWEEP_JSON = "cluster_sweep.json"
SWEEP_PNG = "cluster_sweep.png"
#: A sweep's default trainer options: no progress bar.
SWEEP_TRAINER = TrainerOptions(show_progress=False)


# --------------------------------------------------------------------------- k-means


@dataclass
class KMeansResult:
    """Centres [K, D] (L2-normalised), the cluster of every row, and the mean cosine to it."""

    centres: np.ndarray
    assignments: np.ndarray
    mean_cosine: float


def kmeans(
    embeddings: np.ndarray,
    k: int,
    *,
    seed: int = 0,
    niter: int = 20,
    max_points_per_centroid: int = 256,
) -> KMeansResult:
    """Spherical k-means with FAISS on L2-normalised ``embeddings`` [N, D]; same seed, same
    result. FAISS subsamples to ``max_points_per_centroid * k`` rows for training (seeded)."""
    import faiss

    x = np.ascontiguousarray(normalise(np.asarray(embeddings, dtype=np.float32)))
    if not 1 <= k <= len(x):
        raise InvalidArgumentError(
            f"Cannot make {k} clusters from {len(x)} rows; need 1 <= K <= rows."
        )
    if not np.isfinite(x).all():
        raise InvalidEmbeddingsError("k-means input holds NaN or infinite values.")
    model = faiss.Kmeans(
        x.shape[1],
        int(k),
        niter=int(niter),
        seed=int(seed),
        spherical=True,
        verbose=False,
        max_points_per_centroid=int(max_points_per_centroid),
        min_points_per_centroid=1,
    )
    model.train(x)
    similarity, assignment = model.index.search(x, 1)
    return KMeansResult(
        centres=normalise(model.centroids.astype(np.float32)),
        assignments=assignment[:, 0].astype(np.int64),
        mean_cosine=float(similarity.mean()),
    )


# --------------------------------------------------------------------------- training


class ClusterDiscriminationTask(L.LightningModule):
    """Trains a :class:`ProjectionHead` so that each row's output falls in its k-means cluster,
    with the margin softmax of :class:`MarginClassifier` against the (fixed) cluster centres."""

    def __init__(
        self,
        in_dim: int,
        centres: torch.Tensor,
        *,
        hidden: int = 0,
        margin: float = 0.3,
        scale: float = 32.0,
        lr: float = 1e-3,
        weight_decay: float = 1e-4,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["centres"])
        self.head = ProjectionHead(in_dim, centres.shape[1], hidden)
        self.classifier = MarginClassifier(centres, margin=margin, scale=scale)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """L2-normalised embeddings in the centres' space."""
        return nn.functional.normalize(self.head(features), dim=-1)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int):
        features, labels = batch
        loss = nn.functional.cross_entropy(self.classifier(self.head(features), labels), labels)
        self.log("train/loss", loss, on_step=False, on_epoch=True, prog_bar=True)
        return loss

    def configure_optimizers(self):
        return torch.optim.AdamW(
            self.head.parameters(), lr=self.hparams.lr, weight_decay=self.hparams.weight_decay
        )

    @property
    def model(self) -> HeadFolder:
        """What a run's exports save (``last/`` after every epoch): the head's folder format."""
        return HeadFolder(self.head)


@dataclass(frozen=True)
class HeadFolder:
    """A :class:`ProjectionHead` written as ``config.json`` + ``model.safetensors``."""

    head: ProjectionHead

    def save_pretrained(self, directory: str | Path) -> Path:
        config = {"in_dim": self.head.in_dim, "out_dim": self.head.out_dim}
        return save_checkpoint(self.head, {**config, "hidden": self.head.hidden}, directory)


class ClusterData(L.LightningDataModule):
    """Batches of (features, cluster) rows in an order set by the seed and the epoch alone
    (:class:`~ecomodal.data.datamodules.EpochShuffleSampler`), so a run resumed at an epoch
    boundary sees the batches an uninterrupted run would."""

    def __init__(self, features: np.ndarray, assignments: np.ndarray, batch_size: int, seed: int):
        super().__init__()
        self.data = TensorDataset(
            torch.from_numpy(np.asarray(features, np.float32)),
            torch.from_numpy(np.asarray(assignments, np.int64)),
        )
        self.batch_size, self.seed = batch_size, seed

    def train_dataloader(self) -> DataLoader:
        sampler = EpochShuffleSampler(
            len(self.data), self.batch_size, drop_last=False, seed=self.seed
        )
        return DataLoader(self.data, sampler=sampler, batch_size=None)


@dataclass(frozen=True)
class HeadConfig:
    """How the cluster-discrimination head is built and trained (one place for the defaults)."""

    hidden: int = 0
    margin: float = 0.3
    scale: float = 32.0
    epochs: int = 10
    batch_size: int = 256
    lr: float = 1e-3

    def __post_init__(self) -> None:
        check_training_numbers(**asdict(self))  # every field has its range there


@renamed_arguments(progress="show_progress")
def train_cluster_head(
    features: np.ndarray,
    assignments: np.ndarray,
    centres: np.ndarray,
    config: HeadConfig | None = None,
    *,
    seed: int = 0,
    accelerator: str = "cpu",
    show_progress: bool = False,
    run_dir: str | Path | None = None,
    resume: bool = False,
) -> tuple[ClusterDiscriminationTask, float]:
    """Train the head (see :class:`HeadConfig`) on ``features`` [N, F] to the clusters
    ``assignments`` [N]; returns the trained task and its last epoch's mean loss. Same seed,
    same weights.

    ``run_dir``: the run folder (resume state ``checkpoints/last.ckpt`` after every epoch, ``last/``,
    ``metrics.csv`` with each epoch once; default: a temporary folder); with ``resume``, a run
    killed there continues at the next epoch and ends with the weights of an uninterrupted run."""
    c = config or HeadConfig()
    L.seed_everything(seed, workers=True, verbose=False)
    task = ClusterDiscriminationTask(
        features.shape[1],
        torch.from_numpy(np.asarray(centres, np.float32)),
        hidden=c.hidden,
        margin=c.margin,
        scale=c.scale,
        lr=c.lr,
    )
    data = ClusterData(features, assignments, c.batch_size, seed)
    options = TrainerOptions(accelerator=accelerator, resume=resume, show_progress=show_progress)
    with contextlib.ExitStack() as stack:
        out = Path(run_dir or stack.enter_context(tempfile.TemporaryDirectory()))
        if resume:
            _check_resume_state(out / "checkpoints" / "last.ckpt", task)
        _, result = fit_resumably(
            task, data, out, epochs=c.epochs, trainer=options, deterministic=True
        )
        loss = _last_train_loss(result.metrics_path)
    return task.cpu().eval(), loss


def _check_resume_state(path: Path, task: ClusterDiscriminationTask) -> None:
    """A resume state in ``path`` must come from this head and these clusters: a
    :class:`CheckpointError` names what differs (a run with other options or data)."""
    if not path.is_file():
        return
    state = load_resume_state(path)
    saved = dict(state.get("hyper_parameters") or {})
    for name, value in task.hparams.items():
        if saved.get(name) != value:
            raise CheckpointError(
                f"{path}: written by a run with {name}={saved.get(name)!r}, this one has "
                f"{name}={value!r}; delete it to train this K again, or pass --no-resume "
                "(resume=False)."
            )
    centres = state["state_dict"].get("classifier.centres")
    if centres is None or not torch.equal(centres, task.classifier.centres.cpu()):
        raise CheckpointError(
            f"{path}: written for other k-means clusters (another table, seed or --niter); "
            "delete it to train this K again, or pass --no-resume (resume=False)."
        )


def _last_train_loss(metrics: Path) -> float:
    """The mean training loss of the last epoch in a run's ``metrics.csv`` (NaN without one)."""
    if not metrics.is_file():
        return math.nan
    with metrics.open(newline="") as handle:
        losses = [row["train/loss"] for row in csv.DictReader(handle) if row.get("train/loss")]
    return float(losses[-1]) if losses else math.nan


# --------------------------------------------------------------------------- evaluation


def evaluate_embeddings(
    batch: EmbeddingBatch,
    column: str,
    *,
    label: str,
    split: np.ndarray,
    text: str = "text",
    shots: int = 5,
    repeats: int = 5,
    seed: int = 0,
) -> dict[str, float]:
    """Zero-shot top-1 (``column`` vs the mean ``text`` embedding of each ``label``; NaN without
    a text column) and ``shots``-shot nearest-centroid accuracy on the test rows of ``split``."""
    from ecomodal.eval.few_shot import few_shot
    from ecomodal.eval.zero_shot import zero_shot

    scores = {"zero_shot": math.nan, "few_shot": math.nan}
    if text in batch.embeddings and text != column:
        result = zero_shot(
            batch, label=label, visible=(column,), text=text, split=split, ks=(1,), seed=seed
        )
        scores["zero_shot"] = result["methods"]["direct"][label]["top1"]
    result = few_shot(
        batch,
        label=label,
        features=(column,),
        shots=(shots,),
        repeats=repeats,
        methods=("centroid",),
        split=split,
        seed=seed,
    )
    per_k = next(iter(result["results"].values()))[str(shots)]
    if "centroid" in per_k:
        scores["few_shot"] = per_k["centroid"]["mean"]
    return scores


# --------------------------------------------------------------------------- sweep


@dataclass
class ClusterRun:
    """The scores of one cluster count."""

    k: int
    zero_shot: float
    few_shot: float
    train_loss: float
    kmeans_mean_cosine: float
    clusters_used: int
    head_dir: str


@dataclass
class SweepResult:
    """A whole sweep: one run per K, the reference scores, and the K closest to the reference."""

    out: Path
    runs: list[ClusterRun]
    reference: dict[str, float]
    closest_k: int | None
    csv_path: Path
    json_path: Path
    png_path: Path


def parse_ks(text: str | Sequence[int]) -> list[int]:
    """``"100,500,1000"`` (or a sequence) -> sorted distinct cluster counts, each >= 2."""
    items = text if isinstance(text, str) else [v for v in text if str(v).strip()]
    values = parse_numbers(items, int, option="--k")
    if not values or min(values) < 2:
        raise InvalidArgumentError(f"--k needs cluster counts of at least 2; got {text!r}.")
    return sorted(set(values))


def _closest(runs: Sequence[ClusterRun], reference: dict[str, float]) -> int | None:
    """The K whose scores are nearest the reference's (sum of absolute gaps over the scores
    both have)."""
    best, best_gap = None, math.inf
    for run in runs:
        gaps = [
            abs(getattr(run, name) - reference[name])
            for name in ("zero_shot", "few_shot")
            if math.isfinite(getattr(run, name)) and math.isfinite(reference[name])
        ]
        if gaps and sum(gaps) < best_gap:
            best, best_gap = run.k, sum(gaps)
    return best


@renamed_arguments(progress="show_progress")
def cluster_sweep(
    data: TableLike,
    out: str | Path,
    *,
    ks: str | Sequence[int] = STUDY_KS,
    embedding: str = "image",
    features: str | None = None,
    reference: str | None = None,
    label: str = "scientific_name",
    text: str = "text",
    split: str | np.ndarray = "published",
    shots: int = 5,
    repeats: int = 5,
    head: HeadConfig | None = None,
    niter: int = 20,
    seed: int = 0,
    trainer: TrainerOptions | None = None,
    **trainer_options: Any,
) -> SweepResult:
    """Sweep the cluster count K of UNICOM-style cluster discrimination on an embedding table.

    For each K: seeded FAISS k-means of the ``embedding`` column over the train rows of ``split``
    (``"published"``: the table's ``split`` column; ``"random"``: seeded), a head trained on the
    ``features`` column (default: ``embedding``) with the margin softmax against the centres
    (``head``: its size, margin, scale and training, see :class:`HeadConfig`),
    saved to ``out/k{K}/`` (``config.json`` + ``model.safetensors``, ``centres.npy``,
    ``metrics.json``), then scored on the test rows: zero-shot top-1 of ``label`` against the
    ``text`` embeddings (if the table has them) and ``shots``-shot nearest-centroid accuracy
    (mean of ``repeats`` seeded draws). The ``reference`` column (default: ``embedding``) is
    scored the same way. Writes ``cluster_sweep.csv`` (one row per K), ``cluster_sweep.json``
    (with the reference and the K closest to it) and ``cluster_sweep.png``. Each K's head keeps
    its resume state in ``out/k{K}/checkpoints/last.ckpt`` after every epoch (and ``last/``,
    ``metrics.csv``). With ``resume``, a K whose ``metrics.json`` exists is not redone, and a K
    stopped mid-training (killed) continues at the next epoch, ending with the weights and
    scores of an uninterrupted sweep.

    ``trainer``: :class:`~ecomodal.training.trainer.TrainerOptions` (default: no progress bar);
    the heads train on one ``accelerator`` device in fp32, so only ``accelerator``, ``resume``
    and ``show_progress`` apply. Those may also be passed as keywords (``progress=`` is the
    deprecated name of ``show_progress=``).
    """
    options = trainer_from_keywords(
        trainer, trainer_options, function="cluster_sweep", default=SWEEP_TRAINER
    )
    _check_single_device(options)
    check_training_numbers(shots=shots, repeats=repeats, niter=niter, seed=seed)
    check_accelerator_available(options)
    out = Path(out)
    k_values = parse_ks(ks)
    batch = as_batch(data)
    features = features or embedding
    reference = reference or embedding
    for name in {embedding, features, reference}:
        batch.modality(name)  # a clear error for a missing column
    sides = make_split(batch, split, seed=seed)
    train = np.flatnonzero((sides == "train") & batch.has_all([embedding, features]))
    if len(train) < max(k_values):
        raise InvalidArgumentError(
            f"K={max(k_values)} needs at least as many train rows with {embedding!r} and "
            f"{features!r} embeddings; the table has {len(train)}."
        )
    scored = {
        "split": sides,
        "label": label,
        "text": text,
        "shots": shots,
        "repeats": repeats,
        "seed": seed,
    }
    ref_scores = evaluate_embeddings(batch, reference, **scored)
    out.mkdir(parents=True, exist_ok=True)
    runs: list[ClusterRun] = []
    all_rows = np.flatnonzero(batch.has_all([features]))
    for k in k_values:
        run_dir = out / f"k{k}"
        done = run_dir / "metrics.json"
        if options.resume and done.is_file():
            runs.append(ClusterRun(**json.loads(done.read_text())))
            log.info("K=%d already done; skipped", k)
            continue
        clusters = kmeans(batch.embeddings[embedding][train], k, seed=seed, niter=niter)
        task, loss = train_cluster_head(
            batch.embeddings[features][train],
            clusters.assignments,
            clusters.centres,
            head,
            seed=seed,
            accelerator=options.accelerator,
            show_progress=options.show_progress,
            run_dir=run_dir,
            resume=options.resume,
        )
        with torch.no_grad():
            projected = task(torch.from_numpy(batch.embeddings[features][all_rows])).cpu().numpy()
        head_column = np.zeros((len(batch), projected.shape[1]), dtype=np.float32)
        head_column[all_rows] = projected
        present = np.zeros(len(batch), dtype=bool)
        present[all_rows] = True
        scored_batch = _with_column(batch, "cluster_head", head_column, present)
        scores = evaluate_embeddings(scored_batch, "cluster_head", **scored)
        task.model.save_pretrained(run_dir)
        with atomic_path(run_dir / "centres.npy") as tmp, tmp.open("wb") as handle:
            np.save(handle, clusters.centres)
        run = ClusterRun(
            k=k,
            zero_shot=scores["zero_shot"],
            few_shot=scores["few_shot"],
            train_loss=loss,
            kmeans_mean_cosine=clusters.mean_cosine,
            clusters_used=int(len(np.unique(clusters.assignments))),
            head_dir=str(run_dir),
        )
        with atomic_path(done) as tmp:
            tmp.write_text(json.dumps(asdict(run), indent=2) + "\n")
        runs.append(run)
        log.info("K=%d: zero-shot %.4f, few-shot %.4f", k, run.zero_shot, run.few_shot)
    result = SweepResult(
        out=out,
        runs=runs,
        reference={"column": reference, **ref_scores},
        closest_k=_closest(runs, ref_scores),
        csv_path=out / SWEEP_CSV,
        json_path=out / SWEEP_JSON,
        png_path=out / SWEEP_PNG,
    )
    _write_results(result, shots)
    return result


def _check_single_device(options: TrainerOptions) -> None:
    single = TrainerOptions(accelerator=options.accelerator)
    for name in ("devices", "num_nodes", "strategy", "precision"):
        if getattr(options, name) != getattr(single, name):
            raise InvalidArgumentError(
                f"cluster_sweep trains its heads on one device in fp32; got {name}="
                f"{getattr(options, name)!r} (leave it at {getattr(single, name)!r})."
            )


def _with_column(
    batch: EmbeddingBatch, name: str, values: np.ndarray, present: np.ndarray
) -> EmbeddingBatch:
    return EmbeddingBatch(
        ids=batch.ids,
        embeddings={**batch.embeddings, name: values},
        present={**batch.present, name: present},
        columns=batch.columns,
        encoders={**batch.encoders, name: None},
    )


def _write_results(result: SweepResult, shots: int) -> None:
    fields = [f for f in ClusterRun.__dataclass_fields__ if f != "head_dir"]
    with atomic_path(result.csv_path) as tmp, tmp.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(fields)
        for run in result.runs:
            writer.writerow([getattr(run, f) for f in fields])
    summary: dict[str, Any] = {
        "runs": [asdict(run) for run in result.runs],
        "reference": result.reference,
        "closest_k": result.closest_k,
        "shots": shots,
    }
    with atomic_path(result.json_path) as tmp:
        tmp.write_text(json.dumps(summary, indent=2, allow_nan=True) + "\n")
    plot_sweep(result, shots)


def plot_sweep(result: SweepResult, shots: int) -> Path:
    """Accuracy against K (log scale) for zero- and few-shot, the reference as dashed lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ks = [run.k for run in result.runs]
    fig, ax = plt.subplots(figsize=(7, 4))
    for name, title in (("zero_shot", "zero-shot top-1"), ("few_shot", f"{shots}-shot centroid")):
        values = [getattr(run, name) for run in result.runs]
        if not any(math.isfinite(v) for v in values):
            continue
        (line,) = ax.plot(ks, values, marker="o", label=f"cluster head: {title}")
        if math.isfinite(result.reference[name]):
            ax.axhline(
                result.reference[name],
                linestyle="--",
                color=line.get_color(),
                label=f"{result.reference['column']}: {title}",
            )
    ax.set_xscale("log")
    ax.set_title("Cluster discrimination: accuracy by number of clusters")
    ax.set_xlabel("number of k-means clusters (K)")
    ax.set_ylabel("accuracy (test rows)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_path(result.png_path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
    return result.png_path
