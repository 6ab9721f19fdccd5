"""SINR's residual MLP (``ResidualFCNet``), the TaxaBind environment encoder (reference §2).

``feats`` = Linear(inputs -> width), ReLU, then ``depth`` residual layers
``x + ReLU(w2(Dropout(ReLU(w1(x)))))``; the ``feats`` output is the embedding. Tensor names follow
the published state dict (``feats.0.weight``, ``feats.2.w1.weight``, ..., optional ``class_emb``).
"""

from __future__ import annotations

import torch
from torch import nn


class ResidualLayer(nn.Module):
    """x + ReLU(w2(Dropout(ReLU(w1(x)))))."""

    def __init__(self, width: int, dropout: float = 0.5) -> None:
        super().__init__()
        self.w1 = nn.Linear(width, width)
        self.w2 = nn.Linear(width, width)
        self.dropout1 = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.w1(x))
        y = torch.relu(self.w2(self.dropout1(y)))
        return x + y


class SINRResidualMLP(nn.Module):
    """SINR ``ResidualFCNet``: ``forward(covariates [N, num_inputs]) -> [N, num_filts]``.

    ``num_classes`` > 0 keeps SINR's species head (``class_emb``, unused for embeddings) so that
    checkpoints that carry it load strictly.
    """

    def __init__(
        self,
        num_inputs: int = 20,
        num_filts: int = 512,
        depth: int = 4,
        num_classes: int = 0,
        dropout: float = 0.5,
    ) -> None:
        super().__init__()
        self.num_inputs = num_inputs
        self.num_filts = num_filts
        layers: list[nn.Module] = [nn.Linear(num_inputs, num_filts), nn.ReLU()]
        layers += [ResidualLayer(num_filts, dropout) for _ in range(depth)]
        self.feats = nn.Sequential(*layers)
        self.class_emb = nn.Linear(num_filts, num_classes, bias=False) if num_classes else None

    def forward(self, covariates: torch.Tensor) -> torch.Tensor:
        return self.feats(covariates)
