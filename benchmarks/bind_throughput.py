"""Binding throughput on CPU, float32: training samples/s of the head-only fast path and of full
tuning.

Each case times ``steps`` optimiser steps (forward, TaxaBind loss, backward, AdamW, temperature
clamp) of :class:`ecomodal.training.bind.BoundEncoder` after ``warmup`` steps:

- ``head-linear``: the fast path, a linear projection 1280 -> 512 on cached EfficientNet-Lite0
  features (symmetric CLIP loss, batch 256);
- ``head-mlp``: the same with a 1024-unit MLP head;
- ``env-sinr``: the whole SINR env encoder (15 covariates -> 512) with as many random-location
  negatives as rows (TaxaBind's loss for env, batch 512);
- ``image-full``: full tuning of EfficientNet-Lite0 + projection on 224 px images (batch 16),
  what the fast path avoids.

    python benchmarks/bind_throughput.py [--steps 10] [--json OUT.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from ecomodal.io.atomic import atomic_path
from ecomodal.models.losses import clamp_logit_scale_, clip_loss, random_negative_loss
from ecomodal.training.bind import BoundEncoder, build_encoder


def _case(
    head: str,
    encoder: nn.Module,
    make_inputs: Callable[[torch.Generator], tuple[torch.Tensor, ...]],
    loss_kind: str,
    batch: int,
    steps: int,
    warmup: int,
) -> dict[str, float]:
    model = BoundEncoder(encoder, 512, head=head)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-4, betas=(0.9, 0.98), eps=1e-6)
    generator = torch.Generator().manual_seed(0)
    times = []
    for step in range(warmup + steps):
        features, targets, negatives = make_inputs(generator)
        started = time.perf_counter()
        other, bind = model.embed(features), model.embed_bind(targets)
        if loss_kind == "random-negatives":
            loss = random_negative_loss(bind, other, model.embed(negatives), model.logit_scale)
        else:
            loss = clip_loss(bind, other, model.logit_scale)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        clamp_logit_scale_(model.logit_scale)
        if step >= warmup:
            times.append(time.perf_counter() - started)
    median = statistics.median(times)
    return {
        "batch": batch,
        "median_step_s": round(median, 4),
        "samples_per_s": round(batch / median, 1),
        "trainable_params": sum(p.numel() for p in params),
    }


def run(steps: int = 10, warmup: int = 2, image_batch: int = 16) -> dict[str, object]:
    """The four cases; see the module docstring."""
    results: dict[str, object] = {}

    def cached(batch: int, dim: int):
        return lambda g: (
            torch.randn(batch, dim, generator=g),
            torch.randn(batch, 512, generator=g),
            None,
        )

    # Warm the allocator and thread pool: without this the first case measured ~10x slower.
    _case("mlp", build_encoder("mlp", 1280, 512), cached(256, 1280), "clip", 256, 3, 3)
    results["head-linear"] = _case(
        "linear", build_encoder("linear", 1280, 512), cached(256, 1280), "clip", 256, steps, warmup
    )
    results["head-mlp"] = _case(
        "mlp",
        build_encoder("mlp", 1280, 512, hidden=1024),
        cached(256, 1280),
        "clip",
        256,
        steps,
        warmup,
    )
    env_inputs = lambda g: (  # noqa: E731
        torch.randn(512, 15, generator=g),
        torch.randn(512, 512, generator=g),
        torch.randn(512, 15, generator=g),
    )
    results["env-sinr"] = _case(
        "sinr", build_encoder("sinr", 15, 512), env_inputs, "random-negatives", 512, steps, warmup
    )
    try:
        from ecomodal.encoders.offline import ProjectedBackbone, efficientnet_lite0_backbone

        full = ProjectedBackbone(efficientnet_lite0_backbone().train(), 1280)
        images = lambda g: (  # noqa: E731
            torch.randn(image_batch, 3, 224, 224, generator=g),
            torch.randn(image_batch, 512, generator=g),
            None,
        )
        results["image-full"] = _case(
            "linear", full, images, "clip", image_batch, max(3, steps // 3), 1
        )
    except ImportError as err:  # the offline extra is not installed
        results["image-full"] = {"skipped": str(err)}
    head = results["head-linear"]["samples_per_s"]
    results["fast_path_epoch_50k_rows_s"] = round(50_000 / head, 1)
    results["conditions"] = (
        f"float32, {torch.get_num_threads()} torch threads, "
        f"{platform.processor() or platform.machine()}, torch {torch.__version__}; "
        "CPU shared with other jobs during the measurement, so absolute figures are pessimistic"
    )
    return results


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--image-batch", type=int, default=16)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    report = run(steps=args.steps, image_batch=args.image_batch)
    if args.json is not None:
        with atomic_path(args.json) as tmp:
            tmp.write_text(json.dumps(report, indent=2) + "\n")
    json.dump(report, sys.stdout, indent=2)
    print()


if __name__ == "__main__":
    main()
