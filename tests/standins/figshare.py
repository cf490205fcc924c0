"""A figshare stand-in: a stdlib HTTP server on 127.0.0.1 that serves what rat7m downloads.

Routes (the same shapes as figshare's public endpoints):

- ``GET /v2/articles/{id}/versions/{v}/files?page=N&page_size=M`` → the article's file listing
  (JSON list of ``{id, name, size, is_link_only, download_url, supplied_md5, computed_md5}``),
  paginated; ``page_size`` defaults to 10 like figshare's and is capped at 1000.
- ``GET /ndownloader/files/{file_id}`` → 302 to ``/storage/{file_id}`` (figshare redirects to storage).
- ``GET /storage/{file_id}`` → the bytes; honours ``Range: bytes=a-`` / ``bytes=a-b`` (206, 416).
- ``GET /ndownloader/articles/{id}/versions/{v}`` → the whole article as a flat zip of stored
  (uncompressed) members, like figshare's article download; honours Range too.

Point rat7m at it with ``RAT7M_FIGSHARE_API_URL={base}/v2`` and ``RAT7M_FIGSHARE_URL={base}`` (the
`figshare` fixture does this). Every request is logged (`FigshareStandIn.log`), and the fault switches
(attributes of `FigshareStandIn`, all empty by default) make it misbehave on purpose.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import socket
import threading
import time
import zipfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import pytest

#: figshare's default page size when a listing request gives none.
DEFAULT_PAGE_SIZE = 10
#: figshare's largest accepted page size.
MAX_PAGE_SIZE = 1000
#: Bytes sent between two pauses of `FigshareStandIn.body_delay`.
BODY_PIECE = 4096


@dataclass
class Request:
    """One logged request.

    Attributes:
        method: ``GET``, ``HEAD``, …
        path: the path without the query string.
        query: the parsed query (``{"page": "2", ...}``).
        range: the ``Range`` header, or None.
        status: the status answered.
        bytes_sent: body bytes actually written (less than the body when a fault cut it).
    """

    method: str
    path: str
    query: dict[str, str]
    range: str | None
    status: int = 0
    bytes_sent: int = 0


@dataclass
class StoredFile:
    """One file of an article as the stand-in holds it."""

    file_id: int
    article_id: int
    version: int
    name: str
    data: bytes
    md5: str = field(init=False)

    def __post_init__(self) -> None:
        self.md5 = hashlib.md5(self.data).hexdigest()


class FigshareStandIn:
    """The server state: articles, the request log and the fault switches.

    Fault switches (change them between calls; the ``*_once`` ones reset themselves when used):

    Attributes:
        drop_once: file name → byte count: the next download of that file announces the full
            length, sends only that many bytes and closes the connection.
        stall_once: file name → (byte count, seconds): the next download sends that many bytes,
            then goes silent for that long (a read timeout for the client) before closing.
        status_once: key → HTTP status answered once instead of the content. Keys: a file name
            (its storage download), ``"listing:{article_id}"``, ``"zip:{article_id}"``.
        status_always: the same keys → a status answered every time (a permanent failure).
        retry_after: ``Retry-After`` header sent with 429/503 answers (None: no header).
        wrong_bytes: file names whose downloads carry corrupted bytes (same length, so only the md5
            can tell).
        truncate_zip: article ids whose zip is served cut in half, with a Content-Length that matches
            the cut body (so the transfer itself looks complete).
        listing_hide: file names left out of listings (a file the selection needs is absent).
        listing_rename: file name → name shown in listings (download still serves the real bytes).
        listing_size: file name → size shown in listings instead of the true one.
        listing_link_only: file names listed as links to files hosted elsewhere (``is_link_only``).
        listing_extra: article id → extra listing entries appended as given (e.g. a README).
        drop_always: file name → byte count: like ``drop_once``, for every download of that file.
        ignore_range: file names whose downloads ignore ``Range`` (200 with the whole file).
        range_shift: file name → byte count: a 206 answer starts that many bytes before the offset
            asked for (its Content-Range says so truthfully).
        strip_content_range: file names whose 206 answers carry no Content-Range header.
        redirect_loop: file names whose ``/ndownloader/files/{id}`` redirects to itself forever.
        body_delay: seconds paused after each `BODY_PIECE` bytes of a file or zip body (a slow line,
            so that concurrent clients overlap); 0 sends at once.
    """

    def __init__(self) -> None:
        self.files: dict[int, StoredFile] = {}
        self.articles: dict[tuple[int, int], list[int]] = {}
        self.log: list[Request] = []
        self.base_url = ""
        self._next_id = 1000
        self._zips: dict[tuple[int, int], bytes] = {}
        self._lock = threading.Lock()
        self.drop_once: dict[str, int] = {}
        self.stall_once: dict[str, tuple[int, float]] = {}
        self.status_once: dict[str, int] = {}
        self.status_always: dict[str, int] = {}
        self.retry_after: str | None = "0"
        self.wrong_bytes: set[str] = set()
        self.truncate_zip: set[int] = set()
        self.listing_hide: set[str] = set()
        self.listing_rename: dict[str, str] = {}
        self.listing_size: dict[str, int] = {}
        self.listing_link_only: set[str] = set()
        self.listing_extra: dict[int, list[dict]] = {}
        self.drop_always: dict[str, int] = {}
        self.ignore_range: set[str] = set()
        self.range_shift: dict[str, int] = {}
        self.strip_content_range: set[str] = set()
        self.redirect_loop: set[str] = set()
        self.body_delay = 0.0
        #: set when the server shuts down: ends stalls early, so no handler outlives its test by long
        self.closed = threading.Event()

    # -- content ---------------------------------------------------------------------------------

    def add_file(self, article_id: int, version: int, name: str, data: bytes) -> StoredFile:
        """Add one file to an article (created on first use); returns it with its new file id."""
        with self._lock:
            self._next_id += 1
            stored = StoredFile(self._next_id, article_id, version, name, bytes(data))
            self.files[stored.file_id] = stored
            self.articles.setdefault((article_id, version), []).append(stored.file_id)
            self._zips.pop((article_id, version), None)
            return stored

    def file(self, name: str) -> StoredFile:
        """The stored file called ``name`` (names are unique across the RAT7M release)."""
        for stored in self.files.values():
            if stored.name == name:
                return stored
        raise KeyError(name)

    def article_files(self, article_id: int, version: int) -> list[StoredFile]:
        return [self.files[file_id] for file_id in self.articles.get((article_id, version), [])]

    def listing(self, article_id: int, version: int) -> list[dict]:
        """The full listing of an article as served (fault switches applied)."""
        entries = []
        for stored in self.article_files(article_id, version):
            if stored.name in self.listing_hide:
                continue
            link_only = stored.name in self.listing_link_only
            entries.append(
                {
                    "id": stored.file_id,
                    "name": self.listing_rename.get(stored.name, stored.name),
                    "size": self.listing_size.get(stored.name, len(stored.data)),
                    "is_link_only": link_only,
                    "download_url": (
                        f"https://elsewhere.invalid/{stored.name}"
                        if link_only
                        else f"{self.base_url}/ndownloader/files/{stored.file_id}"
                    ),
                    "supplied_md5": stored.md5,
                    "computed_md5": "" if link_only else stored.md5,
                    "mimetype": "application/octet-stream",
                }
            )
        entries.extend(self.listing_extra.get(article_id, []))
        return entries

    def article_zip(self, article_id: int, version: int) -> bytes:
        """The article as figshare's flat zip, members stored uncompressed (built once, cached)."""
        key = (article_id, version)
        with self._lock:
            if key not in self._zips:
                buffer = io.BytesIO()
                with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_STORED) as archive:
                    for stored in self.article_files(article_id, version):
                        archive.writestr(stored.name, stored.data)
                self._zips[key] = buffer.getvalue()
            return self._zips[key]

    # -- log helpers -----------------------------------------------------------------------------

    def clear_log(self) -> None:
        with self._lock:
            self.log.clear()

    def downloads(self) -> list[Request]:
        """Logged GETs of file or zip bytes (not listings, redirects or HEADs)."""
        return [
            r
            for r in self.log
            if r.method == "GET" and (r.path.startswith("/storage/") or r.path.startswith("/ndownloader/articles/"))
        ]

    def downloaded_names(self) -> set[str]:
        """Names of the files whose bytes were requested from storage."""
        names = set()
        for request in self.log:
            match = re.fullmatch(r"/storage/(\d+)", request.path)
            if match and request.method == "GET" and int(match.group(1)) in self.files:
                names.add(self.files[int(match.group(1))].name)
        return names

    def requests_for(self, name: str) -> list[Request]:
        """Storage GETs of the file called ``name``, in order."""
        file_id = self.file(name).file_id
        return [r for r in self.log if r.method == "GET" and r.path == f"/storage/{file_id}"]

    def listing_requests(self) -> list[Request]:
        return [r for r in self.log if r.path.startswith("/v2/")]


