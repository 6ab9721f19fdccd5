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


def _photos(folder, n: int) -> list[str]:
    from PIL import Image

    rng = np.random.default_rng(0)
    paths = []
    for i in range(n):
        path = f"{folder}/photo{i}.jpg"
        Image.fromarray(rng.integers(0, 255, (480, 640, 3), dtype=np.uint8)).save(path, quality=90)
        paths.append(path)
    return paths


def _clips(folder, n: int) -> list[str]:
    import soundfile

    rng = np.random.default_rng(0)
    paths = []
    for i in range(n):
        path = f"{folder}/clip{i}.wav"
        soundfile.write(path, rng.normal(0, 0.1, (44_100 * 8, 2)).astype(np.float32), 44_100)
        paths.append(path)
    return paths


def _time_encoder(encoder, inputs, rounds: int) -> dict:
    encoder.encode(inputs[: encoder.default_batch_size])  # warm-up
    out = {}
    for precision in ("fp32", "bf16"):
        rates = [
            _rate(lambda p=precision: encoder.encode(inputs, precision=p), len(inputs))
            for _ in range(rounds)
        ]
        out[precision] = statistics.median(rates)
    full, half = encoder.encode(inputs), encoder.encode(inputs, precision="bf16")
    return {
        "rows": len(inputs),
        "batch_size": encoder.default_batch_size,
        "rows_per_s": out,
        "min_cosine_bf16_vs_fp32": float((full * half).sum(1).min()),
    }


def bench_media(rows: int, rounds: int) -> dict:
    """Image, text, sat and audio encoders of the published sizes (random weights: the hub is
    out of reach here), and the offline encoders with their real weights."""
    import tempfile

    import open_clip
    import transformers
    from safetensors.torch import save_file

    from ecomodal.encoders import load_encoder

    results = {}
    texts = [
        f"Animalia Chordata Aves Passeriformes Corvidae Corvus species{i}" for i in range(rows * 8)
    ]
    with tempfile.TemporaryDirectory() as folder:
        torch.manual_seed(0)
        clip_dir = f"{folder}/clip"
        import os

        os.makedirs(clip_dir)
        config = open_clip.get_model_config("ViT-B-16")
        with open(f"{clip_dir}/open_clip_config.json", "w") as handle:
            json.dump({"model_cfg": config}, handle)
        model = open_clip.create_model("ViT-B-16")
        save_file(
            {k: v.contiguous() for k, v in model.state_dict().items()},
            f"{clip_dir}/open_clip_model.safetensors",
        )
        del model
        photos = _photos(folder, rows)
        results["image (ViT-B/16, TaxaBind preprocessing)"] = _time_encoder(
            load_encoder("image", clip_dir), photos, rounds
        )
        results["text (BioCLIP text tower)"] = _time_encoder(
            load_encoder("text", clip_dir), texts, rounds
        )
        sat_config = transformers.CLIPVisionConfig(patch_size=16, projection_dim=512)
        transformers.CLIPVisionModelWithProjection(sat_config).save_pretrained(f"{folder}/sat")
        results["sat (CLIP ViT-B/16 vision + projection)"] = _time_encoder(
            load_encoder("sat", f"{folder}/sat"), photos, rounds
        )
        audio_config = transformers.ClapAudioConfig(enable_fusion=True, projection_dim=512)
        transformers.ClapAudioModelWithProjection(audio_config).save_pretrained(f"{folder}/audio")
        clips = _clips(folder, max(4, rows // 4))
        results["audio (CLAP HTSAT-fused, 8 s clips)"] = _time_encoder(
            load_encoder("audio", f"{folder}/audio"), clips, rounds
        )
        results["image offline (EfficientNet-Lite0)"] = _time_encoder(
            load_encoder("image", "efficientnet-lite0"), photos, rounds
        )
        results["text offline (all-MiniLM-L6-v2)"] = _time_encoder(
            load_encoder("text", "minilm"), texts, rounds
        )
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--media-rows", type=int, default=64, help="photos per media encoder")
    parser.add_argument("--skip-media", action="store_true", help="only loc and env")
    parser.add_argument("--json", default=None, help="also write the results here")
    args = parser.parse_args()
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
    if not args.skip_media:
        results["media"] = bench_media(args.media_rows, args.rounds)
        for name, row in results["media"].items():
            rates = row["rows_per_s"]
            print(
                f"{name:44s} fp32 {rates['fp32']:8,.1f} rows/s  bf16 {rates['bf16']:8,.1f} rows/s "
                f"(batch {row['batch_size']}, cosine bf16 vs fp32 >= "
                f"{row['min_cosine_bf16_vs_fp32']:.4f})"
            )
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(results, handle, indent=2)


if __name__ == "__main__":
    main()
