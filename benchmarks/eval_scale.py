"""Scale of the evaluation harness: retrieval over a large gallery, and the full report.

1. Retrieval: a gallery of ``--gallery`` random L2-normalised ``--dim``-d embeddings (default
   1,000,000, written to a memory-mapped ``.npy`` in chunks and streamed from it) and
   ``--queries`` queries (default 10,000: noisy copies of random gallery rows, so the metrics are
   not trivial), ranked exactly by :func:`ecomodal.eval.ranks_of_truth` (blocked matrix products,
   memory bounded by the block sizes). Reports seconds, queries/s and peak memory.
2. Full report: :func:`ecomodal.eval.evaluate` with every single-table task on ``--report-rows``
   synthetic observations (default 100,000) and a randomly initialised ProM3E of the quickstart
   size (timing only: the metrics of an untrained model mean nothing), writing metrics.json and
   report.html.

Peak memory is the process's resident-set high-water mark (ru_maxrss) after each stage, and the
largest numpy/Python allocation seen by tracemalloc during it.

    python benchmarks/eval_scale.py [--gallery 1000000] [--queries 10000] [--report-rows 100000]
                                    [--out bench-output/eval-scale]
"""

from __future__ import annotations

import argparse
import json
import resource
import time
import tracemalloc
from pathlib import Path

import numpy as np
import torch

from ecomodal.data.synthetic import SyntheticConfig, make_synthetic, to_batch
from ecomodal.eval import evaluate, rank_metrics, ranks_of_truth
from ecomodal.models.prom3e import ProM3E
from ecomodal.quickstart import QUICKSTART_MODEL


def _max_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def write_gallery(path: Path, rows: int, dim: int, *, chunk: int = 100_000, seed: int = 0):
    """A memory-mapped .npy gallery of random unit vectors, written chunk by chunk."""
    gallery = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(rows, dim))
    rng = np.random.default_rng(seed)
    for start in range(0, rows, chunk):
        x = rng.standard_normal((min(chunk, rows - start), dim), dtype=np.float32)
        gallery[start : start + len(x)] = x / np.linalg.norm(x, axis=1, keepdims=True)
    gallery.flush()
    return np.load(path, mmap_mode="r")


def bench_retrieval(out: Path, gallery_rows: int, queries: int, dim: int, seed: int) -> dict:
    gallery = write_gallery(out / "gallery.npy", gallery_rows, dim, seed=seed)
    rng = np.random.default_rng(seed + 1)
    truth = np.sort(rng.choice(gallery_rows, queries, replace=False))
    noise = rng.standard_normal((queries, dim), dtype=np.float32) / np.sqrt(dim)
    # Noise of norm ~4: the true item ranks first for some queries only (random max cos ~0.2).
    query = np.asarray(gallery[truth]) + 4.0 * noise
    tracemalloc.start()
    start = time.perf_counter()
    ranks = ranks_of_truth(query, gallery, truth)
    seconds = time.perf_counter() - start
    _, traced_peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return {
        "gallery": gallery_rows,
        "queries": queries,
        "dim": dim,
        "seconds": round(seconds, 2),
        "queries_per_s": round(queries / seconds, 1),
        "traced_peak_mb": round(traced_peak / 2**20, 1),
        "max_rss_mb": round(_max_rss_mb(), 1),
        "metrics": rank_metrics(ranks),
    }


def bench_report(out: Path, rows: int, seed: int, max_queries: int) -> dict:
    data = make_synthetic(rows, config=SyntheticConfig(n_species=100), seed=seed)
    batch = to_batch(data)
    del data
    torch.manual_seed(seed)
    model = ProM3E(**QUICKSTART_MODEL).eval()
    tracemalloc.start()
    start = time.perf_counter()
    evaluate(
        batch,
        model,
        tasks="all",
        labels=("scientific_name", "biome"),
        out=out / "report",
        seed=seed,
        shots=(1, 5),
        repeats=2,
        max_queries=max_queries,
    )
    seconds = time.perf_counter() - start
    _, traced_peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return {
        "rows": rows,
        "seconds": round(seconds, 1),
        "traced_peak_mb": round(traced_peak / 2**20, 1),
        "max_rss_mb": round(_max_rss_mb(), 1),
        "report_kb": round((out / "report" / "report.html").stat().st_size / 1024, 1),
        "max_queries": max_queries,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gallery", type=int, default=1_000_000)
    parser.add_argument("--queries", type=int, default=10_000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--report-rows", type=int, default=100_000)
    parser.add_argument("--report-max-queries", type=int, default=2000)
    parser.add_argument("--skip-report", action="store_true")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("bench-output/eval-scale"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    results = {
        "torch_threads": torch.get_num_threads(),
        "retrieval": bench_retrieval(args.out, args.gallery, args.queries, args.dim, args.seed),
    }
    print(json.dumps(results["retrieval"]), flush=True)
    (args.out / "gallery.npy").unlink()
    if not args.skip_report:
        results["report"] = bench_report(
            args.out, args.report_rows, args.seed, args.report_max_queries
        )
        print(json.dumps(results["report"]), flush=True)
    (args.out / "results.json").write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
