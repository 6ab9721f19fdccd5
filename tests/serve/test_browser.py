"""The map explorer (the page at ``/``) in a real browser: Playwright driving Debian's
``chromium`` over a live server on the reduced quickstart run.

One browser for the session, a fresh page per test; every test saves a screenshot (under
``$ECOMODAL_SCREENSHOTS`` when set, else a temporary folder) and fails on any request that leaves
the server. Without chromium the tests are skipped, unless ``ECOMODAL_REQUIRE_BROWSER=1`` (CI),
where that is a failure.
"""

from __future__ import annotations

import io
import os
import re
import shutil
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
import pytest

pytestmark = pytest.mark.browser

#: Colour distance (sum over RGB) above which a screenshot pixel counts as changed.
CHANGED = 40
VIEWPORT = {"width": 1366, "height": 768}


def chromium_path() -> str | None:
    for candidate in (os.environ.get("ECOMODAL_CHROMIUM"), shutil.which("chromium")):
        if candidate and Path(candidate).is_file():
            return candidate
    return None


@pytest.fixture(scope="session")
def browser():
    """Chromium from the system (Playwright cannot download one here)."""
    path = chromium_path()
    if path is None:
        message = "chromium is not installed (apt-get install chromium), so the page is untested"
        if os.environ.get("ECOMODAL_REQUIRE_BROWSER"):
            pytest.fail(message)
        pytest.skip(message)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=path, args=["--no-sandbox"])
        yield chromium
        chromium.close()


@pytest.fixture(scope="session")
def screenshots(tmp_path_factory) -> Path:
    folder = os.environ.get("ECOMODAL_SCREENSHOTS")
    out = Path(folder) if folder else tmp_path_factory.mktemp("explorer-screenshots")
    out.mkdir(parents=True, exist_ok=True)
    return out


