"""The HTTP API over a :class:`~ecomodal.serve.run.ServedRun` (FastAPI; OpenAPI at ``/docs``).

Errors are JSON ``{"error": {"field": ..., "message": ...}}`` with a 4xx status naming the field;
a server error says only that it happened (the traceback goes to the server's log). With a token,
every request must carry it (``Authorization: Bearer T``, ``?token=T`` or the ``ecomodal_token``
cookie the page sets).
"""

from __future__ import annotations

import hmac
import io
import logging
import tempfile
from importlib import resources
from pathlib import Path
from typing import Annotated, Any

import numpy as np
from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from ecomodal.errors import EcomodalError, InvalidArgumentError, RunFolderError
from ecomodal.serve.layers import DEFAULT_COLORMAPS, Layer, value_range
from ecomodal.serve.page import add_page_routes
from ecomodal.serve.queries import LayerValues
from ecomodal.serve.run import ServedRun, UnknownLayerError
from ecomodal.serve.schemas import CompleteRequest, EmbedRequest, LayerRequest, SearchRequest
from ecomodal.serve.tiles import TileRenderer

log = logging.getLogger("ecomodal.serve")

#: Largest upload (photo or CSV) accepted, in bytes.
MAX_UPLOAD_BYTES = 10 * 1024 * 1024
#: Photo types accepted (by content, not by name).
PHOTO_FORMATS = ("JPEG", "PNG", "WEBP")
#: File types ``/files/`` serves from the folder.
SERVED_SUFFIXES = (".html", ".png", ".json", ".csv", ".tif", ".tiff", ".txt", ".md")
TOKEN_COOKIE = "ecomodal_token"


