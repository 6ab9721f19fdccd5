import torch
import torch.nn.functional as F

from ecomodal.models.losses import contrastive_reconstruction_loss, kl_divergence, prom3e_loss


def _hand_loss(rec, tgt, present, a, b, anchors=None):
    """The published definition, one modality and one anchor at a time."""
    losses = []
    for m in range(rec.shape[1]):
        rows = [j for j in range(rec.shape[0]) if present[j, m]]
        if len(rows) < 2:
            continue
        terms = []
        for j in rows:
            if anchors is not None and not anchors[j, m]:
                continue
            logits = torch.stack([a * torch.dist(rec[j, m], tgt[p, m]) + b for p in rows])
            terms.append(-F.log_softmax(logits, 0)[rows.index(j)])
        if terms:
            losses.append(torch.stack(terms).mean())
    return torch.stack(losses).mean()


def test_contrastive_loss_matches_hand_computation():
    g = torch.Generator().manual_seed(0)
    rec = F.normalize(torch.randn(7, 4, 8, generator=g), dim=-1)
    tgt = F.normalize(torch.randn(7, 4, 8, generator=g), dim=-1)
    present = torch.rand(7, 4, generator=g) < 0.7
    present[:, 3] = False
    present[0, 3] = True  # a single row: modality skipped
    a, b = torch.tensor(-5.0), torch.tensor(5.0)
    got = contrastive_reconstruction_loss(rec, tgt, present, a, b)
    torch.testing.assert_close(got, _hand_loss(rec, tgt, present, a, b))
    anchors = torch.rand(7, 4, generator=g) < 0.5
    got = contrastive_reconstruction_loss(rec, tgt, present, a, b, anchors)
    torch.testing.assert_close(got, _hand_loss(rec, tgt, present, a, b, anchors))


def test_perfect_reconstruction_has_low_loss_and_finite_gradients():
    tgt = F.normalize(torch.randn(16, 3, 8), dim=-1)
    present = torch.ones(16, 3, dtype=torch.bool)
    present[:, 2] = False  # a modality no row has: gradients must stay finite
    rec = tgt.clone().requires_grad_(True)
    a = torch.tensor(-20.0, requires_grad=True)
    loss = contrastive_reconstruction_loss(rec, tgt, present, a, torch.tensor(5.0))
    loss.backward()
    assert loss < 0.01
    assert torch.isfinite(rec.grad).all() and torch.isfinite(a.grad)
    shuffled = contrastive_reconstruction_loss(tgt.roll(1, 0), tgt, present, a, torch.tensor(5.0))
    assert shuffled > 1.0


def test_kl_and_total():
    mu = torch.tensor([[0.6, 0.8]])
    logvar = torch.tensor([[0.0, -1.0]])
    expected = -0.5 * torch.mean(1 + logvar - mu**2 - logvar.exp())
    torch.testing.assert_close(kl_divergence(mu, logvar), expected)
    assert kl_divergence(torch.zeros(1, 2), torch.zeros(1, 2)) == 0
    tgt = F.normalize(torch.randn(4, 2, 8), dim=-1)
    out = prom3e_loss(
        {"reconstruction": tgt, "mu": mu.expand(4, -1), "logvar": logvar.expand(4, -1)},
        tgt,
        torch.ones(4, 2, dtype=torch.bool),
        torch.tensor(-5.0),
        torch.tensor(5.0),
        0.5,
    )
    torch.testing.assert_close(out["loss"], out["reconstruction"] + 0.5 * out["kl"])
