"""ProM3E's training objective: contrastive reconstruction plus a variational bottleneck (§4)."""

from __future__ import annotations

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
