"""Load on ``ecomodal serve``: concurrent clients on tiles and /api/point, memory, and new layers.

1. A real server (``python -m ecomodal serve RUN --port P``, its own process) takes ``--clients``
   (32) concurrent clients for ``--seconds`` (60): each loops over a seeded random mix of tile
   requests (``--tile-share``, 80%: a random layer, zoom 0-6, a tile over land) and ``/api/point``
   at random land places. Reported: requests, errors (any status but 200 or a failed
   connection), p50/p95/p99 latency per kind, and the server's resident memory (psutil)
   sampled every second: growth from the end of a ``--warmup`` (10 s) to the end, in %.
2. The sceptic's tile path, in-process on the same tiles: rio-tiler's ``Reader.tile`` (a GDAL
   warp per tile) + its PNG rendering, against ecomodal's in-memory lookup
   (:class:`ecomodal.serve.tiles.TileRenderer`, cache off): ms per tile, both in this run.
3. New layers on a cached grid (``--grid-cache``, e.g. the global 0.25-degree land grid):
   load time, then the median of ``--repeats`` (5) timings of a presence-points suitability
   layer (300 points, 10,000 background cells) and a similar-places layer, in-process and over
   HTTP (POST /api/layers on a server started with ``--grid-cache``).

Results: ``benchmarks/results-serve_load.json``. Run on 2 cores (``taskset -c 0,1``).

    python benchmarks/serve_load.py --run quickstart-output [--grid-cache GRID_CACHE_DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import psutil

RESULTS = Path(__file__).with_name("results-serve_load.json")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(run: Path, extra: list[str]) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    command = [sys.executable, "-m", "ecomodal", "serve", str(run), "--port", str(port), *extra]
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    import httpx

    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(process.stderr.read().decode()[-2000:])
        try:
            if httpx.get(f"{url}/api/info", timeout=5).status_code == 200:
                return process, url
        except httpx.HTTPError:
            time.sleep(0.5)
    raise RuntimeError("the server did not start in 10 minutes")


def land_places(count: int, seed: int) -> np.ndarray:
    """Seeded random places on land (lat, lon)."""
    from global_land_mask import globe

    rng = np.random.default_rng(seed)
    out = []
    while len(out) < count:
        lat = rng.uniform(-60, 75, 4 * count)
        lon = rng.uniform(-180, 180, 4 * count)
        keep = globe.is_land(lat, lon)
        out.extend(zip(lat[keep], lon[keep], strict=True))
    return np.asarray(out[:count])


def tile_of(lat: float, lon: float, z: int) -> tuple[int, int]:
    n = 1 << z
    x = int((lon + 180.0) / 360.0 * n)
    y = int((1.0 - np.arcsinh(np.tan(np.radians(lat))) / np.pi) / 2.0 * n)
    return min(max(x, 0), n - 1), min(max(y, 0), n - 1)


def request_plan(layers: list[str], count: int, tile_share: float, seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    places = land_places(count, seed)
    plan = []
    for lat, lon in places:
        if rng.random() < tile_share:
            z = int(rng.integers(0, 7))
            x, y = tile_of(lat, lon, z)
            plan.append(f"/tiles/{layers[rng.integers(len(layers))]}/{z}/{x}/{y}.png")
        else:
            plan.append(f"/api/point?lat={lat:.4f}&lon={lon:.4f}")
    return plan


async def load(url: str, plan: list[str], clients: int, seconds: float) -> list[tuple]:
    import httpx

    records: list[tuple] = []
    stop = time.monotonic() + seconds
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as client:

        async def worker(index: int) -> None:
            step = index
            while time.monotonic() < stop:
                path = plan[step % len(plan)]
                step += clients
                kind = "tile" if path.startswith("/tiles") else "point"
                start = time.perf_counter()
                try:
                    response = await client.get(path)
                    ok = response.status_code == 200
                except httpx.HTTPError:
                    ok = False
                records.append((kind, time.perf_counter() - start, ok, time.monotonic()))

        await asyncio.gather(*(worker(i) for i in range(clients)))
    return records


def watch_memory(process: psutil.Process, seconds: float, out: list) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        out.append((time.monotonic(), process.memory_info().rss))
        time.sleep(1.0)


def summarise(records: list[tuple]) -> dict:
    out = {}
    for kind in ("tile", "point"):
        rows = [r for r in records if r[0] == kind]
        latency = np.array([r[1] for r in rows]) * 1000
        out[kind] = {
            "requests": len(rows),
            "errors": int(sum(not r[2] for r in rows)),
            "p50_ms": round(float(np.percentile(latency, 50)), 1) if len(rows) else None,
            "p95_ms": round(float(np.percentile(latency, 95)), 1) if len(rows) else None,
            "p99_ms": round(float(np.percentile(latency, 99)), 1) if len(rows) else None,
        }
    return out


def tile_paths_compared(run: Path, count: int, seed: int) -> dict:
    """ms per tile: rio-tiler (GDAL warp + render) against ecomodal's in-memory renderer."""
    from rio_tiler.io import Reader

    from ecomodal.serve.layers import discover_layers
    from ecomodal.serve.tiles import TileRenderer

    layers, _ = discover_layers(run)
    layer = layers[sorted(layers)[0]]
    places = land_places(count, seed)
    rng = np.random.default_rng(seed)
    tiles = []
    for lat, lon in places:
        z = int(rng.integers(0, 7))
        tiles.append((*tile_of(lat, lon, z), z))
    renderer = TileRenderer(max_tiles=0)
    vmin, vmax = layer.value_range()
    start = time.perf_counter()
    for x, y, z in tiles:
        renderer.render(layer, z, x, y)
    ours = (time.perf_counter() - start) / len(tiles) * 1000
    start = time.perf_counter()
    with Reader(str(layer.path)) as reader:
        for x, y, z in tiles:
            image = reader.tile(x, y, z, tilesize=256)
            image.rescale(in_range=((vmin, vmax),))
            image.render(img_format="PNG", colormap=None)
    theirs = (time.perf_counter() - start) / len(tiles) * 1000
    return {
        "layer": layer.id,
        "tiles": len(tiles),
        "ecomodal_ms_per_tile": round(ours, 2),
        "rio_tiler_ms_per_tile": round(theirs, 2),
        "speedup": round(theirs / ours, 1),
    }


