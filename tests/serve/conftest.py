"""A real server (uvicorn on a free loopback port, in a thread) over the reduced quickstart run."""

from __future__ import annotations

import socket
import threading
import time

import httpx
import pytest


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class LiveServer:
    """A running server: ``url``, ``client`` (httpx, base URL set), ``run`` (the ServedRun)."""

    def __init__(self, run, *, token: str | None = None, **app_options) -> None:
        import uvicorn

        from ecomodal.serve import create_app

        self.run = run
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(
            create_app(run, token=token, **app_options),
            host="127.0.0.1",
            port=self.port,
            log_level="warning",
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the server did not start")
            time.sleep(0.05)
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.client = httpx.Client(base_url=self.url, headers=headers, timeout=120)

    def stop(self) -> None:
        self.client.close()
        self.server.should_exit = True
        self.thread.join(timeout=10)


@pytest.fixture(scope="session")
def served_run(reduced_quickstart):
    """The reduced quickstart folder loaded for serving (encoders and grid warm)."""
    from ecomodal.serve import ServedRun

    folder, _ = reduced_quickstart
    run = ServedRun(folder, warm=True)
    yield run
    run.close()


@pytest.fixture(scope="session")
def live_server(served_run):
    """A server over the reduced quickstart run, no token, for the whole session."""
    server = LiveServer(served_run)
    yield server
    server.stop()
