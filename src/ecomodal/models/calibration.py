"""Retrieval-augmented completion and its uncertainty model (a ProM3E model's calibration).

A calibrated model folder holds, beside the published weights, three things fitted by
``ecomodal calibrate`` (:mod:`ecomodal.training.calibrate`) on rows the model never trained on:

- :class:`NeighbourBank`: reference rows (the training table's embeddings). For a row to complete,
  the rows nearest in its visible modalities (mean cosine over them) are found, and their
  embeddings of each missing modality are averaged with softmax weights.
- :class:`CompletionMix`: per visible set and completed modality, the weights of ProM3E's own
  completion, the neighbours' average and the reference mean in the final completion (and the
  neighbour count and softmax temperature), tuned on validation rows to maximise the cosine to the
  truth.
- :class:`ErrorModel`: predicts the completion error ``1 - cosine(completion,
  truth)`` from what the completion reveals (agreement of ProM3E with the neighbours, how close and
  how concentrated the neighbours are, sigma_l1): one ridge regression per visible set and
  completed modality, plus split-conformal quantiles of ``observed / predicted`` error per pair,
  which give intervals of the cosine.

These are plain tensors, not ``nn.Module`` parameters, so the model's own state dict (and the
published checkpoint format) stays exactly as it is. Reading and writing: :mod:`ecomodal.io.calibration`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ecomodal.errors import InvalidArgumentError

#: What the error model reads per (row, completed modality), before the visible/target one-hots.
FEATURES = (
    "top1_similarity",
    "mean_top10_similarity",
    "mean_top50_similarity",
    "neighbour_concentration",
    "prom3e_neighbour_agreement",
    "prom3e_mean_agreement",
    "completion_mean_agreement",
    "log_sigma_l1",
)
#: Neighbours searched per row at least (their similarities are features of the error model).
SEARCH_K = 50
DEFAULT_K = 10
#: Most query-by-bank similarities a neighbour search holds at once (64 MB of float32).
SEARCH_CELLS = 1 << 24
DEFAULT_TEMPERATURE = 0.05
#: Weights of (ProM3E, neighbours, reference mean) where no tuned entry exists.
DEFAULT_WEIGHTS = (0.5, 0.5, 0.0)


def visible_key(modalities: Sequence[str], visible: Sequence[bool] | torch.Tensor) -> str:
    """The name of a visible set, in the model's modality order: ``"loc+env"``."""
    return "+".join(m for m, on in zip(modalities, visible, strict=True) if bool(on))


