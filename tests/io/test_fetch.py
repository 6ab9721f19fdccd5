"""The media downloader, against a real HTTP server on 127.0.0.1 (no test reaches the internet).

The server's paths say how it behaves:

- ``/files/NAME``: the bytes of NAME;
- ``/slow/SECONDS/NAME``: the same after sleeping;
- ``/drop/N/NAME``: the first N requests send a full Content-Length, half the body, then close;
- ``/busy/NAME``: 503 with ``Retry-After: 1`` the first time, then the bytes;
- ``/limit/NAME``: 429 the first time, then the bytes;
- ``/missing/NAME``: 404 always;
- ``/redirect/SCHEME/NAME``: 302 to ``SCHEME://127.0.0.1:PORT/NAME`` (PORT: a listening socket
  that counts the connections it gets) or, for ``http``, to ``/files/NAME`` on this server.
"""

from __future__ import annotations

import hashlib
import http.server
import random
import socket
import threading
import time
from collections import Counter, defaultdict
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from ecomodal.errors import InvalidArgumentError, TableFormatError
from ecomodal.io.fetch import FAILURES_SCHEMA, FetchSummary, _extension, fetch_media


def payload(name: str) -> bytes:
    """The deterministic body served for NAME (a few KB, different per name)."""
    return random.Random(name).randbytes(2000 + 37 * len(name))


class _State:
    """What the server saw: hits and hit times per path, and the most simultaneous requests."""

    def __init__(self):
        self.lock = threading.Lock()
        self.hits: Counter[str] = Counter()
        self.times: dict[str, list[float]] = defaultdict(list)
        self.in_flight = 0
        self.max_in_flight = 0
        self.trap_port = 0  # where /redirect/ftp/... points
        self.server_port = 0

    def total(self) -> int:
        with self.lock:
            return sum(self.hits.values())


class _Handler(http.server.BaseHTTPRequestHandler):
    state: _State  # set per server

    def log_message(self, format, *args):  # quiet
        pass

    def do_GET(self):
        state = self.state
        with state.lock:
            state.hits[self.path] += 1
            count = state.hits[self.path]
            state.times[self.path].append(time.monotonic())
            state.in_flight += 1
            state.max_in_flight = max(state.max_in_flight, state.in_flight)
        try:
            self._respond(self.path.strip("/").split("/"), count)
        except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout test)
            pass
        finally:
            with state.lock:
                state.in_flight -= 1

    def _respond(self, parts: list[str], count: int):
        kind, name = parts[0], parts[-1]
        data = payload(name)
        if kind == "slow":
            time.sleep(float(parts[1]))
        elif kind == "drop" and count <= int(parts[1]):
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data[: len(data) // 2])
            self.wfile.flush()
            self.close_connection = True
            return
        elif kind == "busy" and count == 1:
            self._error(503, {"Retry-After": "1"})
            return
        elif kind == "limit" and count == 1:
            self._error(429)
            return
        elif kind == "missing":
            self._error(404)
            return
        elif kind == "redirect":
            scheme = parts[1]
            port = self.state.server_port if scheme == "http" else self.state.trap_port
            path = f"files/{name}" if scheme == "http" else name
            self._error(302, {"Location": f"{scheme}://127.0.0.1:{port}/{path}"})
            return
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _error(self, code: int, headers: dict[str, str] | None = None):
        body = b"no"
        self.send_response(code)
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class _Server:
    def __init__(self, base: str, state: _State):
        self.base = base
        self.state = state

    def url(self, path: str) -> str:
        return f"{self.base}/{path.lstrip('/')}"


@pytest.fixture
def server(monkeypatch):
    """A threaded HTTP server on 127.0.0.1 (port 0) for one test; proxies are switched off."""
    for var in ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    state = _State()
    handler = type("Handler", (_Handler,), {"state": state})
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    state.server_port = httpd.server_address[1]
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05})
    thread.daemon = True
    thread.start()
    try:
        yield _Server(f"http://127.0.0.1:{httpd.server_address[1]}", state)
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)


