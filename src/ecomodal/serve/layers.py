"""Map layers a server shows: the GeoTIFFs of a folder and the layers made on request.

A :class:`Layer` is one EPSG:4326 north-up raster held in memory (read on first use), with what
a map needs to draw it: a colour map, a value range and units (from the GeoTIFF's tags when it
has them, else inferred from what ecomodal wrote there), and its kind (suitability, uncertainty,
expected error, diversity, embedding RGB).
"""

from __future__ import annotations

import json
import re
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ecomodal.errors import InvalidArgumentError, RasterFormatError

#: Colour map per kind when a GeoTIFF names none (matplotlib names).
DEFAULT_COLORMAPS = {
    "suitability": "viridis",
    "uncertainty": "magma",
    "expected-error": "magma",
    "diversity": "cividis",
    "similarity": "viridis",
    "other": "viridis",
}
#: Units per kind when a GeoTIFF names none.
DEFAULT_UNITS = {
    "suitability": "relative suitability",
    "uncertainty": "ProM3E sigma_l1",
    "expected-error": "expected 1 - cosine to the truth",
    "diversity": "ProM3E sigma_l1",
    "similarity": "cosine similarity",
    "embedding-rgb": "principal components as RGB",
    "other": "",
}
#: Folders never searched for layers (caches of embeddings, not maps).
SKIPPED_FOLDERS = ("grid-cache", ".git", "checkpoints", "logs")