class NeighbourBank:
    """Reference rows for retrieval: unit ``embeddings`` [N, M, D] (zeros where absent) and
    ``present`` [N, M], in the model's modality order; ``mean`` [M, D] is each modality's
    normalised mean over the rows that have it. Held as one contiguous [N, D] block per modality
    (``columns``), the operand of the similarity GEMMs."""

    def __init__(self, embeddings: torch.Tensor, present: torch.Tensor, modalities: Sequence[str]):
        self._set([embeddings[:, m] for m in range(embeddings.shape[1])], present, modalities)

    @classmethod
    def from_columns(
        cls, columns: Sequence[torch.Tensor], present: torch.Tensor, modalities: Sequence[str]
    ) -> NeighbourBank:
        """A bank from one [N, D] block per modality (any float dtype), made one at a time."""
        bank = cls.__new__(cls)
        bank._set(columns, present, modalities, in_place=True)
        return bank

    def _set(self, columns, present, modalities, *, in_place: bool = False) -> None:
        """Unit columns, zero where absent; ``in_place``: float32 columns are normalised where
        they are (no copy)."""
        self.modalities = tuple(modalities)
        self.present = present.to(torch.bool)
        self.columns = []
        for m, column in enumerate(columns):
            if column.dtype != torch.float32:
                column = column.float()  # a new tensor
            elif not in_place:
                column = column.clone()
            norm = column.norm(dim=-1, keepdim=True).clamp_(min=1e-12)
            column.div_(norm).mul_(self.present[:, m, None])
            self.columns.append(column)
        #: Which modalities any row has, and whether every row has every modality.
        self.has = [bool(v) for v in self.present.any(0)]
        self.full = bool(self.present.all())
        counts = self.present.sum(0).clamp(min=1)
        self.mean = F.normalize(
            torch.stack([c.sum(0) / n for c, n in zip(self.columns, counts, strict=True)]), dim=-1
        )

    @property
    def embeddings(self) -> torch.Tensor:
        """[N, M, D] (a new tensor; the bank keeps one block per modality)."""
        return torch.stack(self.columns, dim=1)

    def __len__(self) -> int:
        return int(self.present.shape[0])

    def search(
        self, queries: torch.Tensor, visible: Sequence[int], k: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The ``k`` rows nearest to ``queries`` [B, M, D] by mean cosine over the ``visible``
        modality indices (rows lacking one of them never match): similarities and indices [B, k].
        Queries go in chunks of at most ``SEARCH_CELLS`` similarities, so memory does not grow
        with the batch."""
        usable = [m for m in visible if self.has[m]]
        if not usable:
            raise InvalidArgumentError("The neighbour bank has none of the visible modalities.")
        lacking = None if self.full else ~self.present[:, usable].all(1)
        k = min(int(k), len(self))
        chunk = max(1, SEARCH_CELLS // max(len(self), 1))
        found = [
            self._search_chunk(queries[start : start + chunk], usable, lacking, k)
            for start in range(0, queries.shape[0], chunk)
        ]
        if len(found) == 1:
            return found[0]
        return torch.cat([f[0] for f in found]), torch.cat([f[1] for f in found])

    def _search_chunk(self, queries, usable, lacking, k):
        sims = queries[:, usable[0]].float() @ self.columns[usable[0]].T
        for m in usable[1:]:
            sims.addmm_(queries[:, m].float(), self.columns[m].T)
        sims /= len(usable)
        if lacking is not None:
            sims.masked_fill_(lacking.unsqueeze(0), float("-inf"))
        return torch.topk(sims, k, dim=1)

    def neighbour_average(
        self,
        sims: torch.Tensor,
        index: torch.Tensor,
        target: int,
        k: int,
        temperature: float,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Softmax(sim / temperature)-weighted average of the ``k`` best neighbours' ``target``
        embeddings: the raw average [B, D] (its norm is the neighbours' concentration) and the
        normalised one."""
        sims, index = sims[:, :k], index[:, :k]
        has = self.present[index, target]
        logits = (sims / temperature).masked_fill(~has, float("-inf"))
        weights = torch.softmax(logits, dim=1).nan_to_num(0.0)
        # A weighted bag of rows: no [B, k, D] copy of the neighbours is made.
        raw = F.embedding_bag(index, self.columns[target], per_sample_weights=weights, mode="sum")
        return raw, F.normalize(raw, dim=-1)


@dataclass
class MixEntry:
    """How one (visible set, completed modality) pair is mixed."""

    k: int = DEFAULT_K
    temperature: float = DEFAULT_TEMPERATURE
    weights: tuple[float, float, float] = DEFAULT_WEIGHTS

    def to_dict(self) -> dict:
        return {"k": self.k, "temperature": self.temperature, "weights": list(self.weights)}

    @classmethod
    def from_dict(cls, values: dict) -> MixEntry:
        weights = tuple(float(w) for w in values["weights"])
        if len(weights) != 3 or min(weights) < 0 or sum(weights) <= 0:
            raise ValueError(f"mix weights must be 3 non-negative numbers; got {weights}")
        return cls(int(values["k"]), float(values["temperature"]), weights)  # type: ignore[arg-type]


@dataclass
class CompletionMix:
    """Tuned mix entries keyed ``"<visible set>><target>"`` (e.g. ``"loc+env>sat"``)."""

    entries: dict[str, MixEntry] = field(default_factory=dict)

    def entry(self, visible_name: str, target: str) -> MixEntry:
        return self.entries.get(f"{visible_name}>{target}", MixEntry())

    def max_k(self) -> int:
        return max([DEFAULT_K, *(e.k for e in self.entries.values())])


class ErrorModel:
    """Predicts ``1 - cosine(completion, truth)`` from the completion's features: one ridge
    regression per (visible set, completed modality) pair, keyed ``"loc+env>sat"``, and one per
    completed modality over every visible set (``"*>sat"``) for sets never calibrated. Intervals
    come from split-conformal quantiles of observed / expected error per key (``ratio_quantiles``
    [P, Q] at ``levels`` [Q])."""

    def __init__(
        self,
        tensors: dict[str, torch.Tensor],
        modalities: Sequence[str],
        keys: Sequence[str],
        *,
        method: str = "ridge-per-pair-on-neighbour-features",
    ):
        self.tensors = {name: t.float() for name, t in tensors.items()}
        self.modalities = tuple(modalities)
        self.keys = list(keys)
        self.method = method
        self._index = {key: i for i, key in enumerate(self.keys)}

    def key_index(self, visible_name: str, target: str) -> int | None:
        """Row of the tensors for a visible set and completed modality (None: no model)."""
        found = self._index.get(f"{visible_name}>{target}")
        return self._index.get(f"*>{target}") if found is None else found

    def predict(self, key: int, features: torch.Tensor) -> torch.Tensor:
        """Expected error [N] for the feature rows [N, F] of pair ``key``, in [0.001, 2]."""
        t = self.tensors
        x = (features.float() - t["feature_mean"][key]) / t["feature_std"][key]
        return (x @ t["coef"][key] + t["intercept"][key]).clamp(1e-3, 2.0)

    def interval(
        self, expected_error: np.ndarray, visible: np.ndarray, coverage: float
    ) -> tuple[np.ndarray, np.ndarray]:
        """Cosine range [low, high] per entry of ``expected_error`` [B, M] given the rows'
        ``visible`` masks [B, M] (NaN stays NaN)."""
        if not 0.0 < float(coverage) < 1.0:
            raise InvalidArgumentError(f"coverage must be between 0 and 1; got {coverage!r}.")
        levels = self.tensors["levels"].numpy()
        table = self.tensors["ratio_quantiles"].numpy()
        low_ratio = np.array([np.interp((1 - coverage) / 2, levels, q) for q in table])
        high_ratio = np.array([np.interp((1 + coverage) / 2, levels, q) for q in table])
        low = np.full(expected_error.shape, np.nan)
        high = np.full(expected_error.shape, np.nan)
        visible = np.asarray(visible, dtype=bool)
        patterns, inverse = np.unique(visible, axis=0, return_inverse=True)
        for p, pattern in enumerate(patterns):
            rows = np.flatnonzero(inverse.reshape(-1) == p)
            name = visible_key(self.modalities, pattern)
            for target, modality in enumerate(self.modalities):
                key = None if pattern[target] else self.key_index(name, modality)
                if key is None:
                    continue
                values = expected_error[rows, target]
                low[rows, target] = 1.0 - np.minimum(values * high_ratio[key], 2.0)
                high[rows, target] = 1.0 - values * low_ratio[key]
        return low, high


@dataclass
class Calibration:
    """What ``ecomodal calibrate`` adds to a model: neighbours, the mix and (optionally) the error
    model. :meth:`apply` turns a batch of ProM3E completions into the final ones."""

    bank: NeighbourBank
    mix: CompletionMix
    error_model: ErrorModel | None = None
    report: dict = field(default_factory=dict)

    def apply(
        self,
        inputs: torch.Tensor,
        visible: torch.Tensor,
        decoded: torch.Tensor,
        sigma_l1: torch.Tensor,
        *,
        k: int | None = None,
        with_error: bool = True,
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
        """Mix ProM3E's completions ``decoded`` [B, M, D] with the neighbours of ``inputs``
        (unit vectors, zeros where not visible) and predict their error.

        Returns the final embeddings [B, M, D] (visible modalities: ProM3E's own), the expected
        error [B, M] (NaN where visible; ``None`` without an error model or ``with_error=False``)
        and the error model's features [B, M, F] (NaN where visible).
        """
        modalities = self.bank.modalities
        n_mod = len(modalities)
        final = decoded.clone()
        features = decoded.new_full((decoded.shape[0], n_mod, len(FEATURES)), float("nan"))
        expected = decoded.new_full((decoded.shape[0], n_mod), float("nan"))
        codes = (visible.long() * (2 ** torch.arange(n_mod, device=visible.device))).sum(1)
        for code in torch.unique(codes).tolist():
            rows = (codes == code).nonzero(as_tuple=True)[0]
            vis = [m for m in range(n_mod) if (code >> m) & 1]
            name = visible_key(modalities, [(code >> m) & 1 for m in range(n_mod)])
            usable = [m for m in vis if self.bank.has[m]]
            entries = {t: self.mix.entry(name, modalities[t]) for t in range(n_mod) if t not in vis}
            if not usable or not entries:
                continue
            kmax = max(k or max(e.k for e in entries.values()), SEARCH_K)
            sims, index = self.bank.search(inputs[rows], usable, kmax)
            sig = torch.log(sigma_l1[rows].float().clamp(min=1e-12))
            for target, entry in entries.items():
                if not self.bank.has[target]:
                    continue
                use_k = k or entry.k
                raw, avg = self.bank.neighbour_average(
                    sims, index, target, use_k, entry.temperature
                )
                own = decoded[rows, target].float()
                mean = self.bank.mean[target].expand_as(own)
                w_model, w_neigh, w_mean = entry.weights
                mixed = F.normalize(w_model * own + w_neigh * avg + w_mean * mean, dim=-1)
                final[rows, target] = mixed.to(final.dtype)
                group = torch.stack(
                    [
                        sims[:, 0],
                        sims[:, :10].mean(1),
                        sims[:, :SEARCH_K].mean(1),
                        raw.norm(dim=-1),
                        (own * avg).sum(-1),
                        (own * mean).sum(-1),
                        (mixed * mean).sum(-1),
                        sig,
                    ],
                    dim=1,
                )
                features[rows, target] = group
                key = None
                if with_error and self.error_model is not None:
                    key = self.error_model.key_index(name, modalities[target])
                if key is not None:
                    expected[rows, target] = self.error_model.predict(key, group)
        if not with_error or self.error_model is None:
            expected = None
        return final, expected, features


def has_uncertainty_model(model: Any) -> bool:
    """Whether a ProM3E model carries an uncertainty model (``ecomodal calibrate``)."""
    calibration = getattr(model, "calibration", None)
    return calibration is not None and getattr(calibration, "error_model", None) is not None


def resolve_calibration(
    own: Calibration | None, neighbours: object, modalities: tuple[str, ...]
) -> Calibration | None:
    """The calibration a ``complete`` call uses: ``None`` -> the model's own; ``False`` -> none;
    a table (path, EmbeddingTable, EmbeddingBatch) or :class:`NeighbourBank` -> those rows as
    neighbours, with the model's tuned mix and error model when it has them."""
    if neighbours is None:
        return own
    if neighbours is False:
        return None
    if neighbours is True:
        if own is None:
            raise InvalidArgumentError(
                "neighbours=True, but the model has no neighbour bank; pass a table as "
                "neighbours=..., or calibrate the model (ecomodal calibrate)."
            )
        return own
    if isinstance(neighbours, Calibration):
        return neighbours
    if isinstance(neighbours, NeighbourBank):
        bank = neighbours
    else:
        from ecomodal.io.reader import as_batch

        stacked, present = as_batch(neighbours).stack(list(modalities))
        bank = NeighbourBank(torch.as_tensor(stacked), torch.as_tensor(present), modalities)
    if bank.modalities != tuple(modalities):
        raise InvalidArgumentError(
            f"neighbours have modalities {list(bank.modalities)}; the model has {list(modalities)}."
        )
    if own is None:
        return Calibration(bank, CompletionMix())
    return Calibration(bank, own.mix, own.error_model, own.report)