class Explorer:
    """A page on the explorer, with what it logged and every request that left the server."""

    def __init__(self, browser, server, path: str = "/") -> None:
        self.server = server
        self.origin = urlsplit(server.url).netloc
        self.context = browser.new_context(viewport=VIEWPORT, accept_downloads=True)
        self.outside: list[str] = []
        self.errors: list[str] = []
        self.failed: list[str] = []
        self.context.route("**/*", self._only_the_server)
        self.page = self.context.new_page()
        self.page.on("console", self._console)
        self.page.on("pageerror", lambda err: self.errors.append(f"page error: {err}"))
        self.page.on(
            "response",
            lambda r: self.failed.append(f"{r.status} {r.url}") if r.status >= 400 else None,
        )
        self.page.goto(server.url + path)
        self.wait()

    def _only_the_server(self, route) -> None:
        url = route.request.url
        if url.startswith(("data:", "blob:")) or urlsplit(url).netloc == self.origin:
            route.continue_()
        else:
            self.outside.append(url)
            route.abort()

    def _console(self, message) -> None:
        if message.type == "error":
            self.errors.append(message.text)

    def wait(self, timeout: float = 120_000) -> None:
        """Until nothing is loading: no request the user waits for, no tile, the base map drawn."""
        self.page.wait_for_function("window.explorer && window.explorer.idle()", timeout=timeout)

    def layer_ids(self) -> list[str]:
        return self.page.eval_on_selector_all("#layers li", "items => items.map(i => i.dataset.id)")

    def show_only(self, layer_id: str | None) -> None:
        """Tick the layer's box in the list and untick every other (None: no layer shown)."""
        for item in self.page.locator("#layers li").all():
            box = item.locator("input[type=checkbox]")
            box.set_checked(item.get_attribute("data-id") == layer_id)
        self.page.evaluate("() => { explorer.map.closePopup(); }")
        self.wait()

    def map_pixels(self) -> np.ndarray:
        from PIL import Image

        png = self.page.locator("#map").screenshot()
        return np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(int)

    def cells(self, layer_id: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The layer's grid cells whose centres are on screen: pixel (x, y), lat/lon, value."""
        layer = self.server.run.layer(layer_id)
        values = layer.values[0]
        rows, cols = np.mgrid[0 : layer.height, 0 : layer.width]
        lat = layer.north - (rows.ravel() + 0.5) * layer.resolution_y
        lon = layer.west + (cols.ravel() + 0.5) * layer.resolution_x
        keep = np.abs(lat) < 80
        lat, lon, value = lat[keep], lon[keep], values.ravel()[keep]
        xy = np.asarray(
            self.page.evaluate(
                "pts => pts.map(p => { const c = explorer.map.latLngToContainerPoint(p);"
                " return [Math.round(c.x), Math.round(c.y)]; })",
                np.column_stack([lat, lon]).tolist(),
            )
        )
        width, height = self.page.evaluate(
            "() => { const s = explorer.map.getSize(); return [s.x, s.y]; }"
        )
        # away from the zoom buttons (top left) and the attribution (bottom right)
        inside = (
            (xy[:, 0] > 60) & (xy[:, 0] < width - 10) & (xy[:, 1] > 90) & (xy[:, 1] < height - 30)
        )
        return xy[inside], np.column_stack([lat, lon])[inside], value[inside]

    def drawn(self, layer_id: str) -> tuple[np.ndarray, np.ndarray]:
        """Which of the layer's on-screen cells change colour when the layer alone is shown
        (against no layer at all), and the cells' values."""
        self.show_only(None)
        blank = self.map_pixels()
        self.show_only(layer_id)
        shown = self.map_pixels()
        xy, _, value = self.cells(layer_id)
        diff = np.abs(shown - blank).sum(axis=2)[xy[:, 1], xy[:, 0]]
        return diff > CHANGED, value

    def add_layer_by(self, action) -> str:
        """Do what adds a layer; wait for it in the list; its id."""
        before = set(self.layer_ids())
        action()
        self.page.wait_for_function(
            f"document.querySelectorAll('#layers li').length > {len(before)}", timeout=120_000
        )
        self.wait()
        (new,) = set(self.layer_ids()) - before
        return new

    def close(self, screenshot: Path) -> None:
        self.page.screenshot(path=str(screenshot))
        self.context.close()


@pytest.fixture
def explorer(browser, live_server, screenshots, request):
    """The explorer in a fresh page; afterwards its screenshot is saved, the layers the test
    made are removed, and no request may have left the server."""
    before = {layer["id"] for layer in live_server.client.get("/api/layers").json()["layers"]}
    page = Explorer(browser, live_server)
    yield page
    page.close(screenshots / f"{request.node.name}.png")
    for layer in live_server.client.get("/api/layers").json()["layers"]:
        if layer["made"] and layer["id"] not in before:
            live_server.client.delete(f"/api/layers/{layer['id']}")
    assert page.outside == [], f"requests left the server: {page.outside}"


def assert_draws(explorer: Explorer, layer_id: str) -> None:
    """Most cells with a value change colour when the layer is shown; cells without none."""
    changed, value = explorer.drawn(layer_id)
    land = np.isfinite(value)
    assert land.sum() > 50, "too few of the layer's cells are on screen"
    assert changed[land].mean() > 0.9, f"only {changed[land].mean():.0%} of the land cells drawn"
    if (~land).sum() > 20:
        assert changed[~land].mean() < 0.1, "cells without data are drawn"


# ---------------------------------------------------------------------------- the tests
def test_page_loads_offline_with_no_console_errors(explorer):
    page = explorer.page
    assert explorer.errors == [], explorer.errors
    assert explorer.failed == [], explorer.failed
    listed = explorer.server.client.get("/api/layers").json()["layers"]
    assert explorer.layer_ids() == [layer["id"] for layer in listed]
    # the first suitability map is shown, with its colour bar and units from the GeoTIFF tags
    selected = page.get_attribute("#layers li.selected", "data-id")
    layer = next(item for item in listed if item["id"] == selected)
    assert layer["kind"] == "suitability"
    assert page.inner_text("#units") == layer["units"] != ""
    gradient = page.eval_on_selector("#colorbar", "e => getComputedStyle(e).backgroundImage")
    assert gradient.startswith("linear-gradient") and gradient.count("rgb(") == 11
    assert page.is_visible("#status") and "maps" in page.inner_text("#status")
    # nothing on the page points outside the server (links, scripts, images, styles)
    addresses = page.evaluate(
        "() => [...document.querySelectorAll('[href],[src]')].map(e => e.href || e.src)"
    )
    outside = [a for a in addresses if urlsplit(a).scheme in ("http", "https")]
    assert all(urlsplit(a).netloc == explorer.origin for a in outside), outside
    # the base map's countries are drawn: the canvas panes hold land-coloured pixels
    pixels = explorer.map_pixels()
    land_colour = np.abs(pixels - np.array([0xEF, 0xEC, 0xE3])).sum(axis=2) < 6
    assert land_colour.mean() > 0.01


def test_static_files_refer_to_no_outside_address():
    from importlib import resources

    static = Path(str(resources.files("ecomodal.serve") / "static"))
    for name in ("index.html", "explorer.js", "explorer.css", "vendor/leaflet/leaflet.css"):
        text = (static / name).read_text(encoding="utf-8")
        text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)  # CSS comments are no requests
        urls = re.findall(r"url\(([^)]*)\)", text)
        assert all(not re.match(r"['\"]?(https?:)?//", u) for u in urls), (name, urls)
        if name != "vendor/leaflet/leaflet.css":
            assert "http://" not in text and "https://" not in text, name
    assert (static / "vendor/leaflet/LICENSE").is_file()


