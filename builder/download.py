"""Fetch the RAT7M release from figshare: selective, verified, resumable.

Two ways to get the files, both ending in a `sources.ReleaseIndex` the builder consumes:

- **per file** (default): read each needed article's file listing from the figshare API, then
  download only the files the selection needs (the .mat files of the selected recordings, the mp4
  chunks of the selected cameras), each checked against figshare's size and md5;
- **archives**: download whole article zips (what the original helper script does) and read the
  needed members in place, after checking their CRCs.

Everything lands in one cache folder (``cache_dir``; the builder passes a folder inside the `datasets`
downloads folder, so ``cache_dir`` and offline reuse behave as in `datasets`)::

    cache_dir/
      article-13751023-v1/listing.json          the article's listing (figshare versions never change)
      article-13751023-v1/s1-d1-camera1-0.mp4   a verified file
      article-13751023-v1/s1-d1-camera1-0.mp4.md5          its md5 (so a re-run needs no hashing)
      article-13751023-v1/s1-d1-camera1-3500.mp4.incomplete  a partial download (resumed next time)
      article-13751023-v1/.s1-d1-camera1-0.mp4.lock        taken while a process downloads the file
      article-13751023-v1.zip                   archive mode: the article's zip
      article-13751023-v1.zip.verified.json     the members whose CRC was checked

A file is only ever visible under its final name once verified: downloads go to ``*.incomplete`` and
are renamed into place. Processes sharing a cache take turns per file (its ``.lock``), so the one
that waited finds the file done and reuses it. Endpoints come from ``RAT7M_FIGSHARE_API_URL`` /
``RAT7M_FIGSHARE_URL`` (read at call time), so tests point them at a stand-in server.
"""

from __future__ import annotations

import contextlib
import email.utils
import hashlib
import json
import logging
import os
import random
import secrets
import shutil
import socket
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import filelock
import requests
import requests.adapters
import urllib3
import urllib3.connectionpool

from .errors import ChecksumError, DownloadError, MissingFileError, Rat7MError, SelectionError
from .manifest import MOCAP_ARTICLE, VIDEO_ARTICLES, check_recording, parse_mocap_name, parse_video_name
from .sources import REPLACE_ZIP_ADVICE, FileRef, ReleaseIndex, describe_names, index_zip, open_file

logger = logging.getLogger(__name__)

#: Environment variable naming the figshare API root (tests point it at a stand-in).
API_URL_ENV = "RAT7M_FIGSHARE_API_URL"
#: Environment variable naming the figshare site root (article zips live under it).
SITE_URL_ENV = "RAT7M_FIGSHARE_URL"
DEFAULT_API_URL = "https://api.figshare.com/v2"
DEFAULT_SITE_URL = "https://figshare.com"

#: Listing page size asked for. figshare accepts at most 1000; its default (10) would take dozens of
#: requests for the s1-d1 article alone. Paging stops at the first page shorter than this.
LISTING_PAGE_SIZE = 1000
#: Parallel downloads. figshare's storage serves each connection at a limited rate, so a few streams
#: fill a fast line; many more only invites 429s.
DEFAULT_WORKERS = 4
#: Bytes read per socket read while downloading.
CHUNK_SIZE = 1 << 20
#: Free space kept in reserve beyond the selection, so the disk is not filled to the last byte.
DISK_MARGIN = 64 * 1024 * 1024
#: HTTP statuses worth retrying: rate limiting and server-side trouble.
TRANSIENT_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})
#: Most bytes one `download_file` call may receive, as a multiple of the file's size, before it gives
#: up. A server that honours Range sends each byte once; one that ignores it sends the file again from
#: byte 0 after every drop, so a line that drops often would otherwise download a 10 GB chunk without
#: end. 4× lets such a server survive two or three drops.
MAX_TRANSFER_FACTOR = 4
#: Seconds between looks at the cancel flag while waiting for another process to finish a file.
LOCK_POLL_SECONDS = 0.2
#: Seconds a cancelled batch (Ctrl-C) waits for its workers to close their partial files. Their
#: connections are cut when the batch is cancelled, so they normally stop at once.
CANCEL_GRACE_SECONDS = 5.0

#: What goes wrong on the way (resets, drops, timeouts) rather than at the server's decision.
_TRANSIENT_ERRORS = (
    requests.exceptions.ConnectionError,
    requests.exceptions.Timeout,
    requests.exceptions.ChunkedEncodingError,
    urllib3.exceptions.ProtocolError,
    urllib3.exceptions.ReadTimeoutError,
    ConnectionError,
    TimeoutError,
)
#: Every other failure of requests or urllib3 (too many redirects, an unsupported or invalid URL, …):
#: retrying would fail the same way, so it is reported at once, as a `DownloadError` naming the URL.
_PERMANENT_ERRORS = (requests.exceptions.RequestException, urllib3.exceptions.HTTPError)


def _describe_request_error(error: BaseException) -> str:
    if isinstance(error, requests.exceptions.TooManyRedirects):
        return f"too many redirects ({error}): the link redirects in a loop"
    return f"{type(error).__name__}: {error}"


@dataclass(frozen=True)
class RetryPolicy:
    """How hard to try before a download is declared failed.

    Attributes:
        max_retries: transient failures in a row (none getting further into the file than any
            attempt before) tolerated per request before giving up. An attempt that gets further
            resets the count: a long download over a flaky line still finishes, while a dead server,
            or one that drops every attempt at the same byte, fails after a bounded time.
        backoff_base: seconds before the first retry; doubles each retry in a row.
        backoff_max: cap of the exponential backoff, seconds.
        max_wait: cap of a server's ``Retry-After``, seconds (a huge value must not hang us for hours).
        timeout: (connect, read) timeouts of each request, seconds.
        sleep: the function that waits (tests record waits instead of sleeping).
    """

    max_retries: int = 6
    backoff_base: float = 1.0
    backoff_max: float = 60.0
    max_wait: float = 300.0
    timeout: tuple[float, float] = (30.0, 120.0)
    sleep: Callable[[float], None] = field(default=time.sleep, compare=False)

    def delay(self, failures: int, retry_after: float | None = None) -> float:
        """Seconds to wait before retry number ``failures`` (1-based)."""
        backoff = min(self.backoff_max, self.backoff_base * 2 ** (failures - 1))
        # Jitter spreads parallel workers that failed together, so they do not retry in lockstep.
        backoff += random.uniform(0, self.backoff_base)
        if retry_after is not None:
            backoff = max(backoff, min(retry_after, self.max_wait))
        return backoff


#: The policy used when a caller gives none; read at call time, so tests may monkeypatch it.
DEFAULT_RETRY = RetryPolicy()


def api_url() -> str:
    """The figshare API root, from ``RAT7M_FIGSHARE_API_URL`` (default ``https://api.figshare.com/v2``)."""
    return (os.environ.get(API_URL_ENV) or DEFAULT_API_URL).rstrip("/")


def site_url() -> str:
    """The figshare site root, from ``RAT7M_FIGSHARE_URL`` (default ``https://figshare.com``)."""
    return (os.environ.get(SITE_URL_ENV) or DEFAULT_SITE_URL).rstrip("/")


def article_zip_url(article_id: int, version: int) -> str:
    """URL of a whole article as one zip (what the original helper script downloads)."""
    return f"{site_url()}/ndownloader/articles/{article_id}/versions/{version}"


def article_dir(cache_dir: str, article_id: int, version: int) -> str:
    """The cache folder of one article version: its listing and its downloaded files."""
    return os.path.join(cache_dir, f"article-{article_id}-v{version}")


def entry_md5(entry: dict) -> str | None:
    """The md5 figshare gives for a listing entry: computed by figshare, else supplied by the authors."""
    value = entry.get("computed_md5") or entry.get("supplied_md5")
    return str(value).lower() if value else None


# -- listings ------------------------------------------------------------------------------------


_thread_state = threading.local()


