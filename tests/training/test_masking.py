import torch

from ecomodal.training.tasks import draw_visible


def test_draw_visible_follows_published_recipe():
    g = torch.Generator().manual_seed(0)
    present = torch.rand(20000, 6, generator=g) < 0.8
    present[:, 0] = True
    visible = draw_visible(present, (1, 2), (0.9, 0.1), generator=g)
    assert not (visible & ~present).any()  # only modalities a row has
    counts = visible.sum(1)
    assert counts.min() >= 1
    has_two = present.sum(1) >= 2
    share_two = (counts[has_two] == 2).float().mean().item()
    assert 0.08 < share_two < 0.12
    # every present modality gets drawn
    per_modality = visible.float().mean(0)
    assert (per_modality > 0.1).all()


def test_draw_visible_is_seeded_and_caps_at_what_a_row_has():
    present = torch.zeros(100, 6, dtype=torch.bool)
    present[:, 3] = True
    a = draw_visible(present, (2,), (1.0,), generator=torch.Generator().manual_seed(1))
    assert torch.equal(a, present)
    p = torch.ones(50, 6, dtype=torch.bool)
    x = draw_visible(p, generator=torch.Generator().manual_seed(5))
    y = draw_visible(p, generator=torch.Generator().manual_seed(5))
    assert torch.equal(x, y)
