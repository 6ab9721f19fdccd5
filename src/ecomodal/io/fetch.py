"""Download the media (photos, sounds, satellite tiles) named by URL columns of a records table.

:func:`fetch_media` is behind ``ecomodal fetch --records OBS.csv --columns image_url,sound_url
--root MEDIA_DIR``. Each URL of row ``i`` in column ``c`` is saved as ``root/c/<safe id><ext>``
(``media/image_url/obs17.jpg``). Runs resume: a file that exists is finished and is never fetched
again, because bodies are written to ``.<name>.part`` and renamed only once complete. Requests run
on a bounded thread pool with a per-host rate limit; transient errors (connection errors,
timeouts, truncated bodies, HTTP 429 and 5xx) are retried with exponential back-off. Whatever still
fails is listed in ``root/fetch_failures.parquet`` (row, id, column, url, reason).

Only the standard library does the HTTP (``urllib.request``); only http(s) URLs are fetched.
"""

from __future__ import annotations

import contextlib
import dataclasses
import email.utils
import hashlib
import http.client
import os
import posixpath
import random
import re
import socket
import ssl
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import defaultdict, deque
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from ecomodal._version import __version__
from ecomodal.errors import InvalidArgumentError, TableFormatError
from ecomodal.io.atomic import atomic_path
from ecomodal.io.records import _read_table, failure_schema, read_records
from ecomodal.options import check_range, parse_list

FAILURES_NAME = "fetch_failures.parquet"

#: Schema of the failures table.
FAILURES_SCHEMA = failure_schema("column", "url")

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")
_EXTENSION = re.compile(r"\.[a-z0-9]{1,10}")
_CHUNK = 1 << 16
_MAX_RETRY_AFTER = 30.0


@dataclasses.dataclass
class FetchSummary:
    """What one :func:`fetch_media` run did.

    ``requested`` counts the non-empty URLs; each ends up ``downloaded`` (this run), ``skipped``
    (the file was already there) or ``failed`` (listed in ``failures_path``). ``bytes`` is the
    number of bytes downloaded this run.
    """

    requested: int = 0
    downloaded: int = 0
    skipped: int = 0
    failed: int = 0
    bytes: int = 0
    failures_path: str = ""

    def to_dict(self) -> dict[str, int | str]:
        """The summary as a plain dict (e.g. for JSON output)."""
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class _Task:
    row: int
    id: str
    column: str
    url: str
    dest: Path


class _Retryable(Exception):
    """A transient failure: worth another attempt (after ``retry_after`` seconds when given)."""

    def __init__(self, reason: str, retry_after: float | None = None):
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after


class _Fatal(Exception):
    """A failure that another attempt would not fix (HTTP 404, a local write error...)."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


class _Interrupted(Exception):
    """The run is being stopped (Ctrl-C in the main thread)."""


class _HttpOnlyRedirects(urllib.request.HTTPRedirectHandler):
    """Follows redirects to http(s) URLs only: a redirect to ``ftp://`` (which urllib would
    follow) or any other scheme fails the URL, naming the redirect, before a connection opens."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):  # noqa: ANN001 (urllib's)
        scheme = urllib.parse.urlsplit(newurl).scheme.lower()
        if scheme not in ("http", "https"):
            with contextlib.suppress(OSError):
                fp.read()
                fp.close()
            raise _Fatal(
                f"refused redirect (HTTP {code}) to {newurl}: only http and https URLs are followed"
            )
        return super().redirect_request(req, fp, code, msg, headers, newurl)


class _RateLimiter:
    """At most ``rate`` request starts per second per host (a thread-safe minimum-interval slot
    scheduler: each caller reserves the next free slot under a lock, then sleeps until it)."""

    def __init__(self, rate: float | None, stop: threading.Event):
        self.interval = 1.0 / rate if rate else 0.0
        self.stop = stop
        self.lock = threading.Lock()
        self.next_slot: dict[str, float] = {}

    def acquire(self, host: str) -> None:
        if not self.interval:
            return
        with self.lock:
            now = time.monotonic()
            slot = max(now, self.next_slot.get(host, now))
            self.next_slot[host] = slot + self.interval
        delay = slot - time.monotonic()
        if delay > 0 and self.stop.wait(delay):
            raise _Interrupted()


