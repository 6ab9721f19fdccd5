"""Building blocks of ProM3E, named so that the published state dict loads without conversion."""

from __future__ import annotations

from torch import nn


class MLPBlock(nn.Module):
    """``LayerNorm -> Linear -> GELU -> Dropout -> Linear -> Dropout`` (state-dict names ``net.0/1/4``).

    ProM3E uses this shape for its modality projectors, its decoders and the transformer MLP.
    """

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int, dropout: float = 0.0):
        super().__init__()
        self.net = nn.Sequential(
            nn.LayerNorm(in_dim),
            nn.Linear(in_dim, hidden_dim),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Linear(hidden_dim, out_dim),
            nn.Dropout(dropout),
        )

    @property
    def norm(self) -> nn.LayerNorm:
        return self.net[0]

    @property
    def fc1(self) -> nn.Linear:
        return self.net[1]

    @property
    def fc2(self) -> nn.Linear:
        return self.net[4]

    def forward(self, x):
        return self.net(x)


class EncoderBlock(nn.Module):
    """A post-norm transformer block: ``x = LN1(MHA(x) + x); x = LN2(MLP(x) + x)``.

    ``attn`` is a standard multi-head attention with packed q/k/v input projection; it serves here
    as the container of the published parameters (``attn.in_proj_weight`` ...). ProM3E's own
    forward pass reads those parameters directly so it can skip tokens whose output is unused.
    """

    def __init__(self, dim: int, heads: int, mlp_dim: int, dropout: float = 0.0):
        super().__init__()
        self.attn = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = MLPBlock(dim, mlp_dim, dim, dropout)
        self.heads = heads