class CancelEvent(threading.Event):
    """The cancel flag of a batch of downloads: setting it also cuts the batch's open connections.

    A worker blocked in a socket read only looks at a flag when the read returns, which on a stalled
    connection is the read timeout (minutes) later: Ctrl-C would hang that long. So the connections
    the workers' requests hold are registered here (`_thread_state.cancel` names the event of the
    worker's current download) and shut down by `set`, from whichever thread sets it; a blocked read
    then returns at once, and the worker sees the flag. Shut down, not closed: closing a descriptor
    another thread is reading is unsafe (the number can be reused at once).
    """

    def __init__(self) -> None:
        super().__init__()
        self._connections_lock = threading.Lock()
        # Weak: a connection urllib3 drops after an error is never handed back to be unregistered.
        self._connections: weakref.WeakSet = weakref.WeakSet()

    def track(self, connection: object) -> None:
        with self._connections_lock:
            self._connections.add(connection)
        if self.is_set():  # registered after the cut: cut it too
            _cut(connection)

    def untrack(self, connection: object) -> None:
        with self._connections_lock:
            self._connections.discard(connection)

    def set(self) -> None:
        super().set()
        with self._connections_lock:
            connections = list(self._connections)
        for connection in connections:
            _cut(connection)


def _cut(connection: object) -> None:
    sock = getattr(connection, "sock", None)
    if sock is None:
        return
    with contextlib.suppress(OSError):
        # socket.socket's own shutdown, also for TLS sockets: SSLSocket.shutdown would also drop its
        # TLS state under the feet of the thread reading it.
        socket.socket.shutdown(sock, socket.SHUT_RDWR)


class _TrackedPoolMixin:
    """Registers each connection a request takes with the current download's `CancelEvent`."""

    def _get_conn(self, timeout: float | None = None):
        connection = super()._get_conn(timeout)  # type: ignore[misc]
        cancel = getattr(_thread_state, "cancel", None)
        if cancel is not None:
            cancel.track(connection)
        return connection

    def _put_conn(self, conn) -> None:
        cancel = getattr(_thread_state, "cancel", None)
        if cancel is not None and conn is not None:
            cancel.untrack(conn)
        super()._put_conn(conn)  # type: ignore[misc]


class _TrackedHTTPConnectionPool(_TrackedPoolMixin, urllib3.connectionpool.HTTPConnectionPool):
    pass


class _TrackedHTTPSConnectionPool(_TrackedPoolMixin, urllib3.connectionpool.HTTPSConnectionPool):
    pass


_TRACKED_POOLS = {"http": _TrackedHTTPConnectionPool, "https": _TrackedHTTPSConnectionPool}


class _TrackingAdapter(requests.adapters.HTTPAdapter):
    """requests' adapter, with connection pools that register their connections (`_TrackedPoolMixin`)."""

    def init_poolmanager(self, *args, **kwargs) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = _TRACKED_POOLS

    def proxy_manager_for(self, proxy, **proxy_kwargs):
        manager = super().proxy_manager_for(proxy, **proxy_kwargs)
        if isinstance(manager, urllib3.ProxyManager):  # not a SOCKS one: its pools are of their own kind
            manager.pool_classes_by_scheme = _TRACKED_POOLS
        return manager


def _session() -> requests.Session:
    # requests.Session is not safe to share between threads; one per worker thread keeps connections
    # alive across the files that thread downloads.
    session = getattr(_thread_state, "session", None)
    if session is None:
        session = _thread_state.session = requests.Session()
        session.headers["User-Agent"] = "rat7m-downloader"
        # Identity encoding: the md5 is of the stored bytes, and Range offsets count stored bytes.
        session.headers["Accept-Encoding"] = "identity"
        for prefix in ("https://", "http://"):
            session.mount(prefix, _TrackingAdapter())
    return session


def _retry_after(response: requests.Response) -> float | None:
    value = response.headers.get("Retry-After")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:  # the other allowed form: an HTTP date
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def _get_json(url: str, params: dict, retry: RetryPolicy, what: str) -> object:
    failures = 0
    while True:
        try:
            response = _session().get(url, params=params, timeout=retry.timeout)
        except _TRANSIENT_ERRORS as error:
            failures += 1
            if failures > retry.max_retries:
                raise DownloadError(
                    f"{what}: {url} failed {failures} times in a row ({error}). Check the connection "
                    "(or RAT7M_FIGSHARE_API_URL) and run again."
                ) from error
            retry.sleep(retry.delay(failures))
            continue
        except _PERMANENT_ERRORS as error:
            raise DownloadError(
                f"{what}: requesting {url} failed: {_describe_request_error(error)}. Check "
                "RAT7M_FIGSHARE_API_URL (or a proxy) and try again later; report it if it repeats."
            ) from error
        with response:
            if response.status_code in TRANSIENT_STATUSES:
                failures += 1
                if failures > retry.max_retries:
                    raise DownloadError(
                        f"{what}: {response.url} answered HTTP {response.status_code} {failures} times in a "
                        "row. figshare is busy or down: run again later."
                    )
                retry.sleep(retry.delay(failures, _retry_after(response)))
                continue
            if response.status_code != 200:
                raise DownloadError(
                    f"{what}: {response.url} answered HTTP {response.status_code} {response.reason}. "
                    "Check the article id/version (and RAT7M_FIGSHARE_API_URL)."
                )
            try:
                return response.json()
            except ValueError as error:
                raise DownloadError(f"{what}: {response.url} did not answer JSON ({error}).") from error


def fetch_listing(
    article_id: int,
    version: int,
    cache_dir: str,
    *,
    offline: bool = False,
    refresh: bool = False,
    retry: RetryPolicy | None = None,
) -> list[dict]:
    """The file listing of one figshare article version, from the cache or the API.

    The API is paginated: pages of `LISTING_PAGE_SIZE` are fetched until one comes back short. The
    result is cached as ``article-{id}-v{version}/listing.json`` in ``cache_dir`` and reused with no
    request, since a published figshare version never changes; a cache made against another API
    root (``RAT7M_FIGSHARE_API_URL``) is refreshed when that API answers, else reused.

    Entries are figshare's dicts (``id``, ``name``, ``size``, ``computed_md5``, ``supplied_md5``,
    ``download_url``, ``is_link_only``), unchanged. A link-only entry points at a file hosted
    elsewhere, with no md5 from figshare: it is listed, and `figshare_index` refuses to use it.

    Args:
        article_id: figshare article id.
        version: article version.
        cache_dir: the download cache folder.
        offline: never ask the API; a missing cache is then an error.
        refresh: ask the API even when a cache exists (e.g. for a forced re-download).
        retry: retry policy (default `DEFAULT_RETRY`).

    Returns:
        All entries of the listing, in figshare's order.

    A malformed cache (not JSON, not the cached form, entries that are not figshare file dicts; see
    `_cached_listing_problem`) is treated like a stale one: fetched again and overwritten when online,
    an error naming it offline.

    Raises:
        DownloadError: the API failed permanently (the message names the URL and status), or
            ``offline`` and nothing usable is cached (the message names a malformed cache file and says
            to delete it or run online).
    """
    retry = retry or DEFAULT_RETRY
    path = os.path.join(article_dir(cache_dir, article_id, version), "listing.json")
    cached, malformed = _read_cached_listing(path, article_id, version)
    api = api_url()
    if cached is not None and not refresh and (offline or cached.get("api_url") == api):
        return cached["files"]
    if offline:
        if malformed is not None:
            raise DownloadError(
                f"{path}: the cached listing of figshare article {article_id} v{version} is malformed "
                f"({malformed}). Delete this file, or run once with network access to fetch the listing again."
            )
        raise DownloadError(
            f"Offline and no cached listing of figshare article {article_id} v{version} in {path}. "
            "Run once with network access (or give data_dir with a local copy)."
        )
    if malformed is not None:
        logger.warning("%s: the cached listing is malformed (%s); fetching it again from figshare.", path, malformed)
    url = f"{api}/articles/{article_id}/versions/{version}/files"
    what = f"listing of figshare article {article_id} v{version}"
    files: list[dict] = []
    seen: set[object] = set()
    page = 1
    try:
        while True:
            entries = _get_json(url, {"page": page, "page_size": LISTING_PAGE_SIZE}, retry, what)
            if not isinstance(entries, list) or not all(isinstance(entry, dict) for entry in entries):
                raise DownloadError(f"{what}: {url} page {page} is not a JSON list of files.")
            ids = [entry.get("id", entry.get("name")) for entry in entries]
            if entries and seen.issuperset(ids):
                # A server ignoring `page` would make us loop forever, or miss files if we stopped.
                raise DownloadError(f"{what}: {url} returned page {page} twice; it ignores pagination.")
            seen.update(ids)
            files.extend(entries)
            if len(entries) < LISTING_PAGE_SIZE:
                break
            page += 1
    except DownloadError:
        if cached is not None:  # fetched for another API root, but better than nothing offline
            logger.warning("Using the cached %s from %s (the API did not answer).", what, cached.get("api_url"))
            return cached["files"]
        raise
    _write_json_atomic(
        path,
        {
            "article_id": article_id,
            "version": version,
            "api_url": api,
            "fetched": time.time(),
            "files": files,
        },
    )
    return files


