"""Map speed: cells per second of the first (embedding) pass and of a cached species query.

Two grids, as in the issue: the global 0.25 degree land grid and California at 0.05 degree.
Each stage runs in a fresh process so its peak memory (max RSS) is its own:

1. ``embed``: ``embed_grid`` into an empty cache (encoder load + encoding + zarr writes);
2. ``query``: ``species_map`` with example points over the cached grid (``encoder_load_s``:
   loading the encoder; ``query_s``: cache check, point embedding, scoring every cell) and
   ``write_map`` of the GeoTIFF (``write_s``). With ``--cache-dir`` of an earlier run the
   embed stage is a cache hit.

Usage: ``python benchmarks/map_speed.py [--encoder geoclip] [--device cuda] [--out results.json]``
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import resource
import tempfile
import time
from pathlib import Path

GRIDS = {
    "global-0.25": {"bbox": None, "resolution": 0.25},
    "california-0.05": {"bbox": (-124.5, 32.5, -114.0, 42.0), "resolution": 0.05},
}
#: Example occurrences (lat, lon) of the cached query: oak woodland in California.
POINTS = ([38.5, 37.9, 36.6, 34.4], [-121.5, -122.2, -121.1, -119.7])


def _stage(stage: str, grid_name: str, cache: str, encoder: str, device: str | None) -> dict:
    from ecomodal.encoders import load_encoder
    from ecomodal.maps import embed_grid, make_grid, species_map, write_map

    spec = GRIDS[grid_name]
    start = time.perf_counter()
    grid = make_grid(spec["bbox"], resolution=spec["resolution"])
    grid_s = time.perf_counter() - start
    start = time.perf_counter()
    result: dict = {"stage": stage, "grid": grid_name, "cells": grid.num_cells, "grid_s": grid_s}
    if stage == "embed":
        embed_grid(grid, modality="loc", encoder=encoder, cache_dir=cache, device=device)
    else:
        loaded = load_encoder("loc", encoder, device=device)
        result["encoder_load_s"] = time.perf_counter() - start
        score_start = time.perf_counter()
        grid_map = species_map(
            grid, points=POINTS, encoder=loaded, cache_dir=cache, device=device,
            show_progress=False,
        )  # fmt: skip
        # Cache check (weights fingerprint) + point embedding + scoring every cached cell.
        result["query_s"] = time.perf_counter() - score_start
        result["query_cells_per_s"] = grid.num_cells / result["query_s"]
        tif = Path(cache) / f"{grid_name}.tif"
        write_start = time.perf_counter()
        write_map(tif, grid_map)
        result["write_s"] = time.perf_counter() - write_start
        result["tif_mb"] = tif.stat().st_size / 1e6
    seconds = time.perf_counter() - start
    result["seconds"] = seconds
    result["cells_per_s"] = grid.num_cells / seconds
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--encoder", default="geoclip", help="loc encoder spec")
    parser.add_argument("--device", default=None)
    parser.add_argument("--grids", default=",".join(GRIDS), help="comma-separated grid names")
    parser.add_argument("--out", type=Path, default=None, help="write the results as JSON")
    parser.add_argument(
        "--cache-dir", type=Path, default=None, help="keep the grid cache here (default: temp)"
    )
    args = parser.parse_args()
    context = multiprocessing.get_context("spawn")
    rows = []
    with tempfile.TemporaryDirectory(prefix="map-speed-") as tmp:
        cache = str(args.cache_dir or tmp)
        for name in args.grids.split(","):
            for stage in ("embed", "query"):
                with context.Pool(1) as pool:
                    row = pool.apply(_stage, (stage, name, cache, args.encoder, args.device))
                rows.append(row)
                print(json.dumps(row), flush=True)
    if args.out is not None:
        args.out.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