def new_layers(grid_cache: Path, run: Path, repeats: int) -> dict:
    """Made layers on a cached grid: in-process timings and over HTTP."""
    import httpx

    from ecomodal.serve.queries import GridCells, points_layer, similar_layer

    start = time.perf_counter()
    cells = GridCells.from_cache(grid_cache)
    load_s = time.perf_counter() - start
    places = land_places(300, 1)
    timings: dict[str, list[float]] = {"points": [], "similar": []}
    for i in range(repeats):
        start = time.perf_counter()
        points_layer(cells, places[:, 0], places[:, 1], seed=i)
        timings["points"].append(time.perf_counter() - start)
        start = time.perf_counter()
        similar_layer(cells, float(places[i, 0]), float(places[i, 1]))
        timings["similar"].append(time.perf_counter() - start)
    del cells
    process, url = start_server(run, ["--grid-cache", str(grid_cache)])
    http: dict[str, list[float]] = {"points": [], "similar": []}
    try:
        points = [{"lat": float(a), "lon": float(b)} for a, b in places]
        with httpx.Client(base_url=url, timeout=120) as client:
            for i in range(repeats):
                start = time.perf_counter()
                response = client.post(
                    "/api/layers", json={"kind": "points", "points": points, "seed": i}
                )
                response.raise_for_status()
                http["points"].append(time.perf_counter() - start)
                start = time.perf_counter()
                pin = {"kind": "similar", "lat": float(places[i, 0]), "lon": float(places[i, 1])}
                client.post("/api/layers", json=pin).raise_for_status()
                http["similar"].append(time.perf_counter() - start)
            info = client.get("/api/info").json()["grid"]
    finally:
        process.terminate()
        process.wait(30)
    return {
        "grid": info,
        "load_s": round(load_s, 2),
        "median_s": {k: round(float(np.median(v)), 3) for k, v in timings.items()},
        "http_median_s": {k: round(float(np.median(v)), 3) for k, v in http.items()},
        "repeats": repeats,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", type=Path, required=True, help="a quickstart output folder")
    parser.add_argument("--grid-cache", type=Path, help="grid embedding stores for new layers")
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--warmup", type=float, default=10.0)
    parser.add_argument("--tile-share", type=float, default=0.8)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    results: dict = {"clients": args.clients, "seconds": args.seconds, "cpus": os.cpu_count()}
    process, url = start_server(args.run, [])
    try:
        import httpx

        layers = [item["id"] for item in httpx.get(f"{url}/api/layers").json()["layers"]]
        plan = request_plan(layers, 20_000, args.tile_share, args.seed)
        server = psutil.Process(process.pid)
        memory: list = []
        import threading

        watcher = threading.Thread(
            target=watch_memory, args=(server, args.seconds + 1, memory), daemon=True
        )
        watcher.start()
        began = time.monotonic()
        records = asyncio.run(load(url, plan, args.clients, args.seconds))
        watcher.join()
        results["load"] = summarise(records)
        after_warmup = [rss for t, rss in memory if t >= began + args.warmup]
        start_rss, end_rss = after_warmup[0], memory[-1][1]
        results["memory_mb"] = {
            "after_warmup": round(start_rss / 2**20, 1),
            "end": round(end_rss / 2**20, 1),
            "max": round(max(rss for _, rss in memory) / 2**20, 1),
            "growth_pct": round(100 * (end_rss - start_rss) / start_rss, 2),
        }
        results["throughput_rps"] = round(len(records) / args.seconds, 1)
    finally:
        process.terminate()
        process.wait(30)
    results["tile_paths"] = tile_paths_compared(args.run, 300, args.seed)
    if args.grid_cache is not None:
        results["new_layers"] = new_layers(args.grid_cache, args.run, args.repeats)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
