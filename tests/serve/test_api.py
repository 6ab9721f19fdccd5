"""The HTTP API against a real server (uvicorn on a free port) over a real reduced quickstart run."""

from __future__ import annotations

import http.client
import io
import json

import numpy as np
import pyarrow.parquet as pq
import pytest
import rasterio
from PIL import Image

from ecomodal.serve.layers import colormap_lut
from ecomodal.serve.tiles import pixel_lat_lon

from .conftest import LiveServer

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def table(reduced_quickstart):
    folder, _ = reduced_quickstart
    return pq.read_table(folder / "embeddings.parquet").to_pydict()


def _error(response, status: int, field: str | None = None) -> dict:
    assert response.status_code == status, (response.status_code, response.text)
    body = response.json()
    assert set(body) == {"error"} and body["error"]["message"], body
    assert "Traceback" not in response.text
    if field is not None:
        assert body["error"]["field"] == field or field in body["error"]["message"], body
    return body["error"]


def _raw_get(server: LiveServer, path: str) -> tuple[int, dict]:
    """A GET whose path goes out byte for byte (no client-side normalisation of '..')."""
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    connection.request("GET", path)
    response = connection.getresponse()
    body = response.read()
    connection.close()
    return response.status, body


# ---------------------------------------------------------------------------- layers and tiles
def test_layers_lists_every_map_of_the_folder_with_colours_and_units(live_server):
    layers = {
        layer["id"]: layer for layer in live_server.client.get("/api/layers").json()["layers"]
    }
    for name in ("uncertainty", "suitability-barren", "suitability-cropland"):
        assert name in layers
    barren = layers["suitability-barren"]
    assert barren["kind"] == "suitability" and barren["units"] and not barren["made"]
    assert len(barren["colors"]) == 11 and barren["vmin"] < barren["vmax"]
    assert barren["tags"]["class"] == "barren"
    assert layers["uncertainty"]["kind"] == "uncertainty"