def write_csv(path: Path, columns: dict[str, list]) -> Path:
    pacsv.write_csv(pa.table({k: pa.array(v, pa.string()) for k, v in columns.items()}), path)
    return path


def image_urls(folder: Path, server: _Server, paths: dict[str, str]) -> Path:
    """``folder/obs.csv`` with ids and an ``image_url`` column of server paths, by id."""
    urls = [server.url(path) for path in paths.values()]
    return write_csv(folder / "obs.csv", {"id": list(paths), "image_url": urls})


def fetch(records, columns, root, **options) -> FetchSummary:
    """fetch_media with test-friendly defaults: tiny back-off, no rate limit, short timeout."""
    options = {"backoff": 0.01, "per_host_rate": None, "timeout": 5.0, **options}
    return fetch_media(records, columns, root, **options)


def failures(root: Path) -> pa.Table:
    return pq.read_table(root / "fetch_failures.parquet")


def part_files(root: Path) -> list[Path]:
    return sorted(root.rglob("*.part"))


def test_downloads_exact_bytes_into_column_folders(server, tmp_path):
    records = write_csv(
        tmp_path / "obs.csv",
        {
            "id": ["obs0", "obs 1", "obs2", "obs3"],
            "image_url": [
                server.url("files/a.JPG"),
                server.url("files/b.png?size=large"),
                None,
                server.url("files/noext"),
            ],
            "sound_url": [server.url("files/s.wav"), "", server.url("files/t.MP3"), None],
        },
    )
    root = tmp_path / "media"
    summary = fetch(records, ["image_url", "sound_url"], root, show_progress=True)

    expected = {
        "image_url/obs0.jpg": payload("a.JPG"),
        "image_url/obs_1.png": payload("b.png?size=large"),
        "image_url/obs3.bin": payload("noext"),
        "sound_url/obs0.wav": payload("s.wav"),
        "sound_url/obs2.mp3": payload("t.MP3"),
    }
    assert sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()) == sorted(
        [*expected, "fetch_failures.parquet"]
    )
    for rel, data in expected.items():
        assert (root / rel).read_bytes() == data, rel
    assert summary == FetchSummary(
        requested=5,
        downloaded=5,
        skipped=0,
        failed=0,
        bytes=sum(len(d) for d in expected.values()),
        failures_path=str(root / "fetch_failures.parquet"),
    )
    assert summary.to_dict()["downloaded"] == 5
    empty = failures(root)
    assert empty.num_rows == 0
    assert empty.schema.equals(FAILURES_SCHEMA)
    assert server.state.total() == 5
    assert part_files(root) == []


def test_unsafe_ids_get_safe_distinct_names(server, tmp_path):
    ids = ["a_b", "a/b", "a b", "..x"]
    records = write_csv(
        tmp_path / "obs.csv",
        {"id": ids, "image_url": [server.url(f"files/f{i}.jpg") for i in range(len(ids))]},
    )
    root = tmp_path / "media"
    assert fetch(records, ["image_url"], root).downloaded == 4

    def short(text):
        return hashlib.sha1(text.encode()).hexdigest()[:8]

    names = ["a_b.jpg", f"a_b-{short('a/b')}.jpg", f"a_b-{short('a b')}.jpg", "_.x.jpg"]
    for i, name in enumerate(names):
        assert (root / "image_url" / name).read_bytes() == payload(f"f{i}.jpg")


