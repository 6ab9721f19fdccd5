"""A straightforward implementation of the published ProM3E forward pass.

It is the baseline of ``prom3e_throughput.py`` and the oracle of the equivalence tests: every token
goes through every block, projectors and decoders run in a Python loop over modalities, attention
is ``torch.nn.MultiheadAttention``. Its parameter names are the published ones (reference §4.1).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _mlp(in_dim: int, hidden: int, out_dim: int, dropout: float) -> nn.Module:
    module = nn.Module()
    module.net = nn.Sequential(
        nn.LayerNorm(in_dim),
        nn.Linear(in_dim, hidden),
        nn.GELU(),
        nn.Dropout(dropout),
        nn.Linear(hidden, out_dim),
        nn.Dropout(dropout),
    )
    module.forward = module.net.forward
    return module


class _Block(nn.Module):
    def __init__(self, dim: int, heads: int, mlp_dim: int, dropout: float):
        super().__init__()
        self.attn = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = _mlp(dim, mlp_dim, dim, dropout)

    def forward(self, x: torch.Tensor, key_padding_mask: torch.Tensor | None) -> torch.Tensor:
        attended = self.attn(x, x, x, key_padding_mask=key_padding_mask, need_weights=False)[0]
        x = self.norm1(attended + x)
        return self.norm2(self.mlp(x) + x)


class PublishedProM3E(nn.Module):
    """The published architecture, computed the plain way. Same constructor arguments as ProM3E."""

    def __init__(
        self,
        input_dim: int = 512,
        embed_dim: int = 1024,
        num_modalities: int = 6,
        depth: int = 1,
        heads: int = 8,
        mlp_dim: int = 2048,
        num_register_tokens: int = 4,
        num_cls_tokens: int = 2,
        dropout: float = 0.1,
        **_ignored,
    ):
        super().__init__()
        self.num_modalities = num_modalities
        self.cls_tokens = nn.Parameter(torch.randn(num_cls_tokens, embed_dim) * 0.02)
        self.register_tokens = nn.Parameter(torch.randn(num_register_tokens, embed_dim) * 0.02)
        self.negative_scale = nn.Parameter(torch.tensor(-5.0))
        self.negative_shift = nn.Parameter(torch.tensor(5.0))
        self.projectors = nn.ModuleList(
            _mlp(input_dim, embed_dim, embed_dim, dropout) for _ in range(num_modalities)
        )
        self.modality_identifiers = nn.ParameterList(
            nn.Parameter(torch.randn(embed_dim) * 0.02) for _ in range(num_modalities)
        )
        self.encoder = nn.ModuleList(
            _Block(embed_dim, heads, mlp_dim, dropout) for _ in range(depth)
        )
        self.decoders = nn.ModuleList(
            _mlp(embed_dim, embed_dim, input_dim, dropout) for _ in range(num_modalities)
        )

    def encode(self, embeddings: torch.Tensor, visible: torch.Tensor) -> torch.Tensor:
        """All tokens after the encoder: [B, 6 + S, E] for the S modalities visible in any row.

        Rows that lack one of those modalities see it as padding.
        """
        batch = embeddings.shape[0]
        slots = [i for i in range(self.num_modalities) if bool(visible[:, i].any())]
        tokens = [
            self.projectors[i](embeddings[:, i]) + self.modality_identifiers[i] for i in slots
        ]
        special = torch.cat([self.cls_tokens, self.register_tokens]).expand(batch, -1, -1)
        x = torch.cat([special, torch.stack(tokens, dim=1)], dim=1)
        padding = torch.cat([visible.new_zeros(batch, special.shape[1]), ~visible[:, slots]], dim=1)
        for block in self.encoder:
            x = block(x, padding)
        return x

    def forward(
        self, embeddings: torch.Tensor, visible: torch.Tensor, eps: torch.Tensor | None = None
    ):
        """mu, logvar, hidden tokens and decoded modalities; ``eps`` [B] is the latent noise."""
        hidden = self.encode(embeddings, visible)
        mu = F.normalize(hidden[:, 0], dim=-1)
        logvar = hidden[:, 1]
        z = mu if eps is None else mu + torch.exp(0.5 * logvar) * eps[:, None]
        decoded = [F.normalize(self.decoders[i](z), dim=-1) for i in range(self.num_modalities)]
        return {
            "mu": mu,
            "logvar": logvar,
            "hidden": hidden,
            "reconstruction": torch.stack(decoded, dim=1),
            "z": z,
        }