def fetch_media(
    records: str | os.PathLike[str],
    columns: Sequence[str] | str,
    root: str | os.PathLike[str],
    *,
    max_concurrency: int = 8,
    per_host_rate: float | None = 4.0,
    retries: int = 4,
    backoff: float = 0.5,
    timeout: float = 30.0,
    column_map: Mapping[str, str] | Sequence[str] | None = None,
    show_progress: bool = False,
) -> FetchSummary:
    """Download every http(s) URL of ``columns`` of the ``records`` table under ``root``.

    Args:
        records: a CSV or Parquet observation table (see :func:`ecomodal.io.records.read_records`;
            the ids come from there).
        columns: the URL columns, by their names in the file (``["image_url", "sound_url"]``,
            or ``"image_url,sound_url"``).
        root: the media folder. The URL in row ``i`` of column ``c`` is saved as
            ``root/c/<id><ext>``: the id with every character other than ``[A-Za-z0-9._-]`` (and
            a leading dot) replaced by ``_`` (plus ``-<hash>`` of the id when two ids would
            collide), and the lower-case extension of the URL path (``.bin`` without one).
        max_concurrency: the most requests in flight at once.
        per_host_rate: the most requests started per second to one host (None or 0: no limit).
        retries: extra attempts after the first for connection errors, timeouts, truncated
            bodies, HTTP 429 and 5xx; each waits ``backoff * 2**attempt`` seconds (plus a little
            jitter) or the server's ``Retry-After`` (at most 30 s). Other 4xx fail at once.
        backoff: the first back-off, in seconds.
        timeout: the socket timeout of each request, in seconds.
        column_map: passed to :func:`~ecomodal.io.records.read_records` (to find the id column).
        show_progress: show a progress bar on stderr.

    Null or empty URLs are skipped. A file that already exists is never fetched again (it counts
    as ``skipped``); bodies are written to ``.<name>.part`` beside it and renamed only once they
    are complete, so an interrupted run leaves no file that looks finished. URLs that still fail
    are listed in ``root/fetch_failures.parquet`` (``row``, ``id``, ``column``, ``url``,
    ``reason``), which every run rewrites (empty when nothing failed).

    Raises:
        FileNotFoundError: ``records`` does not exist.
        TableFormatError: the table is unreadable or lacks one of ``columns``.
        InvalidArgumentError: a bad option (a ValueError).
    """
    given = columns
    columns = list(dict.fromkeys(parse_list(columns)))
    if not columns:
        raise InvalidArgumentError(
            f"columns names no URL column; got {given!r}. Expected comma-separated column "
            "names, e.g. image_url,sound_url."
        )
    check_range(max_concurrency, "max_concurrency", minimum=1, integer=True)
    if per_host_rate is not None:
        check_range(per_host_rate, "per_host_rate", minimum=0)
    check_range(retries, "retries", minimum=0, integer=True)
    check_range(backoff, "backoff", minimum=0)
    check_range(timeout, "timeout", minimum=0, exclusive_minimum=True)

    path = Path(records)
    ids = [str(i) for i in read_records(path, column_map=column_map).column("id").to_pylist()]
    raw = _read_table(path)
    missing = [c for c in columns if c not in raw.column_names]
    if missing:
        raise TableFormatError(
            f"{path}: no column {missing[0]!r} to fetch; the columns are {raw.column_names}."
        )

    root = Path(root)
    names = _safe_names(ids)
    folders = _safe_names(columns)
    tasks: list[_Task] = []
    for column, folder_name in zip(columns, folders, strict=True):
        folder = root / folder_name
        urls = pc.cast(raw.column(column), pa.string()).to_pylist()
        for row, url in enumerate(urls):
            url = (url or "").strip()
            if url:
                dest = folder / f"{names[row]}{_extension(url)}"
                tasks.append(_Task(row, ids[row], column, url, dest))

    summary = FetchSummary(requested=len(tasks), failures_path=str(root / FAILURES_NAME))
    failures: list[tuple[_Task, str]] = []
    pending: list[_Task] = []
    for task in tasks:
        if task.dest.exists():  # finished by an earlier run
            summary.skipped += 1
        else:
            pending.append(task)

    from ecomodal.progress import progress_bar

    with progress_bar("Fetching media", len(tasks), enabled=show_progress) as advance:
        advance(summary.skipped)
        fetcher = _Fetcher(max_concurrency, per_host_rate, retries, backoff, timeout)
        for task, outcome in fetcher.run(_interleave_hosts(pending)):
            if isinstance(outcome, int):
                summary.downloaded += 1
                summary.bytes += outcome
            else:
                summary.failed += 1
                failures.append((task, outcome))
            advance(1)

    order = {column: i for i, column in enumerate(columns)}
    failures.sort(key=lambda failure: (failure[0].row, order[failure[0].column]))
    _write_failures(root / FAILURES_NAME, failures)
    return summary