def test_404_and_other_schemes_are_listed_in_failures(server, tmp_path):
    records = write_csv(
        tmp_path / "obs.csv",
        {
            "id": ["o0", "o1", "o2", "o3"],
            "image_url": [
                server.url("files/ok.jpg"),
                server.url("missing/gone.jpg"),
                "ftp://example.invalid/x.jpg",
                "/some/local/file.jpg",
            ],
        },
    )
    root = tmp_path / "media"
    summary = fetch(records, ["image_url"], root, retries=4)
    assert (summary.downloaded, summary.failed, summary.requested) == (1, 3, 4)
    table = failures(root).to_pylist()
    assert [(f["row"], f["id"], f["column"]) for f in table] == [
        (1, "o1", "image_url"),
        (2, "o2", "image_url"),
        (3, "o3", "image_url"),
    ]
    assert table[0]["url"] == server.url("missing/gone.jpg")
    assert table[0]["reason"] == "HTTP 404 Not Found"
    assert "'ftp'" in table[1]["reason"] and "only http and https" in table[1]["reason"]
    assert "without a scheme" in table[2]["reason"]
    assert server.state.hits["/missing/gone.jpg"] == 1  # a 404 is not retried
    assert server.state.total() == 2  # nothing asked for the ftp URL or the path
    assert not (root / "image_url" / "o1.jpg").exists()
    assert part_files(root) == []


def test_redirects_to_other_schemes_are_refused_before_connecting(server, tmp_path):
    trap = socket.socket()
    trap.bind(("127.0.0.1", 0))
    trap.listen(8)
    trap.settimeout(0.5)
    server.state.trap_port = trap.getsockname()[1]
    records = image_urls(
        tmp_path,
        server,
        {"ftp": "redirect/ftp/a.jpg", "file": "redirect/file/b.jpg", "http": "redirect/http/c.jpg"},
    )
    root = tmp_path / "media"
    try:
        summary = fetch(records, ["image_url"], root, retries=2)
        with pytest.raises(TimeoutError):  # nothing ever connected to the ftp:// target
            trap.accept()
    finally:
        trap.close()
    assert (summary.downloaded, summary.failed) == (1, 2)
    assert (root / "image_url" / "http.jpg").read_bytes() == payload("c.jpg")
    reasons = {f["id"]: f["reason"] for f in failures(root).to_pylist()}
    ftp_target = f"ftp://127.0.0.1:{server.state.trap_port}/a.jpg"
    assert reasons["ftp"] == (
        f"refused redirect (HTTP 302) to {ftp_target}: only http and https URLs are followed"
    )
    assert "file://" in reasons["file"] and "not allowed" in reasons["file"]
    assert server.state.hits["/redirect/ftp/a.jpg"] == 1  # refused, so not retried
    assert not (root / "image_url" / "ftp.jpg").exists() and part_files(root) == []


def test_transient_errors_are_retried_until_they_succeed(server, tmp_path):
    records = image_urls(
        tmp_path, server, {"d": "drop/2/d.jpg", "l": "limit/l.jpg", "b": "busy/b.jpg"}
    )
    root = tmp_path / "media"
    summary = fetch(records, ["image_url"], root, retries=4)
    assert (summary.downloaded, summary.failed) == (3, 0)
    for name in ("d", "l", "b"):
        assert (root / "image_url" / f"{name}.jpg").read_bytes() == payload(f"{name}.jpg")
    hits = server.state.hits
    assert hits["/drop/2/d.jpg"] == 3  # two truncated bodies, then the whole one
    assert hits["/limit/l.jpg"] == 2  # 429, then 200
    assert hits["/busy/b.jpg"] == 2  # 503, then 200
    first, second = server.state.times["/busy/b.jpg"]
    assert second - first >= 0.9  # Retry-After: 1 was respected
    assert failures(root).num_rows == 0
    assert part_files(root) == []


