"""A Hugging Face Hub stand-in: a stdlib HTTP server on 127.0.0.1 that the stock clients talk to.

Point ``huggingface_hub`` and ``datasets`` at it with ``HF_ENDPOINT={url}`` (read at import time:
set it in the environment of a subprocess, as the tests do). It keeps repositories, branches,
commits and file contents in memory, so that ``create_repo`` + ``upload_folder`` (or
``Dataset.push_to_hub``) store files which stock ``datasets.load_dataset("org/name", config)`` then
reads back.

Routes (shapes read off huggingface_hub 2.4 / datasets 5.2):

- ``POST /api/repos/create`` ``{name, organization, type, visibility}`` → ``{url}``; an existing
  repository → 409 whose body still carries ``url``. A new repository gets an initial commit holding
  ``.gitattributes``, like the Hub.
- ``POST /api/validate-yaml`` → ``{errors: [], warnings: []}``.
- ``GET /api/whoami-v2`` → a user named ``stand-in-user`` (401 without a token).
- ``GET /api/{type}s/{repo}`` and ``/api/{type}s/{repo}/revision/{rev}`` → repo info
  (``sha``, ``siblings``; ``?blobs=1`` adds sizes and LFS info).
- ``GET /api/{type}s/{repo}/tree/{rev}[/{path}]`` (``recursive``, ``expand``, paginated with a
  ``Link: <…>; rel="next"`` header every :attr:`HubStandIn.page_size` entries).
- ``POST /api/{type}s/{repo}/paths-info/{rev}`` (form or JSON ``paths``).
- ``POST /api/{type}s/{repo}/preupload/{rev}`` → ``{files: [{path, uploadMode, shouldIgnore, oid}]}``;
  ``oid`` is the remote file's (sha256 for LFS files, git blob sha1 otherwise) so the client skips
  unchanged files.
- ``POST /api/{type}s/{repo}/commit/{rev}`` NDJSON (``header``, ``file`` base64 inline, ``lfsFile``,
  ``deletedFile``, ``deletedFolder``; ``parentCommit`` → 412 when stale) →
  ``{commitUrl, commitOid, pullRequestUrl}``.
- ``POST /api/{type}s/{repo}/branch/{branch}`` (409 when it exists).
- ``POST /{datasets/}{repo}.git/info/lfs/objects/batch`` → basic transfer; objects already stored
  come back without ``actions`` (the client skips them); others get ``PUT /lfs-upload/…``.
- ``GET|HEAD /{datasets/}{repo}/resolve/{rev}/{path}`` with ``Range`` (206/416), ``ETag``,
  ``X-Repo-Commit``, and ``X-Linked-Etag``/``X-Linked-Size`` for LFS files.
- 404s carry ``X-Error-Code`` (``RepoNotFound``, ``RevisionNotFound``, ``EntryNotFound``).

Xet: the stand-in has no Xet storage. Either answer ``"regular"`` for every file
(``upload_mode="regular"``: contents go base64-inline in the commit, the path taken by
``upload_folder`` with ``hf_xet`` installed) or disable Xet in the client (``HF_HUB_DISABLE_XET=1``)
and answer ``"lfs"`` for binary files (``upload_mode="auto"``: LFS batch + one PUT per file).

Write endpoints demand ``Authorization: Bearer <token>`` when :attr:`HubStandIn.token` is set.
Fault switch: :attr:`HubStandIn.fail_commits` answers that many commits with 503 (no commit is made).
Every request is recorded in :attr:`HubStandIn.log` (method, path, status, bytes received); the
authorization header value is never recorded.
"""

from __future__ import annotations

import base64
import datetime as _dt
import fnmatch
import hashlib
import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, quote, unquote, urlsplit

#: The Hub stores files of at least this size with LFS (10 MB).
LFS_SIZE_THRESHOLD = 10 * 1024 * 1024
#: File name patterns tracked by LFS in the Hub's default ``.gitattributes`` (abridged).
LFS_PATTERNS = (
    "*.parquet", "*.arrow", "*.bin", "*.zip", "*.tar", "*.gz", "*.npy", "*.npz", "*.pkl", "*.mat",
    "*.mp4", "*.jpg", "*.jpeg", "*.png", "*.webp", "*.safetensors", "*.h5",
)  # fmt: skip
DEFAULT_GITATTRIBUTES = "".join(f"{p} filter=lfs diff=lfs merge=lfs -text\n" for p in LFS_PATTERNS).encode()
_TYPE_PREFIX = {"datasets": "dataset", "spaces": "space", "models": "model"}
_URL_PREFIX = {"dataset": "datasets/", "space": "spaces/", "model": ""}
_SHA_RE = re.compile(r"^[0-9a-f]{40}$")


