"""``ecomodal serve``: maps, search, embedding and completion over HTTP, on a run folder.

``create_app(ServedRun(folder))`` is the FastAPI application (OpenAPI at ``/docs``); ``serve``
runs it with uvicorn, on the loopback interface unless a token guards it.
"""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path

from ecomodal.errors import InvalidArgumentError
from ecomodal.serve.app import create_app
from ecomodal.serve.run import ServedRun

#: Environment variable holding the token when ``--token`` is not given.
TOKEN_VARIABLE = "ECOMODAL_TOKEN"


class ServeError(InvalidArgumentError):
    """The server refuses to start as asked (e.g. a public host without a token)."""


def is_loopback(host: str) -> bool:
    """True for localhost and loopback addresses (127.0.0.0/8, ::1)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_host_token(host: str, token: str | None) -> str | None:
    """The token to require (``token``, else ``$ECOMODAL_TOKEN``); a ServeError when ``host`` is
    not loopback and there is none."""
    token = token or os.environ.get(TOKEN_VARIABLE) or None
    if token is None and not is_loopback(host):
        raise ServeError(
            f"--host {host} is reachable from other machines; give --token T (or set "
            f"{TOKEN_VARIABLE}) so that every request must carry it, or serve on 127.0.0.1."
        )
    return token


def serve(
    folder: str | os.PathLike[str],
    *,
    model: str | os.PathLike[str] | None = None,
    data: str | os.PathLike[str] | None = None,
    grid_cache: str | os.PathLike[str] | None = None,
    host: str = "127.0.0.1",
    port: int = 8000,
    token: str | None = None,
    max_layers: int = 16,
    log_level: str = "warning",
) -> None:
    """Serve ``folder`` until interrupted (see :class:`ServedRun` for what is served)."""
    import torch
    import uvicorn

    token = check_host_token(host, token)
    # Requests carry a few rows each: one intra-op thread per request is faster than two
    # fighting over the cores (about 4x per /api/point on 2 cores), and requests run in parallel.
    torch.set_num_threads(1)
    run = ServedRun(
        Path(folder),
        model=model,
        data=data,
        grid_cache=grid_cache,
        max_layers=max_layers,
        warm=True,
    )
    try:
        uvicorn.run(create_app(run, token=token), host=host, port=port, log_level=log_level)
    finally:
        run.close()


__all__ = ["ServeError", "ServedRun", "TOKEN_VARIABLE", "check_host_token", "create_app", "serve"]
