"""Building blocks of ProM3E, named so that the published state dict loads without conversion."""

from __future__ import annotations

import torch
import torch.nn.functional as F
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


class StackedMLPs(nn.Module):
    """``count`` parallel :class:`MLPBlock` s applied to one shared input, stored stacked.

    Running all of them is one batched GEMM per layer instead of a loop, and their gradients land
    in a few large tensors. The state dict uses the names a ``ModuleList`` of ``MLPBlock`` would
    (``{i}.net.0.weight`` ...), so published checkpoints load unchanged.
    """

    _PARTS = (
        ("norm_weight", "net.0.weight"),
        ("norm_bias", "net.0.bias"),
        ("fc1_weight", "net.1.weight"),
        ("fc1_bias", "net.1.bias"),
        ("fc2_weight", "net.4.weight"),
        ("fc2_bias", "net.4.bias"),
    )

    def __init__(
        self,
        count: int,
        in_dim: int,
        hidden_dim: int,
        out_dim: int,
        dropout: float = 0.0,
        eps: float = 1e-5,
    ):
        super().__init__()
        self.count = count
        self.in_dim = in_dim
        self.dropout = dropout
        self.eps = eps
        blocks = [MLPBlock(in_dim, hidden_dim, out_dim) for _ in range(count)]
        for name, published in self._PARTS:
            stacked = torch.stack([b.get_parameter(published).detach() for b in blocks])
            self.register_parameter(name, nn.Parameter(stacked))
        self.register_state_dict_post_hook(_split_stacked)
        self.register_load_state_dict_pre_hook(_merge_stacked)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Input [B, in_dim] -> output [B, count, out_dim]."""
        n = F.layer_norm(x, (self.in_dim,), eps=self.eps)
        # per-block LayerNorm affine, then the first layer of every block: [count, B, hidden]
        normed = torch.addcmul(
            self.norm_bias.unsqueeze(1), n.unsqueeze(0), self.norm_weight.unsqueeze(1)
        )
        hidden = batched_linear(normed, self.fc1_weight, self.fc1_bias)
        hidden = F.dropout(F.gelu(hidden), self.dropout, self.training)
        out = batched_linear(hidden, self.fc2_weight, self.fc2_bias)
        return F.dropout(out, self.dropout, self.training).transpose(0, 1)

    def folded_first_layer(self) -> tuple[torch.Tensor, torch.Tensor]:
        """fc1 with the LayerNorm affine folded in, all blocks concatenated: [count*hidden, in]."""
        weight = (self.fc1_weight * self.norm_weight[:, None, :]).reshape(-1, self.in_dim)
        bias = torch.einsum("mhe,me->mh", self.fc1_weight, self.norm_bias) + self.fc1_bias
        return weight, bias.reshape(-1)


def _split_stacked(module: StackedMLPs, state_dict, prefix, local_metadata) -> None:
    for name, published in module._PARTS:
        stacked = state_dict.pop(prefix + name)
        for i in range(module.count):
            state_dict[f"{prefix}{i}.{published}"] = stacked[i]


def _merge_stacked(module: StackedMLPs, state_dict, prefix, *args) -> None:
    for name, published in module._PARTS:
        keys = [f"{prefix}{i}.{published}" for i in range(module.count)]
        if all(k in state_dict for k in keys):
            state_dict[prefix + name] = torch.stack([state_dict.pop(k) for k in keys])


class _BatchedLinear(torch.autograd.Function):
    """y[m] = x[m] @ weight[m].T + bias[m], with weights in nn.Linear's [count, out, in] layout.

    Autograd's own bmm backward takes the weight gradient through a transposed operand, which is
    about 40% slower on CPU; this computes it as grad.T @ x, straight into the weight's layout.
    """

    @staticmethod
    def forward(ctx, x, weight, bias):
        ctx.save_for_backward(x, weight)
        return torch.baddbmm(bias.unsqueeze(1), x, weight.transpose(1, 2))

    @staticmethod
    def backward(ctx, grad):
        x, weight = ctx.saved_tensors
        grad_x = torch.bmm(grad, weight) if ctx.needs_input_grad[0] else None
        grad_w = torch.bmm(grad.transpose(1, 2), x) if ctx.needs_input_grad[1] else None
        grad_b = grad.sum(1) if ctx.needs_input_grad[2] else None
        return grad_x, grad_w, grad_b


def batched_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """Apply ``count`` linear layers at once: x [count, B, in] -> [count, B, out].

    Under autocast (e.g. bf16-mixed training) it runs in the autocast dtype, like ``F.linear``.
    """
    device_type = x.device.type
    if torch.is_autocast_enabled(device_type):
        dtype = torch.get_autocast_dtype(device_type)
        x, weight, bias = x.to(dtype), weight.to(dtype), bias.to(dtype)
    elif not (x.dtype == weight.dtype == bias.dtype):
        x = x.to(weight.dtype)
    return _BatchedLinear.apply(x, weight, bias)