def _read_cached_listing(path: str, article_id: int, version: int) -> tuple[dict | None, str | None]:
    """Read a cached ``listing.json``.

    Returns:
        ``(cached, None)`` for a well-formed cache (``cached["files"]`` is the listing), ``(None, None)``
        when there is none, ``(None, problem)`` when the file exists but cannot be used, ``problem``
        saying what is wrong with it.
    """
    try:
        with open(path, encoding="utf-8") as file:
            cached = json.load(file)
    except FileNotFoundError:
        return None, None
    except OSError as error:
        return None, f"unreadable: {error}"
    except ValueError as error:  # also UnicodeDecodeError
        # It is only ever written atomically, so a damaged one was edited or copied by hand.
        return None, f"not JSON: {error}"
    problem = _cached_listing_problem(cached, article_id, version)
    return (None, problem) if problem is not None else (cached, None)


#: Optional keys of a listing entry that the downloader reads, and the JSON types they may have
#: (figshare's own types; null is accepted for each, as figshare sends for an unknown value).
_ENTRY_TYPES: dict[str, tuple[type, ...]] = {
    "id": (int, str),
    "size": (int,),
    "download_url": (str,),
    "computed_md5": (str,),
    "supplied_md5": (str,),
    "is_link_only": (bool,),
}


def _cached_listing_problem(cached: object, article_id: int, version: int) -> str | None:
    """What makes a cached listing unusable, or None when it has the form `fetch_listing` writes.

    That form is a JSON object with ``files``: a list of figshare file entries, each an object with
    a string ``name`` and, when present, the keys of `_ENTRY_TYPES` with those types (``size`` ≥ 0).
    ``article_id`` and ``version``, when present, must be this article's (a cache copied from
    another article's folder would otherwise pass for this one).
    """
    if not isinstance(cached, dict):
        return f"a JSON {_json_type(cached)}, expected an object with 'files'"
    files = cached.get("files")
    if not isinstance(files, list):
        return f"its 'files' is {'missing' if files is None else 'a JSON ' + _json_type(files)}, expected a list"
    for key, expected in (("article_id", article_id), ("version", version)):
        if key in cached and cached[key] != expected:
            return f"its {key!r} is {cached[key]!r}, expected {expected} (a listing of another article)"
    for number, entry in enumerate(files):
        if not isinstance(entry, dict):
            return f"files[{number}] is a JSON {_json_type(entry)} ({_short(entry)}), expected an object"
        name = entry.get("name")
        if not isinstance(name, str) or not name:
            found = "missing" if "name" not in entry else f"a JSON {_json_type(name)} ({_short(name)})"
            return f"files[{number}] has no file name: its 'name' is {found}"
        for key, types in _ENTRY_TYPES.items():
            value = entry.get(key)
            # bool is an int in Python; in JSON true/false is no number, so it is refused for those keys.
            if value is None or (isinstance(value, types) and (bool in types or not isinstance(value, bool))):
                continue
            return f"files[{number}] ({name!r}): its {key!r} is a JSON {_json_type(value)} ({_short(value)})"
        if isinstance(entry.get("size"), int) and entry["size"] < 0:
            return f"files[{number}] ({name!r}): its 'size' is negative ({entry['size']})"
    return None


