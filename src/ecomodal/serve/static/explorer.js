// The map explorer over `ecomodal serve`: the folder's maps on a Natural Earth base map, what is
// known at a clicked place, and new suitability maps from a text, a photo, points or a pin.
// Plain JavaScript and Leaflet; every request goes to the server that served the page.
"use strict";

(function () {
  const $ = (id) => document.getElementById(id);

  // ------------------------------------------------------------------ state
  const state = {
    layers: [],          // as GET /api/layers lists them, in list order
    tiles: new Map(),    // layer id -> L.tileLayer
    settings: new Map(), // layer id -> {visible, opacity, thresholdOn, threshold}
    selected: null,      // id of the layer shown in the panel
    loadingTiles: new Set(),
    busy: 0,             // requests the user is waiting for
    basemap: false,
    presence: [],        // clicked points: L.circleMarker with .latlng
    background: [],
    pin: null,
  };

  // ------------------------------------------------------------------ the map
  const map = L.map("map", {
    worldCopyJump: false,
    minZoom: 1,
    maxZoom: 10,
    zoomSnap: 0.5,
    fadeAnimation: false, // a tile is drawn in full once loaded (what you see is what is done)
    attributionControl: true,
  });
  map.attributionControl.setPrefix(false); // Leaflet's prefix links to an outside site
  map.attributionControl.addAttribution("Natural Earth · Leaflet · ecomodal");
  map.fitBounds([[-58, -170], [78, 180]]);
  map.createPane("land").style.zIndex = 150;    // under the maps' tiles (200)
  map.createPane("borders").style.zIndex = 350; // over them, under markers and popups

  // ------------------------------------------------------------------ helpers
  async function api(path, options) {
    const response = await fetch(path, { credentials: "same-origin", ...options });
    let body = null;
    try {
      body = await response.json();
    } catch (err) {
      body = null;
    }
    if (!response.ok) {
      const message = body && body.error ? body.error.message : `${response.status} ${response.statusText}`;
      throw new Error(message);
    }
    return body;
  }

  function setStatus(text, kind) {
    $("status-text").textContent = text;
    $("status").classList.toggle("error", kind === "error");
    document.querySelector("#status .spinner").hidden = state.busy === 0;
  }

  // Run a request the user waits for, with the status line saying what is happening.
  async function work(message, task) {
    state.busy += 1;
    setStatus(message);
    document.querySelectorAll(".ask button").forEach((b) => (b.disabled = true));
    let failure = null;
    try {
      return await task();
    } catch (err) {
      failure = err.message;
      return null;
    } finally {
      state.busy -= 1;
      document.querySelectorAll(".ask button").forEach((b) => (b.disabled = false));
      updatePointButtons();
      if (failure !== null) setStatus(`Failed: ${failure}`, "error");
      document.querySelector("#status .spinner").hidden = state.busy === 0;
    }
  }

  function fmt(value) {
    if (value === null || value === undefined) return "–";
    if (typeof value !== "number") return String(value);
    if (value === 0) return "0";
    const size = Math.abs(value);
    if (size >= 1e6 || size < 1e-3) return value.toExponential(2);
    if (size >= 100) return String(Math.round(value));
    return String(Number(value.toPrecision(3)));
  }

  function el(tag, text, className) {
    const node = document.createElement(tag);
    if (text !== undefined && text !== null) node.textContent = text;
    if (className) node.className = className;
    return node;
  }

  // ------------------------------------------------------------------ base map
  async function loadBasemap() {
    const countries = await api("api/basemap");
    L.geoJSON(countries, {
      pane: "land",
      renderer: L.canvas({ pane: "land" }),
      interactive: false,
      style: { stroke: false, fillColor: "#efece3", fillOpacity: 1 },
    }).addTo(map);
    L.geoJSON(countries, {
      pane: "borders",
      renderer: L.canvas({ pane: "borders" }),
      interactive: false,
      style: { fill: false, color: "#5a5a5a", weight: 0.7, opacity: 0.8 },
    }).addTo(map);
    state.basemap = true;
  }

  // ------------------------------------------------------------------ map layers
  function isRgb(layer) {
    return !layer.colors || layer.colors.length === 0;
  }

  function tileUrl(layer) {
    const s = state.settings.get(layer.id);
    const query = new URLSearchParams();
    if (s.thresholdOn && !isRgb(layer)) query.set("threshold", String(s.threshold));
    const text = query.toString();
    return layer.tiles.replace(/^\//, "") + (text ? `?${text}` : "");
  }

  function tileLayerFor(layer) {
    let tiles = state.tiles.get(layer.id);
    if (tiles) return tiles;
    const [west, south, east, north] = layer.bounds;
    tiles = L.tileLayer(tileUrl(layer), {
      opacity: state.settings.get(layer.id).opacity,
      noWrap: true,
      bounds: [[south, west], [north, east]],
      maxZoom: 10,
      className: `layer-${layer.id}`,
    });
    tiles.on("loading", () => state.loadingTiles.add(layer.id));
    tiles.on("load", () => state.loadingTiles.delete(layer.id));
    tiles.on("remove", () => state.loadingTiles.delete(layer.id));
    state.tiles.set(layer.id, tiles);
    return tiles;
  }

  function showLayer(layer, visible) {
    const s = state.settings.get(layer.id);
    s.visible = visible;
    const tiles = tileLayerFor(layer);
    if (visible && !map.hasLayer(tiles)) tiles.addTo(map);
    if (!visible && map.hasLayer(tiles)) map.removeLayer(tiles);
    restack();
    const box = document.querySelector(`#layers li[data-id="${CSS.escape(layer.id)}"] input`);
    if (box) box.checked = visible;
  }

  // Later layers in the list draw over earlier ones; the selected one over all.
  function restack() {
    state.layers.forEach((layer, i) => {
      const tiles = state.tiles.get(layer.id);
      if (tiles) tiles.setZIndex(layer.id === state.selected ? 1000 : i + 1);
    });
  }

  // A folder's suitability map is titled by its points ("Suitability: 182 points"); its file
  // name says what it is of (suitability-grassland.tif), so the list names it by that.
  function label(layer) {
    const match = /^suitability-(.+)$/.exec(layer.id);
    if (!layer.made && match && !layer.title.toLowerCase().includes(match[1].replace(/-/g, " "))) {
      const points = /(\d+) points/.exec(layer.title);
      return `Suitability: ${match[1].replace(/-/g, " ")}${points ? ` (${points[1]} points)` : ""}`;
    }
    return layer.title;
  }

  function addLayer(layer, { visible = false, select = false } = {}) {
    layer.label = label(layer);
    state.layers.push(layer);
    state.settings.set(layer.id, {
      visible: false,
      opacity: 0.8,
      thresholdOn: false,
      threshold: (layer.vmin + layer.vmax) / 2,
    });
    const item = el("li");
    item.dataset.id = layer.id;
    if (layer.made) item.classList.add("made");
    const box = el("input");
    box.type = "checkbox";
    box.title = "show on the map";
    box.setAttribute("aria-label", `show ${layer.label}`);
    box.addEventListener("change", () => showLayer(layer, box.checked));
    const title = el("button", layer.label, "title");
    title.type = "button";
    title.title = layer.title;
    title.addEventListener("click", () => selectLayer(layer.id));
    item.append(box, title, el("span", layer.made ? "new" : layer.kind, "kind"));
    $("layers").append(item);
    if (visible) showLayer(layer, true);
    if (select) selectLayer(layer.id);
  }

  function selectLayer(id) {
    const layer = state.layers.find((l) => l.id === id);
    state.selected = layer ? id : null;
    document.querySelectorAll("#layers li").forEach((li) => li.classList.toggle("selected", li.dataset.id === id));
    $("layer-panel").hidden = !layer;
    if (!layer) return;
    const s = state.settings.get(id);
    if (!s.visible) showLayer(layer, true);
    restack();
    $("panel-title").textContent = layer.label;
    $("panel-query").textContent = (layer.tags && layer.tags.query) || "";
    $("opacity").value = s.opacity;
    $("download").href = layer.download.replace(/^\//, "");
    $("download").setAttribute("download", `${layer.id}.tif`);
    $("remove").hidden = !layer.made;
    const rgb = isRgb(layer);
    $("colorbar").style.background = rgb ? "linear-gradient(to right, #f00, #0f0, #00f)" : `linear-gradient(to right, ${layer.colors.join(", ")})`;
    $("tick-min").textContent = rgb ? "" : fmt(layer.vmin);
    $("tick-mid").textContent = rgb ? "embedding RGB" : fmt((layer.vmin + layer.vmax) / 2);
    $("tick-max").textContent = rgb ? "" : fmt(layer.vmax);
    $("units").textContent = layer.units || "";
    $("threshold-box").hidden = rgb;
    $("threshold-on").checked = s.thresholdOn;
    $("threshold").disabled = !s.thresholdOn;
    $("threshold").value = String(Math.round(((s.threshold - layer.vmin) / (layer.vmax - layer.vmin || 1)) * 1000));
    showThreshold(layer);
  }

  function showThreshold(layer) {
    const s = state.settings.get(layer.id);
    $("threshold-value").textContent = fmt(s.threshold);
    const mark = $("threshold-mark");
    mark.hidden = !s.thresholdOn;
    const at = (s.threshold - layer.vmin) / (layer.vmax - layer.vmin || 1);
    mark.style.left = `${Math.min(100, Math.max(0, at * 100))}%`;
  }

  function selectedLayer() {
    return state.layers.find((l) => l.id === state.selected) || null;
  }

  function redraw(layer) {
    const tiles = state.tiles.get(layer.id);
    if (tiles) tiles.setUrl(tileUrl(layer));
  }

  $("opacity").addEventListener("input", () => {
    const layer = selectedLayer();
    if (!layer) return;
    state.settings.get(layer.id).opacity = Number($("opacity").value);
    tileLayerFor(layer).setOpacity(Number($("opacity").value));
  });

  $("threshold-on").addEventListener("change", () => {
    const layer = selectedLayer();
    if (!layer) return;
    const s = state.settings.get(layer.id);
    s.thresholdOn = $("threshold-on").checked;
    $("threshold").disabled = !s.thresholdOn;
    showThreshold(layer);
    redraw(layer);
  });

  let thresholdTimer = null;
  $("threshold").addEventListener("input", () => {
    const layer = selectedLayer();
    if (!layer) return;
    const s = state.settings.get(layer.id);
    s.threshold = layer.vmin + (Number($("threshold").value) / 1000) * (layer.vmax - layer.vmin);
    showThreshold(layer);
    clearTimeout(thresholdTimer); // redraw once the slider rests
    state.redrawPending = true;
    thresholdTimer = setTimeout(() => {
      state.redrawPending = false;
      redraw(layer);
    }, 150);
  });

  $("remove").addEventListener("click", async () => {
    const layer = selectedLayer();
    if (!layer || !layer.made) return;
    const done = await work(`Removing ${layer.title}…`, () => api(`api/layers/${encodeURIComponent(layer.id)}`, { method: "DELETE" }));
    if (done === null) return;
    const tiles = state.tiles.get(layer.id);
    if (tiles) map.removeLayer(tiles);
    state.tiles.delete(layer.id);
    state.settings.delete(layer.id);
    state.layers = state.layers.filter((l) => l.id !== layer.id);
    document.querySelector(`#layers li[data-id="${CSS.escape(layer.id)}"]`).remove();
    selectLayer(null);
    setStatus(`Removed ${layer.title}.`);
  });

  // ------------------------------------------------------------------ new layers
  async function makeLayer(message, request) {
    const started = performance.now();
    const body = await work(message, request);
    if (!body) return null;
    const layer = body.layer;
    // the answer alone on the map (the others stay in the list, a tick away)
    state.layers.forEach((other) => state.settings.get(other.id).visible && showLayer(other, false));
    addLayer(layer, { visible: true, select: true });
    const seconds = ((performance.now() - started) / 1000).toFixed(1);
    setStatus(`Added “${layer.title}” (${seconds} s).`);
    return layer;
  }

  function postJson(payload) {
    return () => api("api/layers", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(payload),
    });
  }

  function postForm(form) {
    return () => api("api/layers", { method: "POST", body: form });
  }

  $("text-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const text = $("text-query").value.trim();
    if (!text) return;
    makeLayer(`Mapping places like “${text}”… (the first question loads the text encoder)`, postJson({ kind: "text", text }));
  });

  $("photo-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const file = $("photo-file").files[0];
    if (!file) return;
    const form = new FormData();
    form.append("kind", "photo");
    form.append("photo", file);
    makeLayer(`Mapping places that look like ${file.name}…`, postForm(form));
  });

  $("csv-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const points = $("csv-points").files[0];
    if (!points) return;
    const form = new FormData();
    form.append("kind", "points");
    form.append("points", points);
    const background = $("csv-background").files[0];
    if (background) form.append("background", background);
    makeLayer(`Fitting a suitability map to the points in ${points.name}…`, postForm(form));
  });

  function updatePointButtons() {
    const n = state.presence.length;
    const m = state.background.length;
    $("point-count").textContent = n + m === 0
      ? "No points clicked yet."
      : `${n} presence point${n === 1 ? "" : "s"}, ${m} background point${m === 1 ? "" : "s"} clicked.`;
    $("points-make").disabled = n === 0 || state.busy > 0;
    $("points-clear").disabled = n + m === 0;
  }

  function clearPoints() {
    [...state.presence, ...state.background].forEach((marker) => map.removeLayer(marker));
    state.presence = [];
    state.background = [];
    updatePointButtons();
  }

  $("points-clear").addEventListener("click", clearPoints);
  $("points-make").addEventListener("click", () => {
    const asJson = (markers) => markers.map((m) => ({ lat: m.getLatLng().lat, lon: m.getLatLng().lng }));
    const payload = { kind: "points", points: asJson(state.presence) };
    if (state.background.length) payload.background = asJson(state.background);
    const n = state.presence.length;
    makeLayer(`Fitting a suitability map to ${n} clicked point${n === 1 ? "" : "s"}…`, postJson(payload));
  });

  // ------------------------------------------------------------------ clicks on the map
  function mode() {
    return document.querySelector('input[name="mode"]:checked').value;
  }

  // While clicks add points, quick clicks are points, not a double-click zoom.
  document.querySelectorAll('input[name="mode"]').forEach((input) =>
    input.addEventListener("change", () => {
      if (mode() === "inspect") map.doubleClickZoom.enable();
      else map.doubleClickZoom.disable();
    }),
  );

  map.on("click", (event) => {
    const { lat } = event.latlng;
    const lon = L.Util.wrapNum(event.latlng.lng, [-180, 180], true);
    const where = L.latLng(lat, lon);
    const kind = mode();
    if (kind === "inspect") {
      inspect(where);
    } else if (kind === "presence" || kind === "background") {
      const presence = kind === "presence";
      const marker = L.circleMarker(where, {
        radius: 5,
        color: presence ? "#fff" : "#333",
        weight: 1.5,
        fillColor: presence ? "#d62728" : "#aaa",
        fillOpacity: 1,
        bubblingMouseEvents: false, // a click on a point is not also a click on the map
      }).addTo(map);
      const list = presence ? state.presence : state.background;
      list.push(marker);
      marker.bindTooltip(`${presence ? "presence" : "background"} point (click to remove)`);
      marker.on("click", () => { // a second click takes the point away
        map.removeLayer(marker);
        list.splice(list.indexOf(marker), 1);
        updatePointButtons();
      });
      updatePointButtons();
    } else if (kind === "pin") {
      if (state.pin) map.removeLayer(state.pin);
      state.pin = L.marker(where, { title: "similar places to here" }).addTo(map);
      makeLayer(`Mapping places similar to ${lat.toFixed(2)}, ${lon.toFixed(2)}…`, postJson({ kind: "similar", lat, lon }));
    }
  });

  async function inspect(where) {
    const popup = L.popup({ maxWidth: 340, maxHeight: 330 }).setLatLng(where).setContent("Looking up this place…").openOn(map);
    const query = new URLSearchParams({ lat: where.lat.toFixed(5), lon: where.lng.toFixed(5), k: "5" });
    const result = await work(`Looking up ${where.lat.toFixed(2)}, ${where.lng.toFixed(2)}…`, () => api(`api/point?${query}`));
    if (!result) {
      popup.setContent(el("div", $("status-text").textContent));
      return;
    }
    popup.setContent(pointContent(result));
    setStatus(`${result.country !== "none" ? result.country : "Open water"}: ${fmt(result.lat)}, ${fmt(result.lon)}.`);
  }

  function table(rows) {
    const node = el("table");
    rows.forEach(([name, value]) => {
      const tr = el("tr");
      tr.append(el("td", name), el("td", fmt(value), typeof value === "number" ? "num" : ""));
      node.append(tr);
    });
    return node;
  }

  function pointContent(p) {
    const box = el("div", null, "point-popup");
    box.append(el("strong", `${fmt(p.lat)}°, ${fmt(p.lon)}°`));
    box.append(el("h3", "Place"));
    box.append(table([
      ["country", p.country],
      ["continent", p.continent],
      ["Köppen zone", p.koppen],
      ["land cover", p.land_cover],
    ]));
    const cov = p.covariates || {};
    box.append(el("h3", "Covariates"));
    box.append(table([
      ["elevation (m)", cov.elevation],
      ["mean temperature, bio1 (°C)", cov.bio1],
      ["annual rainfall, bio12 (mm)", cov.bio12],
    ]));
    box.append(el("h3", "Maps here"));
    const rows = [];
    state.layers.forEach((layer) => {
      const value = p.values[layer.id];
      if (value !== null && typeof value === "object") {
        Object.entries(value).forEach(([band, v]) => rows.push([`${layer.label} (${band})`, v]));
      } else {
        rows.push([layer.label, value]);
      }
    });
    box.append(table(rows));
    if (p.expected_error) {
      box.append(el("h3", "Expected completion error (1 − cosine) of each modality from the others"));
      box.append(table(Object.entries(p.expected_error)));
    }
    if (p.nearest && p.nearest.length) {
      box.append(el("h3", `Nearest observations (${p.nearest_modality || "embedding"} cosine)`));
      box.append(table(p.nearest.map((n) => [
        `${n.rank}. ${n.id}${n.land_cover ? ` · ${n.land_cover}` : ""}${n.country ? ` · ${n.country}` : ""}`,
        n.score,
      ])));
    }
    return box;
  }

  // ------------------------------------------------------------------ start
  async function start() {
    state.busy += 1;
    setStatus("Loading the maps…");
    try {
      const [info, listing] = await Promise.all([api("api/info"), api("api/layers")]);
      $("folder").textContent = `${info.folder} · ${info.table ? `${info.table.rows} observations` : "no table"}` +
        (info.grid ? ` · ${info.grid.cells} grid cells` : "");
      const first = listing.layers.find((l) => l.kind === "suitability") || listing.layers[0];
      listing.layers.forEach((layer) => addLayer(layer, { visible: layer === first, select: layer === first }));
      await loadBasemap();
      state.busy -= 1;
      setStatus(`${listing.layers.length} maps. Click the map to see what is known there.`);
    } catch (err) {
      state.busy -= 1;
      setStatus(`Failed to start: ${err.message}`, "error");
    }
    updatePointButtons();
  }

  // For tests and the curious: the map, the state and whether anything is still loading.
  window.explorer = {
    map,
    state,
    idle: () => state.busy === 0 && state.loadingTiles.size === 0 && state.basemap && !state.redrawPending,
    selectLayer,
    showLayer: (id, visible) => showLayer(state.layers.find((l) => l.id === id), visible),
  };
  start();
})();
