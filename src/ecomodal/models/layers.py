"""Building blocks of ProM3E, named so that the published state dict loads without conversion."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ecomodal.errors import InvalidArgumentError

_MASK_BITS = 31


def config_keywords(*names: str) -> Callable[[Callable[..., Any]], Any]:
    """Decorate a function in a class body: a static method whose keywords ``names`` default,
    when it is called on an instance, to the same-named fields of the instance's ``config`` (a
    caller's own keywords still win); called on the class, it keeps its own defaults."""
    return functools.partial(_ConfigKeywords, names=names)


class _ConfigKeywords:
    def __init__(self, func: Callable[..., Any], names: tuple[str, ...]):
        self.func, self.names = func, names
        functools.update_wrapper(self, func)

    def __get__(self, obj: Any, owner: type | None = None) -> Callable[..., Any]:
        if obj is None:
            return self.func
        return functools.partial(self.func, **{n: getattr(obj.config, n) for n in self.names})


def dropout(x: torch.Tensor, p: float, training: bool = True) -> torch.Tensor:
    """Inverted dropout, as ``F.dropout``, with a faster mask sampler on CPU.

    Torch's CPU Bernoulli sampler costs about 6 ns per element, as much as a third of a ProM3E
    training step's non-GEMM time. On CPU the mask here comes from 31-bit uniform integers (two
    per 64-bit draw of the seeded torch generator): an element is dropped with probability
    round(p * 2**31) / 2**31 (within 2**-32 of ``p``) and kept ones are scaled so the expectation is
    unchanged. Elsewhere it is ``F.dropout``.
    """
    if not training or p == 0.0:
        return x
    if x.device.type != "cpu" or not 0.0 < p < 1.0:
        return F.dropout(x, p, training)
    n = x.numel()
    threshold = round(p * 2**_MASK_BITS)
    words = torch.empty((n + 1) // 2, dtype=torch.int64).random_().view(torch.int32)[:n]
    keep = words.bitwise_and_(2**_MASK_BITS - 1) >= threshold
    scale = 2**_MASK_BITS / (2**_MASK_BITS - threshold)
    return x * keep.view(x.shape).to(x.dtype).mul_(scale)


class Dropout(nn.Module):
    """``nn.Dropout`` through :func:`dropout` (no parameters, so state-dict names are unchanged)."""

    def __init__(self, p: float = 0.5):
        super().__init__()
        if not 0.0 <= p <= 1.0:
            raise InvalidArgumentError(f"dropout probability must be in [0, 1]; got {p}.")
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return dropout(x, self.p, self.training)

    def extra_repr(self) -> str:
        return f"p={self.p}"


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
            Dropout(dropout),
            nn.Linear(hidden_dim, out_dim),
            Dropout(dropout),
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
        hidden = dropout(F.gelu(hidden), self.dropout, self.training)
        out = batched_linear(hidden, self.fc2_weight, self.fc2_bias)
        return dropout(out, self.dropout, self.training).transpose(0, 1)

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


def _common_dtype(*tensors: torch.Tensor) -> list[torch.Tensor]:
    """Cast to the autocast dtype when autocast is on (as ``F.linear`` would), else to the last
    tensor's (the weights') dtype."""
    device_type = tensors[0].device.type
    if torch.is_autocast_enabled(device_type):
        dtype = torch.get_autocast_dtype(device_type)
    else:
        dtype = tensors[-1].dtype
    return [t.to(dtype) for t in tensors]


def batched_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """Apply ``count`` linear layers at once: x [count, B, in] -> [count, B, out].

    Under autocast (e.g. bf16-mixed training) it runs in the autocast dtype, like ``F.linear``.
    """
    x, bias, weight = _common_dtype(x, bias, weight)
    return _BatchedLinear.apply(x, weight, bias)


class _ClsProjection(torch.autograd.Function):
    """The last encoder block's input projection when only the cls tokens need an output.

    Inputs: the special tokens ``special`` [R, J, E] (cls first; R = 1 while they are shared by
    all rows), the visible tokens ``rows`` [N, E], the packed ``in_proj`` weight [3E, E] and bias.
    Outputs: q/k/v of the special tokens [R, J, 3E]; only v of the visible tokens [N, E]; and, in
    place of their keys, ``qk`` [R, C, H, E] = W_k,h^T q_c,h and ``qb`` [R, C, H] = q_c,h . b_k,h,
    so that the score of cls token c on visible token x is ``x . qk + qb`` (per head). The
    backward writes the weight gradient straight into one [3E, E] tensor.
    """

    @staticmethod
    def forward(ctx, special, rows, weight, bias, n_cls, heads):
        dim = weight.shape[1]
        head_dim = dim // heads
        qkv = F.linear(special, weight, bias)
        v_rows = F.linear(rows, weight[2 * dim :], bias[2 * dim :])
        q = qkv[:, :n_cls, :dim].unflatten(-1, (heads, head_dim))
        qk = torch.einsum("rchd,hde->rche", q, weight[dim : 2 * dim].view(heads, head_dim, dim))
        qb = torch.einsum("rchd,hd->rch", q, bias[dim : 2 * dim].view(heads, head_dim))
        ctx.save_for_backward(special, rows, weight, bias, q.contiguous())
        ctx.n_cls, ctx.heads = n_cls, heads
        return qkv, v_rows, qk, qb

    @staticmethod
    def backward(ctx, grad_qkv, grad_v_rows, grad_qk, grad_qb):
        special, rows, weight, bias, q = ctx.saved_tensors
        n_cls, heads = ctx.n_cls, ctx.heads
        dim = weight.shape[1]
        head_dim = dim // heads
        w_k = weight[dim : 2 * dim].view(heads, head_dim, dim)
        b_k = bias[dim : 2 * dim].view(heads, head_dim)
        # qk and qb depend on q (a slice of qkv) and on W_k, b_k.
        grad_q = torch.einsum("rche,hde->rchd", grad_qk, w_k) + grad_qb.unsqueeze(-1) * b_k
        grad_qkv = grad_qkv.clone()
        grad_qkv[:, :n_cls, :dim] += grad_q.flatten(-2)
        grad_v_rows = grad_v_rows.contiguous()
        need_special, need_rows, need_weight, need_bias = ctx.needs_input_grad[:4]
        grad_special = grad_qkv @ weight if need_special else None
        grad_rows = grad_v_rows @ weight[2 * dim :] if need_rows else None
        grad_weight = grad_bias = None
        flat_special = special.reshape(-1, dim)
        flat_grad = grad_qkv.reshape(-1, 3 * dim)
        if need_weight:
            grad_weight = torch.empty_like(weight)
            torch.mm(flat_grad[:, : 2 * dim].T, flat_special, out=grad_weight[: 2 * dim])
            torch.mm(grad_v_rows.T, rows, out=grad_weight[2 * dim :])
            grad_weight[2 * dim :].addmm_(flat_grad[:, 2 * dim :].T, flat_special)
            grad_weight[dim : 2 * dim] += torch.einsum("rchd,rche->hde", q, grad_qk).reshape(
                dim, dim
            )
        if need_bias:
            grad_bias = flat_grad.sum(0)
            grad_bias[2 * dim :] += grad_v_rows.sum(0)
            grad_bias[dim : 2 * dim] += torch.einsum("rchd,rch->hd", q, grad_qb).reshape(dim)
        return grad_special, grad_rows, grad_weight, grad_bias, None, None


def cls_projection(
    special: torch.Tensor,
    rows: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor,
    n_cls: int,
    heads: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """See :class:`_ClsProjection`: ``(qkv_special, v_rows, qk, qb)``."""
    special, rows, bias, weight = _common_dtype(special, rows, bias, weight)
    return _ClsProjection.apply(special, rows, weight, bias, n_cls, heads)