def test_a_layer_draws_on_land(explorer):
    selected = explorer.page.get_attribute("#layers li.selected", "data-id")
    assert_draws(explorer, selected)
    # another kind of map draws too (the uncertainty map)
    other = next(i for i in explorer.layer_ids() if i.startswith(("uncertainty", "expected")))
    explorer.page.click(f'#layers li[data-id="{other}"] button.title')
    assert_draws(explorer, other)
    assert explorer.page.inner_text("#panel-title") != ""


def test_clicking_a_land_cell_opens_a_popup_with_numbers(explorer):
    # on the most colourful suitability map (this test's screenshot is the README's)
    run = explorer.server.run

    def colour(layer_id):
        layer = run.layer(layer_id)
        vmin, vmax = layer.value_range()
        return np.nanmean(np.clip((layer.values[0] - vmin) / (vmax - vmin), 0, 1))

    suitability = [i for i in explorer.layer_ids() if run.layer(i).kind == "suitability"]
    selected = max(suitability, key=colour)
    explorer.show_only(selected)
    explorer.page.click(f'#layers li[data-id="{selected}"] button.title')
    xy, latlon, value = explorer.cells(selected)
    # a land cell near the middle of Africa
    land = np.flatnonzero(np.isfinite(value))
    pick = land[np.argmin(np.hypot(latlon[land, 0] - 5, latlon[land, 1] - 20))]
    explorer.page.locator("#map").click(position={"x": int(xy[pick, 0]), "y": int(xy[pick, 1])})
    popup = explorer.page.locator(".point-popup")
    popup.wait_for(timeout=60_000)
    explorer.wait()
    text = popup.inner_text()
    lat, lon = explorer.page.evaluate(
        "() => { let at; explorer.map.eachLayer(l => { if (l instanceof L.Popup) at = l.getLatLng(); });"
        " return [Number(at.lat.toFixed(5)), Number(at.lng.toFixed(5))]; }"
    )
    answer = explorer.server.client.get("/api/point", params={"lat": lat, "lon": lon}).json()
    assert answer["country"] != "none" and answer["country"] in text
    assert answer["land_cover"] in text and answer["koppen"] in text
    for heading in ("Covariates", "Maps here", "Nearest observations"):
        assert heading in text
    numbers = [
        float(cell)
        for cell in popup.locator("td.num").all_inner_texts()
        if re.fullmatch(r"-?[\d.]+(e-?\d+)?", cell)
    ]
    assert len(numbers) >= 3 + len(explorer.layer_ids())  # covariates, every map, neighbours
    elevation = popup.locator("tr", has_text="elevation").locator("td.num").inner_text()
    assert float(elevation) == pytest.approx(answer["covariates"]["elevation"], rel=0.01, abs=1)
    assert explorer.errors == []


def test_a_text_query_adds_a_layer_that_draws(explorer):
    page = explorer.page
    page.fill("#text-query", "evergreen broadleaf forest")

    def ask():
        page.click("#text-form button[type=submit]")
        # the status line says what is happening while the layer is computed
        assert "Mapping places like" in page.inner_text("#status")
        assert page.is_visible("#status .spinner")

    made = explorer.add_layer_by(ask)
    assert "Added" in page.inner_text("#status")
    assert page.get_attribute("#layers li.selected", "data-id") == made
    assert_draws(explorer, made)