def _json_type(value: object) -> str:
    """The JSON type name of a value `json.load` returned."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    return {str: "string", list: "array", dict: "object"}.get(type(value), type(value).__name__)


def _short(value: object, limit: int = 60) -> str:
    text = json.dumps(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _write_json_atomic(path: str, content: object) -> None:
    _write_text_atomic(path, json.dumps(content), "utf-8")


def _write_text_atomic(path: str, text: str, encoding: str) -> None:
    """Write ``path`` whole or not at all, even with other processes writing it at the same time.

    The text goes to a temporary file of a name no other writer uses (process id and a random token;
    created exclusively), then is renamed over ``path``: readers see the old or the new content, never
    a mix, and two writers never write into the same temporary file.
    """
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    temp = f"{path}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
    try:
        with open(temp, "x", encoding=encoding) as file:
            file.write(text)
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(temp)
        raise


# -- one file ------------------------------------------------------------------------------------


class _Cancelled(Exception):
    """Another download of the batch failed: stop this one (its partial file stays for a resume)."""


def _check_cancel(cancel: threading.Event | None, cause: BaseException | None = None) -> None:
    if cancel is not None and cancel.is_set():
        raise _Cancelled() from cause


def _md5_of(path: str) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as file:
        while block := file.read(CHUNK_SIZE):
            digest.update(block)
    return digest.hexdigest()


def _sidecar(dest_path: str) -> str:
    return dest_path + ".md5"


def _lock_path(dest_path: str) -> str:
    # Hidden (a leading dot), so that nothing looking for a release file's copies by its name
    # mistakes the lock for one. Never deleted: a waiter holds it open, and a lock file deleted under
    # it would let a newcomer lock a new file of the same name at the same time.
    folder, base = os.path.split(dest_path)
    return os.path.join(folder, f".{base}.lock")


@contextlib.contextmanager
def _file_lock(dest_path: str, name: str, cancel: threading.Event | None) -> Iterator[None]:
    """Hold the inter-process lock of one cache file while downloading, verifying and publishing it.

    Its holder is the only writer of the file's ``.incomplete``, its ``.md5`` record and the file
    itself, in every process sharing the cache (parallel builds, Ray workers, two CLI runs): the
    partial file keeps one name across runs (that is how a re-run resumes it), so two unlocked
    writers would append to the same file, and one could append to a file the other had already
    renamed into place. One lock per file, not per cache: processes still download different files
    in parallel, and a waiter only waits for the file it needs.
    """
    lock = filelock.FileLock(_lock_path(dest_path))
    waiting = False
    while True:
        try:
            lock.acquire(timeout=LOCK_POLL_SECONDS)
            break
        except filelock.Timeout:
            # Short waits in a loop rather than one long one, so a cancelled batch stops waiting.
            _check_cancel(cancel)
            if not waiting:
                waiting = True
                logger.info("%s: another download of it is running; waiting for it to finish.", name)
    try:
        yield
    finally:
        lock.release()


def _write_sidecar(dest_path: str, md5: str) -> None:
    # md5sum's format, so `md5sum -c` can re-check the cache by hand.
    _write_text_atomic(_sidecar(dest_path), f"{md5}  {os.path.basename(dest_path)}\n", "ascii")


def _read_sidecar(dest_path: str) -> str | None:
    try:
        with open(_sidecar(dest_path), encoding="ascii") as file:
            return file.read().split()[0].lower()
    except (OSError, IndexError, UnicodeDecodeError):
        return None


def is_verified(dest_path: str, size: int | None, md5: str | None) -> bool:
    """Whether ``dest_path`` is already a verified copy (no request needed).

    Trusts the ``.md5`` sidecar written after a verified download when it names the expected md5 and
    the size matches. A file without a sidecar (copied in, or a crash right after the rename) is
    hashed once and gets one if it matches.
    """
    if not os.path.isfile(dest_path):
        return False
    if size is not None and os.path.getsize(dest_path) != size:
        return False
    recorded = _read_sidecar(dest_path)
    if recorded is not None and (md5 is None or recorded == md5.lower()):
        return True
    if md5 is None:
        return False  # nothing to check it against: download again rather than trust it
    actual = _md5_of(dest_path)
    if actual != md5.lower():
        return False
    _write_sidecar(dest_path, actual)
    return True


def download_file(
    url: str,
    dest_path: str,
    size: int | None = None,
    md5: str | None = None,
    *,
    name: str | None = None,
    retry: RetryPolicy | None = None,
    progress: Callable[[int], object] | None = None,
    cancel: threading.Event | None = None,
) -> str:
    """Download ``url`` to ``dest_path``, resuming, retrying and verifying.

    Bytes go to ``dest_path + ".incomplete"``; an existing partial file is resumed with an HTTP
    ``Range`` request (a server that ignores Range just sends everything again; one that answers
    with other bytes than asked is asked once more for the whole file, then refused). Redirects are
    followed, and each resume asks ``url`` again, since figshare's storage URLs are signed and expire.
    Connection resets, drops, timeouts and 429/5xx answers are retried with exponential backoff
    (honouring ``Retry-After``), at most ``retry.max_retries`` times in a row without getting further
    into the file, and at most `MAX_TRANSFER_FACTOR` times the file's size is received in all. When
    complete, the size and md5 are checked and only then is the file renamed to ``dest_path`` (with an
    ``.md5`` sidecar so later runs need neither a request nor hashing). If a completed file that
    resumed an earlier run's bytes does not match, those bytes are discarded and the file is
    downloaded once more from its start before anything is reported.

    Processes sharing the cache take turns per file (a lock file beside it): one that waited finds
    the file verified by the other and makes no request.

    Args:
        url: where to download from.
        dest_path: final path of the file.
        size: expected size in bytes, or None when unknown (article zips).
        md5: expected md5 (hex), or None when unknown.
        name: the file's name for messages (default: the base name of ``dest_path``).
        retry: retry policy (default `DEFAULT_RETRY`).
        progress: called with the number of new bytes as they arrive (negative when a server
            ignored Range and bytes are fetched again).
        cancel: when set, the download stops and leaves its partial file for a later resume. A
            `CancelEvent` also cuts the connection when set, so a stalled read stops at once.

    Returns:
        ``dest_path``.

    Raises:
        ChecksumError: the complete file has the wrong size or md5; the bad copy is deleted.
        DownloadError: a permanent HTTP failure (names the URL and status), a request that cannot
            succeed (too many redirects, an invalid URL), a server that garbles Range requests, or
            retries exhausted.
    """
    retry = retry or DEFAULT_RETRY
    name = name or os.path.basename(dest_path)
    if is_verified(dest_path, size, md5):
        return dest_path
    os.makedirs(os.path.dirname(os.path.abspath(dest_path)), exist_ok=True)
    outer_cancel = getattr(_thread_state, "cancel", None)
    # Names the event the session's connection pools register this download's connections with.
    _thread_state.cancel = cancel if isinstance(cancel, CancelEvent) else None
    try:
        with _file_lock(dest_path, name, cancel):
            if is_verified(dest_path, size, md5):  # another process completed it while this one waited
                if progress and size:
                    progress(size)
                return dest_path
            partial = dest_path + ".incomplete"
            transfer = _transfer(url, partial, name, size, retry, progress, cancel)
            if transfer.kept_from_earlier and _mismatch(transfer, size, md5):
                # Bytes an earlier run left may be what is wrong (a partial of exactly the listed size
                # is not even requested): nothing downloaded can be blamed yet, so discard them and
                # download the whole file once; only a fresh download's mismatch is reported.
                logger.warning(
                    "%s: the file completed from a partial download left by an earlier run does not match "
                    "figshare's listing; downloading it again from its start.",
                    name,
                )
                if progress:
                    progress(-transfer.have)
                os.remove(partial)
                transfer = _transfer(url, partial, name, size, retry, progress, cancel)
            _verify_and_publish(partial, dest_path, name, url, size, md5, transfer)
    finally:
        _thread_state.cancel = outer_cancel
    return dest_path


@dataclass
class _Transfer:
    """The state of a partial file while `_transfer` fills it."""

    #: bytes in the partial file
    have: int = 0
    #: md5 state of those bytes
    digest: Any = field(default_factory=hashlib.md5)
    #: how many of its leading bytes an earlier run left (0 once they were discarded)
    kept_from_earlier: int = 0
    #: HTTP requests made for it
    requests: int = 0


def _transfer(
    url: str,
    partial: str,
    name: str,
    size: int | None,
    retry: RetryPolicy,
    progress: Callable[[int], object] | None,
    cancel: threading.Event | None,
) -> _Transfer:
    """Fill ``partial`` up to the whole file, resuming what it holds: the request loop of `download_file`."""
    if size is not None and os.path.exists(partial) and os.path.getsize(partial) > size:
        os.remove(partial)  # longer than the file can be: not a prefix of it
    state = _Transfer()
    if os.path.exists(partial):
        with open(partial, "rb") as file:  # the md5 covers the bytes from earlier runs too
            while block := file.read(CHUNK_SIZE):
                state.digest.update(block)
                state.have += len(block)
    state.kept_from_earlier = state.have
    if progress and state.have:
        progress(state.have)

    def start_over() -> None:
        if progress and state.have:
            progress(-state.have)
        with open(partial, "wb"):
            pass
        state.digest, state.have, state.kept_from_earlier = hashlib.md5(), 0, 0

    # Progress is only bytes kept beyond the furthest point reached: a server that ignores Range and
    # always drops the connection at the same byte "gains" bytes on every attempt, yet never gets further.
    furthest = state.have
    failures = 0
    received = 0  # body bytes received by this call, all attempts together
    trust_range = True  # False once the server answered a Range request with other bytes than asked
    ignored_ranges = 0  # resumes the server answered with the whole file
    complete = size is not None and state.have == size
    while not complete:
        _check_cancel(cancel)
        if state.have and not trust_range:
            start_over()
        headers = {"Range": f"bytes={state.have}-"} if state.have else {}
        retry_after = None
        try:
            state.requests += 1
            with _session().get(url, headers=headers, stream=True, timeout=retry.timeout) as response:
                status = response.status_code
                if status in TRANSIENT_STATUSES:
                    retry_after = _retry_after(response)
                    raise _TransientStatus(status)
                if status == 416 and state.have:
                    # The server has no bytes past `have`: the partial file is the whole file
                    # (a size we did not know, or a listing size that is wrong: checked later).
                    total = _content_range_total(response.headers.get("Content-Range"))
                    if total is not None and total != state.have:
                        start_over()
                        raise _TransientStatus(status)
                    break
                if status not in (200, 206):
                    redirected = f" (redirected to {response.url})" if response.url != url else ""
                    raise DownloadError(
                        f"{name}: {url}{redirected} answered HTTP {status} {response.reason}. "
                        + (
                            "The file is not (or no longer) available there; check the figshare record."
                            if status in (403, 404, 410)
                            else "This is not a temporary failure; check the URL and the figshare record."
                        )
                    )
                if status == 206:
                    start = _content_range_start(response.headers.get("Content-Range"))
                    if start != state.have:
                        # Writing these bytes at `have` would corrupt the file (and a resume would ask
                        # for the same wrong answer forever): the whole file once more, else refuse.
                        answered = f"from byte {start}" if start is not None else "without a Content-Range header"
                        if not trust_range or not state.have:
                            raise DownloadError(
                                f"{name}: {url} answered a request for the bytes from {state.have} with HTTP 206 "
                                f"(partial content) {answered}, so the file cannot be put together reliably. "
                                "A proxy may be mangling the download: try again later or from another network; "
                                "report it to figshare if it repeats."
                            )
                        logger.warning(
                            "%s: %s answered a request for the bytes from %d %s; downloading the whole file again.",
                            name,
                            url,
                            state.have,
                            answered,
                        )
                        trust_range = False
                        continue
                elif state.have:  # a 200 to a Range request: the server ignores Range; start over
                    ignored_ranges += 1
                    start_over()
                total = size if size is not None else _declared_total(response, state.have)
                budget = None if total is None else MAX_TRANSFER_FACTOR * total
                with open(partial, "ab") as file:
                    while True:
                        _check_cancel(cancel)
                        block = _read_block(response)
                        if not block:
                            break
                        file.write(block)
                        state.digest.update(block)
                        state.have += len(block)
                        received += len(block)
                        if progress:
                            progress(len(block))
                        if size is not None and state.have > size:
                            break  # more than the listing says: caught by the size check later
                        if budget is not None and received > budget:
                            raise DownloadError(
                                f"{name}: received {received} bytes from {url} for a file of {total} bytes "
                                f"without completing it{_range_note(ignored_ranges)}; "
                                f"{_kept(state.have, partial)}. The connection keeps breaking: try again later or from "
                                "another network; report it to figshare if it repeats."
                            )
                if size is not None and state.have > size:
                    break
                if total is None or state.have >= total:
                    complete = True
                    break
                # The body ended early without an error: treat as a drop and resume.
                raise _TransientStatus(None)
        except (_TransientStatus, *_TRANSIENT_ERRORS) as error:
            _check_cancel(cancel, error)
            failures = 1 if state.have > furthest else failures + 1
            furthest = max(furthest, state.have)
            if failures > retry.max_retries:
                described = f"HTTP {error.status}" if isinstance(error, _TransientStatus) and error.status else error
                raise DownloadError(
                    f"{name}: {url} failed {failures} times in a row without getting further than byte "
                    f"{furthest} ({described}){_range_note(ignored_ranges)}; {_kept(state.have, partial)}. "
                    "Run again to resume."
                ) from error
            delay = retry.delay(failures, retry_after)
            if cancel is not None and retry.sleep is time.sleep:
                cancel.wait(delay)  # the same wait, but cut short when the batch is being stopped
            else:
                retry.sleep(delay)
        except _PERMANENT_ERRORS as error:
            _check_cancel(cancel, error)
            raise DownloadError(
                f"{name}: requesting {url} failed: {_describe_request_error(error)}. Retrying would fail "
                f"the same way; {_kept(state.have, partial)}. Check the URL (and any proxy), try "
                "again later, and report it to figshare if it repeats."
            ) from error
    # An empty file (size 0) is complete with no request and no byte written: give it its file too.
    with open(partial, "ab"):
        pass
    return state


def _kept(have: int, partial: str) -> str:
    return f"{have} bytes are kept in {partial}" if have else "no bytes were kept"


def _range_note(ignored_ranges: int) -> str:
    if not ignored_ranges:
        return ""
    return (
        f" (the server ignored Range: it answered {ignored_ranges} resume(s) with the whole file, so every "
        "attempt started over from byte 0)"
    )


class _TransientStatus(Exception):
    def __init__(self, status: int | None):
        super().__init__(f"HTTP {status}" if status else "connection closed early")
        self.status = status


def _read_block(response: requests.Response) -> bytes:
    # Read the raw stream, not iter_content: urllib3 2's buffered read discards the bytes it already
    # holds when the connection breaks, which would throw away what a resume can keep. read1 returns
    # what one socket read gave.
    raw = response.raw
    if hasattr(raw, "read1"):
        return raw.read1(CHUNK_SIZE)
    return raw.read(CHUNK_SIZE, decode_content=True)


def _content_range_start(value: str | None) -> int | None:
    # "bytes 100-199/1000"
    try:
        return int(value.split()[1].split("-")[0]) if value else None
    except (IndexError, ValueError):
        return None


def _content_range_total(value: str | None) -> int | None:
    try:
        total = value.rsplit("/", 1)[1] if value else "*"
        return None if total == "*" else int(total)
    except (IndexError, ValueError):
        return None


def _declared_total(response: requests.Response, have: int) -> int | None:
    """Full size of the file as the response states it, or None if it does not say."""
    total = _content_range_total(response.headers.get("Content-Range"))
    if total is not None:
        return total
    length = response.headers.get("Content-Length")
    if length is not None and length.isdigit():
        return have + int(length)
    return None


def _mismatch(transfer: _Transfer, size: int | None, md5: str | None) -> bool:
    return (size is not None and transfer.have != size) or (
        md5 is not None and transfer.digest.hexdigest() != md5.lower()
    )


def _verify_and_publish(
    partial: str,
    dest_path: str,
    name: str,
    url: str,
    size: int | None,
    md5: str | None,
    transfer: _Transfer,
) -> None:
    have, actual = transfer.have, transfer.digest.hexdigest()
    if size is not None and have != size:
        os.remove(partial)
        raise ChecksumError(
            f"{name}: downloaded {have} bytes from {url} but figshare lists {size}. "
            "The bad copy was deleted; run the same command again to download it again. "
            "If this repeats, the figshare record changed: delete the cached listing.json in the cache "
            "folder and retry."
        )
    if md5 is not None and actual != md5.lower():
        os.remove(partial)
        if not transfer.requests:
            # Only an empty file is complete without a request once earlier bytes were discarded.
            raise ChecksumError(
                f"{name}: figshare lists it with {have} bytes and md5 {md5.lower()}, but {have} bytes have md5 "
                f"{actual}: the listing contradicts itself (nothing was downloaded). Report it to figshare "
                "with both checksums."
            )
        raise ChecksumError(
            f"{name}: md5 mismatch: figshare lists {md5.lower()}, the downloaded file has {actual} "
            f"(from {url}). The bad copy was deleted; run the same command again to download it again. "
            "If this repeats, report it with both checksums."
        )
    if os.path.exists(_sidecar(dest_path)):
        os.remove(_sidecar(dest_path))  # describes a previous copy: never let it vouch for this one
    # A rename, never a write into dest_path: a file already published there (perhaps hard-linked into
    # a data_dir) keeps its bytes, and readers see the old file or the new one.
    os.replace(partial, dest_path)
    _write_sidecar(dest_path, actual)


# -- several files -------------------------------------------------------------------------------


@dataclass(frozen=True)
class DownloadJob:
    """One file to download: where from, where to, what it must be."""

    url: str
    dest_path: str
    size: int | None
    md5: str | None
    name: str


def check_disk_space(folder: str, needed: int) -> None:
    """Raise `DownloadError` when ``folder``'s disk has less than ``needed`` bytes (+ a margin) free."""
    os.makedirs(folder, exist_ok=True)
    free = shutil.disk_usage(folder).free
    if needed + DISK_MARGIN > free:
        raise DownloadError(
            f"Not enough disk space in {folder}: the selection needs {needed} bytes ({_human(needed)}) more, "
            f"{free} bytes ({_human(free)}) are free (keeping {_human(DISK_MARGIN)} spare). Free some space, "
            "choose a smaller selection (recordings=, cameras=), or use another cache_dir."
        )


