"""A synthetic benchmark with known truth: species, places, climate and six modality embeddings.

A seeded latent world holds species (traits, a taxonomy, a geographic range, an abundance) living
in a handful of regions, and a smooth climate over the globe. Each observation draws a species and
a place in its range; its six modalities are fixed random nonlinear maps of what they see, plus
noise, L2-normalised:

- ``text``: the species only (identical for every observation of a species);
- ``loc``: the place only (multi-scale Fourier features of the position);
- ``env``: the climate of the place, plus noise;
- ``sat``: climate plus a finer land-cover-like field of the place, plus noise;
- ``image``: mostly the species, some climate, plus noise;
- ``audio``: the species and the place, plus more noise.

So ``loc`` narrows the species down to the few that share a region, ``image`` identifies it, and
several modalities together say more than any one. Everything is vectorised numpy.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ecomodal.errors import InvalidArgumentError
from ecomodal.modalities import MODALITIES
from ecomodal.options import check_range
from ecomodal.vectors import normalise

#: Noise (norm of the added noise relative to the unit-norm clean embedding) per modality.
DEFAULT_NOISE: dict[str, float] = {
    "image": 0.8,
    "sat": 0.5,
    "loc": 0.05,
    "env": 0.4,
    "text": 0.0,
    "audio": 1.2,
}
BIOMES = ("tundra", "boreal", "temperate", "grassland", "desert", "tropical")
_SYLLABLES = (
    "ca", "lo", "mi", "ra", "te", "nu", "pho", "xy", "la", "sta", "vi", "cor", "den", "tri", "mar",
    "quo", "ly", "sa", "bel", "fu",
)  # fmt: skip


@dataclass(frozen=True)
class SyntheticConfig:
    """Parameters of the synthetic world (the seed is passed to :func:`make_synthetic`)."""

    n_species: int = 100
    dim: int = 512
    latent_dim: int = 32
    climate_dim: int = 8
    hidden_dim: int = 256
    noise: dict[str, float] | None = None
    range_km: float = 800.0
    individual_variation: float = 1.5
    n_regions: int = 6
    missing_rate: float = 0.0
    val_fraction: float = 0.1
    test_fraction: float = 0.1

    def __post_init__(self) -> None:
        for name in ("n_species", "dim", "latent_dim", "climate_dim", "hidden_dim", "n_regions"):
            check_range(getattr(self, name), name, minimum=1, integer=True)
        for name in ("range_km", "individual_variation"):
            check_range(getattr(self, name), name, minimum=0)
        for name in ("missing_rate", "val_fraction", "test_fraction"):
            check_range(getattr(self, name), name, minimum=0, maximum=1)
        check_range(self.val_fraction + self.test_fraction, "val_fraction + test_fraction",
                    maximum=1)  # fmt: skip
        for name, value in (self.noise or {}).items():
            if name not in MODALITIES:
                raise InvalidArgumentError(
                    f"noise names a modality {name!r}; expected some of {', '.join(MODALITIES)}."
                )
            check_range(value, f"noise[{name!r}]", minimum=0)


@dataclass
class SyntheticData:
    """Observations of the synthetic world, with their true species and places."""

    ids: np.ndarray
    embeddings: np.ndarray
    present: np.ndarray
    species: np.ndarray
    lat: np.ndarray
    lon: np.ndarray
    columns: dict[str, np.ndarray]
    modalities: tuple[str, ...] = field(default=MODALITIES)

    def __len__(self) -> int:
        return len(self.ids)

    def select(self, rows: np.ndarray) -> SyntheticData:
        return SyntheticData(
            ids=self.ids[rows],
            embeddings=self.embeddings[rows],
            present=self.present[rows],
            species=self.species[rows],
            lat=self.lat[rows],
            lon=self.lon[rows],
            columns={k: v[rows] for k, v in self.columns.items()},
            modalities=self.modalities,
        )

    def split(self, name: str) -> SyntheticData:
        """The rows whose ``split`` column is ``name`` (``train``, ``val`` or ``test``)."""
        if name not in ("train", "val", "test"):
            raise InvalidArgumentError(
                f"Unknown split {name!r}; expected one of: train, val, test."
            )
        return self.select(np.flatnonzero(self.columns["split"] == name))


def _unit_vector(lat: np.ndarray, lon: np.ndarray) -> np.ndarray:
    la, lo = np.radians(lat), np.radians(lon)
    return np.stack([np.cos(la) * np.cos(lo), np.cos(la) * np.sin(lo), np.sin(la)], axis=-1)


def _fourier(u: np.ndarray, frequencies: np.ndarray) -> np.ndarray:
    proj = u @ frequencies.T
    return np.concatenate([np.cos(proj), np.sin(proj)], axis=-1)


class _RandomMap:
    """A fixed random 2-layer tanh network from ``in_dim`` to ``out_dim``, output L2-normalised."""

    def __init__(self, rng: np.random.Generator, in_dim: int, hidden: int, out_dim: int):
        self.w1 = (rng.standard_normal((in_dim, hidden)) * 1.5 / np.sqrt(in_dim)).astype(np.float32)
        self.b1 = (rng.standard_normal(hidden) * 0.3).astype(np.float32)
        self.w2 = (rng.standard_normal((hidden, out_dim)) / np.sqrt(hidden)).astype(np.float32)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return normalise(np.tanh(x.astype(np.float32) @ self.w1 + self.b1) @ self.w2)


class _World:
    """Everything fixed by the seed: species, regions, climate field and modality maps."""

    def __init__(self, config: SyntheticConfig, seed: int):
        c = config
        rng = np.random.default_rng([seed, 0])
        self.config = c
        # Regions ("continents") and species ranges inside them, so ranges overlap.
        region_lat = np.degrees(np.arcsin(rng.uniform(-0.85, 0.85, c.n_regions)))
        region_lon = rng.uniform(-180, 180, c.n_regions)
        region = rng.integers(0, c.n_regions, c.n_species)
        spread = 1500.0 / 111.0
        self.centre_lat = np.clip(region_lat[region] + rng.normal(0, spread, c.n_species), -80, 80)
        self.centre_lon = region_lon[region] + rng.normal(0, spread, c.n_species) / np.maximum(
            np.cos(np.radians(self.centre_lat)), 0.2
        )
        self.radius_km = c.range_km * rng.lognormal(0.0, 0.3, c.n_species)
        weights = 1.0 / np.arange(1, c.n_species + 1) ** 0.8
        self.abundance = rng.permutation(weights / weights.sum())
        self.traits = rng.standard_normal((c.n_species, c.latent_dim)).astype(np.float32)
        # Smooth climate and a finer land-cover field over the sphere.
        self.climate_freq = rng.normal(0, 2.0, (16, 3))
        self.climate_mix = rng.standard_normal((32, c.climate_dim)) / np.sqrt(32)
        self.cover_freq = rng.normal(0, 8.0, (16, 3))
        self.cover_mix = rng.standard_normal((32, 4)) / np.sqrt(32)
        self.loc_freq = np.concatenate([rng.normal(0, s, (16, 3)) for s in (1.0, 4.0, 16.0)])
        self.maps = {
            "image": _RandomMap(rng, c.latent_dim + c.climate_dim, c.hidden_dim, c.dim),
            "sat": _RandomMap(rng, c.climate_dim + 4, c.hidden_dim, c.dim),
            "loc": _RandomMap(rng, 2 * len(self.loc_freq), c.hidden_dim, c.dim),
            "env": _RandomMap(rng, c.climate_dim, c.hidden_dim, c.dim),
            "text": _RandomMap(rng, c.latent_dim, c.hidden_dim, c.dim),
            "audio": _RandomMap(rng, c.latent_dim + 3, c.hidden_dim, c.dim),
        }
        self.genus = np.arange(c.n_species) // 5
        self.family = self.genus // 4
        self.genus_names = _latin_names(rng, int(self.genus.max()) + 1, capital=True)
        self.family_names = [
            name + "idae" for name in _latin_names(rng, int(self.family.max()) + 1, capital=True)
        ]
        self.epithets = _latin_names(rng, c.n_species, capital=False)

    def climate(self, u: np.ndarray, lat: np.ndarray) -> np.ndarray:
        field_ = np.tanh(_fourier(u, self.climate_freq) @ self.climate_mix)
        field_[:, 0] = 0.5 * field_[:, 0] + np.cos(np.radians(lat)) * 1.5 - 0.75  # warm equator
        return field_

    def cover(self, u: np.ndarray) -> np.ndarray:
        return np.tanh(_fourier(u, self.cover_freq) @ self.cover_mix)


def _latin_names(rng: np.random.Generator, count: int, *, capital: bool) -> list[str]:
    endings = ("us", "a", "is", "um", "ens")
    names: list[str] = []
    seen: set[str] = set()
    while len(names) < count:
        parts = rng.choice(_SYLLABLES, size=rng.integers(2, 4))
        name = "".join(parts) + (str(rng.choice(endings)) if not capital else "")
        name = name.capitalize() if capital else name
        if name not in seen:
            seen.add(name)
            names.append(name)
    return names


@dataclass
class _Latent:
    """What one draw of observations is made of: species, places and individuals."""

    species: np.ndarray
    lat: np.ndarray
    lon: np.ndarray
    u: np.ndarray
    climate: np.ndarray
    individual: np.ndarray


def _draw_latent(world: _World, n: int, rng: np.random.Generator) -> _Latent:
    species = rng.choice(world.config.n_species, size=n, p=world.abundance)
    return _with_places(world, species, rng)


def _with_places(world: _World, species: np.ndarray, rng: np.random.Generator) -> _Latent:
    """Places drawn in each species' range, their climate, and individuals of the species."""
    n = len(species)
    radius_deg = world.radius_km[species] / 111.0
    lat = np.clip(world.centre_lat[species] + rng.normal(0, 1, n) * radius_deg, -89.0, 89.0)
    lon_scale = np.maximum(np.cos(np.radians(lat)), 0.05)
    lon = world.centre_lon[species] + rng.normal(0, 1, n) * radius_deg / lon_scale
    lon = (lon + 180.0) % 360.0 - 180.0
    u = _unit_vector(lat, lon)
    climate = world.climate(u, lat)
    individual = _individuals(world, species, rng)
    return _Latent(species, lat, lon, u, climate, individual)