class _Fetcher:
    """Runs downloads on a thread pool (one request in flight per thread)."""

    def __init__(
        self, workers: int, rate: float | None, retries: int, backoff: float, timeout: float
    ):
        self.workers = workers
        self.retries = retries
        self.backoff = backoff
        self.timeout = timeout
        self.stop = threading.Event()
        self.limiter = _RateLimiter(rate, self.stop)
        self.rng = random.Random(0)  # seeded jitter: runs are reproducible
        self.rng_lock = threading.Lock()
        self.opener = urllib.request.build_opener(_HttpOnlyRedirects())
        self.opener.addheaders = [("User-Agent", _user_agent())]

    def run(self, tasks: Sequence[_Task]) -> Iterator[tuple[_Task, int | str]]:
        """Yield ``(task, bytes written)`` or ``(task, failure reason)`` as downloads end."""
        queue = deque(tasks)
        running: dict[Future, _Task] = {}
        with ThreadPoolExecutor(self.workers, thread_name_prefix="ecomodal-fetch") as pool:
            try:
                while queue or running:
                    # Keep a few tasks queued per worker, not the whole list, as futures.
                    while queue and len(running) < 4 * self.workers:
                        task = queue.popleft()
                        running[pool.submit(self._fetch, task)] = task
                    done, _ = wait(running, return_when=FIRST_COMPLETED)
                    for future in done:
                        yield running.pop(future), future.result()
            except BaseException:
                # Ctrl-C or an error: stop the workers (they delete their .part files).
                self.stop.set()
                for future in running:
                    future.cancel()
                raise

    def _fetch(self, task: _Task) -> int | str:
        """Download one URL with retries; return its size, or the reason it failed."""
        try:
            return self._fetch_with_retries(task)
        except _Interrupted:
            raise
        except Exception as err:  # one odd URL must not end the whole run
            return f"unexpected error ({type(err).__name__}: {err})"

    def _fetch_with_retries(self, task: _Task) -> int | str:
        try:
            parts = urllib.parse.urlsplit(task.url)
            parts.port  # noqa: B018 - raises ValueError for a bad port
        except ValueError as err:
            return f"invalid URL ({err})"
        scheme = parts.scheme.lower()
        if scheme not in ("http", "https"):
            what = f"URL scheme {scheme!r}" if scheme else "a URL without a scheme"
            return f"unsupported: {what} (only http and https URLs are fetched)"
        if not parts.hostname:
            return "invalid URL (no host)"
        host = parts.netloc.lower()
        # Spaces and non-ASCII characters are common in media URLs; http.client refuses them raw.
        safe = "/?:@!$&'()*+,;=%~"
        url = urllib.parse.urlunsplit(
            parts._replace(
                path=urllib.parse.quote(parts.path, safe=safe),
                query=urllib.parse.quote(parts.query, safe=safe),
                fragment="",
            )
        )
        part = task.dest.with_name(f".{task.dest.name}.part")
        attempts = self.retries + 1
        for attempt in range(attempts):
            try:
                self.limiter.acquire(host)
                size = self._download(url, part)
                try:
                    os.replace(part, task.dest)  # atomic: the final name means a complete body
                except OSError as err:
                    raise _Fatal(f"cannot write {task.dest}: {err}") from err
                return size
            except _Fatal as err:
                _unlink(part)
                return err.reason
            except _Retryable as err:
                _unlink(part)
                if attempt + 1 == attempts:
                    plural = "s" if attempts > 1 else ""
                    return f"{err.reason} after {attempts} attempt{plural}"
                if self.stop.wait(self._delay(attempt, err.retry_after)):
                    raise _Interrupted() from None
            except BaseException:
                _unlink(part)
                raise
        raise AssertionError("unreachable")

    def _delay(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(max(retry_after, 0.0), _MAX_RETRY_AFTER)
        delay = self.backoff * 2**attempt
        with self.rng_lock:
            return delay * (1.0 + 0.1 * self.rng.random())

    def _download(self, url: str, part: Path) -> int:
        """One attempt: stream the body of ``url`` into ``part``; return the bytes written."""
        try:
            part.parent.mkdir(parents=True, exist_ok=True)
            out = open(part, "wb")  # noqa: SIM115 - closed below
        except OSError as err:
            raise _Fatal(f"cannot write {part}: {err}") from err
        with out:
            try:
                response = self.opener.open(url, timeout=self.timeout)
            except urllib.error.HTTPError as err:
                with contextlib.closing(err):
                    reason = f"HTTP {err.code} {err.reason}".strip()
                    if err.code == 429 or err.code >= 500:
                        raise _Retryable(reason, _retry_after(err.headers)) from err
                    raise _Fatal(reason) from err
            except (urllib.error.URLError, OSError, http.client.HTTPException) as err:
                if isinstance(getattr(err, "reason", None), ssl.SSLCertVerificationError):
                    raise _Fatal(f"TLS certificate error ({err.reason})") from err
                raise _Retryable(_network_reason(err, self.timeout)) from err
            with response:
                expected = _content_length(response)
                size = 0
                while True:
                    if self.stop.is_set():
                        raise _Interrupted()
                    try:
                        chunk = response.read(_CHUNK)
                    except http.client.IncompleteRead as err:
                        size += len(err.partial)
                        raise _Retryable(_truncated(size, expected)) from err
                    except (OSError, http.client.HTTPException) as err:
                        raise _Retryable(_network_reason(err, self.timeout)) from err
                    if not chunk:
                        break
                    size += len(chunk)
                    try:
                        out.write(chunk)
                    except OSError as err:
                        raise _Fatal(f"cannot write {part}: {err}") from err
            if expected is not None and size < expected:
                raise _Retryable(_truncated(size, expected))
            try:
                out.flush()
                os.fsync(out.fileno())  # the rename must never publish a file still in the cache
            except OSError as err:
                raise _Fatal(f"cannot write {part}: {err}") from err
        return size


def _safe_names(ids: Sequence[str]) -> list[str]:
    """Filesystem-safe, distinct file stems for ``ids`` (collisions compared case-insensitively,
    for macOS and Windows). An id keeps its plain safe name when nothing else maps to it or when
    it is the first unchanged id of its group; the others get ``-<8 hex of sha1(id)>``."""
    safe = [_UNSAFE.sub("_", i) or "_" for i in ids]
    safe = ["_" + s[1:] if s.startswith(".") else s for s in safe]  # no hidden files
    groups: dict[str, list[int]] = defaultdict(list)
    for row, name in enumerate(safe):
        groups[name.lower()].append(row)
    out = list(safe)
    taken = {name.lower() for name in safe}
    for rows in groups.values():
        if len(rows) == 1:
            continue
        keeper = next((r for r in rows if safe[r] == ids[r]), None)
        for row in rows:
            if row == keeper:
                continue
            digest = hashlib.sha1(ids[row].encode("utf-8")).hexdigest()
            length = 8
            name = f"{safe[row]}-{digest[:length]}"
            while name.lower() in taken and length < len(digest):
                length += 4
                name = f"{safe[row]}-{digest[:length]}"
            taken.add(name.lower())
            out[row] = name
    return out


def _extension(url: str) -> str:
    """The lower-case extension of the URL's path (``.jpg``), or ``.bin``."""
    path = urllib.parse.unquote(urllib.parse.urlsplit(url).path)
    ext = posixpath.splitext(posixpath.basename(path))[1].lower()
    return ext if _EXTENSION.fullmatch(ext) else ".bin"


def _interleave_hosts(tasks: Sequence[_Task]) -> list[_Task]:
    """Round-robin over hosts, so workers waiting on one host's rate limit do not starve others."""
    by_host: dict[str, deque[_Task]] = defaultdict(deque)
    for task in tasks:
        by_host[urllib.parse.urlsplit(task.url).netloc.lower()].append(task)
    out: list[_Task] = []
    queues = list(by_host.values())
    while queues:
        out.extend(q.popleft() for q in queues)
        queues = [q for q in queues if q]
    return out


def _retry_after(headers: Mapping[str, str] | None) -> float | None:
    """The ``Retry-After`` header in seconds (delta-seconds or an HTTP date), or None."""
    value = (headers or {}).get("Retry-After")
    if not value:
        return None
    value = value.strip()
    with contextlib.suppress(ValueError):
        return max(float(value), 0.0)
    with contextlib.suppress(TypeError, ValueError, IndexError, OverflowError):
        when = email.utils.parsedate_to_datetime(value)
        return max(when.timestamp() - time.time(), 0.0)
    return None


def _content_length(response: http.client.HTTPResponse) -> int | None:
    value = response.headers.get("Content-Length")
    with contextlib.suppress(TypeError, ValueError):
        return int(value) if value is not None and int(value) >= 0 else None
    return None


def _truncated(size: int, expected: int | None) -> str:
    of = f" of {expected}" if expected is not None else ""
    return f"truncated body ({size}{of} bytes)"


def _network_reason(err: BaseException, timeout: float) -> str:
    """A short reason for a connection-level error ("connection reset", "timed out (30 s)")."""
    if isinstance(err, urllib.error.URLError) and isinstance(err.reason, BaseException):
        err = err.reason
    if isinstance(err, TimeoutError):
        return f"timed out ({timeout:g} s)"
    if isinstance(err, http.client.RemoteDisconnected):
        return "connection closed without a response"
    if isinstance(err, ConnectionResetError):
        return "connection reset"
    if isinstance(err, ConnectionRefusedError):
        return "connection refused"
    if isinstance(err, ConnectionAbortedError | BrokenPipeError):
        return "connection aborted"
    if isinstance(err, socket.gaierror):
        return f"host not found ({err.strerror or err})"
    if isinstance(err, urllib.error.URLError):
        return f"connection error ({err.reason})"
    return f"connection error ({type(err).__name__}: {err})" if str(err) else type(err).__name__


def _write_failures(path: Path, failures: Sequence[tuple[_Task, str]]) -> None:
    """Write the failures table atomically (temporary name, then rename)."""
    import pyarrow.parquet as pq

    table = pa.table(
        {
            "row": [t.row for t, _ in failures],
            "id": [t.id for t, _ in failures],
            "column": [t.column for t, _ in failures],
            "url": [t.url for t, _ in failures],
            "reason": [reason for _, reason in failures],
        },
        schema=FAILURES_SCHEMA,
    )
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)


def _unlink(path: Path) -> None:
    with contextlib.suppress(OSError):
        path.unlink()


def _user_agent() -> str:
    return f"ecomodal/{__version__} (+media fetch; Python urllib)"