def _human(count: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(count) < 1000 or unit == "TB":
            return f"{count:.1f} {unit}" if unit != "B" else f"{int(count)} B"
        count /= 1000
    return f"{count:.1f} TB"


def _remaining_bytes(job: DownloadJob) -> int:
    partial = job.dest_path + ".incomplete"
    have = os.path.getsize(partial) if os.path.exists(partial) else 0
    return max(0, (job.size or 0) - have)


def download_files(
    jobs: Sequence[DownloadJob],
    *,
    workers: int | None = None,
    retry: RetryPolicy | None = None,
    progress: bool = True,
    check_space: bool = True,
    description: str = "RAT7M download",
) -> None:
    """Download several files at once (a thread pool), with one byte progress bar.

    Files already present and verified are skipped with no request. Before anything is fetched, the
    bytes still missing are compared with the free disk space. When one download fails, the others
    stop (their partial files stay, so a re-run resumes them) and the first error is raised.

    Raises:
        DownloadError: not enough disk space, a permanent failure, or retries exhausted.
        ChecksumError: a file does not match figshare's size or md5 (its bad copy is deleted).
    """
    pending = [job for job in jobs if not is_verified(job.dest_path, job.size, job.md5)]
    if not pending:
        return
    if check_space:
        folders: dict[int, tuple[str, int]] = {}
        for job in pending:
            folder = os.path.dirname(os.path.abspath(job.dest_path))
            os.makedirs(folder, exist_ok=True)
            device = os.stat(folder).st_dev  # one check per disk, for the sum landing on it
            first, total = folders.get(device, (folder, 0))
            folders[device] = (first, total + _remaining_bytes(job))
        for folder, needed in folders.values():
            check_disk_space(folder, needed)
    from tqdm.auto import tqdm

    total = sum(job.size or 0 for job in pending) or None
    cancel = CancelEvent()
    lock = threading.Lock()
    with tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=description, disable=not progress) as bar:

        def advance(count: int) -> None:
            with lock:  # tqdm's counters are not updated atomically
                bar.update(count)

        def run(job: DownloadJob) -> None:
            try:
                download_file(
                    job.url,
                    job.dest_path,
                    job.size,
                    job.md5,
                    name=job.name,
                    retry=retry,
                    progress=advance,
                    cancel=cancel,
                )
            except Exception as error:
                # A connection cut by the cancel can surface as any error of the HTTP stack: the
                # download was stopped, it did not fail on its own.
                if cancel.is_set() and not isinstance(error, Rat7MError):
                    raise _Cancelled() from error
                raise

        pool = ThreadPoolExecutor(max_workers=workers or DEFAULT_WORKERS, thread_name_prefix="rat7m-dl")
        futures = [pool.submit(run, job) for job in pending]
        try:
            done, not_done = wait(futures, return_when=FIRST_EXCEPTION)
        except BaseException:  # Ctrl-C: stop the workers now rather than finish every file
            _stop(pool, futures, cancel)
            raise
        errors = [f.exception() for f in futures if f in done and f.exception() is not None]
        if not errors:
            pool.shutdown()
            return
        _stop(pool, futures, cancel)
        errors += [
            f.exception()
            for f in not_done
            if f.done() and not f.cancelled() and f.exception() is not None and f.exception() not in errors
        ]
        real = [error for error in errors if not isinstance(error, _Cancelled)]
        first = real[0]
        if len(real) > 1:
            first.add_note(f"{len(real) - 1} other download(s) failed too: " + "; ".join(map(str, real[1:])))
        raise first