class UploadError(InvalidArgumentError):
    """An upload too large or of the wrong type."""

    def __init__(self, field: str, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.field, self.status = field, status


def create_app(
    run: ServedRun, *, token: str | None = None, max_upload_bytes: int = MAX_UPLOAD_BYTES
):
    """The FastAPI application serving ``run`` (see the module for errors and the token)."""

    app = FastAPI(
        title="ecomodal serve",
        description=f"Maps, search and completion over {run.folder.name}.",
        version=_version(),
        docs_url=None,
        redoc_url=None,
    )
    renderer = TileRenderer()

    def error(status: int, message: str, field: str | None = None) -> JSONResponse:
        return JSONResponse({"error": {"field": field, "message": message}}, status_code=status)

    @app.middleware("http")
    async def check_token(request: Request, call_next):
        if token is not None:
            given = request.query_params.get("token") or request.cookies.get(TOKEN_COOKIE) or ""
            header = request.headers.get("authorization", "")
            if header.lower().startswith("bearer "):
                given = header[7:].strip()
            if not hmac.compare_digest(given.encode(), token.encode()):
                return error(
                    401, "a valid token is required (Authorization: Bearer TOKEN)", "token"
                )
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > max_upload_bytes:
            return error(413, f"request body over {max_upload_bytes} bytes", "body")
        try:
            return await call_next(request)
        except Exception:  # never a traceback to the client
            log.exception("error serving %s", request.url.path)
            return error(500, "internal server error (see the server's log)")

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError):
        first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request"}
        where = [
            str(part) for part in first.get("loc", ()) if part not in ("body", "query", "path")
        ]
        field = ".".join(where) or None
        message = str(first.get("msg", "invalid request"))
        return error(422, f"{field}: {message}" if field else message, field)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        return error(exc.status_code, str(exc.detail))

    @app.exception_handler(EcomodalError)
    async def user_error(request: Request, exc: EcomodalError):
        if isinstance(exc, UploadError):
            return error(exc.status, str(exc), exc.field)
        if isinstance(exc, UnknownLayerError):
            return error(404, str(exc), "layer")
        if isinstance(exc, RunFolderError):
            return error(409, str(exc))
        return error(400, str(exc), _field_of(str(exc)))

    # ------------------------------------------------------------------ the page
    static = resources.files("ecomodal.serve") / "static"

    @app.get("/", include_in_schema=False)
    def page(request: Request) -> Response:
        response = HTMLResponse((static / "index.html").read_text(encoding="utf-8"))
        given = request.query_params.get("token")
        if token is not None and given:
            response.set_cookie(TOKEN_COOKIE, given, httponly=True, samesite="strict")
        return response

    app.mount("/static", StaticFiles(directory=str(static)), name="static")

    @app.get("/docs", include_in_schema=False)
    def docs() -> Response:
        # Swagger UI from the vendored swagger-ui-dist: the API page works offline too.
        from fastapi.openapi.docs import get_swagger_ui_html

        return get_swagger_ui_html(
            openapi_url=app.openapi_url,
            title=f"{app.title}: API",
            swagger_js_url="/static/vendor/swagger-ui/swagger-ui-bundle.js",
            swagger_css_url="/static/vendor/swagger-ui/swagger-ui.css",
            swagger_favicon_url="/static/favicon.svg",
            swagger_ui_parameters={"validatorUrl": None},  # no call to validator.swagger.io
        )

    add_page_routes(app, run)

    # ------------------------------------------------------------------ layers and tiles
    @app.get("/api/info", summary="What the server has")
    def info() -> dict[str, Any]:
        return run.info()

    @app.get("/api/layers", summary="Every layer: the folder's GeoTIFFs and the layers made")
    def layers() -> dict[str, Any]:
        return {"layers": [layer.describe() for layer in run.all_layers()]}

    @app.get("/api/layers/{layer_id}.tif", summary="A layer as a GeoTIFF")
    def download(layer_id: str) -> Response:
        layer = run.layer(layer_id)
        path = _layer_file(run, layer)
        return FileResponse(path, media_type="image/tiff", filename=f"{layer.id}.tif")

    @app.delete("/api/layers/{layer_id}", summary="Remove a layer made on request")
    def remove(layer_id: str) -> dict[str, Any]:
        layer = run.layer(layer_id)
        if not layer.made:
            raise InvalidArgumentError(
                f"layer: {layer_id!r} is a file of the folder; only made layers can be removed."
            )
        run.made.remove(layer_id)
        renderer.forget(layer_id)
        return {"removed": layer_id}

    @app.get("/tiles/{layer_id}/{z}/{x}/{y}.png", summary="A 256-pixel Web Mercator tile")
    def tile(
        layer_id: str,
        z: int,
        x: int,
        y: int,
        vmin: Annotated[float | None, Query(allow_inf_nan=False)] = None,
        vmax: Annotated[float | None, Query(allow_inf_nan=False)] = None,
        colormap: str | None = None,
        threshold: Annotated[float | None, Query(allow_inf_nan=False)] = None,
    ) -> Response:
        layer = run.layer(layer_id)
        png = renderer.render(
            layer, z, x, y, vmin=vmin, vmax=vmax, colormap=colormap, threshold=threshold
        )
        return Response(png, media_type="image/png", headers={"Cache-Control": "no-cache"})

    @app.get("/files/{relative:path}", summary="A file of the served folder")
    def files(relative: str) -> Response:
        path = run.safe_path(relative)
        if path.suffix.lower() not in SERVED_SUFFIXES:
            raise UnknownLayerError(
                f"{relative!r}: only {', '.join(SERVED_SUFFIXES)} files are served."
            )
        return FileResponse(path)

    # ------------------------------------------------------------------ questions
    @app.get("/api/point", summary="Everything known at a place")
    def point(
        lat: Annotated[float, Query(ge=-90, le=90, allow_inf_nan=False)],
        lon: Annotated[float, Query(ge=-180, le=180, allow_inf_nan=False)],
        k: Annotated[int, Query(ge=1, le=100)] = 5,
    ) -> dict[str, Any]:
        return _jsonable(run.point(lat, lon, k=k))

    @app.post("/api/embed", summary="The run's embeddings of places")
    def embed(body: EmbedRequest) -> dict[str, Any]:
        lat = [row.lat for row in body.rows]
        lon = [row.lon for row in body.rows]
        vectors = run.embed(lat, lon, body.modalities)
        return {"modalities": list(vectors), "embeddings": _jsonable(vectors)}

    @app.post("/api/complete", summary="ProM3E completion with sigma_l1 and expected error")
    def complete(body: CompleteRequest) -> dict[str, Any]:
        result = run.complete(
            _complete_inputs(run, body),
            visible=body.visible,
            n_samples=body.n_samples,
            seed=body.seed,
        )
        names = result["modalities"]
        expected = result["expected_error"]
        return _jsonable(
            {
                "modalities": names,
                "embeddings": {m: result["embeddings"][:, i] for i, m in enumerate(names)},
                "visible": {m: result["visible"][:, i] for i, m in enumerate(names)},
                "sigma_l1": result["sigma_l1"],
                "expected_error": None
                if expected is None
                else {m: expected[:, i] for i, m in enumerate(names)},
            }
        )

    @app.post("/api/search", summary="Top-k observations like a vector, text, place or id")
    def search(body: SearchRequest) -> dict[str, Any]:
        modality = body.modality or _default_modality(run)
        if body.vector is not None:
            vector = np.asarray(body.vector, dtype=np.float32)
        elif body.id is not None:
            vector = run.table_vector(body.id, modality)
        elif body.lat is not None:
            vector = run.embed([body.lat], [body.lon], [modality])[modality][0]
        else:
            if "text" not in (run.table.embeddings if run.table is not None else {}):
                raise InvalidArgumentError(
                    "text: the run's table has no text embeddings to search; search by vector, "
                    "lat/lon or id (or make a text layer with POST /api/layers)."
                )
            modality = "text"
            vector = run.text_encoder.encode([body.text])[0]
        results = run.nearest(vector, modality, body.k, body.where)
        return _jsonable({"modality": modality, "results": results})

    @app.post(
        "/api/layers",
        status_code=201,
        summary="Make a layer from a text, points, a place, an uploaded photo or a CSV of points",
        openapi_extra={
            "requestBody": {
                "content": {
                    "application/json": {"schema": LayerRequest.model_json_schema()},
                    "multipart/form-data": {
                        "schema": {
                            "type": "object",
                            "properties": {
                                "kind": {"type": "string", "enum": ["photo", "points"]},
                                "photo": {"type": "string", "format": "binary"},
                                "points": {"type": "string", "format": "binary"},
                                "background": {"type": "string", "format": "binary"},
                            },
                        }
                    },
                }
            }
        },
    )
    async def new_layer(request: Request) -> dict[str, Any]:
        from starlette.concurrency import run_in_threadpool

        kind_of = request.headers.get("content-type", "")
        if kind_of.startswith("multipart/form-data"):
            form = await request.form(max_files=3, max_fields=10, max_part_size=max_upload_bytes)
            uploads = {}
            for name in ("photo", "points", "background"):
                item = form.get(name)
                if item is not None and hasattr(item, "read"):
                    data = await item.read()
                    if len(data) > max_upload_bytes:
                        raise UploadError(name, f"{name}: over {max_upload_bytes} bytes", 413)
                    uploads[name] = (item.filename or name, data)
            kind = str(form.get("kind") or ("photo" if "photo" in uploads else "points"))
            made = await run_in_threadpool(_layer_from_upload, run, kind, uploads)
        else:
            try:
                payload = await request.json()
            except ValueError as err:
                raise InvalidArgumentError(f"body: not JSON ({err})") from err
            from pydantic import ValidationError

            try:
                body = LayerRequest.model_validate(payload)
            except ValidationError as err:
                raise RequestValidationError(err.errors()) from err
            made = await run_in_threadpool(_layer_from_json, run, body)
        return {"layer": made.describe()}

    return app