def _individuals(world: _World, species: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Individuals differ from their species' mean: photos and sounds see the individual."""
    traits = world.traits[species]
    variation = world.config.individual_variation
    return traits + variation * rng.standard_normal(traits.shape).astype(np.float32)


def _observe(
    world: _World, latent: _Latent, name: str, individual: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """One modality's embeddings [N, dim] of the latent draw: its map of what it sees, plus noise."""
    c = world.config
    inputs = {
        "image": lambda: np.concatenate([individual, 0.5 * latent.climate], axis=1),
        "sat": lambda: np.concatenate([latent.climate, world.cover(latent.u)], axis=1),
        "loc": lambda: _fourier(latent.u, world.loc_freq),
        "env": lambda: latent.climate,
        "text": lambda: world.traits[latent.species],
        "audio": lambda: np.concatenate([individual, 2.0 * latent.u], axis=1),
    }
    clean = world.maps[name](inputs[name]())
    noise = {**DEFAULT_NOISE, **(c.noise or {})}[name]
    if noise > 0:
        eps = rng.standard_normal((len(clean), c.dim), dtype=np.float32)
        clean = normalise(clean + noise * eps / np.sqrt(c.dim))
    return clean


def redraw_modality(
    n_observations: int,
    modality: str,
    *,
    draws: int,
    keep_individual: bool,
    keep_place: bool = True,
    config: SyntheticConfig | None = None,
    seed: int = 0,
    draw_seed: int = 0,
) -> np.ndarray:
    """``draws`` fresh versions [draws, N, dim] of one modality of ``make_synthetic(n_observations,
    config=config, seed=seed)``: the same species, a fresh noise, (unless ``keep_individual``) a
    fresh individual of the same species and (unless ``keep_place``) a fresh place in its range.
    What varies between the draws is what the other modalities do not reveal (the known-truth
    bound of ``benchmarks/uncertainty_quality.py``)."""
    c = config or SyntheticConfig()
    if modality not in MODALITIES:
        raise InvalidArgumentError(
            f"Unknown modality {modality!r}; expected one of {', '.join(MODALITIES)}."
        )
    check_range(draws, "draws", minimum=1, integer=True)
    world = _World(c, seed)
    latent = _draw_latent(world, n_observations, np.random.default_rng([seed, 1]))
    rng = np.random.default_rng([seed, 2, draw_seed])
    out = np.empty((draws, n_observations, c.dim), dtype=np.float32)
    for d in range(draws):
        drawn = latent if keep_place else _with_places(world, latent.species, rng)
        individual = (
            latent.individual if keep_individual else _individuals(world, latent.species, rng)
        )
        out[d] = _observe(world, drawn, modality, individual, rng)
    return out


def make_synthetic(
    n_observations: int = 10_000, *, config: SyntheticConfig | None = None, seed: int = 0
) -> SyntheticData:
    """Generate ``n_observations`` observations of the world fixed by ``seed``.

    Returns stacked embeddings [N, 6, dim] in the canonical modality order, a present mask, the
    true species and places, and extra columns (``scientific_name``, ``genus``, ``family``,
    ``species_id``, ``lat``, ``lon``, ``biome``, ``split``). The same seed gives identical output.
    """
    c = config or SyntheticConfig()
    check_range(n_observations, "n_observations", minimum=1, integer=True)
    check_range(seed, "seed", minimum=0, integer=True)
    world = _World(c, seed)
    rng = np.random.default_rng([seed, 1])
    n = n_observations
    latent = _draw_latent(world, n, rng)
    species, lat, lon, climate = latent.species, latent.lat, latent.lon, latent.climate
    embeddings = np.empty((n, len(MODALITIES), c.dim), dtype=np.float32)
    for i, name in enumerate(MODALITIES):
        embeddings[:, i] = _observe(world, latent, name, latent.individual, rng)
    present = rng.random((n, len(MODALITIES))) >= c.missing_rate
    empty = ~present.any(axis=1)
    present[np.flatnonzero(empty), rng.integers(0, len(MODALITIES), int(empty.sum()))] = True
    embeddings[~present] = 0.0

    split = np.full(n, "train", dtype=object)
    order = rng.permutation(n)
    n_test = int(round(c.test_fraction * n))
    n_val = int(round(c.val_fraction * n))
    split[order[:n_test]] = "test"
    split[order[n_test : n_test + n_val]] = "val"
    biome = np.asarray(BIOMES, dtype=object)[
        np.argmax(climate[:, : min(len(BIOMES), c.climate_dim)], axis=1)
    ]
    genus_names = np.asarray(world.genus_names, dtype=object)[world.genus[species]]
    epithets = np.asarray(world.epithets, dtype=object)[species]
    columns: dict[str, np.ndarray] = {
        "scientific_name": genus_names + " " + epithets,
        "genus": genus_names,
        "family": np.asarray(world.family_names, dtype=object)[world.family[species]],
        "species_id": species.astype(np.int64),
        "lat": lat,
        "lon": lon,
        "biome": biome,
        "split": split,
    }
    return SyntheticData(
        ids=np.asarray([f"obs-{i:06d}" for i in range(n)], dtype=object),
        embeddings=embeddings,
        present=present,
        species=species,
        lat=lat,
        lon=lon,
        columns=columns,
    )


def to_batch(data: SyntheticData) -> Any:
    """The data as an :class:`~ecomodal.io.tables.EmbeddingBatch`, ready to write as a table."""
    import pyarrow as pa

    from ecomodal.io.batch import EmbeddingBatch

    columns = pa.table(
        {k: pa.array(v.tolist() if v.dtype == object else v) for k, v in data.columns.items()}
    )
    return EmbeddingBatch.from_stacked(
        data.ids,
        data.embeddings,
        data.present,
        data.modalities,
        columns=columns,
        encoders={m: "synthetic" for m in data.modalities},
    )