def fabricate_release(
    standin: FigshareStandIn,
    recordings: Iterable[str],
    cameras: Iterable[int] = (1, 2, 3, 4, 5, 6),
    starts: Iterable[int] = (0, 3500, 7000),
    size: int = 4096,
    mocap: dict[str, bytes] | None = None,
    seed: int = 0,
) -> dict[str, bytes]:
    """Fill the stand-in with a miniature release: fake mp4 blobs and .mat files with release names.

    The download layer never parses file contents, so the "mp4"s are random bytes (of slightly
    different sizes, so a mix-up shows). The .mat files are real MATLAB files unless ``mocap`` gives
    bytes; all seven recordings' .mat files go into the mocap article, as on figshare. Each video
    article also gets a README.txt, a non-release file that must be ignored.

    Returns:
        file name → bytes of everything added.
    """
    import random

    from rat7m_builder.manifest import MOCAP_ARTICLE, RECORDINGS, VIDEO_ARTICLES

    rng = random.Random(seed)
    added: dict[str, bytes] = {}
    for recording in RECORDINGS:
        name = f"mocap-{recording}.mat"
        data = (mocap or {}).get(recording) or _tiny_mat(recording)
        standin.add_file(*MOCAP_ARTICLE, name, data)
        added[name] = data
    for recording in recordings:
        article = VIDEO_ARTICLES[recording]
        for camera in cameras:
            for start in starts:
                name = f"{recording}-camera{camera}-{start}.mp4"
                data = rng.randbytes(size + rng.randrange(256))
                standin.add_file(*article, name, data)
                added[name] = data
        standin.add_file(*article, "README.txt", b"not a release file\n")
    return added


