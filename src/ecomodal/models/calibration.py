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
- :class:`ErrorModel`: a small MLP that predicts the completion error ``1 - cosine(completion,
  truth)`` from what the completion reveals (agreement of ProM3E with the neighbours, how close and
  how concentrated the neighbours are, sigma_l1, the visible set), plus split-conformal quantiles of
  ``observed / predicted`` error per completed modality, which give intervals of the cosine.

These are plain tensors, not ``nn.Module`` parameters, so the model's own state dict (and the
published checkpoint format) stays exactly as it is. Reading and writing: :mod:`ecomodal.io.calibration`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from ecomodal.errors import InvalidArgumentError

#: What the error model reads per (row, completed modality), before the visible/target one-hots.
FEATURES = (
    "top1_similarity",
    "mean_topk_similarity",
    "neighbour_concentration",
    "prom3e_neighbour_agreement",
    "prom3e_mean_agreement",
    "completion_mean_agreement",
    "log_sigma_l1",
    "visible_fraction",
)
DEFAULT_K = 10
DEFAULT_TEMPERATURE = 0.05
#: Weights of (ProM3E, neighbours, reference mean) where no tuned entry exists.
DEFAULT_WEIGHTS = (0.5, 0.5, 0.0)


def visible_key(modalities: Sequence[str], visible: Sequence[bool] | torch.Tensor) -> str:
    """The name of a visible set, in the model's modality order: ``"loc+env"``."""
    return "+".join(m for m, on in zip(modalities, visible, strict=True) if bool(on))


