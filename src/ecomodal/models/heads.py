"""Small trainable heads put on top of frozen backbone features (the binding fast path)."""

from __future__ import annotations

import math

import torch
from torch import nn

from ecomodal.errors import InvalidArgumentError


class ProjectionHead(nn.Module):
    """Features [N, in_dim] -> [N, out_dim]: a bias-free linear map, or with ``hidden`` > 0 a
    small MLP (Linear, ReLU, Linear).

    The linear head stores its matrix as ``projection.weight``: the format the offline encoders
    load with ``projection=PATH`` (see ``encoders/offline.py``).
    """

    def __init__(self, in_dim: int, out_dim: int, hidden: int = 0) -> None:
        super().__init__()
        self.in_dim, self.out_dim, self.hidden = in_dim, out_dim, hidden
        if hidden:
            self.projection = nn.Sequential(
                nn.Linear(in_dim, hidden), nn.ReLU(), nn.Linear(hidden, out_dim)
            )
        else:
            self.projection = nn.Linear(in_dim, out_dim, bias=False)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.projection(features)


class MarginClassifier(nn.Module):
    """Margin-based softmax logits against fixed class centres (ArcFace / UNICOM style).

    ``logits[i, j] = scale * cos(theta_ij)``, except for the true class ``y_i`` where the angle is
    widened by ``margin`` (radians): ``scale * cos(min(theta_iy + margin, pi))``, so an embedding
    must sit closer than ``margin`` inside its centre's region to win. Centres (e.g. k-means
    pseudo-class centroids) are stored L2-normalised as a buffer and are not trained.
    """

    def __init__(self, centres: torch.Tensor, margin: float = 0.3, scale: float = 32.0) -> None:
        super().__init__()
        if centres.ndim != 2:
            raise InvalidArgumentError(
                f"centres must be [classes, dim]; got shape {list(centres.shape)}."
            )
        if margin < 0 or scale <= 0:
            raise InvalidArgumentError(f"Need margin >= 0 and scale > 0; got {margin} and {scale}.")
        self.margin, self.scale = float(margin), float(scale)
        self.register_buffer("centres", nn.functional.normalize(centres.float(), dim=-1))

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Logits [N, classes]; with ``labels`` the true class gets the margin (training)."""
        cosine = nn.functional.normalize(embeddings, dim=-1) @ self.centres.T
        if labels is None or self.margin == 0:
            return self.scale * cosine
        rows = torch.arange(len(labels), device=labels.device)
        cos_y = cosine[rows, labels]
        # cos(theta + m) = cos(theta) cos(m) - sin(theta) sin(m); the floor keeps sqrt's gradient
        # finite at theta = 0. Past theta + m = pi the logit stays at cos(pi) = -1.
        sin_y = torch.sqrt((1 - cos_y * cos_y).clamp(min=1e-12))
        target = cos_y * math.cos(self.margin) - sin_y * math.sin(self.margin)
        target = torch.where(cos_y < -math.cos(self.margin), -torch.ones_like(target), target)
        logits = cosine.clone()
        logits[rows, labels] = target
        return self.scale * logits