def test_clicked_points_add_a_layer_that_draws(explorer):
    page = explorer.page
    reference = explorer.layer_ids()[0]
    xy, latlon, value = explorer.cells(reference)
    land = np.flatnonzero(np.isfinite(value))
    # presence points in a band of the tropics, background points everywhere else on land
    tropics = land[np.abs(latlon[land, 0]) < 12][:6]
    elsewhere = land[np.abs(latlon[land, 0]) > 30][::25][:4]
    page.check("input[name=mode][value=presence]")
    for i in tropics:
        page.locator("#map").click(position={"x": int(xy[i, 0]), "y": int(xy[i, 1])})
    page.check("input[name=mode][value=background]")
    for i in elsewhere:
        page.locator("#map").click(position={"x": int(xy[i, 0]), "y": int(xy[i, 1])})
    # a point clicked by mistake is clicked again to take it away
    spare = land[np.abs(latlon[land, 0]) > 30][1]  # not one of the background points
    page.locator("#map").click(position={"x": int(xy[spare, 0]), "y": int(xy[spare, 1])})
    assert page.inner_text("#point-count").endswith(
        f"{len(elsewhere) + 1} background points clicked."
    )
    page.locator("#map").click(position={"x": int(xy[spare, 0]), "y": int(xy[spare, 1])})
    count = page.inner_text("#point-count")
    assert count == f"{len(tropics)} presence points, {len(elsewhere)} background points clicked."
    made = explorer.add_layer_by(lambda: page.click("#points-make"))
    assert explorer.server.run.layer(made).tags.get("query", "").startswith(f"{len(tropics)}")
    page.click("#points-clear")
    assert_draws(explorer, made)
    # suitability is higher where the presence points are than at the background points
    values = explorer.server.run.layer(made)
    at = [values.sample(*latlon[i])[0] for i in tropics]
    away = [values.sample(*latlon[i])[0] for i in elsewhere]
    assert np.mean(at) > np.mean(away)


def test_points_from_a_csv_add_a_layer(explorer, tmp_path):
    points = tmp_path / "presence.csv"
    points.write_text("lat,lon\n-3.1,-60.0\n-5.0,-55.0\n0.5,-65.0\n-8.0,-63.0\n2.0,20.0\n")
    background = tmp_path / "background.csv"
    background.write_text("latitude,longitude\n45,5\n50,10\n40,-100\n-25,135\n60,90\n")
    page = explorer.page
    page.set_input_files("#csv-points", str(points))
    page.set_input_files("#csv-background", str(background))
    made = explorer.add_layer_by(lambda: page.click("#csv-form button[type=submit]"))
    assert "presence.csv" in explorer.server.run.layer(made).tags["query"]
    assert_draws(explorer, made)


def test_a_photo_adds_a_layer(explorer, tmp_path):
    from PIL import Image

    photo = tmp_path / "canopy.png"
    Image.new("RGB", (96, 96), (30, 110, 40)).save(photo)
    page = explorer.page
    page.set_input_files("#photo-file", str(photo))
    made = explorer.add_layer_by(lambda: page.click("#photo-form button[type=submit]"))
    assert "canopy.png" in explorer.server.run.layer(made).title
    # the answer is shown alone
    shown = page.eval_on_selector_all("#layers li input:checked", "boxes => boxes.length")
    assert shown == 1
    assert_draws(explorer, made)


def test_a_refused_question_says_why_and_adds_nothing(explorer, tmp_path):
    page = explorer.page
    before = explorer.layer_ids()
    fake = tmp_path / "notes.png"
    fake.write_text("not a picture")
    page.set_input_files("#photo-file", str(fake))
    page.click("#photo-form button[type=submit]")
    page.wait_for_selector("#status.error")
    explorer.wait()
    assert "notes.png" in page.inner_text("#status") and "not a readable image" in page.inner_text(
        "#status"
    )
    assert explorer.layer_ids() == before
    assert page.is_enabled("#text-form button[type=submit]")  # ready for the next question
    assert not [e for e in explorer.errors if "415" not in e]  # only the refused request logged


def test_the_similarity_pin_adds_a_layer(explorer):
    page = explorer.page
    reference = explorer.layer_ids()[0]
    xy, latlon, value = explorer.cells(reference)
    land = np.flatnonzero(np.isfinite(value))
    pick = land[np.argmin(np.hypot(latlon[land, 0] - 48, latlon[land, 1] - 10))]
    page.check("input[name=mode][value=pin]")
    made = explorer.add_layer_by(
        lambda: page.locator("#map").click(position={"x": int(xy[pick, 0]), "y": int(xy[pick, 1])})
    )
    layer = explorer.server.run.layer(made)
    assert layer.kind == "similarity"
    assert page.locator(".leaflet-marker-icon").count() == 1  # the pin
    # the most similar place to the pin is the pin's own cell
    assert layer.sample(*latlon[pick])[0] >= np.nanpercentile(layer.values[0], 95)
    assert_draws(explorer, made)