def test_a_tile_pixel_has_the_colour_of_its_cell_value(live_server, reduced_quickstart):
    folder, _ = reduced_quickstart
    layer = next(
        item
        for item in live_server.client.get("/api/layers").json()["layers"]
        if item["id"] == "suitability-cropland"
    )
    with rasterio.open(folder / "maps" / "suitability-cropland.tif") as source:
        values = source.read(1)
        transform = source.transform
    row, col = np.argwhere(np.isfinite(values))[len(np.argwhere(np.isfinite(values))) // 2]
    lon, lat = rasterio.transform.xy(transform, row, col)
    z = 3
    lats, lons = pixel_lat_lon(z, 0, 0)
    # The tile holding the cell centre and the pixel nearest to it.
    n = 1 << z
    x = int((lon + 180) / 360 * n)
    y = int((1 - np.arcsinh(np.tan(np.radians(lat))) / np.pi) / 2 * n)
    lats, lons = pixel_lat_lon(z, x, y)
    py, px = int(np.argmin(np.abs(lats - lat))), int(np.argmin(np.abs(lons - lon)))
    response = live_server.client.get(f"/tiles/suitability-cropland/{z}/{x}/{y}.png")
    assert response.status_code == 200 and response.headers["content-type"] == "image/png"
    pixels = np.asarray(Image.open(io.BytesIO(response.content)).convert("RGBA"))
    scaled = np.clip((values[row, col] - layer["vmin"]) / (layer["vmax"] - layer["vmin"]), 0, 1)
    expected = colormap_lut(layer["colormap"])[int(round(scaled * 255))]
    assert tuple(pixels[py, px]) == tuple(expected)
    # Threshold view: one colour above, transparent below.
    above = live_server.client.get(
        f"/tiles/suitability-cropland/{z}/{x}/{y}.png",
        params={"threshold": values[row, col] - 1e-6},
    )
    below = live_server.client.get(
        f"/tiles/suitability-cropland/{z}/{x}/{y}.png",
        params={"threshold": values[row, col] + 1e-3},
    )
    assert np.asarray(Image.open(io.BytesIO(above.content)).convert("RGBA"))[py, px, 3] > 0
    assert np.asarray(Image.open(io.BytesIO(below.content)).convert("RGBA"))[py, px, 3] == 0


def test_a_tile_over_open_ocean_is_transparent(live_server):
    # z=4 tile in the middle of the South Pacific (about 30 S, 130 W).
    png = live_server.client.get("/tiles/suitability-barren/4/2/9.png").content
    assert np.asarray(Image.open(io.BytesIO(png)).convert("RGBA"))[..., 3].max() == 0


def test_a_folder_layer_downloads_as_its_geotiff(live_server, tmp_path):
    response = live_server.client.get("/api/layers/uncertainty.tif")
    assert response.status_code == 200
    path = tmp_path / "u.tif"
    path.write_bytes(response.content)
    with rasterio.open(path) as source:
        assert source.crs.to_epsg() == 4326 and np.isfinite(source.read(1)).any()


# ---------------------------------------------------------------------------- point, embed, complete
def test_point_reports_values_covariates_labels_error_and_neighbours(live_server):
    body = live_server.client.get("/api/point", params={"lat": 48.1, "lon": 11.5}).json()
    assert body["country"] == "Germany" and body["continent"] == "Europe"
    assert body["koppen"].startswith("D") or body["koppen"].startswith("C")
    assert 200 < body["covariates"]["elevation"] < 1500
    assert 0 < body["covariates"]["bio1"] < 15 and 400 < body["covariates"]["bio12"] < 2500
    assert body["values"]["suitability-cropland"] is not None
    assert set(body["expected_error"]) == {"loc", "env", "sat"}
    assert all(0 <= value <= 2 for value in body["expected_error"].values())
    nearest = body["nearest"]
    assert len(nearest) == 5 and [n["rank"] for n in nearest] == [1, 2, 3, 4, 5]
    assert nearest[0]["score"] >= nearest[-1]["score"] and "land_cover" in nearest[0]
    # Every neighbour of a point in Bavaria is in Europe (loc embeddings are local).
    assert all(n["continent"] == "Europe" for n in nearest)


def test_embed_reproduces_the_runs_own_embeddings(live_server, table):
    rows = [{"lat": table["lat"][i], "lon": table["lon"][i]} for i in range(3)]
    body = live_server.client.post("/api/embed", json={"rows": rows}).json()
    assert set(body["modalities"]) == {"loc", "env", "sat"}
    for modality in ("loc", "env", "sat"):
        got = np.asarray(body["embeddings"][modality], dtype=np.float32)
        want = np.asarray(table[modality][:3], dtype=np.float32)
        want /= np.linalg.norm(want, axis=1, keepdims=True)
        np.testing.assert_allclose(got, want, atol=2e-5)


def test_complete_matches_the_model_and_gives_expected_error(live_server, served_run, table):
    rows = [{"embeddings": {"loc": table["loc"][i], "env": table["env"][i]}} for i in range(4)]
    body = live_server.client.post(
        "/api/complete", json={"rows": rows, "visible": ["loc", "env"]}
    ).json()
    model = served_run.model
    stacked = np.full((4, 3, model.config.input_dim), np.nan, np.float32)
    for i in range(4):
        stacked[i, model.modalities.index("loc")] = table["loc"][i]
        stacked[i, model.modalities.index("env")] = table["env"][i]
    direct = model.complete(stacked, visible=["loc", "env"], n_samples=0)
    slot = model.modalities.index("sat")
    np.testing.assert_allclose(
        np.asarray(body["embeddings"]["sat"]), np.asarray(direct.embeddings)[:, slot], atol=1e-5
    )
    np.testing.assert_allclose(body["sigma_l1"], np.asarray(direct.sigma_l1), rtol=1e-5)
    errors = body["expected_error"]
    assert errors["loc"] == [None] * 4 and all(0 < e < 2 for e in errors["sat"])


def test_complete_embeds_places_itself(live_server, table):
    rows = [{"lat": table["lat"][0], "lon": table["lon"][0]}]
    body = live_server.client.post("/api/complete", json={"rows": rows, "visible": ["loc"]}).json()
    assert body["visible"]["loc"] == [True] and body["visible"]["sat"] == [False]
    assert body["expected_error"]["sat"][0] is not None


# ---------------------------------------------------------------------------- search
def test_search_by_id_place_vector_and_filter(live_server, table):
    first = table["id"][0]
    by_id = live_server.client.post("/api/search", json={"id": first, "k": 3}).json()
    assert by_id["results"][0]["id"] == first and by_id["results"][0]["score"] > 0.999
    by_vector = live_server.client.post(
        "/api/search", json={"vector": table["env"][1], "modality": "env", "k": 1}
    ).json()
    assert by_vector["results"][0]["id"] == table["id"][1]
    place = live_server.client.post(
        "/api/search", json={"lat": table["lat"][2], "lon": table["lon"][2], "k": 1}
    ).json()
    assert place["results"][0]["id"] == table["id"][2]
    cover = table["land_cover"][0]
    filtered = live_server.client.post(
        "/api/search", json={"id": first, "k": 5, "where": {"land_cover": cover}}
    ).json()["results"]
    assert filtered and all(row["land_cover"] == cover for row in filtered)


# ---------------------------------------------------------------------------- new layers
def _cell_values(live_server, layer_id: str, tmp_path) -> tuple[np.ndarray, object]:
    tif = live_server.client.get(f"/api/layers/{layer_id}.tif")
    assert tif.status_code == 200
    path = tmp_path / f"{layer_id}.tif"
    path.write_bytes(tif.content)
    source = rasterio.open(path)
    return source.read(1), source


def test_points_layer_ranks_presence_cells_high(live_server, table, tmp_path):
    covers = np.asarray(table["land_cover"])
    lat = np.asarray(table["lat"])
    lon = np.asarray(table["lon"])
    tropical = np.abs(lat) < 15
    points = [
        {"lat": float(a), "lon": float(b)}
        for a, b in zip(lat[tropical], lon[tropical], strict=False)
    ]
    assert len(points) >= 3, covers
    response = live_server.client.post("/api/layers", json={"kind": "points", "points": points})
    assert response.status_code == 201, response.text
    layer = response.json()["layer"]
    assert layer["made"] and layer["kind"] == "suitability" and layer["tags"]["n_presence"] >= 1
    values, source = _cell_values(live_server, layer["id"], tmp_path)
    rows, cols = np.nonzero(np.isfinite(values))
    cell_lat = source.transform.f + (rows + 0.5) * source.transform.e
    near_equator = np.abs(cell_lat) < 15
    assert values[rows, cols][near_equator].mean() > values[rows, cols][~near_equator].mean()
    listed = [item["id"] for item in live_server.client.get("/api/layers").json()["layers"]]
    assert layer["id"] in listed
    assert live_server.client.delete(f"/api/layers/{layer['id']}").status_code == 200
    _error(live_server.client.get(f"/api/layers/{layer['id']}.tif"), 404, "layer")


def test_text_layer_maps_the_matching_label(live_server, tmp_path):
    response = live_server.client.post(
        "/api/layers", json={"kind": "text", "text": "hot desert climate"}
    )
    assert response.status_code == 201, response.text
    layer = response.json()["layer"]
    assert (layer["tags"]["matched_column"], layer["tags"]["matched_value"]) == ("koppen", "BWh")
    values, source = _cell_values(live_server, layer["id"], tmp_path)
    sahara = values[source.index(12.0, 23.0)]
    greenland = values[source.index(-40.0, 72.0)]
    assert sahara > greenland


def test_similar_layer_peaks_at_its_pin(live_server, tmp_path):
    response = live_server.client.post(
        "/api/layers", json={"kind": "similar", "lat": -3, "lon": -60}
    )
    layer = response.json()["layer"]
    values, source = _cell_values(live_server, layer["id"], tmp_path)
    row, col = source.index(-60.0, -3.0)
    assert values[row, col] == pytest.approx(np.nanmax(values), abs=1e-5)


def test_uploads_make_layers_from_a_csv_and_a_photo(live_server, tmp_path):
    csv = "lat,lon\n-3.1,-60.0\n-8.5,-63.2\n2.0,-55.0\n0.5,20.0\n"
    response = live_server.client.post(
        "/api/layers", data={"kind": "points"}, files={"points": ("amazon.csv", csv, "text/csv")}
    )
    assert response.status_code == 201, response.text
    assert response.json()["layer"]["tags"]["n_presence"] == 4
    picture = io.BytesIO()
    Image.fromarray(np.full((64, 64, 3), (30, 90, 40), np.uint8)).save(picture, format="PNG")
    response = live_server.client.post(
        "/api/layers", data={"kind": "photo"}, files={"photo": ("green.png", picture.getvalue())}
    )
    assert response.status_code == 201, response.text
    assert response.json()["layer"]["kind"] == "similarity"


def test_made_layers_are_a_bounded_cache(served_run):
    from ecomodal.serve.app import _add_layer
    from ecomodal.serve.queries import similar_layer

    limit = served_run.made.max_layers
    ids = [
        _add_layer(served_run, similar_layer(served_run.cells, 0.0, 20.0)).id
        for _ in range(limit + 2)
    ]
    kept = {layer.id for layer in served_run.made.all()}
    assert len(kept) == limit and ids[-1] in kept and ids[0] not in kept


# ---------------------------------------------------------------------------- bad input
BAD_REQUESTS = [
    ("missing field", "post", "/api/embed", {"rows": [{"lat": 1.0}]}, 422, "rows.0.lon"),
    ("wrong type", "post", "/api/embed", {"rows": [{"lat": "north", "lon": 2}]}, 422, "rows.0.lat"),
    (
        "lat out of range",
        "post",
        "/api/embed",
        {"rows": [{"lat": 91, "lon": 2}]},
        422,
        "rows.0.lat",
    ),
    ("lat out of range", "get", "/api/point?lat=-95&lon=3", None, 422, "lat"),
    ("NaN in a query", "get", "/api/point?lat=nan&lon=3", None, 422, "lat"),
    ("wrong type in a query", "get", "/api/point?lat=1&lon=east", None, 422, "lon"),
    ("missing query field", "get", "/api/point?lat=1", None, 422, "lon"),
    ("unknown layer", "get", "/tiles/nope/0/0/0.png", None, 404, "layer"),
    ("unknown layer", "get", "/api/layers/nope.tif", None, 404, "layer"),
    ("tile off the world", "get", "/tiles/uncertainty/2/9/0.png", None, 400, "x"),
    (
        "unknown colormap",
        "get",
        "/tiles/uncertainty/0/0/0.png?colormap=rainbowz",
        None,
        400,
        "colormap",
    ),
    (
        "unknown modality",
        "post",
        "/api/embed",
        {"rows": [{"lat": 1, "lon": 2}], "modalities": ["audio"]},
        400,
        "modalities",
    ),
    ("two queries", "post", "/api/search", {"id": "x", "lat": 1, "lon": 2}, 422, "exactly one"),
    ("unknown id", "post", "/api/search", {"id": "no-such-id"}, 400, "no-such-id"),
    ("text without text embeddings", "post", "/api/search", {"text": "oak"}, 400, "text"),
    (
        "bad where column",
        "post",
        "/api/search",
        {"lat": 1, "lon": 2, "where": {"nope": 1}},
        400,
        "where",
    ),
    ("vector of the wrong size", "post", "/api/search", {"vector": [1.0, 2.0]}, 400, "vector"),
    ("layer kind missing its field", "post", "/api/layers", {"kind": "points"}, 422, "points"),
    ("unknown layer kind", "post", "/api/layers", {"kind": "poem"}, 422, "kind"),
    (
        "extra field",
        "post",
        "/api/layers",
        {"kind": "similar", "lat": 1, "lon": 2, "zoom": 3},
        422,
        "zoom",
    ),
    (
        "sea pin",
        "post",
        "/api/layers",
        {"kind": "similar", "lat": -40, "lon": -120},
        400,
        "lat/lon",
    ),
    (
        "embedding of the wrong size",
        "post",
        "/api/complete",
        {"rows": [{"embeddings": {"loc": [0.1, 0.2]}}]},
        400,
        "rows.0.embeddings.loc",
    ),
    ("nothing to complete", "post", "/api/complete", {"rows": [{}]}, 422, "rows.0"),
]


@pytest.mark.parametrize(
    ("case", "method", "path", "payload", "status", "field"),
    BAD_REQUESTS,
    ids=[f"{row[0]}:{row[2]}" for row in BAD_REQUESTS],
)
def test_bad_input_is_a_4xx_json_error_naming_the_field(
    live_server, case, method, path, payload, status, field
):
    client = live_server.client
    response = client.get(path) if method == "get" else client.post(path, json=payload)
    _error(response, status, field)


def test_nan_in_a_json_body_is_refused(live_server):
    body = '{"rows": [{"lat": NaN, "lon": 2}]}'
    response = live_server.client.post(
        "/api/embed", content=body, headers={"content-type": "application/json"}
    )
    _error(response, 422, "rows.0.lat")
    response = live_server.client.post(
        "/api/search",
        content='{"vector": [1, Infinity]}',
        headers={"content-type": "application/json"},
    )
    _error(response, 422, "vector")


def test_broken_json_is_a_clear_error(live_server):
    response = live_server.client.post(
        "/api/layers", content="{kind: text", headers={"content-type": "application/json"}
    )
    _error(response, 400, "body")


@pytest.mark.parametrize(
    "path",
    [
        "/files/../../../../etc/passwd",
        "/files/..%2F..%2F..%2F..%2Fetc%2Fpasswd",
        "/files/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
        "/files//etc/passwd",
        "/files/maps/..%2F..%2F..%2Fencoders.json%00.png",
        "/static/../../../../etc/passwd",
        "/static/..%2F..%2Fapp.py",
        "/api/layers/..%2F..%2Fetc%2Fpasswd.tif",
        "/tiles/..%2F..%2Fetc%2Fpasswd/0/0/0.png",
    ],
)
def test_nothing_outside_the_folder_can_be_read(live_server, path):
    status, body = _raw_get(live_server, path)
    assert status in (400, 404, 422), (status, body[:200])
    assert b"root:" not in body and b"import" not in body


def test_files_of_the_folder_are_served_and_only_listed_types(live_server):
    status, body = _raw_get(live_server, "/files/report.html")
    assert status == 200 and b"<html" in body.lower()
    status, _ = _raw_get(live_server, "/files/prom3e/best/model.safetensors")
    assert status == 404


def test_uploads_have_size_and_type_limits(served_run, tmp_path):
    server = LiveServer(served_run, max_upload_bytes=20_000)
    try:
        big = np.random.default_rng(0).integers(0, 255, (200, 200, 3), np.uint8)
        picture = io.BytesIO()
        Image.fromarray(big).save(picture, format="PNG")
        assert len(picture.getvalue()) > 20_000
        response = server.client.post(
            "/api/layers", data={"kind": "photo"}, files={"photo": ("big.png", picture.getvalue())}
        )
        _error(response, 413)
        response = server.client.post(
            "/api/layers",
            data={"kind": "photo"},
            files={"photo": ("x.png", b"MZ\x90\x00not a picture")},
        )
        _error(response, 415, "photo")
        gif = io.BytesIO()
        Image.new("RGB", (8, 8)).save(gif, format="GIF")
        response = server.client.post(
            "/api/layers", data={"kind": "photo"}, files={"photo": ("x.gif", gif.getvalue())}
        )
        _error(response, 415, "photo")
        response = server.client.post(
            "/api/layers", data={"kind": "points"}, files={"points": ("p.exe", b"lat,lon\n1,2\n")}
        )
        _error(response, 415, "points")
        response = server.client.post(
            "/api/layers", data={"kind": "points"}, files={"points": ("p.csv", b"lat,lon\nx,2\n")}
        )
        _error(response, 400, "points")
    finally:
        server.stop()


# ---------------------------------------------------------------------------- token and host
def test_a_token_is_checked_on_every_request(served_run):
    server = LiveServer(served_run, token="s3cret")
    try:
        import httpx

        bare = httpx.Client(base_url=server.url, timeout=60)
        for path in (
            "/api/layers",
            "/tiles/uncertainty/0/0/0.png",
            "/",
            "/docs",
            "/files/report.html",
        ):
            _error(bare.get(path), 401, "token")
        _error(bare.get("/api/layers", headers={"Authorization": "Bearer wrong"}), 401, "token")
        _error(bare.get("/api/layers", params={"token": "s3cre"}), 401, "token")
        assert server.client.get("/api/layers").status_code == 200  # bearer header
        assert bare.get("/api/layers", params={"token": "s3cret"}).status_code == 200
        page = bare.get("/", params={"token": "s3cret"})
        assert page.status_code == 200 and "ecomodal_token" in page.headers["set-cookie"]
        assert bare.get("/api/layers").status_code == 200  # the cookie the page set
        bare.close()
    finally:
        server.stop()


def test_a_public_host_needs_a_token(run_cli, monkeypatch, reduced_quickstart):
    from ecomodal.serve import ServeError, check_host_token, is_loopback

    monkeypatch.delenv("ECOMODAL_TOKEN", raising=False)
    folder, _ = reduced_quickstart
    run_cli("serve", str(folder), "--host", "0.0.0.0").assert_clear_failure("--token", "0.0.0.0")
    with pytest.raises(ServeError):
        check_host_token("192.168.1.5", None)
    assert check_host_token("127.0.0.1", None) is None and check_host_token("::1", None) is None
    assert check_host_token("0.0.0.0", "t") == "t"
    monkeypatch.setenv("ECOMODAL_TOKEN", "from-env")
    assert check_host_token("0.0.0.0", None) == "from-env"
    assert is_loopback("localhost") and not is_loopback("example.org")


def test_openapi_schema_lists_every_endpoint(live_server):
    schema = live_server.client.get("/openapi.json").json()
    paths = set(schema["paths"])
    for path in (
        "/api/layers",
        "/api/point",
        "/api/embed",
        "/api/complete",
        "/api/search",
        "/tiles/{layer_id}/{z}/{x}/{y}.png",
    ):
        assert path in paths, path
    assert "multipart/form-data" in schema["paths"]["/api/layers"]["post"]["requestBody"]["content"]
    docs = live_server.client.get("/docs")
    assert docs.status_code == 200 and "swagger-ui-bundle.js" in docs.text
    # The API page refers to nothing outside the server, and its scripts are served.
    assert "http://" not in docs.text and "https://" not in docs.text, docs.text
    for asset in ("swagger-ui-bundle.js", "swagger-ui.css"):
        response = live_server.client.get(f"/static/vendor/swagger-ui/{asset}")
        assert response.status_code == 200 and len(response.content) > 10_000


def test_a_server_error_shows_no_traceback(served_run, monkeypatch):
    server = LiveServer(served_run)
    try:

        def broken(*args, **kwargs):
            raise RuntimeError("secret internal detail")

        monkeypatch.setattr(served_run, "info", broken)
        response = server.client.get("/api/info")
        error = _error(response, 500)
        assert "secret" not in json.dumps(error)
    finally:
        server.stop()


def test_the_serve_command_serves_a_quickstart_folder_with_no_flags(reduced_quickstart):
    import os
    import subprocess
    import sys
    import time

    import httpx

    from .conftest import free_port

    folder, _ = reduced_quickstart
    port = free_port()
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    env.pop("ECOMODAL_TOKEN", None)
    process = subprocess.Popen(
        [sys.executable, "-m", "ecomodal", "serve", str(folder), "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 180
        while True:
            assert process.poll() is None, process.stderr.read().decode()[-2000:]
            try:
                info = httpx.get(f"http://127.0.0.1:{port}/api/info", timeout=5)
                break
            except httpx.HTTPError:
                assert time.monotonic() < deadline, "the server did not start"
                time.sleep(0.5)
        assert info.status_code == 200
        body = info.json()
        assert body["model"]["modalities"] == ["loc", "env", "sat"]
        assert body["table"]["rows"] == 2000 and body["grid"]["resolution"] == 5.0
        assert set(body["encoders"]) == {"loc", "env", "sat"}
        layers = httpx.get(f"http://127.0.0.1:{port}/api/layers", timeout=30).json()["layers"]
        assert any(layer["id"] == "uncertainty" for layer in layers)
    finally:
        process.terminate()
        out, _ = process.communicate(timeout=30)
    assert f"http://127.0.0.1:{port}/" in out.decode()


def test_a_folder_of_geotiffs_alone_is_served_and_says_what_it_lacks(tmp_path, reduced_quickstart):
    import shutil

    from ecomodal.serve import ServedRun

    folder, _ = reduced_quickstart
    bare = tmp_path / "maps-only"
    (bare / "sub").mkdir(parents=True)
    shutil.copy(folder / "maps" / "uncertainty.tif", bare / "uncertainty.tif")
    shutil.copy(folder / "maps" / "suitability-barren.tif", bare / "sub" / "uncertainty.tif")
    (bare / "notes.tif").write_text("not a raster")
    run = ServedRun(bare)
    server = LiveServer(run)
    try:
        client = server.client
        ids = sorted(item["id"] for item in client.get("/api/layers").json()["layers"])
        assert ids == ["sub-uncertainty", "uncertainty"]  # clashing stems keep their folder
        info = client.get("/api/info").json()
        assert info["table"] is None and info["model"] is None and info["grid"] is None
        assert "notes.tif" in info["skipped_files"]
        point = client.get("/api/point", params={"lat": 48.1, "lon": 11.5}).json()
        assert point["values"]["uncertainty"] is not None and point["nearest"] == []
        assert point["expected_error"] is None and point["country"] == "Germany"
        _error(client.post("/api/embed", json={"rows": [{"lat": 1, "lon": 2}]}), 409)
        _error(client.post("/api/complete", json={"rows": [{"lat": 1, "lon": 2}]}), 409)
        _error(client.post("/api/search", json={"lat": 1, "lon": 2}), 409)
        _error(client.post("/api/layers", json={"kind": "similar", "lat": 1, "lon": 20}), 409)
    finally:
        server.stop()
        run.close()
