"""Where EcoBench-lite's places come from.

- ``"photo"`` (the default): real photo locations, drawn without replacement from GeoCLIP's 100k
  gallery (:func:`photo_places`);
- ``"random-land"``: area-uniform random points on land (:func:`random_land_places`), so a model
  can be tested beyond the places people photograph.

Land rule: a point is on land when the MODIS MCD12C1 2019 IGBP land-cover class of its 0.05-degree
cell (the raster :func:`ecomodal.geo.labels.land_cover` reads, shipped offline) is not water
(IGBP code 0). Snow and ice (Antarctica, Greenland), barren land and wetlands count as land.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ecomodal.errors import InvalidArgumentError, InvalidInputError

#: The place generators :func:`make_places` knows, by name.
PLACES = ("photo", "random-land")
PHOTO_SOURCE = "GeoCLIP photo-location gallery coordinates_100K.csv (geoclip, MIT)"
LAND_RULE = (
    "area-uniform on the sphere (lat = degrees(arcsin(u)), u ~ U(-1, 1); lon ~ U(-180, 180)), "
    "kept where the MODIS MCD12C1 2019 IGBP land-cover cell (0.05 deg) is not water (code 0)"
)
#: Points drawn per round by :func:`random_land_places`. Fixed, so the first ``n`` places of a
#: seed do not depend on how many are asked for (a smaller build is a prefix of a larger one).
ROUND_SIZE = 16_384


@dataclass
class Places:
    """Coordinates, ids, a one-line source and the ``places`` provenance record of a set of
    places."""

    lat: np.ndarray
    lon: np.ndarray
    ids: np.ndarray
    source: str
    record: dict[str, Any] = field(default_factory=dict)


def check_places(places: Any, name: str = "places") -> str:
    """``places`` if it names a generator in :data:`PLACES`, else an error naming the choices."""
    if places not in PLACES:
        raise InvalidArgumentError(f"{name} must be one of {', '.join(PLACES)}; got {places!r}.")
    return str(places)


def geoclip_photo_locations() -> np.ndarray:
    """The 100,000 real photo locations bundled with ``geoclip``, as [N, 2] (lat, lon)."""
    from ecomodal.io.packaged import package_file

    path = package_file(
        "geoclip",
        "model",
        "gps_gallery",
        "coordinates_100K.csv",
        install_hint="pip install 'ecomodal[geo]' (geoclip).",
    )
    values = np.loadtxt(path, delimiter=",", skiprows=1, dtype=np.float64)
    if values.ndim != 2 or values.shape[1] != 2:
        raise InvalidInputError(f"{path}: expected two columns LAT,LON.")
    return values


def photo_places(n: int, seed: int) -> Places:
    """``n`` GeoCLIP photo locations drawn without replacement with ``seed``, in gallery order;
    ids ``geoclip-<gallery index>``."""
    places = geoclip_photo_locations()
    if not 1 <= n <= len(places):
        raise InvalidInputError(f"n must be between 1 and {len(places)}; got {n}.")
    chosen = np.sort(np.random.default_rng([seed, 0]).choice(len(places), size=n, replace=False))
    ids = np.array([f"geoclip-{index:06d}" for index in chosen], dtype=object)
    record = {"kind": "photo", "source": PHOTO_SOURCE}
    return Places(places[chosen, 0], places[chosen, 1], ids, PHOTO_SOURCE, record)


def is_land(lat: np.ndarray, lon: np.ndarray) -> np.ndarray:
    """Boolean [N]: the points on land by the module's rule (MODIS IGBP class is not water)."""
    from ecomodal.geo.labels import land_cover

    codes, _ = land_cover(lat, lon)
    return codes != 0


def random_land_places(n: int, seed: int, *, round_size: int = ROUND_SIZE) -> Places:
    """``n`` area-uniform random places on land, deterministic for ``seed``.

    Points are drawn uniformly on the sphere in rounds of ``round_size`` (``lat =
    degrees(arcsin(u))`` with ``u ~ U(-1, 1)``, ``lon ~ U(-180, 180)``) and kept when
    :func:`is_land`; the first ``n`` kept, in draw order, are the places (ids ``land-000000``, ...).
    ``record["draws"]`` is how many points were drawn up to and including the ``n``-th kept one.
    """
    from ecomodal.options import check_range

    check_range(n, "n", minimum=1, integer=True)
    check_range(seed, "seed", minimum=0, integer=True)
    check_range(round_size, "round_size", minimum=1, integer=True)
    rng = np.random.default_rng([seed, 3])
    kept_lat: list[np.ndarray] = []
    kept_lon: list[np.ndarray] = []
    kept = draws = 0
    while kept < n:
        lat = np.degrees(np.arcsin(rng.uniform(-1.0, 1.0, round_size)))
        lon = rng.uniform(-180.0, 180.0, round_size)
        land = np.flatnonzero(is_land(lat, lon))[: n - kept]
        kept_lat.append(lat[land])
        kept_lon.append(lon[land])
        kept += len(land)
        draws += int(land[-1]) + 1 if kept == n else round_size
    ids = np.array([f"land-{index:06d}" for index in range(n)], dtype=object)
    record = {"kind": "random-land", "rule": LAND_RULE, "draws": draws, "kept": int(n)}
    source = f"random land points (numpy seed [{seed}, 3]): {LAND_RULE}"
    return Places(np.concatenate(kept_lat), np.concatenate(kept_lon), ids, source, record)


def make_places(places: str, n: int, seed: int) -> Places:
    """The places of an EcoBench-lite build: ``places`` is one of :data:`PLACES`."""
    generator = {"photo": photo_places, "random-land": random_land_places}[check_places(places)]
    return generator(n, seed)
