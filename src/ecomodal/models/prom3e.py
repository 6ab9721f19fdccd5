"""ProM3E: a probabilistic masked multimodal embedding model (reference §4).

From any subset of an observation's modality embeddings it infers every modality, with an
uncertainty. The parameters carry the published names, so a published checkpoint
(``config.json`` + ``model.safetensors``) loads without conversion.

The forward pass gives the same results as the straightforward published one but skips the work
whose result is never used: the cls and register tokens enter every row identically, so their
first-block projections are computed once per batch; after the last block only the two cls
tokens feed the decoders, so there the other tokens need no query, attention output or MLP, and
(the cls queries being shared) not even keys: their attention scores come from ``W_k^T q``
(unless hidden features are asked for).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ecomodal.devices import resolve_device
from ecomodal.errors import CheckpointError, InvalidEmbeddingsError
from ecomodal.io.calibration import read_calibration, write_calibration
from ecomodal.io.checkpoints import (
    CONFIG_NAME,
    WEIGHTS_NAME,
    check_finite,
    load_state_dict_strict,
    read_config,
    read_weights,
    save_checkpoint,
)
from ecomodal.io.validate import check_normalisable
from ecomodal.modalities import parse_modalities
from ecomodal.models.calibration import Calibration, resolve_calibration
from ecomodal.models.config import ProM3EConfig, check_noise
from ecomodal.models.layers import (
    EncoderBlock,
    MLPBlock,
    StackedMLPs,
    cls_projection,
    config_keywords,
    dropout,
)
from ecomodal.models.outputs import Completion, EncoderOutput  # noqa: F401  (re-exported)
from ecomodal.options import check_range
from ecomodal.precision import check_precision, precision_context

#: Rows the encoder and the decoders run at once inside ``complete`` (rows do not interact; the
#: decoders' hidden layer of a 4,096-row batch alone is 400 MB in the published configuration).
FORWARD_ROWS = 1024


class ProM3E(nn.Module):
    """The ProM3E masked variational autoencoder over modality embeddings (reference §4).

    Construct from a :class:`ProM3EConfig` (or keyword arguments of one). Load and save published
    checkpoints with :meth:`from_pretrained` / :meth:`save_pretrained`; infer missing modalities with
    :meth:`complete`.
    """

    def __init__(self, config: ProM3EConfig | None = None, **kwargs: Any):
        super().__init__()
        if config is None:
            config = ProM3EConfig(**kwargs)
        elif kwargs:
            config = dataclasses.replace(config, **kwargs)
        self.config = config
        c = config
        self.cls_tokens = nn.Parameter(torch.randn(c.num_cls_tokens, c.embed_dim) * 0.02)
        self.register_tokens = nn.Parameter(torch.randn(c.num_register_tokens, c.embed_dim) * 0.02)
        # Learnable scale a and shift b of the contrastive reconstruction logits a * d + b.
        self.negative_scale = nn.Parameter(torch.tensor(-5.0))
        self.negative_shift = nn.Parameter(torch.tensor(5.0))
        self.projectors = nn.ModuleList(
            MLPBlock(c.input_dim, c.embed_dim, c.embed_dim, c.dropout) for _ in c.modalities
        )
        self.modality_identifiers = nn.ParameterList(
            nn.Parameter(torch.randn(c.embed_dim) * 0.02) for _ in c.modalities
        )
        self.encoder = nn.ModuleList(
            EncoderBlock(c.embed_dim, c.heads, c.mlp_dim, c.dropout) for _ in range(c.depth)
        )
        self.decoders = StackedMLPs(
            c.num_modalities, c.embed_dim, c.embed_dim, c.input_dim, c.dropout
        )
        self._decoder_cache: tuple[tuple, tuple[torch.Tensor, ...]] | None = None
        #: Neighbours, completion mix and error model fitted by ``ecomodal calibrate`` (or None).
        self.calibration: Calibration | None = None

    # ------------------------------------------------------------------ properties
    @property
    def modalities(self) -> tuple[str, ...]:
        return self.config.modalities

    @property
    def device(self) -> torch.device:
        return self.cls_tokens.device

    # ------------------------------------------------------------------ encoder
    def _project_visible(
        self, embeddings: torch.Tensor, visible: torch.Tensor, slots: list[int]
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Tokens of the visible modalities in slot layout [B, S, E] (zeros where not visible).

        Returns the tokens and, when some rows lack some slots, the flat indices of the visible
        (row, slot) pairs; ``None`` when every row sees every slot.
        """
        batch = embeddings.shape[0]
        dense = bool(visible[:, slots].all())
        if dense:
            tokens = [
                self.projectors[m](embeddings[:, m]) + self.modality_identifiers[m] for m in slots
            ]
            return torch.stack(tokens, dim=1), None
        out = embeddings.new_zeros(batch, len(slots), self.config.embed_dim)
        for s, m in enumerate(slots):
            rows = visible[:, m].nonzero(as_tuple=True)[0]
            out[rows, s] = self.projectors[m](embeddings[rows, m]) + self.modality_identifiers[m]
        flat = visible[:, slots].reshape(-1).nonzero(as_tuple=True)[0]
        return out, flat

    def _attend(
        self,
        block: EncoderBlock,
        queries: torch.Tensor,
        keys: torch.Tensor,
        values: torch.Tensor,
        key_mask: torch.Tensor | None,
    ) -> torch.Tensor:
        """Multi-head attention on projected q [B, Q, E], k/v [B, K, E]; returns [B, Q, E]."""
        batch, n_q, dim = queries.shape
        heads = block.attn.num_heads
        head_dim = dim // heads
        q = queries.reshape(batch, n_q, heads, head_dim).transpose(1, 2)
        k = keys.reshape(batch, keys.shape[1], heads, head_dim).transpose(1, 2)
        v = values.reshape(batch, values.shape[1], heads, head_dim).transpose(1, 2)
        mask = None if key_mask is None else key_mask[:, None, None, :]
        drop = block.attn.dropout if self.training else 0.0
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=drop)
        out = out.transpose(1, 2).reshape(batch, n_q, dim)
        return F.linear(out, block.attn.out_proj.weight, block.attn.out_proj.bias)

    def _cls_attention(
        self,
        block: EncoderBlock,
        x_special: torch.Tensor,
        x_vis: torch.Tensor,
        flat: torch.Tensor | None,
        slot_mask: torch.Tensor | None,
    ) -> torch.Tensor:
        """The cls tokens' multi-head attention output (after ``out_proj``) in the last block.

        Equal to attention over all tokens, read at the cls positions, with less arithmetic:
        the visible tokens' keys are never formed (their scores are ``x . W_k^T q + q . b_k``, q
        being the cls queries, shared by all rows while the special tokens are), and with fewer
        visible slots than cls tokens the output projection is applied per visible token and head
        (``W_o,h v_h``) instead of per cls token. ``x_special`` [R, J, E] (R = 1 or B), ``x_vis``
        [B, S, E]; ``flat``/``slot_mask`` as in :meth:`_project_visible`. Returns [B, C, E].
        """
        batch, n_slots, dim = x_vis.shape
        heads = block.attn.num_heads
        head_dim = dim // heads
        n_cls = self.config.num_cls_tokens
        n_special = x_special.shape[1]
        vis_rows = x_vis.reshape(-1, dim) if flat is None else x_vis.reshape(-1, dim)[flat]
        qkv, v_rows, qk, qb = cls_projection(
            x_special, vis_rows, block.attn.in_proj_weight, block.attn.in_proj_bias, n_cls, heads
        )
        r = ""  # einsum index of the special tokens' own rows, when they are not shared
        if x_special.shape[0] == 1:
            qkv, qk, qb = qkv[0], qk[0], qb[0]
        else:
            r = "b"
        qkv = qkv.unflatten(-1, (3, heads, head_dim))  # [(B), J, 3, H, hd]
        q, k_special, v_special = qkv[..., :n_cls, 0, :, :], qkv[..., 1, :, :], qkv[..., 2, :, :]
        if flat is not None:
            v_rows = v_rows.new_zeros(batch * n_slots, dim).index_put((flat,), v_rows)
        v_vis = v_rows.view(batch, n_slots, heads, head_dim)
        scores_special = torch.einsum(f"{r}chd,{r}jhd->{r}chj", q, k_special)
        scores_vis = torch.einsum(f"bse,{r}che->bchs", x_vis, qk) + qb.unsqueeze(-1)
        if slot_mask is not None:
            scores_vis = scores_vis.masked_fill(~slot_mask[:, None, None, :], float("-inf"))
        scores = torch.cat(
            [scores_special.expand(batch, n_cls, heads, n_special), scores_vis], dim=-1
        )
        attn = torch.softmax(scores * head_dim**-0.5, dim=-1)
        attn = dropout(attn, block.attn.dropout, self.training)
        a_special, a_vis = attn.split([n_special, n_slots], dim=-1)
        w_o, b_o = block.attn.out_proj.weight, block.attn.out_proj.bias
        if n_slots < n_cls:
            w_o_heads = w_o.view(dim, heads, head_dim)
            o_special = torch.einsum(f"{r}jhd,ehd->{r}jhe", v_special, w_o_heads)
            o_vis = torch.einsum("bshd,ehd->bshe", v_vis, w_o_heads)
            out = torch.einsum(f"bchj,{r}jhe->bce", a_special, o_special)
            return out + torch.einsum("bchs,bshe->bce", a_vis, o_vis) + b_o
        mixed = torch.einsum(f"bchj,{r}jhd->bchd", a_special, v_special)
        mixed = mixed + torch.einsum("bchs,bshd->bchd", a_vis, v_vis)
        return F.linear(mixed.reshape(batch, n_cls, dim), w_o, b_o)

    def encode(
        self, embeddings: torch.Tensor, visible: torch.Tensor, *, return_hidden: bool = False
    ) -> EncoderOutput:
        """Run the encoder on ``embeddings`` [B, M, D] with the boolean ``visible`` mask [B, M].

        Every row must have at least one visible modality. Returns normalised ``mu`` and ``logvar``
        (and the hidden token sequence if asked).
        """
        c = self.config
        batch = embeddings.shape[0]
        n_special = c.num_special_tokens
        slots = [m for m in range(c.num_modalities) if bool(visible[:, m].any())]
        vis_tokens, flat = self._project_visible(embeddings, visible, slots)
        # Which tokens each row has: the special ones, then its visible modalities.
        token_mask = torch.cat([visible.new_ones(batch, n_special), visible[:, slots]], dim=1)
        key_mask = None if flat is None else token_mask
        dim = c.embed_dim
        n_cls = c.num_cls_tokens
        # The special (cls + register) tokens: one shared [1, 6, E] before the first block.
        x_special = torch.cat([self.cls_tokens, self.register_tokens], dim=0).unsqueeze(0)
        x_vis = vis_tokens
        for depth_index, block in enumerate(self.encoder):
            w, b = block.attn.in_proj_weight, block.attn.in_proj_bias
            if depth_index == len(self.encoder) - 1 and not return_hidden:
                # Last block, hidden not wanted: only the cls tokens need an output (attention,
                # MLP); the other tokens only contribute to the cls tokens' attention.
                slot_mask = None if flat is None else visible[:, slots]
                attended = self._cls_attention(block, x_special, x_vis, flat, slot_mask)
                x = block.norm1(attended + x_special[:, :n_cls])
                x_special = block.norm2(block.mlp(x) + x)
                break
            # Any other block: every token needs its output.
            x_all = torch.cat([x_special.expand(batch, -1, -1), x_vis], dim=1)
            q, k, v = F.linear(x_all, w, b).split([dim, dim, dim], dim=-1)
            x = block.norm1(self._attend(block, q, k, v, key_mask) + x_all)
            x = block.norm2(block.mlp(x) + x)
            x_special, x_vis = x[:, :n_special], x[:, n_special:]
        mu = F.normalize(x_special[:, 0], dim=-1)
        logvar = x_special[:, 1]
        if not return_hidden:
            return EncoderOutput(mu=mu, logvar=logvar)
        hidden = torch.cat([x_special, x_vis], dim=1) * token_mask.unsqueeze(-1)
        return EncoderOutput(mu, logvar, hidden=hidden, hidden_mask=token_mask, hidden_slots=slots)

    def _encode_in_chunks(
        self, embeddings: torch.Tensor, visible: torch.Tensor, *, return_hidden: bool
    ) -> EncoderOutput:
        """:meth:`encode` over at most ``FORWARD_ROWS`` rows at a time (rows do not interact). With
        the hidden tokens wanted, one pass (their layout depends on which modalities the batch
        sees)."""
        if return_hidden or embeddings.shape[0] <= FORWARD_ROWS:
            return self.encode(embeddings, visible, return_hidden=return_hidden)
        parts = [
            self.encode(embeddings[i : i + FORWARD_ROWS], visible[i : i + FORWARD_ROWS])
            for i in range(0, embeddings.shape[0], FORWARD_ROWS)
        ]
        return EncoderOutput(
            mu=torch.cat([p.mu for p in parts]), logvar=torch.cat([p.logvar for p in parts])
        )

    # ------------------------------------------------------------------ decoders
    def _folded_decoder(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The decoders' first layer with LayerNorm affine folded in, cached while unchanged."""
        params = list(self.decoders.parameters())
        key = tuple((p.data_ptr(), p._version) for p in params)
        if self._decoder_cache is None or self._decoder_cache[0] != key:
            weight, bias = self.decoders.folded_first_layer()
            self._decoder_cache = (key, (weight.detach(), bias.detach()))
        return self._decoder_cache[1]

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Decode latents ``z`` [B, E] into every modality: [B, M, D], L2-normalised.

        The M decoders run as batched GEMMs, not a loop over modalities. Without gradients, their
        first layers are one GEMM with the LayerNorm affine folded in.
        """
        if torch.is_grad_enabled() or self.training:
            return F.normalize(self.decoders(z), dim=-1)
        dec = self.decoders
        weight, bias = self._folded_decoder()
        n = F.layer_norm(z, (dec.in_dim,), eps=dec.eps)
        hidden = F.gelu(F.linear(n, weight, bias)).view(z.shape[0], dec.count, -1)
        out = torch.baddbmm(
            dec.fc2_bias.unsqueeze(1), hidden.transpose(0, 1), dec.fc2_weight.transpose(1, 2)
        )
        return F.normalize(out.transpose(0, 1), dim=-1)

    @config_keywords("noise")
    def sample_latent(
        mu: torch.Tensor,
        logvar: torch.Tensor,
        n_samples: int = 1,
        generator: torch.Generator | None = None,
        eps: torch.Tensor | None = None,
        *,
        noise: str = "per-row",
    ) -> torch.Tensor:
        """The mean of ``n_samples`` draws z = mu + sigma * eps, eps one scalar per draw and row
        (``noise="per-row"``, published) or one per draw, row and dimension (``"per-dimension"``);
        called on a model, ``noise`` defaults to its ``config.noise``.

        ``n_samples=0`` returns ``mu`` (no noise); a given ``eps`` ([B], or [B, E]) is the noise.
        """
        if eps is None and n_samples <= 0:
            return mu
        if eps is None:
            size = [mu.shape[0], n_samples] + (
                [] if check_noise(noise) == "per-row" else [mu.shape[1]]
            )
            eps = torch.randn(size, generator=generator, device=mu.device, dtype=mu.dtype).mean(1)
        eps = eps.to(mu.dtype)
        return mu + torch.exp(0.5 * logvar) * (eps[:, None] if eps.ndim == 1 else eps)

    def forward(
        self,
        embeddings: torch.Tensor,
        visible: torch.Tensor,
        *,
        n_samples: int = 1,
        generator: torch.Generator | None = None,
        eps: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """Training-style pass: encode the visible modalities, sample z, decode every modality.

        ``eps`` [B] (or [B, E]) fixes the latent noise (otherwise drawn from ``generator`` as the
        config's ``noise`` says). Returns
        ``{"reconstruction": [B, M, D], "mu": [B, E], "logvar": [B, E], "z": [B, E]}``.
        """
        enc = self.encode(embeddings, visible)
        z = self.sample_latent(enc.mu, enc.logvar, n_samples, generator, eps)
        return {"reconstruction": self.decode(z), "mu": enc.mu, "logvar": enc.logvar, "z": z}

    # ------------------------------------------------------------------ inference API
    def complete(
        self,
        embeddings: Any,
        visible: Sequence[str] | str | None = None,
        n_samples: int = 5,
        *,
        present: Any = None,
        return_hidden: bool = False,
        seed: int = 0,
        batch_size: int = 1024,
        device: str | torch.device | None = None,
        precision: str = "fp32",
        neighbours: Any = None,
        k: int | None = None,
    ) -> Completion:
        """Infer every modality from the visible ones.

        Args:
            embeddings: [B, M, D] numpy array or torch tensor in the model's modality order, or an
                :class:`~ecomodal.io.tables.EmbeddingBatch` (stacked by the model's modality names).
                Missing modalities may hold zeros or NaN.
            visible: modality names to condition on (``["image", "loc"]`` or ``"image,loc"``); every
                row must have them. ``None``: whatever each row has (rows may differ).
            n_samples: latent samples averaged before decoding; 0 decodes from ``mu`` (no noise).
            present: optional [B, M] boolean mask of the modalities each row has; by default a
                modality is present where its vector is finite and not all zero.
            return_hidden: also return the encoder's full token sequence (slower).
            seed: seed of the latent noise; the same seed gives the same result.
            batch_size: rows per forward pass.
            device: where to run (default: the model's device).
            precision: ``"fp32"`` or ``"bf16"`` (bfloat16 matrix products; completed embeddings
                stay within cosine 0.999 of float32, see ``benchmarks/prom3e_throughput.py``).
            neighbours: retrieval-augmented completion (the default for a calibrated model): each
                completed modality mixes ProM3E's output with the softmax-weighted average of the
                ``k`` reference rows nearest in the visible modalities, with the mix tuned on
                validation rows by ``ecomodal calibrate``. ``None``: the model's own neighbours,
                if calibrated; ``False``: ProM3E alone; a table: those rows as neighbours.
            k: neighbours per row (default: as tuned per visible set and modality).

        A calibrated model with an uncertainty model also gives ``expected_error`` [B, M] (the
        expected ``1 - cosine`` to the truth, NaN where visible) and ``interval(coverage)``.
        """
        check_range(n_samples, "n_samples", minimum=0, integer=True)
        check_range(batch_size, "batch_size", minimum=1, integer=True)
        check_range(seed, "seed", integer=True)
        check_precision(precision)
        device = resolve_device(device) if device is not None else self.device
        as_numpy = not isinstance(embeddings, torch.Tensor)
        emb, pres = self._prepare_inputs(embeddings, present)
        vis = self._visible_mask(pres, visible)
        self._check_normalisable(emb, vis, getattr(embeddings, "ids", None))
        if k is not None:
            check_range(k, "k", minimum=1, integer=True)
        calibration = resolve_calibration(self.calibration, neighbours, self.modalities)
        generator = torch.Generator(device=device).manual_seed(int(seed))
        was_training = self.training
        self.eval()
        parts: dict[str, list[torch.Tensor]] = {
            key: [] for key in ("emb", "mu", "logvar", "hidden", "prom3e", "error")
        }
        masks: list[torch.Tensor] = []
        hidden_slots = sorted({int(m) for m in vis.any(0).nonzero(as_tuple=True)[0]})
        try:
            with precision_context(precision, device):
                for start in range(0, emb.shape[0], batch_size):
                    x = emb[start : start + batch_size].to(device)
                    v = vis[start : start + batch_size].to(device)
                    x = torch.where(v.unsqueeze(-1), F.normalize(x, dim=-1), torch.zeros_like(x))
                    out = self._encode_in_chunks(x, v, return_hidden=return_hidden)
                    z = self.sample_latent(out.mu, out.logvar, n_samples, generator)
                    decoded = torch.cat(
                        [
                            self.decode(z[i : i + FORWARD_ROWS])
                            for i in range(0, len(z), FORWARD_ROWS)
                        ]
                    )
                    if decoded.dtype != torch.float32:  # renormalise what bf16 rounded
                        decoded = F.normalize(decoded.float(), dim=-1)
                    if calibration is not None:
                        parts["prom3e"].append(decoded.cpu())
                        sigma = torch.exp(0.5 * out.logvar.float()).sum(-1)
                        decoded, error, _ = calibration.apply(x.float(), v, decoded, sigma, k=k)
                        if error is not None:
                            parts["error"].append(error.cpu())
                    parts["emb"].append(decoded.cpu())
                    parts["mu"].append(out.mu.float().cpu())
                    parts["logvar"].append(out.logvar.float().cpu())
                    if return_hidden:
                        hidden, mask = _to_slots(out, hidden_slots, self.config)
                        parts["hidden"].append(hidden.float().cpu())
                        masks.append(mask.cpu())
        finally:
            self.train(was_training)
        mu = torch.cat(parts["mu"])
        logvar = torch.cat(parts["logvar"])
        result = Completion(
            embeddings=torch.cat(parts["emb"]),
            mu=mu,
            logvar=logvar,
            sigma_l1=torch.exp(0.5 * logvar).sum(-1),
            visible=vis,
            modalities=self.modalities,
            prom3e_embeddings=torch.cat(parts["prom3e"]) if parts["prom3e"] else None,
            expected_error_values=torch.cat(parts["error"]) if parts["error"] else None,
            error_model=None if calibration is None else calibration.error_model,
        )
        if return_hidden:
            result.hidden = torch.cat(parts["hidden"])
            result.hidden_mask = torch.cat(masks)
            result.hidden_modalities = tuple(self.modalities[m] for m in hidden_slots)
        return result.to_numpy() if as_numpy else result

    def _prepare_inputs(self, embeddings: Any, present: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """Convert inputs to float32 torch [B, M, D] and a [B, M] present mask, with checks."""
        c = self.config
        if hasattr(embeddings, "stack") and hasattr(embeddings, "present"):
            stacked, batch_present = embeddings.stack(list(self.modalities), dim=c.input_dim)
            embeddings = stacked
            present = batch_present if present is None else present
        emb = torch.as_tensor(
            np.asarray(embeddings) if not isinstance(embeddings, torch.Tensor) else embeddings
        ).to(torch.float32)
        if emb.ndim != 3 or emb.shape[1] != c.num_modalities or emb.shape[2] != c.input_dim:
            raise InvalidEmbeddingsError(
                f"embeddings must have shape [batch, {c.num_modalities}, {c.input_dim}] "
                f"(modalities {', '.join(self.modalities)}); got {list(emb.shape)}."
            )
        nonfinite = ~torch.isfinite(emb).all(-1)
        if present is None:
            # A vector that is all NaN or all zero is missing; one partly NaN or inf is an error.
            bad = nonfinite & ~torch.isnan(emb).all(-1)
            pres = ~nonfinite & (emb != 0).any(-1)
        else:
            if not isinstance(present, torch.Tensor):
                present = np.asarray(present)
            pres = torch.as_tensor(present).to(torch.bool)
            if pres.shape != emb.shape[:2]:
                raise InvalidEmbeddingsError(
                    f"present must have shape {list(emb.shape[:2])}; got {list(pres.shape)}."
                )
            bad = pres & nonfinite
        if bool(bad.any()):
            row, col = (int(i) for i in bad.nonzero()[0])
            raise InvalidEmbeddingsError(
                f"Row {row}, modality {self.modalities[col]!r}: embedding has NaN or inf values."
            )
        return emb, pres

    def _check_normalisable(self, emb: torch.Tensor, visible: torch.Tensor, ids: Any) -> None:
        """Every visible vector must have a finite L2 norm that normalisation can scale to 1."""
        values = emb.detach().cpu().numpy()
        rows = visible.detach().cpu().numpy()
        for i, name in enumerate(self.modalities):
            check_normalisable(values[:, i], rows[:, i], source="embeddings", column=name, ids=ids)

    def _visible_mask(
        self, present: torch.Tensor, visible: Sequence[str] | str | None
    ) -> torch.Tensor:
        if visible is None:
            vis = present.clone()
            empty = ~vis.any(1)
            if bool(empty.any()):
                row = int(empty.nonzero()[0, 0])
                raise InvalidEmbeddingsError(
                    f"Row {row} has no modality at all; nothing to complete from."
                )
            return vis
        names = parse_modalities(visible, self.modalities)
        cols = torch.tensor([self.modalities.index(n) for n in names])
        vis = torch.zeros_like(present)
        vis[:, cols] = True
        lacking = vis & ~present
        if bool(lacking.any()):
            row, col = (int(i) for i in lacking.nonzero()[0])
            raise InvalidEmbeddingsError(
                f"Row {row} lacks visible modality {self.modalities[col]!r} "
                "(missing, all zero or non-finite)."
            )
        return vis

    # ------------------------------------------------------------------ checkpoints
    def save_pretrained(self, directory: str | Path) -> Path:
        """Write ``config.json`` and ``model.safetensors`` (the published format) into a folder,
        and the calibration files when the model has been calibrated."""
        path = save_checkpoint(self, self.config.to_dict(), directory)
        if self.calibration is not None:
            write_calibration(directory, self.calibration)
        return path

    @classmethod
    def from_pretrained(cls, directory: str | Path, *, map_location: str = "cpu") -> ProM3E:
        """Load a model from a folder holding ``config.json`` and ``model.safetensors``."""
        directory = Path(directory)
        config_path, weights_path = directory / CONFIG_NAME, directory / WEIGHTS_NAME
        if not weights_path.is_file():
            raise CheckpointError(f"Checkpoint folder {directory} has no {WEIGHTS_NAME}.")
        values = read_config(config_path)
        try:
            config = ProM3EConfig.from_dict(values)
        except (TypeError, ValueError) as err:  # CheckpointError is a ValueError too
            raise CheckpointError(f"{config_path}: {err}") from err
        tensors = read_weights(weights_path, map_location=map_location)
        model = cls(config)
        model.load_weights(tensors, source=str(weights_path))
        model.calibration = read_calibration(directory, model.modalities)
        model.eval()
        return model

    def load_weights(self, tensors: Mapping[str, torch.Tensor], source: str = "state dict") -> None:
        """Load a published-format state dict strictly, with errors that name the mismatch (or
        the tensor holding NaN or inf values)."""
        check_finite(tensors, source=source)
        load_state_dict_strict(
            self,
            tensors,
            source=source,
            config_summary=f"the config ({_config_summary(self.config)})",
        )

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())


def _to_slots(
    out: EncoderOutput, hidden_slots: list[int], config: ProM3EConfig
) -> tuple[torch.Tensor, torch.Tensor]:
    """Place a batch's hidden tokens into the slots of the whole call's visible union."""
    assert out.hidden is not None and out.hidden_mask is not None and out.hidden_slots is not None
    n_special = config.num_special_tokens
    if out.hidden_slots == hidden_slots:
        return out.hidden, out.hidden_mask
    batch = out.hidden.shape[0]
    hidden = out.hidden.new_zeros(batch, n_special + len(hidden_slots), out.hidden.shape[-1])
    mask = out.hidden_mask.new_zeros(batch, n_special + len(hidden_slots))
    hidden[:, :n_special] = out.hidden[:, :n_special]
    mask[:, :n_special] = True
    for i, m in enumerate(out.hidden_slots):
        j = n_special + hidden_slots.index(m)
        hidden[:, j] = out.hidden[:, n_special + i]
        mask[:, j] = out.hidden_mask[:, n_special + i]
    return hidden, mask


def _config_summary(config: ProM3EConfig) -> str:
    return (
        f"input_dim={config.input_dim}, embed_dim={config.embed_dim}, depth={config.depth}, "
        f"mlp_dim={config.mlp_dim}, modalities={config.num_modalities}"
    )
