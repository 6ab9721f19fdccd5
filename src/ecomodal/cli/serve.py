"""`ecomodal serve`: the maps, search and completion of a run folder over HTTP."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def serve_command(
    folder: Annotated[Path, typer.Argument(help="Folder to serve (e.g. a quickstart output).")],
    model: Annotated[
        Path | None, typer.Option(help="ProM3E model folder (default: the folder's own).")
    ] = None,
    data: Annotated[
        Path | None,
        typer.Option(help="Embedding table (default: the folder's embeddings.parquet)."),
    ] = None,
    grid_cache: Annotated[
        Path | None,
        typer.Option(
            help="Grid embedding stores for new layers (default: FOLDER/maps/grid-cache)."
        ),
    ] = None,
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.", min=1, max=65535)] = 8000,
    token: Annotated[
        str | None,
        typer.Option(
            help="Token every request must carry (needed for a non-loopback host; "
            "default: $ECOMODAL_TOKEN).",
            envvar="ECOMODAL_TOKEN",
        ),
    ] = None,
    max_layers: Annotated[
        int, typer.Option(help="Layers made on request kept at once.", min=1)
    ] = 16,
) -> None:
    """Serve a folder's maps, embeddings, search and completion: page at /, API at /docs."""
    from ecomodal.serve import check_host_token, serve

    token = check_host_token(host, token)  # refuse before loading anything
    url = f"http://{host}:{port}/" + (f"?token={token}" if token else "")
    typer.echo(f"serving {folder} at {url} (API: http://{host}:{port}/docs); Ctrl-C stops")
    serve(
        folder, model=model, data=data, grid_cache=grid_cache, host=host, port=port,
        token=token, max_layers=max_layers,
    )  # fmt: skip
