"""Peak memory and speed of ``ecomodal complete`` on a large table (default 1,000,000 rows).

Writes a table of random L2-normalised ``image`` and ``loc`` embeddings (streamed, so this script
stays small too), saves a randomly initialised published-size ProM3E, runs the real command line
``ecomodal complete --visible image,loc`` in a child process and reports the child's peak resident
memory (ru_maxrss) and rows/s. Target: under 2 GB.

    python benchmarks/complete_memory.py [--rows 1000000] [--workdir bench-output] [--keep]
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from ecomodal.io.tables import EmbeddingBatch, EmbeddingTableWriter
from ecomodal.models.prom3e import ProM3E, ProM3EConfig


def write_table(path: Path, rows: int, dim: int = 512, chunk: int = 50_000, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    dims = {"image": dim, "loc": dim}
    with EmbeddingTableWriter(path, dims, encoders={"image": "random", "loc": "random"}) as writer:
        for start in range(0, rows, chunk):
            n = min(chunk, rows - start)
            embeddings = {}
            for name in dims:
                x = rng.standard_normal((n, dim), dtype=np.float32)
                embeddings[name] = x / np.linalg.norm(x, axis=1, keepdims=True)
            writer.write(
                EmbeddingBatch(
                    ids=np.array([f"obs-{i:08d}" for i in range(start, start + n)], dtype=object),
                    embeddings=embeddings,
                    present={name: np.ones(n, dtype=bool) for name in dims},
                )
            )


def main() -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--batch-size", type=int, default=4096)
    parser.add_argument("--workdir", type=Path, default=Path("bench-output/complete_memory"))
    parser.add_argument("--keep", action="store_true", help="keep the generated files")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    table = args.workdir / "input.parquet"
    out = args.workdir / "completed.parquet"
    model_dir = args.workdir / "model"

    t0 = time.perf_counter()
    write_table(table, args.rows)
    write_s = time.perf_counter() - t0
    torch.manual_seed(0)
    ProM3E(ProM3EConfig()).save_pretrained(model_dir)

    command = [
        sys.executable, "-m", "ecomodal", "complete",
        "--model", str(model_dir), "--data", str(table), "--out", str(out),
        "--visible", "image,loc", "--batch-size", str(args.batch_size), "--no-progress",
    ]  # fmt: skip
    t0 = time.perf_counter()
    subprocess.run(command, check=True)
    run_s = time.perf_counter() - t0
    peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    result = {
        "rows": args.rows,
        "batch_size": args.batch_size,
        "input_bytes": table.stat().st_size,
        "output_bytes": out.stat().st_size,
        "write_input_s": round(write_s, 1),
        "complete_s": round(run_s, 1),
        "rows_per_s": round(args.rows / run_s, 1),
        "peak_rss_mib": round(peak_kib / 1024, 1),
        "under_2_gb": peak_kib / 1024 < 2048,
    }
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    if not args.keep:
        shutil.rmtree(args.workdir)
    return result


if __name__ == "__main__":
    main()
