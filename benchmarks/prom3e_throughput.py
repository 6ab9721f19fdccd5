"""ProM3E throughput on CPU, float32: ecomodal vs a straightforward published forward pass.

Measures, for the published 27.3 M-parameter configuration (width 1024, depth 1) at batch 256:
training samples/s (forward + loss + backward + AdamW step, with the published per-batch masking
of 1 visible modality with p=0.9, else 2) and inference rows/s (complete every modality from
``image`` + ``loc``), for ecomodal and for the baseline in ``published_prom3e.py`` (every token
through every block, a Python loop over modalities). Both start from the same weights, see the
same batches and masks, and their outputs are checked equal to 1e-5.

    python benchmarks/prom3e_throughput.py [--batch-size 256] [--steps 20] [--json OUT.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))

from published_prom3e import PublishedProM3E  # noqa: E402

from ecomodal.models.losses import prom3e_loss  # noqa: E402
from ecomodal.models.prom3e import ProM3E, ProM3EConfig  # noqa: E402


def _batches(n_batches: int, batch_size: int, dim: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    for _ in range(n_batches):
        x = F.normalize(torch.randn(batch_size, 6, dim, generator=g), dim=-1)
        k = 1 if torch.rand(1, generator=g).item() < 0.9 else 2
        chosen = torch.randperm(6, generator=g)[:k]
        visible = torch.zeros(batch_size, 6, dtype=torch.bool)
        visible[:, chosen] = True
        eps = torch.randn(batch_size, generator=g)
        yield x, visible, eps


def _train_step(model, optimizer, x, visible, eps, lambda_kl):
    out = model(x, visible, eps=eps)
    present = torch.ones(x.shape[:2], dtype=torch.bool)
    loss = prom3e_loss(out, x, present, model.negative_scale, model.negative_shift, lambda_kl)[
        "loss"
    ]
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss.detach()


def _time_training(model, batches, lambda_kl, warmup: int = 2) -> float:
    model.train()
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=1e-4, betas=(0.9, 0.98), eps=1e-6, fused=True
    )
    rows = 0
    start = None
    for i, (x, visible, eps) in enumerate(batches):
        if i == warmup:
            start = time.perf_counter()
            rows = 0
        _train_step(model, optimizer, x, visible, eps, lambda_kl)
        rows += x.shape[0]
    return rows / (time.perf_counter() - start)


def _time_inference(fn, repeats: int, rows: int) -> float:
    fn()
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return repeats * rows / (time.perf_counter() - start)


def main() -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=20, help="timed training steps")
    parser.add_argument("--repeats", type=int, default=20, help="timed inference batches")
    parser.add_argument("--rounds", type=int, default=3, help="alternating measurement rounds")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    config = ProM3EConfig()  # the published configuration
    torch.manual_seed(0)
    ours = ProM3E(config)
    baseline = PublishedProM3E(**config.to_dict())
    baseline.load_state_dict(ours.state_dict())
    n_params = sum(p.numel() for p in ours.parameters())

    # Equality of outputs, eval mode, on one batch with one visible modality (image) and with two
    # (image + loc: fewer visible tokens than cls tokens, or not, take different paths).
    x, _, eps = next(_batches(1, args.batch_size, config.input_dim, seed=1))
    ours.eval()
    baseline.eval()
    max_diff = 0.0
    for columns in ([0], [0, 2]):
        vis = torch.zeros(args.batch_size, 6, dtype=torch.bool)
        vis[:, columns] = True
        with torch.inference_mode():
            ref = baseline(x, vis, eps=eps)
            out = ours(x, vis, eps=eps)
        for key in ("mu", "logvar", "reconstruction"):
            max_diff = max(max_diff, (out[key] - ref[key]).abs().max().item())

    visible = vis  # image + loc: the inference benchmark's input
    # Rounds alternate between the two implementations, so that a machine whose speed drifts
    # affects both alike; the medians are reported.
    x_np = x.numpy()
    rates: dict[str, list[float]] = {k: [] for k in ("infer", "infer_base", "train", "train_base")}
    for round_index in range(args.rounds):
        rates["infer"].append(
            _time_inference(
                lambda: ours.complete(
                    x_np, visible=["image", "loc"], n_samples=5, batch_size=args.batch_size
                ),
                args.repeats,
                args.batch_size,
            )
        )
        with torch.inference_mode():
            rates["infer_base"].append(
                _time_inference(
                    lambda: baseline(x, visible, eps=eps), args.repeats, args.batch_size
                )
            )
        n = args.steps + 2
        seed = 2 + round_index
        rates["train"].append(
            _time_training(ours, _batches(n, args.batch_size, config.input_dim, seed), 1e-3)
        )
        rates["train_base"].append(
            _time_training(baseline, _batches(n, args.batch_size, config.input_dim, seed), 1e-3)
        )
    med = {k: statistics.median(v) for k, v in rates.items()}
    ours_infer, base_infer = med["infer"], med["infer_base"]
    ours_train, base_train = med["train"], med["train_base"]

    result = {
        "device": "cpu",
        "threads": torch.get_num_threads(),
        "dtype": "float32",
        "parameters": n_params,
        "batch_size": args.batch_size,
        "max_abs_output_difference": max_diff,
        "outputs_equal_1e-5": max_diff <= 1e-5,
        "inference_rows_per_s": {"ecomodal": ours_infer, "baseline": base_infer},
        "inference_speedup": ours_infer / base_infer,
        "training_samples_per_s": {"ecomodal": ours_train, "baseline": base_train},
        "training_speedup": ours_train / base_train,
        "rounds": {k: [round(r, 1) for r in v] for k, v in rates.items()},
    }
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