def _tiny_mat(recording: str) -> bytes:
    import numpy as np
    import scipy.io

    buffer = io.BytesIO()
    scipy.io.savemat(buffer, {"name": recording, "mocap": {"HeadF": np.zeros((3, 3))}})
    return buffer.getvalue()


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"  # keep-alive, as real servers; every answer has a Content-Length

    def log_message(self, format: str, *args) -> None:  # noqa: A002 - stdlib signature
        pass  # the stand-in keeps its own log; stderr noise would bury test output

    def do_GET(self) -> None:  # noqa: N802 - stdlib name
        self._handle("GET")

    def do_HEAD(self) -> None:  # noqa: N802 - stdlib name
        # fsspec asks HEAD for a remote file's size before streaming it. A HEAD neither uses up the
        # *_once faults nor sends a body.
        self._handle("HEAD")

    def _handle(self, method: str) -> None:
        self.head_only = method == "HEAD"
        self.file_name: str | None = None  # the stored file being served (one handler serves a keep-alive connection)
        standin = self.server.standin
        url = urlsplit(self.path)
        query = {key: values[-1] for key, values in parse_qs(url.query).items()}
        record = Request(method, url.path, query, self.headers.get("Range"))
        with standin._lock:
            standin.log.append(record)
        try:
            self._route(standin, url.path, query, record)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    def _route(self, standin: FigshareStandIn, path: str, query: dict[str, str], record: Request) -> None:
        if match := re.fullmatch(r"/v2/articles/(\d+)/versions/(\d+)/files", path):
            article_id, version = int(match.group(1)), int(match.group(2))
            if self._fault(standin, f"listing:{article_id}", record):
                return
            if (article_id, version) not in standin.articles:
                return self._answer(record, 404, b'{"message": "Entity not found: article"}')
            page = int(query.get("page", "1"))
            page_size = min(int(query.get("page_size", DEFAULT_PAGE_SIZE)), MAX_PAGE_SIZE)
            entries = standin.listing(article_id, version)[(page - 1) * page_size : page * page_size]
            return self._answer(record, 200, json.dumps(entries).encode(), "application/json")
        if match := re.fullmatch(r"/ndownloader/files/(\d+)", path):
            if int(match.group(1)) not in standin.files:
                return self._answer(record, 404, b"not found")
            if standin.files[int(match.group(1))].name in standin.redirect_loop:
                return self._answer(record, 302, b"", headers={"Location": path})
            return self._answer(record, 302, b"", headers={"Location": f"/storage/{match.group(1)}"})
        if match := re.fullmatch(r"/storage/(\d+)", path):
            stored = standin.files.get(int(match.group(1)))
            if stored is None:
                return self._answer(record, 404, b"not found")
            if self._fault(standin, stored.name, record):
                return
            data = stored.data
            if stored.name in standin.wrong_bytes:
                data = bytes(byte ^ 0xFF for byte in data[:16]) + data[16:]
            with standin._lock:
                drop = None if self.head_only else standin.drop_once.pop(stored.name, None)
                stall = None if self.head_only else standin.stall_once.pop(stored.name, None)
            if drop is None and not self.head_only:
                drop = standin.drop_always.get(stored.name)
            self.file_name = stored.name  # for the Range faults of `_send_bytes`
            return self._send_bytes(record, data, drop_after=drop, stall=stall)
        if match := re.fullmatch(r"/ndownloader/articles/(\d+)/versions/(\d+)", path):
            article_id, version = int(match.group(1)), int(match.group(2))
            if self._fault(standin, f"zip:{article_id}", record):
                return
            if (article_id, version) not in standin.articles:
                return self._answer(record, 404, b"not found")
            data = standin.article_zip(article_id, version)
            if article_id in standin.truncate_zip:
                data = data[: len(data) // 2]
            return self._send_bytes(record, data, content_type="application/zip")
        return self._answer(record, 404, b"no such route")

    def _fault(self, standin: FigshareStandIn, key: str, record: Request) -> bool:
        with standin._lock:
            once = None if self.head_only else standin.status_once.pop(key, None)
            status = once or standin.status_always.get(key)
        if status is None:
            return False
        headers = {}
        if status in (429, 503) and standin.retry_after is not None:
            headers["Retry-After"] = standin.retry_after
        self._answer(record, status, f"injected {status}".encode(), headers=headers)
        return True

    def _answer(
        self,
        record: Request,
        status: int,
        body: bytes,
        content_type: str = "text/plain",
        headers: dict[str, str] | None = None,
    ) -> None:
        record.status = status
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if not self.head_only:
            self.wfile.write(body)
            record.bytes_sent = len(body)

    def _send_bytes(
        self,
        record: Request,
        data: bytes,
        drop_after: int | None = None,
        content_type: str = "application/octet-stream",
        stall: tuple[int, float] | None = None,
    ) -> None:
        standin = self.server.standin
        name = self.file_name  # None for an article zip
        start, end = 0, len(data) - 1
        status = 200
        header = None if name in standin.ignore_range else self.headers.get("Range")
        if header:
            match = re.fullmatch(r"bytes=(\d+)-(\d*)", header.strip())
            if match is None:
                return self._answer(record, 400, b"bad range")
            start = int(match.group(1))
            if match.group(2):
                end = min(int(match.group(2)), len(data) - 1)
            if start >= len(data):
                return self._answer(record, 416, b"", headers={"Content-Range": f"bytes */{len(data)}"})
            start = max(0, start - standin.range_shift.get(name, 0))
            status = 206
        body = data[start : end + 1]
        record.status = status
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Accept-Ranges", "bytes")
        if status == 206 and name not in standin.strip_content_range:
            self.send_header("Content-Range", f"bytes {start}-{end}/{len(data)}")
        self.end_headers()
        if self.head_only:
            return
        if stall is not None:
            drop_after = stall[0]
        cut = drop_after is not None and drop_after < len(body)
        sent = body[:drop_after] if cut else body
        delay = standin.body_delay
        piece = BODY_PIECE if delay else max(len(sent), 1)
        for offset in range(0, len(sent), piece):
            self.wfile.write(sent[offset : offset + piece])
            self.wfile.flush()
            record.bytes_sent = min(len(sent), offset + piece)
            if delay:
                time.sleep(delay)
        if cut:
            if stall is not None:
                standin.closed.wait(stall[1])
            # An abrupt close mid-body: the client sees fewer bytes than Content-Length announced.
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    standin: FigshareStandIn


@pytest.fixture
def figshare(monkeypatch: pytest.MonkeyPatch) -> Iterator[FigshareStandIn]:
    """A running, empty figshare stand-in; rat7m's endpoint variables point at it for the test."""
    standin = FigshareStandIn()
    server = _Server(("127.0.0.1", 0), _Handler)
    server.standin = standin
    standin.base_url = f"http://127.0.0.1:{server.server_address[1]}"
    # A short poll interval: shutdown() waits for the next poll, and tests start many servers.
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.02}, name="figshare-standin", daemon=True
    )
    thread.start()
    monkeypatch.setenv("RAT7M_FIGSHARE_API_URL", f"{standin.base_url}/v2")
    monkeypatch.setenv("RAT7M_FIGSHARE_URL", standin.base_url)
    try:
        yield standin
    finally:
        standin.closed.set()
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def serve_release(standin: FigshareStandIn, root: str) -> dict[str, str]:
    """Put a fabricated release's real files (any layout below ``root``) into the stand-in's articles.

    mp4 chunks go to their recording's video article and the .mat files to the mocap article, so the
    stand-in serves the same bytes a local ``data_dir=root`` reads. Returns file name → local path.
    """
    import os

    from rat7m_builder.manifest import MOCAP_ARTICLE, VIDEO_ARTICLES, parse_mocap_name, parse_video_name

    served: dict[str, str] = {}
    for folder, _, names in os.walk(root):
        for name in sorted(names):
            video = parse_video_name(name)
            if video is not None:
                article = VIDEO_ARTICLES[video.recording]
            elif parse_mocap_name(name) is not None:
                article = MOCAP_ARTICLE
            else:
                continue
            path = os.path.join(folder, name)
            with open(path, "rb") as file:
                standin.add_file(*article, name, file.read())
            served[name] = path
    return served