def _stop(pool: ThreadPoolExecutor, futures: list, cancel: CancelEvent) -> None:
    """Stop a batch: no new download starts, running ones stop (their partial files stay for a resume)."""
    cancel.set()  # also cuts the workers' connections: a read blocked on a stalled one returns now
    pool.shutdown(wait=False, cancel_futures=True)
    # A bounded wait, so that the workers close their partial files before the caller goes on (or the
    # process exits), yet a worker stuck where no cut reaches (a connect) cannot hold up a Ctrl-C.
    # (Futures cancelled before they started never count as done for `wait`: leave them out.)
    wait([future for future in futures if not future.cancelled()], timeout=CANCEL_GRACE_SECONDS)


# -- the release ---------------------------------------------------------------------------------


@dataclass
class _Wanted:
    """The selection, and what a source offers for it, so missing files can be named."""

    recordings: list[str]
    cameras: list[int]
    need_video: bool

    def missing(self, mocap: Iterable[str], starts: dict[tuple[str, int], list[int]]) -> list[str]:
        """Names (or name patterns) of needed files the source lacks.

        Args:
            mocap: recordings whose .mat the source holds.
            starts: (recording, camera) → chunk starts the source holds, for **all** cameras of
                the selected recordings (the other cameras tell the chunk length).
        """
        mocap = set(mocap)
        missing = [f"mocap-{recording}.mat" for recording in self.recordings if recording not in mocap]
        if self.need_video:
            for recording in self.recordings:
                step = _chunk_step([s for (r, _), group in starts.items() if r == recording for s in group])
                for camera in self.cameras:
                    missing += _missing_chunks(recording, camera, sorted(starts.get((recording, camera), [])), step)
        return missing


def _chunk_step(starts: list[int]) -> int | None:
    """The chunk length of a recording: the smallest gap between chunk starts of any of its cameras."""
    values = sorted(set(starts))
    steps = [b - a for a, b in zip(values, values[1:], strict=False)]
    return min(steps) if steps else None


def _missing_chunks(recording: str, camera: int, starts: list[int], step: int | None) -> list[str]:
    prefix = f"{recording}-camera{camera}-"
    if not starts:
        return [f"{prefix}*.mp4 (all chunks)"]
    missing = []
    if starts[0] != 0:
        missing.append(f"{prefix}0.mp4 (chunks before frame {starts[0]})")
    # The release cuts every video into chunks of one nominal length, so a gap of a whole multiple
    # of the recording's chunk length is a chunk that is not there. Irregular gaps are left alone (the
    # builder locates frames by the starts present and fails clearly on a frame it cannot find).
    if step:
        for a, b in zip(starts, starts[1:], strict=False):
            if (b - a) % step == 0 and b - a > step:
                missing += [f"{prefix}{s}.mp4" for s in range(a + step, b, step)]
    return missing


def _normalise_selection(recordings: Iterable[str], cameras: Iterable[int]) -> tuple[list[str], list[int]]:
    recordings = [check_recording(recording) for recording in dict.fromkeys(recordings)]
    cameras = list(dict.fromkeys(cameras))
    for camera in cameras:
        if camera not in (1, 2, 3, 4, 5, 6):
            raise SelectionError(f"Unknown RAT7M camera {camera!r}. Valid cameras: 1, 2, 3, 4, 5, 6.")
    return recordings, cameras


def _articles(recordings: list[str], need_video: bool) -> list[tuple[int, int]]:
    articles = [MOCAP_ARTICLE]
    if need_video:
        articles += [VIDEO_ARTICLES[recording] for recording in recordings]
    return articles


def figshare_index(
    recordings: Iterable[str],
    cameras: Iterable[int],
    cache_dir: str,
    need_video: bool,
    source: str = "files",
    download: bool = True,
    *,
    offline: bool = False,
    force_download: bool = False,
    workers: int | None = None,
    retry: RetryPolicy | None = None,
    progress: bool = True,
) -> ReleaseIndex:
    """Get the files a selection needs from figshare and index them.

    Args:
        recordings: the recordings wanted (``"s1-d1"``, …).
        cameras: the cameras wanted (1–6); only used when ``need_video``.
        cache_dir: the download cache folder (the builder passes ``<datasets downloads>/rat7m``).
        need_video: whether mp4 chunks are needed (the ``mocap``/``cameras`` configs need none).
        source: ``"files"`` (per-file downloads from the article listings) or ``"archives"`` (whole
            article zips, members read in place).
        download: False for streaming: nothing is downloaded and the refs are the listing's remote
            ``download_url``\\ s (with size and md5). Only with ``source="files"``.
        offline: use cached listings and files only; never ask figshare.
        force_download: fetch listings again and download every needed file again.
        workers: parallel downloads (default `DEFAULT_WORKERS`).
        retry: retry policy (default `DEFAULT_RETRY`).
        progress: show a byte progress bar.

    Returns:
        The index: ``mocap`` for each selected recording, and when ``need_video`` the chunks of each
        selected (recording, camera); nothing else.

    Raises:
        SelectionError: unknown recording/camera/source, or streaming asked with archives.
        MissingFileError: the listing (or zip) lacks files the selection needs; the message names them.
        DownloadError: permanent HTTP failure, retries exhausted, not enough disk space, a needed
            file that figshare only links to, or offline with nothing cached.
        ChecksumError: a download does not match figshare's size/md5, or a zip member's CRC (the bad
            copy is deleted; a re-run downloads it again).
    """
    recordings, cameras = _normalise_selection(recordings, cameras)
    wanted = _Wanted(recordings, cameras, need_video)
    cache_dir = os.path.abspath(os.path.expanduser(cache_dir))
    common = dict(offline=offline, force_download=force_download, workers=workers, retry=retry, progress=progress)
    if source == "files":
        return _index_files(wanted, cache_dir, download, **common)
    if source == "archives":
        if not download:
            raise SelectionError(
                "Streaming needs source='files': a video inside a remote article zip would be read again "
                "from its start at every seek (many times its size over the network)."
            )
        return _index_archives(wanted, cache_dir, **common)
    raise SelectionError(f"Unknown source {source!r}: use 'files' (per-file downloads) or 'archives' (article zips).")