def git_blob_oid(data: bytes) -> str:
    """git's blob id: sha1 of ``b"blob <len>\\0" + data``."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def _now() -> str:
    return _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")


@dataclass
class Blob:
    data: bytes
    lfs: bool

    @property
    def size(self) -> int:
        return len(self.data)

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()

    @property
    def pointer(self) -> bytes:
        spec = "version https://git-lfs.github.com/spec/v1"
        return f"{spec}\noid sha256:{self.sha256}\nsize {self.size}\n".encode()

    @property
    def git_oid(self) -> str:
        return git_blob_oid(self.pointer if self.lfs else self.data)

    @property
    def upload_oid(self) -> str:
        """The ``oid`` preupload reports: what huggingface_hub compares with its local oid."""
        return self.sha256 if self.lfs else git_blob_oid(self.data)


@dataclass
class Commit:
    sha: str
    parent: str | None
    title: str
    date: str
    files: dict[str, Blob]


@dataclass
class Repo:
    repo_type: str
    repo_id: str
    private: bool
    created_at: str
    branches: dict[str, str] = field(default_factory=dict)
    commits: dict[str, Commit] = field(default_factory=dict)
    lfs_objects: dict[str, bytes] = field(default_factory=dict)

    def resolve(self, revision: str) -> Commit | None:
        if revision in self.branches:
            return self.commits[self.branches[revision]]
        if _SHA_RE.match(revision) and revision in self.commits:
            return self.commits[revision]
        return None


class _HttpError(Exception):
    def __init__(
        self,
        status: int,
        message: str,
        code: str | None = None,
        extra: dict | None = None,
        headers: dict | None = None,
    ):
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.extra = extra or {}
        self.headers = headers or {}


class HubStandIn:
    """The server and its state. Use as a context manager, or call :meth:`start` / :meth:`stop`.

    ``upload_mode``: ``"auto"`` (LFS for binary files, known data extensions and files of 10 MB or
    more, like the Hub), ``"regular"`` (everything inline: works with Xet enabled in the client) or
    ``"lfs"``. ``token``: when set, write endpoints and private repositories need it.
    """

    def __init__(self, *, upload_mode: str = "auto", token: str | None = None, page_size: int = 1000):
        if upload_mode not in ("auto", "regular", "lfs"):
            raise ValueError(f"upload_mode must be auto, regular or lfs, not {upload_mode!r}")
        self.upload_mode = upload_mode
        self.token = token
        self.page_size = page_size
        self.repos: dict[tuple[str, str], Repo] = {}
        self.log: list[dict] = []
        #: bytes of file content received (inline in commits + LFS PUTs).
        self.received_content_bytes = 0
        #: fault switch: answer this many upcoming commits with 503 (an upload cut short before its commit).
        self.fail_commits = 0
        self.lock = threading.RLock()
        self._counter = 0
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # ---------------------------------------------------------------------------------- lifecycle

    def start(self) -> HubStandIn:
        handler = type("Handler", (_Handler,), {"standin": self})
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="hub-standin", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> HubStandIn:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def url(self) -> str:
        assert self._server is not None, "start() the stand-in first"
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    # ---------------------------------------------------------------------------------- helpers for tests

    def repo(self, repo_id: str, repo_type: str = "dataset") -> Repo:
        return self.repos[(repo_type, repo_id)]

    def files(self, repo_id: str, revision: str = "main", repo_type: str = "dataset") -> dict[str, bytes]:
        """``{path: content}`` of a revision."""
        commit = self.repo(repo_id, repo_type).resolve(revision)
        if commit is None:
            raise KeyError(revision)
        return {p: b.data for p, b in commit.files.items()}

    def head(self, repo_id: str, revision: str = "main", repo_type: str = "dataset") -> str:
        return self.repo(repo_id, repo_type).branches[revision]

    def requests(self, method: str | None = None, contains: str = "") -> list[dict]:
        return [r for r in self.log if (method is None or r["method"] == method) and contains in r["path"]]

    # ---------------------------------------------------------------------------------- state changes

    def _new_sha(self, *parts: str) -> str:
        self._counter += 1
        return hashlib.sha1("\0".join((*parts, str(self._counter))).encode()).hexdigest()

    def create_repo(self, repo_type: str, repo_id: str, private: bool = False) -> Repo:
        with self.lock:
            repo = Repo(repo_type=repo_type, repo_id=repo_id, private=private, created_at=_now())
            sha = self._new_sha(repo_type, repo_id, "initial commit")
            repo.commits[sha] = Commit(
                sha=sha,
                parent=None,
                title="initial commit",
                date=_now(),
                files={".gitattributes": Blob(DEFAULT_GITATTRIBUTES, lfs=False)},
            )
            repo.branches["main"] = sha
            self.repos[(repo_type, repo_id)] = repo
            return repo

    def choose_upload_mode(self, path: str, size: int, sample: bytes) -> str:
        if size == 0 or self.upload_mode == "regular":
            return "regular"
        if self.upload_mode == "lfs":
            return "lfs"
        name = path.rsplit("/", 1)[-1]
        if size >= LFS_SIZE_THRESHOLD or any(fnmatch.fnmatch(name, p) for p in LFS_PATTERNS) or b"\0" in sample:
            return "lfs"
        return "regular"


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    standin: HubStandIn  # set by HubStandIn.start

    # ---------------------------------------------------------------------------------- plumbing

    def log_message(self, format, *args):  # noqa: A002 - silence stderr logging
        pass

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size_line = self.rfile.readline().strip()
                size = int(size_line.split(b";")[0], 16)
                if size == 0:
                    while self.rfile.readline().strip():  # trailers
                        pass
                    break
                chunks.append(self.rfile.read(size))
                self.rfile.readline()  # CRLF after each chunk
            return b"".join(chunks)
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _send(self, status: int, body: bytes = b"", headers: dict | None = None, head_only: bool = False):
        self.send_response(status)
        headers = dict(headers or {})
        headers.setdefault("Content-Type", "application/json")
        headers.setdefault("Content-Length", str(len(body)))
        for k, v in headers.items():
            self.send_header(k, v)
        self.end_headers()
        if body and not head_only:
            self.wfile.write(body)
        self._status = status

    def _json(self, status: int, obj, headers: dict | None = None):
        self._send(status, json.dumps(obj).encode(), headers)

    def _error(self, err: _HttpError, head_only: bool = False):
        headers = {"X-Error-Message": err.message, **err.headers}
        if err.code:
            headers["X-Error-Code"] = err.code
        body = json.dumps({"error": err.message, **err.extra}).encode()
        self._send(err.status, body, headers, head_only=head_only)

    def _dispatch(self, method: str):
        self._status = 0
        body = b""
        split = urlsplit(self.path)
        self.query = {k: v[-1] for k, v in parse_qs(split.query).items()}
        try:
            body = self._read_body() if method in ("POST", "PUT") else b""
            self._route(method, split.path, body)
        except _HttpError as err:
            self._error(err, head_only=method == "HEAD")
        except Exception as exc:  # a bug in the stand-in: make it visible to the client
            self._error(_HttpError(500, f"stand-in error: {type(exc).__name__}: {exc}"), method == "HEAD")
        finally:
            with self.standin.lock:
                self.standin.log.append(
                    {
                        "method": method,
                        "path": self.path,
                        "status": self._status,
                        "received": len(body),
                        "authorized": self.headers.get("Authorization", "").startswith("Bearer "),
                    }
                )

    def do_GET(self):
        self._dispatch("GET")

    def do_HEAD(self):
        self._dispatch("HEAD")

    def do_POST(self):
        self._dispatch("POST")

    def do_PUT(self):
        self._dispatch("PUT")

    def do_DELETE(self):
        self._dispatch("DELETE")

    # ---------------------------------------------------------------------------------- auth

    def _token(self) -> str | None:
        auth = self.headers.get("Authorization", "")
        return auth[len("Bearer ") :] if auth.startswith("Bearer ") else None

    def _require_write(self):
        expected = self.standin.token
        if expected is not None and self._token() != expected:
            raise _HttpError(401, "Invalid credentials in Authorization header")

    def _get_repo(self, repo_type: str, repo_id: str) -> Repo:
        repo = self.standin.repos.get((repo_type, repo_id))
        if repo is None or (repo.private and self.standin.token is not None and self._token() != self.standin.token):
            raise _HttpError(404, f"Repository not found: {repo_type}s/{repo_id}", "RepoNotFound")
        return repo

    def _get_commit(self, repo: Repo, revision: str) -> Commit:
        commit = repo.resolve(revision)
        if commit is None:
            raise _HttpError(404, f"Invalid rev id: {revision}", "RevisionNotFound")
        return commit

    # ---------------------------------------------------------------------------------- routing

    def _route(self, method: str, path: str, body: bytes):
        segs = [unquote(s) for s in path.strip("/").split("/")] if path.strip("/") else []
        if method == "POST" and segs == ["api", "repos", "create"]:
            return self._create_repo(body)
        if method == "POST" and segs == ["api", "validate-yaml"]:
            return self._json(200, {"errors": [], "warnings": []})
        if method == "GET" and segs == ["api", "whoami-v2"]:
            if self._token() is None:
                raise _HttpError(401, "Invalid credentials in Authorization header")
            return self._json(200, {"type": "user", "name": "stand-in-user", "orgs": [], "auth": {}})
        if method == "PUT" and segs[:1] == ["lfs-upload"] and len(segs) >= 4:
            return self._lfs_put(segs, body)
        if len(segs) >= 4 and segs[0] == "api" and segs[1] in _TYPE_PREFIX:
            repo_type = _TYPE_PREFIX[segs[1]]
            repo_id = f"{segs[2]}/{segs[3]}"
            rest = segs[4:]
            return self._api_repo(method, repo_type, repo_id, rest, body)
        # /{datasets/}{ns}/{name}.git/info/lfs/objects/batch and /{datasets/}{ns}/{name}/resolve/{rev}/{path}
        repo_type = "model"
        if segs and segs[0] in _TYPE_PREFIX:
            repo_type = _TYPE_PREFIX[segs[0]]
            segs = segs[1:]
        if len(segs) >= 2 and segs[1].endswith(".git") and segs[2:] == ["info", "lfs", "objects", "batch"]:
            if method == "POST":
                return self._lfs_batch(repo_type, f"{segs[0]}/{segs[1][:-4]}", body)
        if len(segs) >= 5 and segs[2] == "resolve" and method in ("GET", "HEAD"):
            return self._resolve(method, repo_type, f"{segs[0]}/{segs[1]}", segs[3], "/".join(segs[4:]))
        raise _HttpError(404, f"Not found (the Hub stand-in has no route for {method} {path})")

    def _api_repo(self, method: str, repo_type: str, repo_id: str, rest: list[str], body: bytes):
        if method == "GET" and not rest:
            return self._repo_info(repo_type, repo_id, "main")
        if method == "GET" and len(rest) == 2 and rest[0] == "revision":
            return self._repo_info(repo_type, repo_id, rest[1])
        if method == "GET" and len(rest) >= 2 and rest[0] == "tree":
            return self._tree(repo_type, repo_id, rest[1], "/".join(rest[2:]))
        if method == "POST" and len(rest) == 2 and rest[0] == "paths-info":
            return self._paths_info(repo_type, repo_id, rest[1], body)
        if method == "POST" and len(rest) == 2 and rest[0] == "preupload":
            return self._preupload(repo_type, repo_id, rest[1], body)
        if method == "POST" and len(rest) == 2 and rest[0] == "commit":
            return self._commit(repo_type, repo_id, rest[1], body)
        if method == "POST" and len(rest) == 2 and rest[0] == "branch":
            return self._create_branch(repo_type, repo_id, rest[1], body)
        if rest and rest[0] in ("xet-write-token", "xet-read-token"):
            raise _HttpError(501, "The Hub stand-in has no Xet storage: set HF_HUB_DISABLE_XET=1")
        raise _HttpError(404, f"Not found (the Hub stand-in has no route for {method} {self.path})")

    # ---------------------------------------------------------------------------------- endpoints

    def _repo_url(self, repo: Repo) -> str:
        return f"{self.standin.url}/{_URL_PREFIX[repo.repo_type]}{repo.repo_id}"

    def _create_repo(self, body: bytes):
        self._require_write()
        payload = json.loads(body or b"{}")
        name = payload.get("name")
        if not name:
            raise _HttpError(400, "Missing repository name")
        namespace = payload.get("organization") or "stand-in-user"
        repo_type = payload.get("type") or "model"
        repo_id = f"{namespace}/{name}"
        with self.standin.lock:
            existing = self.standin.repos.get((repo_type, repo_id))
            if existing is not None:
                url = self._repo_url(existing)
                raise _HttpError(409, "You already created this repo", extra={"url": url})
            private = payload.get("private") is True or payload.get("visibility") == "private"
            repo = self.standin.create_repo(repo_type, repo_id, private=private)
        return self._json(200, {"url": self._repo_url(repo), "name": repo_id, "id": repo_id})

    def _create_branch(self, repo_type: str, repo_id: str, branch: str, body: bytes):
        self._require_write()
        payload = json.loads(body or b"{}")
        with self.standin.lock:
            repo = self._get_repo(repo_type, repo_id)
            if branch in repo.branches:
                raise _HttpError(409, f"Reference already exists: refs/heads/{branch}")
            start = self._get_commit(repo, payload.get("startingPoint") or "main")
            repo.branches[branch] = start.sha
        return self._json(200, {})

    def _repo_info(self, repo_type: str, repo_id: str, revision: str):
        with self.standin.lock:
            repo = self._get_repo(repo_type, repo_id)
            commit = self._get_commit(repo, revision)
            blobs = self.query.get("blobs", "").lower() in ("1", "true")
            siblings = []
            for path, blob in sorted(commit.files.items()):
                sib = {"rfilename": path}
                if blobs:
                    sib.update(size=blob.size, blobId=blob.git_oid)
                    if blob.lfs:
                        sib["lfs"] = {
                            "size": blob.size,
                            "sha256": blob.sha256,
                            "pointerSize": len(blob.pointer),
                        }
                siblings.append(sib)
            namespace = repo_id.split("/")[0]
            info = {
                "_id": hashlib.md5(repo_id.encode()).hexdigest()[:24],
                "id": repo_id,
                "author": namespace,
                "sha": commit.sha,
                "createdAt": repo.created_at,
                "lastModified": commit.date,
                "private": repo.private,
                "gated": False,
                "disabled": False,
                "downloads": 0,
                "likes": 0,
                "tags": [],
                "siblings": siblings,
            }
        return self._json(200, info)

    def _entry(self, repo: Repo, commit: Commit, path: str, expand: bool) -> dict:
        blob = commit.files.get(path)
        if blob is not None:
            entry = {"type": "file", "oid": blob.git_oid, "size": blob.size, "path": path}
            if blob.lfs:
                entry["lfs"] = {"oid": blob.sha256, "size": blob.size, "pointerSize": len(blob.pointer)}
        else:
            oid = hashlib.sha1(
                "".join(
                    f"{p}:{b.git_oid}" for p, b in sorted(commit.files.items()) if p.startswith(path + "/")
                ).encode()
            ).hexdigest()
            entry = {"type": "directory", "oid": oid, "size": 0, "path": path}
        if expand:
            entry["lastCommit"] = {"id": commit.sha, "title": commit.title, "date": commit.date}
        return entry

    @staticmethod
    def _folders(commit: Commit) -> set[str]:
        folders = set()
        for p in commit.files:
            parts = p.split("/")[:-1]
            for i in range(1, len(parts) + 1):
                folders.add("/".join(parts[:i]))
        return folders

    def _tree(self, repo_type: str, repo_id: str, revision: str, path: str):
        recursive = self.query.get("recursive", "").lower() in ("1", "true")
        expand = self.query.get("expand", "").lower() in ("1", "true")
        with self.standin.lock:
            repo = self._get_repo(repo_type, repo_id)
            commit = self._get_commit(repo, revision)
            path = path.strip("/")
            folders = self._folders(commit)
            if path and path not in folders:
                if path in commit.files:
                    raise _HttpError(400, f"{path} is a file, not a folder")
                raise _HttpError(404, f"Entry not found: {path}", "EntryNotFound")
            prefix = path + "/" if path else ""
            names = sorted(
                p
                for p in (*commit.files, *folders)
                if p.startswith(prefix) and p != path and (recursive or "/" not in p[len(prefix) :])
            )
            entries = [self._entry(repo, commit, p, expand) for p in names]
        start = int(self.query.get("cursor", 0) or 0)
        page = entries[start : start + self.standin.page_size]
        headers = {}
        if start + self.standin.page_size < len(entries):
            query = dict(self.query, cursor=str(start + self.standin.page_size))
            next_url = f"{self.standin.url}{urlsplit(self.path).path}?" + "&".join(
                f"{k}={quote(str(v), safe='')}" for k, v in query.items()
            )
            headers["Link"] = f'<{next_url}>; rel="next"'
        return self._json(200, page, headers)

    def _paths_info(self, repo_type: str, repo_id: str, revision: str, body: bytes):
        if self.headers.get("Content-Type", "").startswith("application/json"):
            payload = json.loads(body or b"{}")
            paths = payload.get("paths", [])
            expand = bool(payload.get("expand"))
        else:
            form = parse_qs(body.decode())
            paths = form.get("paths", [])
            expand = form.get("expand", ["false"])[-1].lower() in ("1", "true")
        with self.standin.lock:
            repo = self._get_repo(repo_type, repo_id)
            commit = self._get_commit(repo, revision)
            folders = self._folders(commit)
            out = [
                self._entry(repo, commit, p.strip("/"), expand)
                for p in paths
                if p.strip("/") in commit.files or p.strip("/") in folders
            ]
        return self._json(200, out)

    def _preupload(self, repo_type: str, repo_id: str, revision: str, body: bytes):
        self._require_write()
        payload = json.loads(body or b"{}")
        with self.standin.lock:
            repo = self._get_repo(repo_type, repo_id)
            commit = self._get_commit(repo, revision)
            out = []
            for f in payload.get("files", []):
                sample = base64.b64decode(f.get("sample", ""))
                mode = self.standin.choose_upload_mode(f["path"], int(f.get("size", 0)), sample)
                existing = commit.files.get(f["path"])
                out.append(
                    {
                        "path": f["path"],
                        "uploadMode": mode,
                        "shouldIgnore": False,
                        "oid": existing.upload_oid if existing is not None else None,
                    }
                )
        return self._json(200, {"files": out, "commitOid": commit.sha})

    def _commit(self, repo_type: str, repo_id: str, revision: str, body: bytes):
        self._require_write()
        with self.standin.lock:
            if self.standin.fail_commits > 0:
                self.standin.fail_commits -= 1
                raise _HttpError(503, "Service unavailable (stand-in fault switch fail_commits)")
        lines = [json.loads(line) for line in body.decode().splitlines() if line.strip()]
        if not lines or lines[0].get("key") != "header":
            raise _HttpError(400, "The first NDJSON line of a commit must be the header")
        header = lines[0]["value"]
        with self.standin.lock:
            repo = self._get_repo(repo_type, repo_id)
            if revision not in repo.branches:
                raise _HttpError(404, f"Invalid rev id: {revision}", "RevisionNotFound")
            head = repo.commits[repo.branches[revision]]
            parent = header.get("parentCommit")
            if parent and parent != head.sha:
                raise _HttpError(412, "A commit has happened since. Please refresh and try again.")
            files = dict(head.files)
            for line in lines[1:]:
                key, value = line.get("key"), line.get("value", {})
                path = value.get("path", "").strip("/")
                if key == "file":
                    if value.get("encoding", "base64") != "base64":
                        raise _HttpError(400, f"Unsupported encoding {value.get('encoding')!r}")
                    data = base64.b64decode(value["content"])
                    self.standin.received_content_bytes += len(data)
                    files[path] = Blob(data, lfs=False)
                elif key == "lfsFile":
                    oid = value["oid"]
                    if oid not in repo.lfs_objects:
                        raise _HttpError(422, f"LFS object {oid} of {path} was never uploaded")
                    files[path] = Blob(repo.lfs_objects[oid], lfs=True)
                elif key == "deletedFile":
                    if path not in files:
                        raise _HttpError(404, f"A file with this name doesn't exist: {path}", "EntryNotFound")
                    del files[path]
                elif key == "deletedFolder":
                    for p in [p for p in files if p.startswith(path + "/")]:
                        del files[p]
                else:
                    raise _HttpError(400, f"Unsupported commit operation {key!r}")
            sha = self.standin._new_sha(repo_id, head.sha, header.get("summary", ""))
            repo.commits[sha] = Commit(
                sha=sha, parent=head.sha, title=header.get("summary", ""), date=_now(), files=files
            )
            repo.branches[revision] = sha
            url = f"{self._repo_url(repo)}/commit/{sha}"
        return self._json(200, {"commitUrl": url, "commitOid": sha, "pullRequestUrl": None, "success": True})

    def _lfs_batch(self, repo_type: str, repo_id: str, body: bytes):
        self._require_write()
        payload = json.loads(body or b"{}")
        if payload.get("operation") != "upload":
            raise _HttpError(400, "The Hub stand-in only supports LFS uploads")
        with self.standin.lock:
            repo = self._get_repo(repo_type, repo_id)
            objects = []
            for obj in payload.get("objects", []):
                oid, size = obj["oid"], int(obj["size"])
                entry = {"oid": oid, "size": size}
                if oid not in repo.lfs_objects:
                    href = f"{self.standin.url}/lfs-upload/{_URL_PREFIX[repo_type] or 'models/'}{repo_id}/{oid}"
                    entry["authenticated"] = True
                    entry["actions"] = {"upload": {"href": href}}
                objects.append(entry)
        return self._json(
            200, {"transfer": "basic", "objects": objects}, {"Content-Type": "application/vnd.git-lfs+json"}
        )

    def _lfs_put(self, segs: list[str], body: bytes):
        # /lfs-upload/{datasets|models|spaces}/{ns}/{name}/{oid}; the href is pre-signed (no token).
        repo_type = _TYPE_PREFIX.get(segs[1], "model")
        repo_id, oid = "/".join(segs[2:-1]), segs[-1]
        if hashlib.sha256(body).hexdigest() != oid:
            raise _HttpError(400, f"Uploaded content does not match oid {oid}")
        with self.standin.lock:
            repo = self.standin.repos.get((repo_type, repo_id))  # pre-signed: no token, even when private
            if repo is None:
                raise _HttpError(404, f"Repository not found: {repo_type}s/{repo_id}", "RepoNotFound")
            repo.lfs_objects[oid] = body
            self.standin.received_content_bytes += len(body)
        return self._send(200, b"", {"ETag": f'"{oid}"'})

    def _resolve(self, method: str, repo_type: str, repo_id: str, revision: str, path: str):
        with self.standin.lock:
            repo = self._get_repo(repo_type, repo_id)
            commit = self._get_commit(repo, revision)
            blob = commit.files.get(path)
            if blob is None:
                raise _HttpError(404, f"Entry not found: {path}", "EntryNotFound")
            data = blob.data
            etag = blob.sha256 if blob.lfs else blob.git_oid
        headers = {
            "Content-Type": "application/octet-stream",
            "Accept-Ranges": "bytes",
            "ETag": f'"{etag}"',
            "X-Repo-Commit": commit.sha,
        }
        if blob.lfs:
            headers["X-Linked-Etag"] = f'"{etag}"'
            headers["X-Linked-Size"] = str(len(data))
        status, payload = 200, data
        rng = self.headers.get("Range")
        if rng:
            match = re.fullmatch(r"bytes=(\d*)-(\d*)", rng.strip())
            if not match or (not match.group(1) and not match.group(2)):
                raise _HttpError(416, f"Unsupported Range {rng!r}")
            size = len(data)
            if match.group(1):
                start = int(match.group(1))
                end = min(int(match.group(2)), size - 1) if match.group(2) else size - 1
            else:
                start, end = max(0, size - int(match.group(2))), size - 1
            if start >= size or start > end:
                raise _HttpError(416, "Requested Range Not Satisfiable", headers={"Content-Range": f"bytes */{size}"})
            status, payload = 206, data[start : end + 1]
            headers["Content-Range"] = f"bytes {start}-{end}/{size}"
        headers["Content-Length"] = str(len(payload))
        self._send(status, payload, headers, head_only=method == "HEAD")
