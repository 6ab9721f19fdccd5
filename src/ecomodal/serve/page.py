"""What the map explorer (``static/index.html``) needs from the server besides the API: the base
map, Natural Earth's countries (the 10 m admin-0 polygons ecomodal ships), simplified to a small
GeoJSON so that the page draws coastlines and borders with no tile server and no network.
"""

from __future__ import annotations

import gzip
import json
from functools import cache
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import Response

#: Douglas-Peucker tolerance of the base map, in degrees (about 11 km at the equator).
BASEMAP_TOLERANCE = 0.08
#: Decimals kept in the base map's coordinates (0.01 degree is about 1 km).
BASEMAP_DECIMALS = 2


def add_page_routes(app: FastAPI, run: Any) -> None:
    """Routes the page uses: ``GET /api/basemap`` (countries as GeoJSON, gzipped when the client
    accepts it, built once per process)."""

    @app.get("/api/basemap", summary="Natural Earth countries (simplified) for the page's base map")
    def basemap(request: Request) -> Response:
        plain, packed = basemap_geojson()
        headers = {"Cache-Control": "max-age=86400", "Vary": "Accept-Encoding"}
        if "gzip" in request.headers.get("accept-encoding", ""):
            headers["Content-Encoding"] = "gzip"
            return Response(packed, media_type="application/geo+json", headers=headers)
        return Response(plain, media_type="application/geo+json", headers=headers)


@cache
def basemap_geojson() -> tuple[bytes, bytes]:
    """The countries as a GeoJSON FeatureCollection (name, ISO code, continent), as bytes and
    gzipped bytes: polygons simplified by :data:`BASEMAP_TOLERANCE`, coordinates rounded."""
    import numpy as np
    import shapely

    from ecomodal.geo.labels import natural_earth_countries

    countries = natural_earth_countries()
    shapes = shapely.simplify(countries.geometry.values, BASEMAP_TOLERANCE, preserve_topology=True)
    shapes = shapely.transform(shapes, lambda xy: np.round(xy, BASEMAP_DECIMALS))
    features = []
    for row, shape in zip(countries.itertuples(index=False), shapes, strict=True):
        if shape is None or shape.is_empty:
            continue
        features.append(
            {
                "type": "Feature",
                "properties": {"name": row.NAME_EN, "iso": row.ISO_A3, "continent": row.CONTINENT},
                "geometry": json.loads(shapely.to_geojson(shape)),
            }
        )
    text = json.dumps({"type": "FeatureCollection", "features": features}, separators=(",", ":"))
    plain = text.encode()
    return plain, gzip.compress(plain, 6)