def _index_files(
    wanted: _Wanted,
    cache_dir: str,
    download: bool,
    *,
    offline: bool,
    force_download: bool,
    workers: int | None,
    retry: RetryPolicy | None,
    progress: bool,
) -> ReleaseIndex:
    # name → (article, entry) for every needed file; `starts` feeds the missing-chunk check.
    selected: dict[str, tuple[tuple[int, int], dict]] = {}
    mocap_found: set[str] = set()
    starts: dict[tuple[str, int], list[int]] = {}
    for article in _articles(wanted.recordings, wanted.need_video):
        listing = fetch_listing(*article, cache_dir, offline=offline, refresh=force_download, retry=retry)
        for entry in listing:
            name = str(entry.get("name", ""))
            if name in selected:
                _check_duplicate(article, name, selected[name][1], entry, cache_dir)
                continue  # the same file listed twice: one download
            recording = parse_mocap_name(name)
            if recording is not None and article == MOCAP_ARTICLE and recording in wanted.recordings:
                selected[name] = (article, entry)
                mocap_found.add(recording)
                continue
            video = parse_video_name(name)
            if (
                video is not None
                and wanted.need_video
                and article == VIDEO_ARTICLES[video.recording]
                and video.recording in wanted.recordings
            ):
                starts.setdefault((video.recording, video.camera), []).append(video.start)
                if video.camera in wanted.cameras:
                    selected[name] = (article, entry)
            # Anything else (README, other cameras, names that are not release names) is not needed.
    missing = wanted.missing(mocap_found, starts)
    if missing:
        raise MissingFileError(
            f"The figshare listings lack {len(missing)} file(s) the selection needs: "
            f"{describe_names(missing)}. "
            f"Check the record ({api_url()}) or choose other recordings/cameras."
        )
    linked = [name for name, (_, entry) in selected.items() if entry.get("is_link_only")]
    if linked:
        raise DownloadError(
            f"figshare only links to {describe_names(linked)} (hosted elsewhere, no checksum: "
            f"{selected[linked[0]][1].get('download_url')}). Download such files yourself and use data_dir."
        )
    jobs = []
    for name, (article, entry) in selected.items():
        try:
            size = int(entry["size"])
        except (KeyError, TypeError, ValueError):
            size = None  # unknown: only the md5 can tell a complete file
        url = entry.get("download_url")
        if not url:
            raise DownloadError(f"{name}: the figshare listing of article {article[0]} gives no download_url.")
        jobs.append(
            DownloadJob(str(url), os.path.join(article_dir(cache_dir, *article), name), size, entry_md5(entry), name)
        )
    if download:
        if force_download:
            for job in jobs:
                os.makedirs(os.path.dirname(job.dest_path), exist_ok=True)
                # Under the file's lock: never pull a partial file from under another process's download.
                with _file_lock(job.dest_path, job.name, None):
                    for path in (job.dest_path, _sidecar(job.dest_path), job.dest_path + ".incomplete"):
                        if os.path.exists(path):
                            os.remove(path)
        if offline:
            _check_offline_cache(jobs, cache_dir)
        else:
            download_files(jobs, workers=workers, retry=retry, progress=progress)
    index = ReleaseIndex(
        description=f"figshare per-file downloads in {cache_dir}"
        if download
        else f"figshare (streamed from {api_url()})"
    )
    for job in jobs:
        ref = FileRef(job.name, job.dest_path if download else job.url, size=job.size, md5=job.md5)
        _add(index, ref)
    return index


def _check_duplicate(article: tuple[int, int], name: str, first: dict, second: dict, cache_dir: str) -> None:
    """Accept a needed file listed twice only when both entries describe the same bytes.

    Raises:
        DownloadError: the two entries differ (size or md5, or neither has an md5 and their ids
            differ): which one is the release file is unknown, and guessing would end in an md5
            mismatch (or in the wrong file, if the wrong entry's md5 matches its own bytes).
    """
    same_content = first.get("size") == second.get("size") and entry_md5(first) == entry_md5(second)
    if same_content and (entry_md5(first) is not None or first.get("id") == second.get("id")):
        return

    def describe(entry: dict) -> str:
        return f"id {entry.get('id')}, {entry.get('size')} bytes, md5 {entry_md5(entry)}"

    listing = os.path.join(article_dir(cache_dir, *article), "listing.json")
    raise DownloadError(
        f"The figshare listing of article {article[0]} v{article[1]} lists {name} twice, as different files "
        f"({describe(first)}; {describe(second)}): which one is the release file is unknown. Report it to "
        "the publisher, and leave this file's recording or camera out meanwhile. Once the record is fixed, "
        f"delete the cached listing {listing} and run again."
    )


def _check_offline_cache(jobs: list[DownloadJob], cache_dir: str) -> None:
    """Offline: raise `DownloadError` unless every job's file is verified in the cache, saying what is wrong."""
    absent, unverifiable, different = [], [], []
    for job in jobs:
        if is_verified(job.dest_path, job.size, job.md5):
            continue
        if not os.path.isfile(job.dest_path):
            absent.append(job.name)
        elif job.md5 is None and (job.size is None or os.path.getsize(job.dest_path) == job.size):
            unverifiable.append(job.name)  # nothing to check it against, and its .md5 record is gone
        else:
            different.append(job.name)
    problems = []
    if absent:
        problems.append(f"{len(absent)} needed file(s) are not in it: {describe_names(absent)}")
    if unverifiable:
        problems.append(
            f"{len(unverifiable)} are in it but cannot be verified offline, since figshare's listing gives no md5 "
            f"for them and their .md5 record is missing: {describe_names(unverifiable)} (run once with network "
            "access to download and verify them again, or delete them)"
        )
    if different:
        problems.append(
            f"{len(different)} are in it but do not match figshare's listing (size or md5): "
            f"{describe_names(different)} (run once with network access to download them again)"
        )
    if problems:
        raise DownloadError(
            f"Offline, and the cache {cache_dir} cannot provide the selection: " + "; ".join(problems) + ". "
            "Run once with network access."
        )


def _add(index: ReleaseIndex, ref: FileRef) -> None:
    video = parse_video_name(ref.name)
    if video is not None:
        index.add_video(video, ref)
    else:
        recording = parse_mocap_name(ref.name)
        assert recording is not None, ref.name  # only release names are ever selected
        index.mocap[recording] = ref