def test_exhausted_retries_are_reported(server, tmp_path):
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        closed_port = sock.getsockname()[1]
    records = write_csv(
        tmp_path / "obs.csv",
        {
            "id": ["x", "y", "z"],
            "image_url": [
                server.url("drop/99/x.jpg"),
                f"http://127.0.0.1:{closed_port}/y.jpg",
                server.url("slow/0.6/z.jpg"),
            ],
        },
    )
    root = tmp_path / "media"
    summary = fetch(records, ["image_url"], root, retries=2, timeout=0.2)
    assert (summary.downloaded, summary.failed) == (0, 3)
    reasons = {f["id"]: f["reason"] for f in failures(root).to_pylist()}
    size = len(payload("x.jpg"))
    assert reasons["x"] == f"truncated body ({size // 2} of {size} bytes) after 3 attempts"
    assert reasons["y"] == "connection refused after 3 attempts"
    assert reasons["z"] == "timed out (0.2 s) after 3 attempts"
    assert server.state.hits["/drop/99/x.jpg"] == 3
    assert server.state.hits["/slow/0.6/z.jpg"] == 3
    assert not any((root / "image_url").glob("*.jpg"))
    assert part_files(root) == []


def test_second_run_fetches_only_what_is_missing(server, tmp_path):
    records = write_csv(
        tmp_path / "obs.csv",
        {
            "id": ["a", "b", "c"],
            "image_url": [
                server.url("files/a.jpg"),
                server.url("files/b.jpg"),
                server.url("drop/1/c.jpg"),
            ],
        },
    )
    root = tmp_path / "media"
    first = fetch(records, ["image_url"], root, retries=0)
    assert (first.downloaded, first.failed) == (2, 1)
    assert failures(root)["reason"].to_pylist() == [
        f"truncated body ({len(payload('c.jpg')) // 2} of {len(payload('c.jpg'))} bytes)"
        " after 1 attempt"
    ]

    second = fetch(records, ["image_url"], root, retries=0)
    assert (second.downloaded, second.skipped, second.failed) == (1, 2, 0)
    assert server.state.hits["/files/a.jpg"] == 1 and server.state.hits["/files/b.jpg"] == 1
    assert failures(root).num_rows == 0  # the re-run replaced the failures table
    assert (root / "image_url" / "c.jpg").read_bytes() == payload("c.jpg")

    before = server.state.total()
    third = fetch(records, ["image_url"], root)
    assert (third.requested, third.downloaded, third.skipped, third.bytes) == (3, 0, 3, 0)
    assert server.state.total() == before  # no request at all for finished files


def test_leftover_part_file_is_not_a_finished_file(server, tmp_path):
    records = write_csv(
        tmp_path / "obs.csv",
        {"id": ["p0", "p1"], "image_url": [server.url("files/p0.jpg"), server.url("files/p1.jpg")]},
    )
    root = tmp_path / "media"
    folder = root / "image_url"
    folder.mkdir(parents=True)
    (folder / ".p0.jpg.part").write_bytes(payload("p0.jpg")[:100])  # an interrupted download
    (folder / ".p1.jpg.part").write_bytes(b"garbage" * 1000)
    summary = fetch(records, ["image_url"], root)
    assert (summary.downloaded, summary.skipped) == (2, 0)
    assert server.state.hits["/files/p0.jpg"] == 1 and server.state.hits["/files/p1.jpg"] == 1
    for name in ("p0", "p1"):
        assert (folder / f"{name}.jpg").read_bytes() == payload(f"{name}.jpg")
    assert part_files(root) == []


def test_concurrency_is_bounded(server, tmp_path):
    urls = [server.url(f"slow/0.15/c{i}.jpg") for i in range(6)]
    records = write_csv(tmp_path / "obs.csv", {"id": [f"c{i}" for i in range(6)], "u": urls})
    summary = fetch(records, ["u"], tmp_path / "media", max_concurrency=2)
    assert summary.downloaded == 6
    assert server.state.max_in_flight <= 2
    assert server.state.max_in_flight == 2  # ... and the two slots were used in parallel


def test_per_host_rate_limit(server, tmp_path):
    urls = [server.url(f"files/r{i}.jpg") for i in range(10)]
    records = write_csv(tmp_path / "obs.csv", {"id": [f"r{i}" for i in range(10)], "u": urls})
    start = time.monotonic()
    summary = fetch(records, ["u"], tmp_path / "media", per_host_rate=20.0, max_concurrency=8)
    elapsed = time.monotonic() - start
    assert summary.downloaded == 10
    assert elapsed >= 0.4  # 10 requests at 20/s: the last one starts >= 9 / 20 s after the first
    times = sorted(t for ts in server.state.times.values() for t in ts)
    assert times[-1] - times[0] >= 0.4