@dataclass
class Layer:
    """One raster layer: ``values`` [bands, height, width] (NaN = no data) from (west, north)."""

    id: str
    title: str
    kind: str
    band_names: list[str]
    west: float
    north: float
    resolution_x: float
    resolution_y: float
    width: int
    height: int
    tags: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None
    made: bool = False
    colormap: str = "viridis"
    units: str = ""
    vmin: float | None = None
    vmax: float | None = None
    _values: np.ndarray | None = field(default=None, repr=False)
    #: A made layer's values per grid cell (its GeoTIFF is written from them on download).
    cell_values: np.ndarray | None = field(default=None, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """(west, south, east, north) in degrees."""
        return (
            self.west,
            self.north - self.height * self.resolution_y,
            self.west + self.width * self.resolution_x,
            self.north,
        )

    @property
    def is_rgb(self) -> bool:
        return self.kind == "embedding-rgb"

    @property
    def values(self) -> np.ndarray:
        """The bands [bands, height, width] as float32, read from the file once."""
        if self._values is None:
            with self._lock:
                if self._values is None:
                    self._values = read_layer_values(self.path)
                    if self.vmin is None or self.vmax is None:
                        self.vmin, self.vmax = value_range(self._values, rgb=self.is_rgb)
        return self._values

    def value_range(self) -> tuple[float, float]:
        """The colour map's (vmin, vmax)."""
        self.values  # noqa: B018 - reading fills the range
        return float(self.vmin), float(self.vmax)  # type: ignore[arg-type]

    def sample(self, lat: float, lon: float) -> list[float | None]:
        """Every band's value at a point (None outside the raster or where there is no data)."""
        col = int(np.floor((lon - self.west) / self.resolution_x))
        row = int(np.floor((self.north - lat) / self.resolution_y))
        if lat == self.bounds[1]:
            row = self.height - 1
        if not (0 <= row < self.height and 0 <= col < self.width):
            return [None] * len(self.band_names)
        out = self.values[:, row, col]
        return [float(v) if np.isfinite(v) else None for v in out]

    def describe(self) -> dict[str, Any]:
        """The layer as the API lists it."""
        vmin, vmax = self.value_range()
        return {
            "id": self.id,
            "title": self.title,
            "kind": self.kind,
            "bands": list(self.band_names),
            "units": self.units,
            "colormap": self.colormap,
            "colors": colormap_stops(self.colormap) if not self.is_rgb else [],
            "vmin": vmin,
            "vmax": vmax,
            "bounds": list(self.bounds),
            "resolution": self.resolution_x,
            "made": self.made,
            "tiles": f"/tiles/{self.id}/{{z}}/{{x}}/{{y}}.png",
            "download": f"/api/layers/{self.id}.tif",
            "tags": {k: v for k, v in self.tags.items() if k not in ("grid",)},
        }


def read_layer_values(path: Path | None) -> np.ndarray:
    """All bands of a GeoTIFF as float32 [bands, height, width], its nodata as NaN."""
    from ecomodal.io.rasters import read_raster

    if path is None:
        raise RasterFormatError("a made layer has no file to read")
    return read_raster(path).values


def value_range(values: np.ndarray, *, rgb: bool = False) -> tuple[float, float]:
    """The 2nd and 98th percentiles of the finite values of band 0 (0..1 for RGB)."""
    if rgb:
        return 0.0, 1.0
    finite = values[0][np.isfinite(values[0])]
    if not finite.size:
        return 0.0, 1.0
    low, high = (float(v) for v in np.percentile(finite, [2, 98]))
    if high <= low:
        high = low + 1e-6
    return low, high


def layer_kind(tags: dict[str, Any], band_names: list[str]) -> str:
    """What a GeoTIFF that ecomodal wrote shows, from its tags and bands."""
    measure, method = str(tags.get("measure", "")), str(tags.get("method", ""))
    if tags.get("kind"):
        return str(tags["kind"])
    if band_names[:3] == ["red", "green", "blue"] or "embedding" in tags:
        return "embedding-rgb"
    if "species_density" in band_names:
        return "diversity"
    if "expected-error" in (measure, method) or method.endswith("expected-error"):
        return "expected-error"
    if measure.startswith("sigma") or "sigma" in method:
        return "uncertainty"
    if "suitability" in band_names:
        return "suitability"
    return "other"


def colormap_lut(name: str) -> np.ndarray:
    """A matplotlib colour map as 256 RGBA uint8 rows."""
    return _lut(name).copy()


def _lut(name: str) -> np.ndarray:
    cached = _LUTS.get(name)
    if cached is None:
        import matplotlib

        try:
            cmap = matplotlib.colormaps[name]
        except KeyError as err:
            raise InvalidArgumentError(
                f"colormap {name!r} is not a matplotlib colour map (e.g. viridis, magma)."
            ) from err
        cached = (cmap(np.linspace(0.0, 1.0, 256)) * 255).round().astype(np.uint8)
        _LUTS[name] = cached
    return cached


_LUTS: dict[str, np.ndarray] = {}


def colormap_stops(name: str, count: int = 11) -> list[str]:
    """``count`` evenly spaced colours of a colour map as ``#rrggbb`` (for a colour bar)."""
    lut = _lut(name)
    rows = np.linspace(0, 255, count).round().astype(int)
    return ["#{:02x}{:02x}{:02x}".format(*lut[r, :3]) for r in rows]


def _tag_value(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


def open_layer(path: Path, layer_id: str) -> Layer:
    """A layer over one GeoTIFF (values read on first use); a clear error if it cannot be one."""
    import rasterio

    try:
        with rasterio.open(path) as dataset:
            tags = {key: _tag_value(value) for key, value in dataset.tags().items()}
            crs = dataset.crs.to_string() if dataset.crs else ""
            transform = dataset.transform
            band_names = [
                d or f"band{i + 1}" for i, d in enumerate(dataset.descriptions or [None])
            ][: dataset.count]
            width, height = dataset.width, dataset.height
    except rasterio.errors.RasterioIOError as err:
        raise RasterFormatError(f"{path} is not a readable GeoTIFF: {err}") from err
    if crs != "EPSG:4326" or transform.b != 0 or transform.d != 0 or transform.e >= 0:
        raise RasterFormatError(f"{path} is not a north-up EPSG:4326 raster (it is {crs!r}).")
    kind = layer_kind(tags, band_names)
    title = str(tags.get("title") or path.stem.replace("-", " "))
    vmin, vmax = tags.get("vmin"), tags.get("vmax")
    return Layer(
        id=layer_id,
        title=title,
        kind=kind,
        band_names=band_names,
        west=float(transform.c),
        north=float(transform.f),
        resolution_x=float(transform.a),
        resolution_y=float(-transform.e),
        width=int(width),
        height=int(height),
        tags=tags,
        path=path,
        colormap=str(tags.get("colormap") or DEFAULT_COLORMAPS.get(kind, "viridis")),
        units=str(tags.get("units") or DEFAULT_UNITS.get(kind, "")),
        vmin=float(vmin) if isinstance(vmin, (int, float)) else None,
        vmax=float(vmax) if isinstance(vmax, (int, float)) else None,
    )


def slug(text: str) -> str:
    """A layer id from text: lower case letters, digits and hyphens."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "layer"


def discover_layers(folder: Path) -> tuple[dict[str, Layer], dict[str, str]]:
    """Every GeoTIFF under ``folder`` (not in caches) as a layer, by id, and the files skipped
    with the reason. Ids are file stems, or folder-qualified where two stems clash."""
    paths = sorted(
        p
        for p in folder.rglob("*.tif*")
        if p.suffix.lower() in (".tif", ".tiff")
        and not any(part in SKIPPED_FOLDERS for part in p.relative_to(folder).parts)
        and not p.name.startswith(".")
    )
    stems: dict[str, int] = {}
    for path in paths:
        stems[slug(path.stem)] = stems.get(slug(path.stem), 0) + 1
    layers: dict[str, Layer] = {}
    skipped: dict[str, str] = {}
    for path in paths:
        relative = path.relative_to(folder)
        layer_id = slug(path.stem)
        if stems[layer_id] > 1:
            layer_id = slug(str(relative.with_suffix("")))
        try:
            layers[layer_id] = open_layer(path, layer_id)
        except RasterFormatError as err:
            skipped[str(relative)] = str(err)
    return layers, skipped


class LayerCache:
    """Layers made on request, at most ``max_layers`` (the oldest is dropped, with its file)."""

    def __init__(self, max_layers: int = 16) -> None:
        self.max_layers = int(max_layers)
        self._layers: OrderedDict[str, Layer] = OrderedDict()
        self._lock = threading.Lock()
        self._count = 0

    def next_id(self, text: str) -> str:
        with self._lock:
            self._count += 1
            return f"made-{self._count}-{slug(text)[:40]}"

    def add(self, layer: Layer) -> None:
        with self._lock:
            self._layers[layer.id] = layer
            while len(self._layers) > self.max_layers:
                _, dropped = self._layers.popitem(last=False)
                if dropped.path is not None:
                    dropped.path.unlink(missing_ok=True)

    def get(self, layer_id: str) -> Layer | None:
        with self._lock:
            return self._layers.get(layer_id)

    def remove(self, layer_id: str) -> Layer | None:
        with self._lock:
            layer = self._layers.pop(layer_id, None)
        if layer is not None and layer.path is not None:
            layer.path.unlink(missing_ok=True)
        return layer

    def all(self) -> list[Layer]:
        with self._lock:
            return list(self._layers.values())