# ---------------------------------------------------------------------------- helpers
def _version() -> str:
    from ecomodal._version import __version__

    return __version__


def _field_of(message: str) -> str | None:
    head = message.split(":", 1)[0]
    return head if head and " " not in head and len(head) < 40 else None


def _jsonable(value: Any) -> Any:
    """numpy arrays and scalars as lists and numbers, NaN as null."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist())
    if isinstance(value, (np.floating, float)):
        return float(value) if np.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.bool_):
        return bool(value)
    return value


def _default_modality(run: ServedRun) -> str:
    if run.table is None or not run.table.embeddings:
        raise RunFolderError(f"{run.folder.name} has no embedding table to search.")
    return "loc" if "loc" in run.table.embeddings else next(iter(run.table.embeddings))


def _complete_inputs(run: ServedRun, body: CompleteRequest) -> dict[str, np.ndarray]:
    """{modality: [rows, dim]} from the rows' embeddings and, for places, the run's encoders."""
    if run.model is None:
        raise RunFolderError(f"{run.folder.name} has no ProM3E model; serve it with --model.")
    dim = run.model.config.input_dim
    names = list(run.model.modalities)
    out = {m: np.full((len(body.rows), dim), np.nan, np.float32) for m in names}
    places = [i for i, row in enumerate(body.rows) if row.lat is not None]
    wanted = set(body.visible or names)
    for i, row in enumerate(body.rows):
        for name, vector in (row.embeddings or {}).items():
            if name not in out:
                raise InvalidArgumentError(
                    f"rows.{i}.embeddings: the model has no {name!r} modality; it has {names}."
                )
            if len(vector) != dim:
                raise InvalidArgumentError(
                    f"rows.{i}.embeddings.{name}: {len(vector)} values; the model takes {dim}."
                )
            out[name][i] = vector
    if places:
        encodable = [m for m in names if m in run.encoders and m in wanted]
        lat = [body.rows[i].lat for i in places]
        lon = [body.rows[i].lon for i in places]
        for name, vectors in run.embed(lat, lon, encodable).items():
            missing = [j for j, i in enumerate(places) if not np.isfinite(out[name][i]).all()]
            for j in missing:
                out[name][places[j]] = vectors[j]
    return out


def _need_cells(run: ServedRun):
    cells = run.cells
    if cells is None:
        raise RunFolderError(
            f"{run.folder.name} has no grid embeddings (maps/grid-cache) to make layers on; "
            "draw a map with `ecomodal map` first or pass --grid-cache."
        )
    return cells


def _layer_from_json(run: ServedRun, body: LayerRequest) -> Layer:
    from ecomodal.serve import queries

    cells = _need_cells(run)
    if body.kind == "similar":
        made = queries.similar_layer(cells, body.lat, body.lon)
    elif body.kind == "points":
        background = body.background or []
        made = queries.points_layer(
            cells,
            [p.lat for p in body.points],
            [p.lon for p in body.points],
            background_lat=[p.lat for p in background] if background else None,
            background_lon=[p.lon for p in background] if background else None,
            n_background=body.n_background,
            seed=body.seed,
        )
    else:
        if run.table is None:
            raise RunFolderError(f"text: {run.folder.name} has no table of labelled places.")
        match = queries.text_presences(run.table, body.text, run.text_encoder)
        made = queries.points_layer(
            cells,
            match.lat,
            match.lon,
            n_background=body.n_background,
            seed=body.seed,
            description=f"{body.text!r} -> {match.column} = {match.value!r} "
            f"(cosine {match.cosine:.2f}, {len(match.lat)} places)",
        )
        made.tags.update(text=body.text, matched_column=match.column, matched_value=match.value)
    return _add_layer(run, made)


def _layer_from_upload(run: ServedRun, kind: str, uploads: dict[str, tuple[str, bytes]]) -> Layer:
    from ecomodal.serve import queries

    cells = _need_cells(run)
    if kind == "photo":
        if "photo" not in uploads:
            raise UploadError("photo", "photo: a photo layer needs a 'photo' file")
        name, data = uploads["photo"]
        vector = _photo_vector(run, name, data)
        made = queries.vector_layer(cells, vector, "sat", f"photo {Path(name).name}")
        return _add_layer(run, made)
    if kind != "points":
        raise UploadError("kind", f"kind: uploads make 'photo' or 'points' layers; got {kind!r}")
    if "points" not in uploads:
        raise UploadError("points", "points: a points layer needs a 'points' CSV file")
    lat, lon = _csv_points(run, "points", *uploads["points"])
    background = (
        _csv_points(run, "background", *uploads["background"]) if "background" in uploads else None
    )
    made = queries.points_layer(
        cells,
        lat,
        lon,
        background_lat=None if background is None else background[0],
        background_lon=None if background is None else background[1],
        description=f"{len(lat)} points from {Path(uploads['points'][0]).name}",
    )
    return _add_layer(run, made)


def _csv_points(
    run: ServedRun, field: str, name: str, data: bytes
) -> tuple[np.ndarray, np.ndarray]:
    from ecomodal.maps.points import points_lat_lon

    if not name.lower().endswith((".csv", ".txt")):
        raise UploadError(field, f"{field}: {Path(name).name!r} is not a CSV file (.csv)", 415)
    with tempfile.TemporaryDirectory(dir=run.scratch) as folder:
        path = Path(folder) / "points.csv"
        path.write_bytes(data)
        try:
            return points_lat_lon(path)
        except EcomodalError as err:
            raise UploadError(
                field, f"{field}: {Path(name).name}: {str(err).replace(str(path), '')}"
            ) from err


def _photo_vector(run: ServedRun, name: str, data: bytes) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as image:
            kind = image.format
            image.verify()
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as err:
        raise UploadError(
            "photo", f"photo: {Path(name).name!r} is not a readable image", 415
        ) from err
    if kind not in PHOTO_FORMATS:
        raise UploadError(
            "photo", f"photo: {kind} images are not accepted; use {', '.join(PHOTO_FORMATS)}", 415
        )
    encoder = run.encoders.get("sat")
    if encoder is None or not hasattr(encoder, "encode_pictures"):
        raise RunFolderError(f"photo: {run.folder.name} has no sat encoder that reads pictures.")
    with Image.open(io.BytesIO(data)) as image:
        return encoder.encode_pictures([image.convert("RGB")])[0]


def _add_layer(run: ServedRun, made: LayerValues) -> Layer:
    """A made layer over the run's grid, kept in its bounded cache (GeoTIFF written on download)."""
    cells = run.cells
    grid = cells.grid
    values = grid.to_image(made.values[None])
    vmin, vmax = value_range(values)
    layer = Layer(
        id=run.made.next_id(made.title),
        title=made.title,
        kind=made.kind,
        band_names=[made.kind],
        west=grid.west,
        north=grid.north,
        resolution_x=grid.resolution,
        resolution_y=grid.resolution,
        width=grid.width,
        height=grid.height,
        tags={**made.tags, "grid_encoders": cells.encoder_ids},
        made=True,
        colormap=DEFAULT_COLORMAPS.get(made.kind, "viridis"),
        units=made.units,
        vmin=vmin,
        vmax=vmax,
        _values=values,
        cell_values=made.values,
    )
    run.made.add(layer)
    return layer


def _layer_file(run: ServedRun, layer: Layer) -> Path:
    """The layer's GeoTIFF, written on first download for a made layer."""
    if layer.path is None:
        from ecomodal.maps.output import GridMap, write_map

        grid = run.cells.grid
        grid_map = GridMap(
            grid,
            layer.cell_values[None],
            list(layer.band_names),
            tags=dict(layer.tags),
            title=layer.title,
        )
        path = run.scratch / f"{layer.id}.tif"
        write_map(
            path,
            grid_map,
            tags={"units": layer.units, "colormap": layer.colormap, "kind": layer.kind},
        )
        layer.path = path
    return layer.path
