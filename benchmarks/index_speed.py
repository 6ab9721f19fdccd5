"""Speed and recall of ``ecomodal.index`` against exact search, on a large clustered gallery.

A seeded gallery of ``--gallery`` (default 1,000,000) ``--dim``-d (512) float32 vectors drawn
around ``--clusters`` random centres is written to a real embedding table (Parquet, in row groups),
and ``--queries`` (10,000) new points from the same clusters are searched:

- the index :func:`ecomodal.index.build_index` chooses (IVF above the exact threshold), built shard
  by shard from the table: build time and peak resident memory (psutil RSS, sampled);
- its queries/s on all queries, k = 10;
- exact FAISS (``IndexFlatIP`` on the same normalised vectors) on a seeded subset of
  ``--exact-queries`` queries: queries/s, and the exact top 10 that recall@10 is measured against;
- today's exact path of the evaluation harness, :func:`ecomodal.eval.ranks_of_truth` (blocked
  matrix products over the whole gallery), timed on ``--retrieval-queries`` queries and scaled to
  queries/s.

Threads follow the machine (run it on 2 cores: ``taskset -c 0,1``). Results go to
``benchmarks/results-index_speed.json``.

    python benchmarks/index_speed.py [--gallery 1000000] [--dim 512] [--queries 10000]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import psutil

from ecomodal.eval import ranks_of_truth
from ecomodal.index import build_index
from ecomodal.io.batch import EmbeddingBatch
from ecomodal.io.writer import EmbeddingTableWriter

RESULTS = Path(__file__).with_name("results-index_speed.json")


class PeakRSS:
    """The process's peak resident memory while the block runs (sampled every 20 ms)."""

    def __enter__(self):
        self.process = psutil.Process()
        self.start = self.peak = self.process.memory_info().rss
        self.running = True
        self.thread = threading.Thread(target=self._watch, daemon=True)
        self.thread.start()
        return self

    def _watch(self):
        while self.running:
            self.peak = max(self.peak, self.process.memory_info().rss)
            time.sleep(0.02)

    def __exit__(self, *exc):
        self.running = False
        self.thread.join()
        self.peak = max(self.peak, self.process.memory_info().rss)


def clustered(rng, centres, n, spread):
    """``n`` points around random ``centres`` (float32)."""
    pick = rng.integers(0, len(centres), n)
    noise = rng.standard_normal((n, centres.shape[1]), dtype=np.float32)
    return centres[pick] + spread * noise


def write_gallery(path, rows, dim, centres, spread, seed, chunk=65_536):
    rng = np.random.default_rng(seed)
    with EmbeddingTableWriter(path, dims={"image": dim}) as writer:
        for start in range(0, rows, chunk):
            n = min(chunk, rows - start)
            ids = np.array([f"g{i}" for i in range(start, start + n)], dtype=object)
            embeddings = {"image": clustered(rng, centres, n, spread)}
            writer.write(EmbeddingBatch(ids, embeddings, {"image": np.ones(n, dtype=bool)}))


def normalised(x):
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gallery", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--queries", type=int, default=10_000)
    parser.add_argument("--clusters", type=int, default=1_000)
    parser.add_argument(
        "--spread", type=float, default=2.0, help="noise sd per dimension (centres: sd 1)"
    )
    parser.add_argument("--exact-queries", type=int, default=2_000)
    parser.add_argument("--retrieval-queries", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()

    import faiss

    rng = np.random.default_rng(args.seed)
    centres = rng.standard_normal((args.clusters, args.dim), dtype=np.float32)
    queries = clustered(rng, centres, args.queries, args.spread)
    results: dict = {"config": {k: str(v) for k, v in vars(args).items()}}
    results["config"]["cpus"] = len(os.sched_getaffinity(0))
    results["config"]["faiss_threads"] = faiss.omp_get_max_threads()
    with tempfile.TemporaryDirectory(dir=os.environ.get("TMPDIR")) as tmp:
        table = Path(tmp) / "gallery.parquet"
        t0 = time.perf_counter()
        write_gallery(table, args.gallery, args.dim, centres, args.spread, args.seed + 1)
        results["write_table_s"] = round(time.perf_counter() - t0, 2)
        print("table written", results["write_table_s"], flush=True)

        with PeakRSS() as rss:
            t0 = time.perf_counter()
            index = build_index(table, "image", Path(tmp) / "index", seed=args.seed)
            build_s = time.perf_counter() - t0
        results["index"] = {
            "kind": index.kind,
            "nlist": index.meta.get("nlist"),
            "nprobe": index.meta.get("nprobe"),
            "build_s": round(build_s, 2),
            "peak_rss_mb": round(rss.peak / 2**20, 1),
            "rss_growth_mb": round((rss.peak - rss.start) / 2**20, 1),
        }
        print("index built", results["index"], flush=True)
        t0 = time.perf_counter()
        found = index.search(queries, 10)
        search_s = time.perf_counter() - t0
        results["index"]["queries_per_s"] = round(args.queries / search_s, 1)
        print("index searched", results["index"]["queries_per_s"], flush=True)

        # Exact FAISS over the same vectors, and the eval harness's exact path.
        vectors = np.empty((args.gallery, args.dim), dtype=np.float32)
        for start in range(0, args.gallery, 65_536):
            rows = np.arange(start, min(start + 65_536, args.gallery))
            vectors[rows] = index._reconstruct(rows)
        flat = faiss.IndexFlatIP(args.dim)
        flat.add(vectors)
        subset = np.sort(
            np.random.default_rng(args.seed + 2).choice(
                args.queries, args.exact_queries, replace=False
            )
        )
        t0 = time.perf_counter()
        _, exact_rows = flat.search(np.ascontiguousarray(normalised(queries[subset])), 10)
        exact_s = time.perf_counter() - t0
        hits = [len(set(a) & set(b)) for a, b in zip(found.rows[subset], exact_rows, strict=True)]
        results["recall_at_10"] = round(float(np.mean(hits)) / 10, 4)
        results["exact_faiss"] = {
            "queries": args.exact_queries,
            "queries_per_s": round(args.exact_queries / exact_s, 1),
        }
        print("exact", results["exact_faiss"], "recall", results["recall_at_10"], flush=True)
        del flat
        part = queries[: args.retrieval_queries]
        t0 = time.perf_counter()
        ranks_of_truth(part, vectors, np.zeros(len(part), dtype=np.int64))
        retrieval_s = time.perf_counter() - t0
        results["eval_retrieval"] = {
            "function": "ecomodal.eval.retrieval.ranks_of_truth",
            "queries": args.retrieval_queries,
            "queries_per_s": round(args.retrieval_queries / retrieval_s, 1),
        }
    index_qps = results["index"]["queries_per_s"]
    results["speedup_vs_eval_retrieval"] = round(
        index_qps / results["eval_retrieval"]["queries_per_s"], 1
    )
    results["speedup_vs_exact_faiss"] = round(
        index_qps / results["exact_faiss"]["queries_per_s"], 1
    )
    results["targets_met"] = {
        "recall_at_10>=0.95": results["recall_at_10"] >= 0.95,
        "speedup_vs_eval_retrieval>=20": results["speedup_vs_eval_retrieval"] >= 20,
    }
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