def _index_archives(
    wanted: _Wanted,
    cache_dir: str,
    *,
    offline: bool,
    force_download: bool,
    workers: int | None,
    retry: RetryPolicy | None,
    progress: bool,
) -> ReleaseIndex:
    articles = _articles(wanted.recordings, wanted.need_video)
    zips = {article: os.path.join(cache_dir, f"article-{article[0]}-v{article[1]}.zip") for article in articles}
    if force_download:
        for path in zips.values():
            for stale in (path, path + ".incomplete", _verified_record(path)):
                if os.path.exists(stale):
                    os.remove(stale)
    absent = {article: path for article, path in zips.items() if not os.path.isfile(path)}
    if absent and offline:
        raise DownloadError(
            f"Offline, and the article zip(s) {describe_names(map(os.path.basename, absent.values()))} "
            f"are not in {cache_dir}. Run once with network access."
        )
    if absent:
        needed = 0
        for article, path in absent.items():
            # A zip's size is only known from the listing (sum of its files; the zip adds a little).
            try:
                listing = fetch_listing(*article, cache_dir, retry=retry)
            except DownloadError as error:
                logger.warning("No listing for article %s (%s): skipping the disk space check.", article[0], error)
                needed = 0
                break
            needed += sum(int(e.get("size") or 0) for e in listing if not e.get("is_link_only"))
            partial = path + ".incomplete"
            needed -= os.path.getsize(partial) if os.path.exists(partial) else 0
        if needed > 0:
            check_disk_space(cache_dir, needed)
        jobs = [
            DownloadJob(article_zip_url(*article), path, None, None, os.path.basename(path))
            for article, path in absent.items()
        ]
        # No md5 is published for article zips: download_files only checks completeness; the zip's
        # own CRCs are checked below.
        download_files(jobs, workers=workers, retry=retry, progress=progress, check_space=False)
    index = ReleaseIndex(description=f"figshare article zips in {cache_dir}")
    mocap_found: set[str] = set()
    starts: dict[tuple[str, int], list[int]] = {}
    members: dict[str, list[str]] = {}
    for article, path in zips.items():
        found = ReleaseIndex()
        try:
            index_zip(path, found)
        except MissingFileError as error:
            _discard_zip(path)
            raise ChecksumError(
                f"{os.path.basename(path)} (figshare article {article[0]} v{article[1]}) is not a "
                f"complete zip: {_without_advice(error)}. {_ZIP_DELETED}"
            ) from error
        except Rat7MError as error:
            # A damaged or hostile structure (a local header, a lying size, a path escaping, …). Any
            # damaged zip is handled alike, whatever the check that caught it: figshare publishes no
            # md5 for article zips, so a copy damaged on the way cannot be told from a damaged
            # release. Kept, it would fail every later run with no request until deleted by hand;
            # deleted (with its .md5 and .verified.json records), a re-run downloads it again, and a
            # failure that comes back is the release's own (the message says what to do then).
            _discard_zip(path)
            raise type(error)(
                f"{os.path.basename(path)} (figshare article {article[0]} v{article[1]}) is damaged: "
                f"{_without_advice(error)} "
                f"{_ZIP_DELETED}"
            ) from error
        needed_members = []
        for recording, ref in found.mocap.items():
            if article == MOCAP_ARTICLE and recording in wanted.recordings:
                index.mocap[recording] = ref
                mocap_found.add(recording)
                needed_members.append(ref)
        if wanted.need_video and article != MOCAP_ARTICLE:
            for (recording, camera), chunks in found.videos.items():
                if recording not in wanted.recordings or article != VIDEO_ARTICLES[recording]:
                    continue
                starts.setdefault((recording, camera), []).extend(chunk.start for chunk in chunks)
                if camera in wanted.cameras:
                    for chunk in chunks:
                        index.add_video(parse_video_name(chunk.file.name), chunk.file)  # type: ignore[arg-type]
                        needed_members.append(chunk.file)
        members[path] = [ref.location[len("zip://") :].split("::", 1)[0] for ref in needed_members]
    missing = wanted.missing(mocap_found, starts)
    if missing:
        raise MissingFileError(
            f"The figshare article zips lack {len(missing)} file(s) the selection needs: "
            f"{describe_names(missing)}. "
            "Check the record or choose other recordings/cameras."
        )
    for path, names in members.items():
        verify_zip_members(path, names)
    return index


def _verified_record(zip_path: str) -> str:
    return zip_path + ".verified.json"


#: What a message about a damaged, deleted article zip ends with.
_ZIP_DELETED = (
    "The zip was deleted with its records: run the same command again to download it again. figshare "
    "publishes no md5 for article zips, so a copy damaged on the way cannot be told from a damaged release: "
    "if the same error comes back, the zip figshare serves is itself damaged. Then report it to the "
    "publisher, and use source='files' (per-file downloads, each checked against figshare's md5) meanwhile."
)


def _without_advice(error: Exception) -> str:
    """An error about a local zip without its "delete this zip" advice: the downloader has deleted it."""
    return str(error).removesuffix(f" {REPLACE_ZIP_ADVICE}")


def _discard_zip(zip_path: str) -> None:
    # Under the zip's lock: never delete a zip another process is downloading into place.
    with _file_lock(zip_path, os.path.basename(zip_path), None):
        for path in (zip_path, _verified_record(zip_path), _sidecar(zip_path)):
            if os.path.exists(path):
                os.remove(path)


def verify_zip_members(zip_path: str, members: Iterable[str]) -> None:
    """Check the CRC of the named members of a local zip, once: verified names are recorded beside it.

    Only the members a selection needs are read (a zip of one recording's videos is tens of GB).

    Raises:
        ChecksumError: the zip is unreadable or a member's data does not match its CRC; the zip is
            deleted so that a re-run downloads it again.
    """
    import zipfile

    record_path = _verified_record(zip_path)
    size = os.path.getsize(zip_path)
    record = {}
    try:
        with open(record_path, encoding="utf-8") as file:
            record = json.load(file)
    except (OSError, ValueError):
        pass
    verified = set(record.get("members", [])) if record.get("size") == size else set()
    todo = [member for member in dict.fromkeys(members) if member not in verified]
    if not todo:
        return
    member = None
    try:
        with zipfile.ZipFile(zip_path) as archive:
            for member in todo:
                with archive.open(member) as stream:  # the CRC is checked when the end is reached
                    while stream.read(CHUNK_SIZE):
                        pass
                verified.add(member)
    except (zipfile.BadZipFile, EOFError, KeyError, OSError) as error:
        _discard_zip(zip_path)
        raise ChecksumError(
            f"{os.path.basename(zip_path)}: "
            + (f"member {member!r} is damaged" if member else "not a readable zip")
            + f" ({error}). {_ZIP_DELETED}"
        ) from error
    _write_json_atomic(record_path, {"size": size, "members": sorted(verified)})


# -- materialise ---------------------------------------------------------------------------------


def materialize(index: ReleaseIndex, dest: str) -> ReleaseIndex:
    """Lay the indexed files out as the original helper script does, for use as ``data_dir``.

    Videos go to ``dest/video_sequences/``, motion capture to ``dest/annotations/``. Local files are
    hard-linked when ``dest`` is on the same disk (no second copy; keep ``cache_dir`` there to get
    this), else copied; zip members are copied out by their release name only (never by a path
    taken from the archive). Each file is written under a temporary name and renamed, so an
    interrupted run leaves no half file under a release name. Files already there with the right
    size (and md5, when known) are kept.

    Returns:
        The index of the materialised copy.

    Raises:
        DownloadError: the index refers to remote URLs (build it with ``download=True``).
        ChecksumError: a copied file does not have the size the index gives.
    """
    dest = os.path.abspath(dest)
    result = ReleaseIndex(description=f"data_dir {dest}")
    refs = [("annotations", ref) for _, ref in sorted(index.mocap.items())]
    refs += [("video_sequences", chunk.file) for _, chunks in sorted(index.videos.items()) for chunk in chunks]
    for folder, ref in refs:
        if parse_video_name(ref.name) is None and parse_mocap_name(ref.name) is None:
            raise ValueError(f"{ref.name!r} is not a RAT7M release file name")  # never a path from elsewhere
        target = os.path.join(dest, folder, ref.name)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        if not _already_there(ref, target):
            _place(ref, target)
        _add(result, FileRef(ref.name, target, size=os.path.getsize(target), md5=ref.md5))
    return result


def _is_remote(ref: FileRef) -> bool:
    location = ref.location.split("::", 1)[1] if ref.location.startswith("zip://") else ref.location
    return "://" in location


def _already_there(ref: FileRef, target: str) -> bool:
    if not os.path.isfile(target):
        return False
    if ref.member_offset is None and not ref.location.startswith("zip://") and os.path.exists(ref.location):
        if os.path.samefile(ref.location, target):
            return True
    if ref.size is not None and os.path.getsize(target) != ref.size:
        return False
    return ref.md5 is None or _md5_of(target) == ref.md5.lower()


def _place(ref: FileRef, target: str) -> None:
    if _is_remote(ref):
        raise DownloadError(
            f"{ref.name}: the index points at {ref.location}; materialize needs downloaded files "
            "(figshare_index(..., download=True))."
        )
    # A name of this process's own: two runs filling the same dest at once must not remove or
    # overwrite each other's temporary file.
    temp = f"{target}.{os.getpid()}.{secrets.token_hex(4)}.incomplete"
    try:
        if ref.member_offset is None and not ref.location.startswith("zip://"):
            try:
                os.link(ref.location, temp)
            except OSError:  # another disk, or links not supported: copy
                shutil.copyfile(ref.location, temp)
        else:
            with open_file(ref) as source, open(temp, "wb") as out:
                shutil.copyfileobj(source, out, CHUNK_SIZE)
        if ref.size is not None and os.path.getsize(temp) != ref.size:
            raise ChecksumError(
                f"{ref.name}: the copy from {ref.location} has {os.path.getsize(temp)} bytes, "
                f"expected {ref.size}. "
                "Delete the download cache entry and download again."
            )
        os.replace(temp, target)
    finally:
        if os.path.exists(temp):
            os.remove(temp)