def test_the_threshold_slider_changes_the_drawn_pixels(explorer):
    page = explorer.page
    layer_id = page.get_attribute("#layers li.selected", "data-id")
    explorer.show_only(None)
    blank = explorer.map_pixels()
    explorer.show_only(layer_id)
    page.click(f'#layers li[data-id="{layer_id}"] button.title')
    unthresholded = explorer.map_pixels()
    page.check("#threshold-on")
    counts = {}
    for position in (200, 700):
        page.fill("#threshold", str(position))
        explorer.wait()
        threshold = page.evaluate(f"explorer.state.settings.get('{layer_id}').threshold")
        pixels = explorer.map_pixels()
        xy, _, value = explorer.cells(layer_id)
        drawn = np.abs(pixels - blank).sum(axis=2)[xy[:, 1], xy[:, 0]] > CHANGED
        land = np.isfinite(value)
        # drawn exactly where the value reaches the threshold (a few cells on the line may differ)
        agree = (drawn[land] == (value[land] >= threshold)).mean()
        assert agree > 0.95, f"threshold {threshold}: only {agree:.0%} of the cells agree"
        counts[position] = drawn[land].sum()
        assert np.abs(pixels - unthresholded).sum(axis=2).max() > CHANGED
    assert counts[200] > counts[700] > 0
    assert page.is_visible("#threshold-mark")
    page.uncheck("#threshold-on")
    explorer.wait()
    back = explorer.map_pixels()
    assert (np.abs(back - unthresholded).sum(axis=2) > CHANGED).mean() < 0.01


def test_a_new_layer_downloads_as_a_geotiff_and_can_be_removed(explorer, tmp_path):
    import rasterio

    page = explorer.page
    page.fill("#text-query", "grassland")
    made = explorer.add_layer_by(lambda: page.click("#text-form button[type=submit]"))
    with page.expect_download() as download:
        page.click("#download")
    saved = tmp_path / download.value.suggested_filename
    download.value.save_as(saved)
    assert saved.name == f"{made}.tif"
    layer = explorer.server.run.layer(made)
    with rasterio.open(saved) as dataset:
        assert dataset.driver == "GTiff"
        assert dataset.crs.to_epsg() == 4326
        assert (dataset.width, dataset.height) == (layer.width, layer.height)
        values = dataset.read(1, masked=True).filled(np.nan)
        assert dataset.tags().get("units") == layer.units
    np.testing.assert_allclose(values, layer.values[0], rtol=1e-5, equal_nan=True)
    # and removed: gone from the list, the map and the server
    page.click("#remove")
    page.wait_for_function(f"!document.querySelector('#layers li[data-id=\"{made}\"]')")
    explorer.wait()
    assert made not in [
        item["id"] for item in explorer.server.client.get("/api/layers").json()["layers"]
    ]
    assert page.is_hidden("#layer-panel")


def test_the_page_works_behind_a_token(browser, live_server, served_run, screenshots):
    live_server_class = type(live_server)  # tests/serve/conftest.py's LiveServer
    server = live_server_class(served_run, token="page-secret")
    try:
        explorer = Explorer(browser, server, "/?token=page-secret")
        assert explorer.failed == [] and explorer.errors == [], explorer.failed + explorer.errors
        assert len(explorer.layer_ids()) == len(served_run.all_layers())
        assert_draws(explorer, explorer.page.get_attribute("#layers li.selected", "data-id"))
        explorer.close(screenshots / "test_the_page_works_behind_a_token.png")
        assert explorer.outside == []
    finally:
        server.stop()


def test_the_api_page_renders_offline(browser, live_server, screenshots):
    origin = urlsplit(live_server.url).netloc
    context = browser.new_context(viewport=VIEWPORT)
    outside: list[str] = []

    def only_the_server(route) -> None:
        url = route.request.url
        if url.startswith(("data:", "blob:")) or urlsplit(url).netloc == origin:
            route.continue_()
        else:
            outside.append(url)
            route.abort()

    context.route("**/*", only_the_server)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda err: errors.append(str(err)))
    page.goto(live_server.url + "/docs")
    page.wait_for_selector(".opblock-summary-path", timeout=60_000)
    paths = page.eval_on_selector_all(
        ".opblock-summary-path", "items => items.map(i => i.getAttribute('data-path'))"
    )
    page.screenshot(path=str(screenshots / "test_the_api_page_renders_offline.png"))
    context.close()
    assert {"/api/point", "/api/layers", "/api/search", "/api/complete"} <= set(paths), paths
    assert outside == [] and errors == [], outside + errors
