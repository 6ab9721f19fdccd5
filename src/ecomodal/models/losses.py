"""Training objectives: ProM3E (§4) and TaxaBind binding (§3)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def contrastive_reconstruction_loss(
    reconstruction: torch.Tensor,
    target: torch.Tensor,
    target_present: torch.Tensor,
    scale: torch.Tensor,
    shift: torch.Tensor,
    anchors: torch.Tensor | None = None,
) -> torch.Tensor:
    """Mean over modalities of the distance-based contrastive loss between decoded and true embeddings.

    For modality i over the batch, ``d(j, p) = ||fhat_i[j] - f_i[p]||``, ``logits = scale * d + shift``
    and the loss is the cross-entropy of row j against target p = j. Only rows whose target is
    present take part (as anchors and as candidates); ``anchors`` [B, M] can restrict the anchors
    further (e.g. to masked modalities only). Modalities with fewer than two such rows are skipped.

    Args:
        reconstruction, target: [B, M, D] L2-normalised embeddings.
        target_present: [B, M] boolean, where the true embedding exists.
        scale, shift: the learnable scalars a and b.
        anchors: optional [B, M] boolean mask of the (row, modality) pairs that are scored.
    """
    batch = reconstruction.shape[0]
    rec = reconstruction.transpose(0, 1)  # [M, B, D]
    tgt = target.transpose(0, 1)
    present = target_present.transpose(0, 1)  # [M, B]
    use = present if anchors is None else present & anchors.transpose(0, 1)
    sq = (
        rec.pow(2).sum(-1, keepdim=True)
        + tgt.pow(2).sum(-1).unsqueeze(1)
        - 2.0 * torch.bmm(rec, tgt.transpose(1, 2))
    )  # [M, B, B]
    dist = torch.sqrt(sq.clamp_min(1e-12))
    logits = scale * dist + shift
    # A large finite fill (not -inf) keeps gradients finite for modalities with no rows.
    logits = logits.masked_fill(~present.unsqueeze(1), -1e9)
    diag = torch.arange(batch, device=reconstruction.device)
    per_anchor = F.cross_entropy(
        logits.reshape(-1, batch), diag.repeat(present.shape[0]), reduction="none"
    ).view(present.shape[0], batch)
    per_anchor = per_anchor.masked_fill(~use, 0.0)
    counts = use.sum(-1)
    scored = (counts > 0) & (present.sum(-1) >= 2)
    if not bool(scored.any()):
        return reconstruction.sum() * 0.0
    per_modality = per_anchor.sum(-1)[scored] / counts[scored]
    return per_modality.mean()


def kl_divergence(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """``-0.5 * mean(1 + logvar - mu^2 - exp(logvar))`` over batch and latent dimensions."""
    return -0.5 * torch.mean(1.0 + logvar - mu.pow(2) - logvar.exp())


def prom3e_loss(
    outputs: dict[str, torch.Tensor],
    target: torch.Tensor,
    target_present: torch.Tensor,
    scale: torch.Tensor,
    shift: torch.Tensor,
    lambda_kl: float = 1e-3,
    anchors: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """Total ProM3E loss = reconstruction + ``lambda_kl`` * KL, from :meth:`ProM3E.forward` outputs."""
    recon = contrastive_reconstruction_loss(
        outputs["reconstruction"], target, target_present, scale, shift, anchors
    )
    kl = kl_divergence(outputs["mu"], outputs["logvar"])
    return {"loss": recon + lambda_kl * kl, "reconstruction": recon, "kl": kl}


# ---------------------------------------------------------------------------- TaxaBind binding (§3)
#: TaxaBind's temperature: ``logit_scale`` starts at log(1/0.07) and is clamped to log(100).
LOGIT_SCALE_INIT = math.log(1.0 / 0.07)
LOGIT_SCALE_MAX = math.log(100.0)
#: Published direction weights: (binding -> [other; negatives], other -> binding).
RANDOM_NEGATIVE_WEIGHTS = (0.4, 0.6)
SYMMETRIC_WEIGHTS = (0.5, 0.5)


def clamp_logit_scale_(logit_scale: torch.Tensor) -> torch.Tensor:
    """Clamp a learnable log temperature in place to at most log(100) (done after each step)."""
    with torch.no_grad():
        logit_scale.clamp_(max=LOGIT_SCALE_MAX)
    return logit_scale


def same_species_mask(species: torch.Tensor) -> torch.Tensor:
    """[N, N] boolean: True between *different* rows with the same species code."""
    same = species.unsqueeze(0) == species.unsqueeze(1)
    return same & ~torch.eye(len(species), dtype=torch.bool, device=species.device)


def random_negative_loss(
    bind: torch.Tensor,
    other: torch.Tensor,
    negatives: torch.Tensor | None,
    logit_scale: torch.Tensor,
    species: torch.Tensor | None = None,
    weights: tuple[float, float] = RANDOM_NEGATIVE_WEIGHTS,
) -> torch.Tensor:
    """TaxaBind's loss for ``loc`` and ``env``: ``w0 * CE(bind -> [other; negatives]) +
    w1 * CE(other -> bind)``, row i's match being column i.

    ``negatives`` [K, D] are the trained modality's embeddings at random locations (appended as
    extra candidates for the binding side). Entries between different rows of the same species
    (``species`` codes [N]) are set to -inf in both directions, so they are not negatives. All
    embeddings are L2-normalised by the caller; logits are ``a @ b.T * exp(logit_scale)``.
    """
    scale = logit_scale.exp()
    target = torch.arange(len(bind), device=bind.device)
    candidates = other if negatives is None else torch.cat([other, negatives])
    forward = bind @ candidates.T * scale  # [N, N + K]
    backward = other @ bind.T * scale  # [N, N]
    if species is not None:
        mask = same_species_mask(species)
        pad = forward.shape[1] - len(bind)
        forward = forward.masked_fill(F.pad(mask, (0, pad)), float("-inf"))
        backward = backward.masked_fill(mask, float("-inf"))
    return weights[0] * F.cross_entropy(forward, target) + weights[1] * F.cross_entropy(
        backward, target
    )


def supervised_contrastive_loss(
    bind: torch.Tensor,
    other: torch.Tensor,
    logit_scale: torch.Tensor,
    species: torch.Tensor,
    weights: tuple[float, float] = SYMMETRIC_WEIGHTS,
) -> torch.Tensor:
    """TaxaBind's loss for ``sat``: cross-modal supervised contrastive, same species = positive.

    For anchor i, ``loss_i = -mean over positives p of log softmax(logits_i)[p]`` (the positives
    are the rows of the same species, i itself included); averaged over anchors, then over the
    two directions with ``weights``.
    """
    scale = logit_scale.exp()
    positive = (species.unsqueeze(0) == species.unsqueeze(1)).to(bind.dtype)
    total = bind.new_zeros(())
    for weight, logits in (
        (weights[0], bind @ other.T * scale),
        (weights[1], other @ bind.T * scale),
    ):
        log_prob = F.log_softmax(logits, dim=1)
        per_anchor = -(log_prob * positive).sum(1) / positive.sum(1)
        total = total + weight * per_anchor.mean()
    return total


def clip_loss(
    bind: torch.Tensor,
    other: torch.Tensor,
    logit_scale: torch.Tensor,
    weights: tuple[float, float] = SYMMETRIC_WEIGHTS,
) -> torch.Tensor:
    """Symmetric CLIP cross-entropy (TaxaBind's ``audio`` loss): row i matches column i."""
    return random_negative_loss(bind, other, None, logit_scale, None, weights)