@dataclass
class NeighbourBank:
    """Reference rows for retrieval: unit ``embeddings`` [N, M, D] (zeros where absent) and
    ``present`` [N, M], in the model's modality order; ``mean`` [M, D] is each modality's
    normalised mean over the rows that have it."""

    embeddings: torch.Tensor
    present: torch.Tensor
    modalities: tuple[str, ...]
    mean: torch.Tensor = field(init=False)

    def __post_init__(self) -> None:
        self.embeddings = F.normalize(self.embeddings.float(), dim=-1).contiguous()
        self.present = self.present.to(torch.bool)
        self.embeddings = self.embeddings * self.present.unsqueeze(-1)
        counts = self.present.sum(0).clamp(min=1).unsqueeze(-1)
        self.mean = F.normalize(self.embeddings.sum(0) / counts, dim=-1)
        # One contiguous [N, D] block per modality, for the similarity GEMMs.
        self._columns = [self.embeddings[:, m].contiguous() for m in range(len(self.modalities))]

    def __len__(self) -> int:
        return int(self.embeddings.shape[0])

    def search(
        self, queries: torch.Tensor, visible: Sequence[int], k: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The ``k`` rows nearest to ``queries`` [B, M, D] by mean cosine over the ``visible``
        modality indices (rows lacking one of them never match): similarities and indices [B, k]."""
        usable = [m for m in visible if bool(self.present[:, m].any())]
        if not usable:
            raise InvalidArgumentError("The neighbour bank has none of the visible modalities.")
        sims = sum(queries[:, m].float() @ self._columns[m].T for m in usable) / len(usable)
        lacking = ~self.present[:, usable].all(1)
        if bool(lacking.any()):
            sims = sims.masked_fill(lacking.unsqueeze(0), float("-inf"))
        k = min(int(k), len(self))
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
        raw = torch.einsum("bk,bkd->bd", weights, self._columns[target][index])
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
    """Predicts ``1 - cosine(completion, truth)`` per completed modality; intervals by split-
    conformal quantiles of observed / predicted error (``ratio_quantiles`` [M, Q] at ``levels``)."""

    def __init__(
        self,
        tensors: dict[str, torch.Tensor],
        modalities: Sequence[str],
        *,
        method: str = "mlp-on-neighbour-features",
    ):
        self.tensors = {name: t.float() for name, t in tensors.items()}
        self.modalities = tuple(modalities)
        self.method = method
        self.num_layers = sum(1 for name in self.tensors if name.startswith("weight_"))

    def predict(self, features: torch.Tensor) -> torch.Tensor:
        """Expected error for feature rows [N, F] (one-hots included): [N], in [0, 2]."""
        t = self.tensors
        x = (features.float() - t["feature_mean"]) / t["feature_std"]
        for i in range(self.num_layers):
            x = F.linear(x, t[f"weight_{i}"], t[f"bias_{i}"])
            if i < self.num_layers - 1:
                x = F.gelu(x)
        return F.softplus(x[:, 0]).clamp(max=2.0)

    def interval(
        self, expected_error: np.ndarray, coverage: float
    ) -> tuple[np.ndarray, np.ndarray]:
        """Cosine range [low, high] per entry of ``expected_error`` [B, M] (NaN stays NaN)."""
        if not 0.0 < float(coverage) < 1.0:
            raise InvalidArgumentError(f"coverage must be between 0 and 1; got {coverage!r}.")
        levels = self.tensors["levels"].numpy()
        quantiles = self.tensors["ratio_quantiles"].numpy()
        low_ratio = np.array([np.interp((1 - coverage) / 2, levels, q) for q in quantiles])
        high_ratio = np.array([np.interp((1 + coverage) / 2, levels, q) for q in quantiles])
        error_low = expected_error * low_ratio[None, :]
        error_high = expected_error * high_ratio[None, :]
        return 1.0 - np.minimum(error_high, 2.0), 1.0 - error_low


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
        codes = (visible.long() * (2 ** torch.arange(n_mod, device=visible.device))).sum(1)
        for code in torch.unique(codes).tolist():
            rows = (codes == code).nonzero(as_tuple=True)[0]
            vis = [m for m in range(n_mod) if (code >> m) & 1]
            name = visible_key(modalities, [(code >> m) & 1 for m in range(n_mod)])
            usable = [m for m in vis if bool(self.bank.present[:, m].any())]
            entries = {t: self.mix.entry(name, modalities[t]) for t in range(n_mod) if t not in vis}
            if not usable or not entries:
                continue
            kmax = k or max(e.k for e in entries.values())
            sims, index = self.bank.search(inputs[rows], usable, kmax)
            sig = torch.log(sigma_l1[rows].float().clamp(min=1e-12))
            for target, entry in entries.items():
                if not bool(self.bank.present[:, target].any()):
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
                features[rows, target] = torch.stack(
                    [
                        sims[:, 0],
                        sims[:, :use_k].mean(1),
                        raw.norm(dim=-1),
                        (own * avg).sum(-1),
                        (own * mean).sum(-1),
                        (mixed * mean).sum(-1),
                        sig,
                        torch.full_like(sig, len(vis) / n_mod),
                    ],
                    dim=1,
                )
        expected = None
        if with_error and self.error_model is not None:
            expected = self.expected_error(features, visible)
        return final, expected, features

    def expected_error(self, features: torch.Tensor, visible: torch.Tensor) -> torch.Tensor:
        """The error model on features [B, M, F]: [B, M], NaN where a modality is visible (or
        could not be completed from neighbours)."""
        assert self.error_model is not None
        batch, n_mod, _ = features.shape
        full = error_model_inputs(features, visible)
        flat = full.reshape(batch * n_mod, -1)
        ok = torch.isfinite(flat).all(1)
        out = flat.new_full((batch * n_mod,), float("nan"))
        if bool(ok.any()):
            out[ok] = self.error_model.predict(flat[ok])
        return out.view(batch, n_mod)


def error_model_inputs(features: torch.Tensor, visible: torch.Tensor) -> torch.Tensor:
    """The error model's input [B, M, F + 2M]: the features, the visible one-hot of the row and
    the completed modality's one-hot."""
    batch, n_mod, _ = features.shape
    vis = visible.to(features.dtype).unsqueeze(1).expand(batch, n_mod, n_mod)
    target = torch.eye(n_mod, dtype=features.dtype, device=features.device)
    return torch.cat([features, vis, target.expand(batch, n_mod, n_mod)], dim=-1)


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
