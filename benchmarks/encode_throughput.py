"""Encoder throughput on CPU: rows per second for each available encoder at its default batch size.

The location encoder is also timed against the ``geoclip`` package's own ``LocationEncoder`` on the
same 100,000 points, in float32 and with ``precision="bf16"``, and the bf16 vectors are compared
with the float32 ones (cosine). Rounds alternate between implementations and medians are reported,
since this machine's timing is noisy.

    python benchmarks/encode_throughput.py [--points 100000] [--rounds 3] [--json OUT.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np
import torch


def _rate(fn, n_rows: int) -> float:
    start = time.perf_counter()
    fn()
    return n_rows / (time.perf_counter() - start)


def _geoclip_reference(lat: np.ndarray, lon: np.ndarray, batch_size: int):
    import geoclip

    model = geoclip.LocationEncoder().eval()
    points = torch.tensor(np.stack([lat, lon], 1), dtype=torch.float32)

    def run():
        with torch.inference_mode():
            out = [model(points[i : i + batch_size]) for i in range(0, len(points), batch_size)]
        return torch.nn.functional.normalize(torch.cat(out), dim=-1).numpy()

    return run


def bench_location(n_points: int, rounds: int) -> dict:
    from ecomodal.encoders import load_encoder

    rng = np.random.default_rng(0)
    lat, lon = rng.uniform(-90, 90, n_points), rng.uniform(-180, 180, n_points)
    encoder = load_encoder("loc", "geoclip")
    batch = encoder.default_batch_size
    reference = _geoclip_reference(lat, lon, batch)
    runs = {
        "geoclip package (float32)": reference,
        "ecomodal fp32": lambda: encoder.encode(lat=lat, lon=lon),
        "ecomodal bf16": lambda: encoder.encode(lat=lat, lon=lon, precision="bf16"),
    }
    for fn in runs.values():  # warm up (weights cast, allocator)
        fn() if n_points <= 20000 else None
    rates: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(rounds):
        for name, fn in runs.items():
            rates[name].append(_rate(fn, n_points))
    medians = {name: statistics.median(values) for name, values in rates.items()}
    expected = reference()
    fp32 = encoder.encode(lat=lat, lon=lon)
    bf16 = encoder.encode(lat=lat, lon=lon, precision="bf16")
    base = medians["geoclip package (float32)"]
    return {
        "points": n_points,
        "batch_size": batch,
        "rows_per_s": medians,
        "all_rounds": rates,
        "speedup_fp32": medians["ecomodal fp32"] / base,
        "speedup_bf16": medians["ecomodal bf16"] / base,
        "min_cosine_fp32_vs_geoclip": float((fp32 * expected).sum(1).min()),
        "min_cosine_bf16_vs_fp32": float((bf16 * fp32).sum(1).min()),
    }


def bench_environment(n_points: int, rounds: int) -> dict:
    import tempfile

    from ecomodal.encoders import load_encoder
    from ecomodal.encoders.environment import save_environment_encoder
    from ecomodal.geo.covariates import DEFAULT_BANDS
    from ecomodal.models.sinr import SINRResidualMLP

    torch.manual_seed(0)
    model = SINRResidualMLP(num_inputs=len(DEFAULT_BANDS), num_filts=512, depth=4)
    with tempfile.TemporaryDirectory() as folder:
        save_environment_encoder(model, folder, covariate_bands=DEFAULT_BANDS)
        encoder = load_encoder("env", folder)
    rng = np.random.default_rng(0)
    lat, lon = rng.uniform(-90, 90, n_points), rng.uniform(-180, 180, n_points)
    out = {}
    for precision in ("fp32", "bf16"):
        rates = [
            _rate(lambda p=precision: encoder.encode(lat=lat, lon=lon, precision=p), n_points)
            for _ in range(rounds)
        ]
        out[precision] = statistics.median(rates)
    full = encoder.encode(lat=lat, lon=lon)
    half = encoder.encode(lat=lat, lon=lon, precision="bf16")
    return {
        "points": n_points,
        "batch_size": encoder.default_batch_size,
        "rows_per_s": out,
        "min_cosine_bf16_vs_fp32": float((full * half).sum(1).min()),
        "note": "random weights of the published size (15 covariates of the offline stack -> 512)",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", default=None, help="also write the results here")
    args = parser.parse_args()
    torch.set_num_threads(torch.get_num_threads())
    results = {
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "loc": bench_location(args.points, args.rounds),
        "env": bench_environment(args.points, args.rounds),
    }
    loc = results["loc"]
    for name, rate in loc["rows_per_s"].items():
        print(f"loc  {name:28s} {rate:10,.0f} rows/s")
    print(
        f"loc  speed-up over geoclip: fp32 {loc['speedup_fp32']:.2f}x, bf16 "
        f"{loc['speedup_bf16']:.2f}x; cosine fp32 vs geoclip >= "
        f"{loc['min_cosine_fp32_vs_geoclip']:.6f}, bf16 vs fp32 >= "
        f"{loc['min_cosine_bf16_vs_fp32']:.6f}"
    )
    env = results["env"]
    for name, rate in env["rows_per_s"].items():
        print(f"env  ecomodal {name:19s} {rate:10,.0f} rows/s")
    print(f"env  cosine bf16 vs fp32 >= {env['min_cosine_bf16_vs_fp32']:.6f}")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(results, handle, indent=2)


if __name__ == "__main__":
    main()