def test_parquet_records_and_column_string(server, tmp_path):
    records = tmp_path / "obs.parquet"
    pq.write_table(
        pa.table(
            {
                "observation_id": [7, 8],
                "image_url": [server.url("files/i7.jpeg"), None],
                "sat_url": [server.url("files/s7.tif"), server.url("files/s8.TIF")],
            }
        ),
        records,
    )
    root = tmp_path / "media"
    summary = fetch(records, "image_url,sat_url", root)
    assert (summary.requested, summary.downloaded) == (3, 3)
    assert (root / "image_url" / "7.jpeg").read_bytes() == payload("i7.jpeg")
    assert (root / "sat_url" / "8.tif").read_bytes() == payload("s8.TIF")


def test_missing_column_raises(server, tmp_path):
    records = write_csv(
        tmp_path / "obs.csv", {"id": ["a"], "image_url": [server.url("files/a.jpg")]}
    )
    root = tmp_path / "media"
    with pytest.raises(TableFormatError, match=r"obs\.csv.*'sound_url'.*image_url"):
        fetch(records, ["image_url", "sound_url"], root)
    assert server.state.total() == 0
    assert not root.exists()


def test_bad_options_raise(tmp_path):
    records = write_csv(tmp_path / "obs.csv", {"id": ["a"], "u": ["http://127.0.0.1:9/a"]})
    for options, message in [
        ({"max_concurrency": 0}, "max_concurrency must be >= 1; got 0."),
        ({"max_concurrency": 1.5}, "max_concurrency must be a whole number; got 1.5."),
        ({"retries": -1}, "retries must be >= 0; got -1."),
        ({"timeout": 0}, "timeout must be > 0; got 0."),
        ({"timeout": float("nan")}, "timeout must be a finite number; got nan."),
        ({"per_host_rate": -1}, "per_host_rate must be >= 0; got -1."),
        ({"backoff": -0.5}, "backoff must be >= 0; got -0.5."),
    ]:
        with pytest.raises(InvalidArgumentError) as caught:
            fetch(records, ["u"], tmp_path / "media", **options)
        assert str(caught.value) == message
    for columns in ([], "", " , "):
        with pytest.raises(InvalidArgumentError, match="names no URL column; got"):
            fetch(records, columns, tmp_path / "media")
    assert not (tmp_path / "media").exists()


@pytest.mark.parametrize(
    ("url", "ext"),
    [
        ("https://h/x/photo.JPG", ".jpg"),
        ("https://h/x/photo.jpeg?w=100#frag", ".jpeg"),
        ("https://h/x/sound.mp3/", ".bin"),
        ("https://h/x/tile", ".bin"),
        ("https://h/x.dir/tile", ".bin"),
        ("https://h/x/weird.j%20g", ".bin"),
    ],
)
def test_extension(url, ext):
    assert _extension(url) == ext


def test_cli_fetch(server, tmp_path):
    from typer.testing import CliRunner

    from ecomodal.cli import app

    records = write_csv(
        tmp_path / "obs.csv",
        {"id": ["a", "b"], "image_url": [server.url("/files/a.jpg"), server.url("/missing/b.jpg")]},
    )
    root = tmp_path / "media"
    args = ["fetch", "--records", str(records), "--columns", "image_url", "--root", str(root)]
    result = CliRunner().invoke(app, [*args, "--retries", "0", "--no-progress"])
    assert result.exit_code == 0, result.output
    assert "1 downloaded, 0 already there, 1 failed of 2" in result.output
    assert (root / "image_url" / "a.jpg").read_bytes() == payload("a.jpg")
    assert "fetch_failures.parquet" in result.output
