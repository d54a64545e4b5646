"""A loopback Hugging Face Hub for tests, written with the standard library only.

``HubServer`` runs a ``ThreadingHTTPServer`` on ``127.0.0.1`` in a background thread and speaks the
subset of the Hub HTTP API that the real, unmodified ``huggingface_hub`` client (2.4.x, on ``httpx2``)
uses to create repos, upload folders, read repo metadata and download files:

=========================================================  ==============================================
Endpoint                                                   Client calls that use it
=========================================================  ==============================================
``POST   /api/repos/create``                               ``create_repo`` (409 when it exists: exist_ok)
``DELETE /api/repos/delete``                               ``delete_repo``
``GET    /api/whoami-v2``                                  ``whoami``
``POST   /api/validate-yaml``                              ``upload_folder`` of a ``README.md`` (card metadata)
``GET    /api/{type}s/{repo}[/revision/{rev}]``            ``model_info``/``repo_info``/``snapshot_download``
``GET    /api/{type}s/{repo}/tree/{rev}[/{path}]``         ``list_repo_tree``/``list_repo_files``/snapshots
``POST   /api/{type}s/{repo}/paths-info/{rev}``            ``get_paths_info``
``POST   /api/{type}s/{repo}/preupload/{rev}``             ``upload_folder``/``create_commit`` (upload mode)
``POST   /api/{type}s/{repo}/commit/{rev}``                ``upload_folder``/``create_commit`` (NDJSON)
``GET    /api/{type}s/{repo}/refs``                        ``list_repo_refs``
``GET    /api/{type}s/{repo}/commits/{rev}``               ``list_repo_commits``
``POST|DELETE /api/{type}s/{repo}/branch/{branch}``        ``create_branch``/``delete_branch``
``POST|DELETE /api/{type}s/{repo}/tag/{rev-or-tag}``       ``create_tag``/``delete_tag``
``HEAD|GET [/{type}s]/{repo}/resolve/{rev}/{path}``        ``hf_hub_download``/``snapshot_download``/
                                                           ``file_exists``/``get_hf_file_metadata``
=========================================================  ==============================================

Repos are namespaced (``"namespace/name"``) and kept in memory with a git-like history: every commit
gets a 40-hex sha and a parent, a branch is a moving pointer to a commit, and any commit sha (full or a
unique prefix of at least 7 characters), branch or tag can be resolved. File contents are stored
content-addressed on disk under ``root/blobs`` by their git blob sha, which is also the file's ``oid``
and its (quoted) ``ETag``, as on the real Hub for non-LFS files. Every file is a regular (non-LFS,
non-Xet) file: the preupload answer is always ``uploadMode: "regular"`` so the client sends the
content base64-encoded in the commit body, and downloads never carry Xet headers so the client uses a
plain HTTP GET.

Error answers carry the ``X-Error-Code`` header that ``huggingface_hub.utils.hf_raise_for_status``
maps to exception classes: ``RepoNotFound`` -> ``RepositoryNotFoundError``, ``RevisionNotFound`` ->
``RevisionNotFoundError``, ``EntryNotFound`` -> ``RemoteEntryNotFoundError``.

For fault injection, ``truncate_next_download``/``truncate_downloads`` make a GET of a file send a
``Content-Length`` larger than the body and then close the connection (``mode="close"``), or send a
well-formed but short body (``mode="short"``).
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import json
import re
import socket
import tempfile
import threading
import traceback
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any, Literal
from urllib.parse import parse_qs, unquote, urlsplit

__all__ = ["HubServer", "RequestRecord", "TruncationMode", "git_blob_sha"]

TruncationMode = Literal["close", "short"]

#: URL segment after ``/api/`` -> repo type, as the client builds it (``f"{repo_type}s"``).
_API_TYPES = {"models": "model", "datasets": "dataset", "spaces": "space"}
#: Prefix of a repo's web and ``resolve`` URLs, per repo type.
_URL_PREFIX = {"model": "", "dataset": "datasets/", "space": "spaces/"}
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_HEX_RE = re.compile(r"^[0-9a-f]{7,40}$")
_RANGE_RE = re.compile(r"^\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*$", re.IGNORECASE)

#: What the real Hub commits as the first file of every new repo (shortened).
DEFAULT_GITATTRIBUTES = (
    b"*.bin filter=lfs diff=lfs merge=lfs -text\n"
    b"*.pt filter=lfs diff=lfs merge=lfs -text\n"
    b"*.pth filter=lfs diff=lfs merge=lfs -text\n"
    b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n"
)


def git_blob_sha(data: bytes) -> str:
    """The git blob id of ``data`` (``sha1(b"blob <size>\\0" + data)``): the Hub's ``oid`` of a regular file."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def _now() -> str:
    """The current UTC time in the Hub's date format (``2024-01-31T12:00:00.000Z``)."""
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


class HubError(Exception):
    """Raised by a route to answer with ``status``, an ``X-Error-Code`` header and ``{"error": message}``."""

    def __init__(
        self,
        status: int,
        message: str,
        error_code: str | None = None,
        headers: Mapping[str, str] | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.error_code = error_code
        self.headers = dict(headers or {})
        self.extra = dict(extra or {})


@dataclass
class CommitRecord:
    """One commit: its sha, parent sha, message and full file tree (path -> blob oid)."""

    sha: str
    parent: str | None
    title: str
    description: str
    files: dict[str, str]
    date: str


@dataclass
class RepoRecord:
    """One repo: visibility, branches and tags (name -> commit sha) and every commit by sha."""

    repo_type: str
    repo_id: str
    private: bool
    created_at: str
    branches: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    commits: dict[str, CommitRecord] = field(default_factory=dict)


@dataclass(frozen=True)
class RequestRecord:
    """One request as the server received it: method, unquoted path, raw query and lower-cased headers."""

    method: str
    path: str
    query: str
    headers: dict[str, str]

    @property
    def authorization(self) -> str | None:
        """The ``Authorization`` header (``"Bearer <token>"``), or None when the client sent no token."""
        return self.headers.get("authorization")

    @property
    def is_write(self) -> bool:
        """Whether the request modifies the Hub (every non-GET/HEAD request except ``paths-info``)."""
        return self.method not in ("GET", "HEAD") and "/paths-info/" not in self.path


@dataclass
class _Truncation:
    path_suffix: str
    keep: int | None
    remaining: int | None
    mode: TruncationMode


class _ThreadingServer(ThreadingHTTPServer):
    """A ``ThreadingHTTPServer`` that remembers its open connections so ``stop`` can cut keep-alive ones."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], hub: HubServer) -> None:
        self.hub = hub
        self.open_connections: set[socket.socket] = set()
        self.connections_lock = threading.Lock()
        super().__init__(address, _Handler)

    def get_request(self) -> tuple[socket.socket, Any]:
        conn, addr = super().get_request()
        with self.connections_lock:
            self.open_connections.add(conn)
        return conn, addr

    def shutdown_request(self, request: Any) -> None:
        with self.connections_lock:
            self.open_connections.discard(request)
        super().shutdown_request(request)

    def close_open_connections(self) -> None:
        with self.connections_lock:
            connections = list(self.open_connections)
            self.open_connections.clear()
        for conn in connections:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class HubServer:
    """A loopback Hub: ``with HubServer() as hub: HfApi(endpoint=hub.endpoint, token=hub.token)...``.

    Args:
        root: folder for blobs and per-repo state dumps; a temporary folder (removed by ``stop``) if None.
        token: the one valid token. Clients send it as ``Authorization: Bearer <token>``.
        username: the namespace of repos created without one, and the ``whoami`` name.
        require_token_for_writes: answer 401 to writes (create, commit, branch, ...) without the valid token.
        gitattributes: start every new repo with a ``.gitattributes`` commit, as the real Hub does.
    """

    def __init__(
        self,
        root: str | Path | None = None,
        *,
        token: str = "hf_loopback_test_token",
        username: str = "loopback-user",
        require_token_for_writes: bool = True,
        gitattributes: bool = True,
    ) -> None:
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        if root is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="loopback-hub-")
            root = self._tmp.name
        self.root = Path(root)
        self.token = token
        self.username = username
        self.require_token_for_writes = require_token_for_writes
        self.gitattributes = gitattributes
        self.records: list[RequestRecord] = []
        self._repos: dict[tuple[str, str], RepoRecord] = {}
        self._truncations: list[_Truncation] = []
        self._lock = threading.RLock()
        self._counter = itertools.count()
        self._server: _ThreadingServer | None = None
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> HubServer:
        """Bind a free port on 127.0.0.1 and serve in a daemon thread; returns ``self``."""
        if self._server is not None:
            return self
        (self.root / "blobs").mkdir(parents=True, exist_ok=True)
        self._server = _ThreadingServer(("127.0.0.1", 0), self)
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name="loopback-hub", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, cut open keep-alive connections and remove the temporary root (if any)."""
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.close_open_connections()
            server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> HubServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    @property
    def port(self) -> int:
        """The bound port (the server must be started)."""
        if self._server is None:
            raise RuntimeError("HubServer is not running")
        return int(self._server.server_address[1])

    @property
    def endpoint(self) -> str:
        """``"http://127.0.0.1:<port>"``: what ``HF_ENDPOINT``/``HfApi(endpoint=...)`` should be."""
        return f"http://127.0.0.1:{self.port}"

    # ------------------------------------------------------------------ request log

    @property
    def requests(self) -> list[tuple[str, str]]:
        """Every request received so far as ``(method, unquoted path without query)``."""
        with self._lock:
            return [(r.method, r.path) for r in self.records]

    @property
    def write_authorizations(self) -> list[str | None]:
        """The ``Authorization`` header of every write request, in order (None where it was missing)."""
        with self._lock:
            return [r.authorization for r in self.records if r.is_write]

    def clear_requests(self) -> None:
        """Forget the request log (e.g. between the set-up and the part of a test that counts requests)."""
        with self._lock:
            self.records.clear()

    # ------------------------------------------------------------------ fault injection

    def truncate_next_download(self, path_suffix: str, keep: int | None = None) -> None:
        """Cut the next GET of a file whose URL path ends with ``path_suffix`` (see ``truncate_downloads``)."""
        self.truncate_downloads(path_suffix, keep=keep, times=1, mode="close")

    def truncate_downloads(
        self,
        path_suffix: str,
        *,
        keep: int | None = None,
        times: int | None = 1,
        mode: TruncationMode = "close",
    ) -> None:
        """Truncate the next ``times`` GETs (every GET if None) of files whose URL path ends with ``path_suffix``.

        ``mode="close"`` answers with the full ``Content-Length`` but only sends the bytes below offset ``keep``
        (half the file by default), then closes the connection: ``httpx2`` raises ``RemoteProtocolError`` and
        ``huggingface_hub`` retries with a ``Range`` request (5 times, 1 s apart). With ``times=1`` the resumed
        request is served in full and the download succeeds; with ``times=None`` every retry stops at ``keep``
        too and ``hf_hub_download`` raises ``httpx2.RemoteProtocolError``.

        ``mode="short"`` sends a well-framed response whose body is only the first ``keep`` bytes, so the
        client sees fewer bytes than the ``Content-Length`` of its HEAD request and raises ``OSError``
        ("Consistency check failed") without retrying.
        """
        with self._lock:
            self._truncations.append(_Truncation(path_suffix, keep, times, mode))

    def _take_truncation(self, path: str) -> _Truncation | None:
        with self._lock:
            for rule in self._truncations:
                if path.endswith(rule.path_suffix):
                    if rule.remaining is not None:
                        rule.remaining -= 1
                        if rule.remaining <= 0:
                            self._truncations.remove(rule)
                    return rule
        return None

    # ------------------------------------------------------------------ server-side repo helpers

    def create_repo(
        self, repo_id: str, *, repo_type: str = "model", private: bool = False, exist_ok: bool = False
    ) -> RepoRecord:
        """Create ``repo_id`` directly (no HTTP), with its initial commit on ``main``."""
        namespace, _, name = repo_id.rpartition("/")
        if not namespace or not _NAME_RE.match(namespace) or not _NAME_RE.match(name) or "--" in repo_id:
            raise HubError(400, f"Invalid repo id '{repo_id}': expected 'namespace/name'")
        with self._lock:
            key = (repo_type, repo_id)
            if key in self._repos:
                if exist_ok:
                    return self._repos[key]
                raise HubError(409, f"You already created this {repo_type} repo")
            repo = RepoRecord(repo_type=repo_type, repo_id=repo_id, private=private, created_at=_now())
            initial = {".gitattributes": self._store_blob(DEFAULT_GITATTRIBUTES)} if self.gitattributes else {}
            sha = self._new_commit(repo, None, initial, "initial commit", "")
            repo.branches["main"] = sha
            self._repos[key] = repo
            self._dump(repo)
            return repo

    def commit(
        self,
        repo_id: str,
        files: Mapping[str, bytes | str] | None = None,
        *,
        deletions: Iterable[str] = (),
        message: str = "commit from the test",
        revision: str = "main",
        repo_type: str = "model",
    ) -> str:
        """Commit ``files`` (path -> content) and ``deletions`` onto branch ``revision`` directly; returns the sha.

        The repo is created first if needed. Useful to publish fixtures without going through the client.
        """
        self.create_repo(repo_id, repo_type=repo_type, exist_ok=True)
        with self._lock:
            repo = self._repo(repo_type, repo_id)
            if revision not in repo.branches:
                raise HubError(404, f"Branch '{revision}' not found", "RevisionNotFound")
            parent = repo.branches[revision]
            tree = dict(repo.commits[parent].files)
            for path in deletions:
                tree.pop(path, None)
            for path, content in (files or {}).items():
                data = content.encode() if isinstance(content, str) else bytes(content)
                tree[path.lstrip("/")] = self._store_blob(data)
            sha = self._new_commit(repo, parent, tree, message, "")
            repo.branches[revision] = sha
            self._dump(repo)
            return sha

    def resolve(self, repo_id: str, revision: str = "main", *, repo_type: str = "model") -> str:
        """The commit sha that ``revision`` (branch, tag or sha prefix) points to."""
        with self._lock:
            return self._resolve(self._repo(repo_type, repo_id), revision)

    def list_files(self, repo_id: str, revision: str = "main", *, repo_type: str = "model") -> list[str]:
        """The sorted file paths of ``repo_id`` at ``revision``."""
        with self._lock:
            repo = self._repo(repo_type, repo_id)
            return sorted(repo.commits[self._resolve(repo, revision)].files)

    def read_file(self, repo_id: str, path: str, revision: str = "main", *, repo_type: str = "model") -> bytes:
        """The content of ``path`` in ``repo_id`` at ``revision``."""
        with self._lock:
            repo = self._repo(repo_type, repo_id)
            oid = repo.commits[self._resolve(repo, revision)].files[path]
        return self._read_blob(oid)

    def repo_exists(self, repo_id: str, *, repo_type: str = "model") -> bool:
        """Whether ``repo_id`` exists on this server."""
        with self._lock:
            return (repo_type, repo_id) in self._repos

    # ------------------------------------------------------------------ storage internals

    def _blob_path(self, oid: str) -> Path:
        return self.root / "blobs" / oid[:2] / oid

    def _store_blob(self, data: bytes) -> str:
        oid = git_blob_sha(data)
        path = self._blob_path(oid)
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f"{oid}.{threading.get_ident()}.tmp")
            tmp.write_bytes(data)
            tmp.replace(path)
        return oid

    def _read_blob(self, oid: str) -> bytes:
        return self._blob_path(oid).read_bytes()

    def _blob_size(self, oid: str) -> int:
        return self._blob_path(oid).stat().st_size

    def _new_commit(
        self, repo: RepoRecord, parent: str | None, files: dict[str, str], title: str, description: str
    ) -> str:
        payload = json.dumps(
            {"repo": repo.repo_id, "parent": parent, "files": sorted(files.items()), "title": title,
             "n": next(self._counter), "date": _now()},
        )
        sha = hashlib.sha1(payload.encode()).hexdigest()
        repo.commits[sha] = CommitRecord(sha, parent, title, description, dict(files), _now())
        return sha

    def _dump(self, repo: RepoRecord) -> None:
        """Write the repo's refs and history as JSON under ``root/repos`` (for humans debugging a test)."""
        folder = self.root / "repos" / f"{repo.repo_type}s" / repo.repo_id
        folder.mkdir(parents=True, exist_ok=True)
        state = {
            "private": repo.private,
            "branches": repo.branches,
            "tags": repo.tags,
            "commits": {sha: vars(c) for sha, c in repo.commits.items()},
        }
        (folder / "state.json").write_text(json.dumps(state, indent=2))

    def _repo(self, repo_type: str, repo_id: str) -> RepoRecord:
        repo = self._repos.get((repo_type, repo_id))
        if repo is None:
            raise HubError(404, "Repository not found", "RepoNotFound")
        return repo

    def _resolve(self, repo: RepoRecord, revision: str) -> str:
        if revision in repo.branches:
            return repo.branches[revision]
        if revision in repo.tags:
            return repo.tags[revision]
        if revision.startswith("refs/heads/") and revision[11:] in repo.branches:
            return repo.branches[revision[11:]]
        if revision.startswith("refs/tags/") and revision[10:] in repo.tags:
            return repo.tags[revision[10:]]
        if _HEX_RE.match(revision):
            matches = [sha for sha in repo.commits if sha.startswith(revision)]
            if len(matches) == 1:
                return matches[0]
        raise HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")

    def _is_authorized(self, authorization: str | None) -> bool:
        return authorization == f"Bearer {self.token}"


# ---------------------------------------------------------------------- HTTP handler


class _Handler(BaseHTTPRequestHandler):
    """Parses each request, logs it on the ``HubServer`` and routes it to a ``_route_*`` method."""

    protocol_version = "HTTP/1.1"  # keep-alive, as httpx2 expects; every answer carries Content-Length
    server: _ThreadingServer
    timeout = 60  # an idle keep-alive connection is dropped after this many seconds

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - signature of the base class
        """Silence the default per-request stderr log (the ``HubServer.records`` log replaces it)."""

    @property
    def hub(self) -> HubServer:
        return self.server.hub

    # -- plumbing -------------------------------------------------------------------------------

    def do_GET(self) -> None:
        self._dispatch()

    def do_HEAD(self) -> None:
        self._dispatch()

    def do_POST(self) -> None:
        self._dispatch()

    def do_PUT(self) -> None:
        self._dispatch()

    def do_DELETE(self) -> None:
        self._dispatch()

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _dispatch(self) -> None:
        split = urlsplit(self.path)
        raw_segments = split.path.split("/")[1:]
        # Segments are unquoted one by one so that a revision or path quoted with safe="" ("refs%2Fpr%2F1")
        # stays one segment.
        self.segments = [unquote(s) for s in raw_segments]
        self.request_path = unquote(split.path)
        self.query = parse_qs(split.query, keep_blank_values=True)
        self.body = self._read_body()
        record = RequestRecord(
            method=self.command,
            path=self.request_path,
            query=split.query,
            headers={k.lower(): v for k, v in self.headers.items()},
        )
        with self.hub._lock:
            self.hub.records.append(record)
        self.authorization = record.authorization
        try:
            if record.is_write and self.hub.require_token_for_writes and not self.hub._is_authorized(
                self.authorization
            ):
                raise HubError(401, "Invalid credentials in Authorization header")
            self._route()
        except HubError as err:
            self._send_error(err)
        except (BrokenPipeError, ConnectionResetError):  # the client hung up: nothing left to answer
            self.close_connection = True
        except Exception as err:  # a bug in the server: answer 500 with the traceback, keep serving
            self._send_error(HubError(500, f"loopback hub error: {err!r}\n{traceback.format_exc()}"))

    def _send(self, status: int, body: bytes = b"", headers: Mapping[str, str] | None = None) -> None:
        self.send_response(status)
        merged = {"Content-Type": "application/json", **(headers or {})}
        for key, value in merged.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD" and body:
            self.wfile.write(body)

    def _send_json(self, obj: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> None:
        self._send(status, json.dumps(obj).encode(), headers)

    def _send_error(self, err: HubError) -> None:
        headers = dict(err.headers)
        if err.error_code is not None:
            headers["X-Error-Code"] = err.error_code
        headers["X-Error-Message"] = err.message.splitlines()[0][:200] if err.message else ""
        self._send_json({"error": err.message, **err.extra}, status=err.status, headers=headers)

    def _json_body(self) -> dict[str, Any]:
        try:
            return json.loads(self.body or b"{}")
        except json.JSONDecodeError as err:
            raise HubError(400, f"Invalid JSON body: {err}") from err

    def _flag(self, name: str) -> bool:
        values = self.query.get(name) or [""]
        return values[-1].lower() in ("1", "true", "yes")

    # -- routing --------------------------------------------------------------------------------

    def _route(self) -> None:
        seg = self.segments
        method = self.command
        if seg[:1] == ["api"]:
            if seg[1:3] == ["repos", "create"] and method == "POST":
                return self._route_create_repo()
            if seg[1:3] == ["repos", "delete"] and method == "DELETE":
                return self._route_delete_repo()
            if seg[1:2] == ["whoami-v2"] and method in ("GET", "HEAD"):
                return self._route_whoami()
            if seg[1:2] == ["validate-yaml"] and method == "POST":
                return self._route_validate_yaml()
            if len(seg) >= 4 and seg[1] in _API_TYPES:
                repo_type = _API_TYPES[seg[1]]
                repo_id = f"{seg[2]}/{seg[3]}"
                rest = seg[4:]
                action = rest[0] if rest else ""
                if not rest and method in ("GET", "HEAD"):
                    return self._route_info(repo_type, repo_id, None)
                if action == "revision" and len(rest) >= 2 and method in ("GET", "HEAD"):
                    return self._route_info(repo_type, repo_id, "/".join(rest[1:]))
                if action == "tree" and len(rest) >= 2 and method in ("GET", "HEAD"):
                    return self._route_tree(repo_type, repo_id, rest[1], "/".join(rest[2:]).strip("/"))
                if action == "paths-info" and len(rest) >= 2 and method == "POST":
                    return self._route_paths_info(repo_type, repo_id, "/".join(rest[1:]))
                if action == "preupload" and len(rest) >= 2 and method == "POST":
                    return self._route_preupload(repo_type, repo_id, "/".join(rest[1:]))
                if action == "commit" and len(rest) >= 2 and method == "POST":
                    return self._route_commit(repo_type, repo_id, "/".join(rest[1:]))
                if action == "refs" and method == "GET":
                    return self._route_refs(repo_type, repo_id)
                if action == "commits" and len(rest) >= 2 and method == "GET":
                    return self._route_commits(repo_type, repo_id, "/".join(rest[1:]))
                if action == "branch" and len(rest) >= 2 and method in ("POST", "DELETE"):
                    return self._route_branch(repo_type, repo_id, "/".join(rest[1:]))
                if action == "tag" and len(rest) >= 2 and method in ("POST", "DELETE"):
                    return self._route_tag(repo_type, repo_id, "/".join(rest[1:]))
        elif "resolve" in seg and method in ("GET", "HEAD"):
            idx = seg.index("resolve")
            head, tail = seg[:idx], seg[idx + 1 :]
            if len(head) == 3 and head[0] in _API_TYPES and head[0] != "models":
                repo_type, repo_id = _API_TYPES[head[0]], f"{head[1]}/{head[2]}"
            elif len(head) == 2:
                repo_type, repo_id = "model", f"{head[0]}/{head[1]}"
            else:
                raise HubError(404, "Repository not found", "RepoNotFound")
            if len(tail) < 2:
                raise HubError(404, "Entry not found", "EntryNotFound")
            return self._route_resolve(repo_type, repo_id, tail[0], "/".join(tail[1:]))
        raise HubError(404, f"No loopback hub route for {method} {'/'.join(seg)}")

    # -- helpers shared by routes ---------------------------------------------------------------

    def _readable_repo(self, repo_type: str, repo_id: str) -> RepoRecord:
        """The repo if it exists and the caller may read it; 404 RepoNotFound (401 if private) otherwise."""
        repo = self.hub._repo(repo_type, repo_id)
        if repo.private and not self.hub._is_authorized(self.authorization):
            raise HubError(401, "Repository not found", "RepoNotFound")
        return repo

    def _repo_url(self, repo: RepoRecord) -> str:
        return f"{self.hub.endpoint}/{_URL_PREFIX[repo.repo_type]}{repo.repo_id}"

    def _file_entry(self, path: str, oid: str) -> dict[str, Any]:
        return {"type": "file", "oid": oid, "size": self.hub._blob_size(oid), "path": path}

    @staticmethod
    def _dir_entry(path: str, files: Mapping[str, str]) -> dict[str, Any]:
        listing = sorted((p, o) for p, o in files.items() if p.startswith(path + "/"))
        oid = hashlib.sha1(json.dumps(listing).encode()).hexdigest()
        return {"type": "directory", "oid": oid, "size": 0, "path": path}

    def _last_commit(self, repo: RepoRecord, sha: str, path: str) -> dict[str, str]:
        """The newest commit from ``sha`` backwards whose parent holds a different version of ``path``."""
        commit = repo.commits[sha]
        oid = commit.files.get(path)
        while commit.parent is not None and repo.commits[commit.parent].files.get(path) == oid:
            commit = repo.commits[commit.parent]
        return {"id": commit.sha, "title": commit.title, "date": commit.date}

    # -- routes ---------------------------------------------------------------------------------

    def _route_create_repo(self) -> None:
        """``create_repo``: create ``organization/name`` (409 when it exists, which ``exist_ok=True`` accepts)."""
        payload = self._json_body()
        repo_type = payload.get("type") or "model"
        if repo_type not in _URL_PREFIX:
            raise HubError(400, f"Unsupported repo type '{repo_type}'")
        name = payload.get("name") or ""
        namespace = payload.get("organization") or self.hub.username
        private = payload.get("visibility") == "private" or payload.get("private") is True
        repo_id = f"{namespace}/{name}"
        with self.hub._lock:
            if self.hub.repo_exists(repo_id, repo_type=repo_type):
                url = f"{self.hub.endpoint}/{_URL_PREFIX[repo_type]}{repo_id}"
                # create_repo(exist_ok=True) accepts the 409 and then reads "url" from this very body.
                raise HubError(409, f"You already created this {repo_type} repo", extra={"url": url})
            repo = self.hub.create_repo(repo_id, repo_type=repo_type, private=private)
        self._send_json({"url": self._repo_url(repo), "name": repo_id, "id": repo_id})

    def _route_delete_repo(self) -> None:
        """``delete_repo``: drop the repo (404 RepoNotFound when missing, which ``missing_ok=True`` accepts)."""
        payload = self._json_body()
        repo_type = payload.get("type") or "model"
        repo_id = f"{payload.get('organization') or self.hub.username}/{payload.get('name')}"
        with self.hub._lock:
            self.hub._repo(repo_type, repo_id)
            del self.hub._repos[(repo_type, repo_id)]
        self._send_json({})

    def _route_validate_yaml(self) -> None:
        """``upload_folder`` with a ``README.md``: the Hub checks the card's YAML metadata before the commit.

        Front matter that is not a YAML mapping, or a ``model-index`` the client's own parser cannot
        turn into eval results, is a 400 with ``errors`` (the client raises ``ValueError``).
        """
        import yaml
        from huggingface_hub.repocard_data import model_index_to_eval_results

        content = str(self._json_body().get("content") or "")
        errors: list[dict[str, str]] = []
        match = re.match(r"^---\s*\n(.*?)\n---\s*\n", content, re.S)
        meta: Any = {}
        if match:
            try:
                meta = yaml.safe_load(match.group(1)) or {}
            except yaml.YAMLError as exc:
                errors.append({"message": f"invalid YAML: {exc}"})
            if not errors and not isinstance(meta, dict):
                errors.append({"message": "metadata must be a YAML mapping"})
            elif not errors and "model-index" in meta:
                try:
                    model_index_to_eval_results(meta["model-index"])
                except Exception as exc:  # the client's parser raises whatever the bad structure causes
                    errors.append({"message": f"model-index: {exc!r}"})
        warnings = [] if match else [{"message": "empty or missing yaml metadata in repo card"}]
        if errors:
            raise HubError(400, "Invalid metadata", "BadRequest", extra={"errors": errors, "warnings": warnings})
        self._send_json({"errors": [], "warnings": warnings})

    def _route_whoami(self) -> None:
        """``whoami``: the user behind the valid token; 401 for any other token."""
        if not self.hub._is_authorized(self.authorization):
            raise HubError(401, "Invalid credentials in Authorization header")
        self._send_json(
            {
                "type": "user",
                "id": hashlib.sha1(self.hub.username.encode()).hexdigest()[:24],
                "name": self.hub.username,
                "fullname": self.hub.username,
                "email": None,
                "orgs": [],
                "auth": {"type": "access_token", "accessToken": {"displayName": "loopback", "role": "write"}},
            }
        )

    def _route_info(self, repo_type: str, repo_id: str, revision: str | None) -> None:
        """``model_info``/``repo_info``: id, sha of the revision (default ``main``), siblings, private, dates.

        ``snapshot_download`` calls it first to turn a branch into a commit sha. Siblings carry ``size`` and
        ``blobId`` only with ``?blobs=true`` (``files_metadata=True``), as on the Hub.
        """
        with self.hub._lock:
            repo = self._readable_repo(repo_type, repo_id)
            sha = self.hub._resolve(repo, revision or "main")
            commit = repo.commits[sha]
            files = dict(commit.files)
        with_blobs = self._flag("blobs")
        siblings = []
        for path, oid in sorted(files.items()):
            sibling: dict[str, Any] = {"rfilename": path}
            if with_blobs:
                sibling.update(size=self.hub._blob_size(oid), blobId=oid)
            siblings.append(sibling)
        namespace = repo_id.split("/")[0]
        info: dict[str, Any] = {
            "_id": hashlib.sha1(f"{repo_type}/{repo_id}".encode()).hexdigest()[:24],
            "id": repo_id,
            "author": namespace,
            "sha": sha,
            "lastModified": commit.date,
            "createdAt": repo.created_at,
            "private": repo.private,
            "gated": False,
            "disabled": False,
            "downloads": 0,
            "likes": 0,
            "tags": [],
            "siblings": siblings,
            "usedStorage": sum(self.hub._blob_size(oid) for oid in set(files.values())),
        }
        if repo_type == "model":
            info["modelId"] = repo_id
        if repo_type == "space":
            info["sdk"] = "static"
        self._send_json(info)

    def _route_tree(self, repo_type: str, repo_id: str, revision: str, base: str) -> None:
        """``list_repo_tree``/``list_repo_files``: the entries under ``base`` (all of them with ``?recursive=true``).

        Files are ``{"type": "file", "oid", "size", "path"}``, folders ``{"type": "directory", ...}``; with
        ``?expand=true`` each entry gets ``lastCommit``. One page, no ``Link`` header: no pagination.
        """
        with self.hub._lock:
            repo = self._readable_repo(repo_type, repo_id)
            sha = self.hub._resolve(repo, revision)
            files = dict(repo.commits[sha].files)
        recursive, expand = self._flag("recursive"), self._flag("expand")
        dirs = {"/".join(p.split("/")[:i]) for p in files for i in range(1, p.count("/") + 1)}
        if base and base not in dirs:
            raise HubError(404, f"Path '{base}' is not a folder of {repo_id}@{revision}", "EntryNotFound",
                           {"X-Repo-Commit": sha})
        prefix = f"{base}/" if base else ""

        def selected(path: str) -> bool:
            return path.startswith(prefix) and (recursive or "/" not in path[len(prefix) :])

        entries = [self._dir_entry(d, files) for d in sorted(dirs) if selected(d)]
        entries += [self._file_entry(p, o) for p, o in sorted(files.items()) if selected(p)]
        if expand:
            with self.hub._lock:
                for entry in entries:
                    entry["lastCommit"] = self._last_commit(repo, sha, entry["path"])
        self._send_json(entries)

    def _route_paths_info(self, repo_type: str, repo_id: str, revision: str) -> None:
        """``get_paths_info``: tree entries for the form-encoded ``paths`` that exist (others are left out)."""
        form = parse_qs(self.body.decode(), keep_blank_values=True)
        with self.hub._lock:
            repo = self._readable_repo(repo_type, repo_id)
            files = dict(repo.commits[self.hub._resolve(repo, revision)].files)
        dirs = {"/".join(p.split("/")[:i]) for p in files for i in range(1, p.count("/") + 1)}
        entries = []
        for path in form.get("paths", []):
            path = path.strip("/")
            if path in files:
                entries.append(self._file_entry(path, files[path]))
            elif path in dirs:
                entries.append(self._dir_entry(path, files))
        self._send_json(entries)

    def _route_preupload(self, repo_type: str, repo_id: str, revision: str) -> None:
        """``upload_folder``/``create_commit`` step 1: how to upload each file.

        Every file gets ``uploadMode: "regular"`` (content inline in the commit body, no LFS/Xet transfer) and
        ``shouldIgnore: false``; ``oid`` is the git blob sha of the file already at that path, which the client
        compares with its own to leave unchanged files out of the commit.
        """
        payload = self._json_body()
        if self._flag("create_pr"):
            raise HubError(400, "create_pr is not supported by the loopback hub")
        with self.hub._lock:
            repo = self._readable_repo(repo_type, repo_id)
            sha = self.hub._resolve(repo, revision)
            files = dict(repo.commits[sha].files)
        answer = []
        for item in payload.get("files", []):
            entry: dict[str, Any] = {"path": item["path"], "uploadMode": "regular", "shouldIgnore": False}
            if item["path"] in files:
                entry["oid"] = files[item["path"]]
            answer.append(entry)
        self._send_json({"files": answer, "commitOid": sha})

    def _route_commit(self, repo_type: str, repo_id: str, revision: str) -> None:
        """``upload_folder``/``create_commit`` step 2: apply the NDJSON body onto branch ``revision``.

        Lines are ``{"key": "header", "value": {"summary", "description", "parentCommit"?}}`` then ``file``
        (base64 ``content``), ``deletedFile`` and ``deletedFolder`` items. Answers ``commitOid``/``commitUrl``.
        ``lfsFile`` items are refused (preupload never asks for LFS). A stale ``parentCommit`` gets 412.
        """
        if self._flag("create_pr"):
            raise HubError(400, "create_pr is not supported by the loopback hub")
        try:
            lines = [json.loads(line) for line in self.body.splitlines() if line.strip()]
        except json.JSONDecodeError as err:
            raise HubError(400, f"Invalid NDJSON commit body: {err}") from err
        if not lines or lines[0].get("key") != "header":
            raise HubError(400, "The first line of a commit must be its header")
        header = lines[0]["value"]
        with self.hub._lock:
            repo = self._readable_repo(repo_type, repo_id)
            if revision not in repo.branches:
                self.hub._resolve(repo, revision)  # 404 RevisionNotFound when it does not exist at all
                raise HubError(400, f"Invalid rev id: {revision} is not a branch")
            parent = repo.branches[revision]
            if header.get("parentCommit") and header["parentCommit"] != parent:
                raise HubError(412, f"A commit has happened since {header['parentCommit']}; head is {parent}")
            tree = dict(repo.commits[parent].files)
            for line in lines[1:]:
                key, value = line.get("key"), line.get("value") or {}
                path = str(value.get("path", "")).strip("/")
                if key == "file":
                    content = value.get("content", "")
                    encoding = value.get("encoding", "base64")
                    data = base64.b64decode(content) if encoding == "base64" else str(content).encode()
                    tree[path] = self.hub._store_blob(data)
                elif key == "deletedFile":
                    if tree.pop(path, None) is None:
                        raise HubError(404, f"A file with this name doesn't exist: {path}", "EntryNotFound")
                elif key == "deletedFolder":
                    doomed = [p for p in tree if p.startswith(path + "/")]
                    if not doomed:
                        raise HubError(404, f"A folder with this name doesn't exist: {path}", "EntryNotFound")
                    for p in doomed:
                        del tree[p]
                elif key == "lfsFile":
                    raise HubError(400, f"LFS upload of {path} refused: the loopback hub stores regular files")
                else:
                    raise HubError(400, f"Unknown commit operation '{key}'")
            sha = self.hub._new_commit(repo, parent, tree, header.get("summary", ""), header.get("description", ""))
            repo.branches[revision] = sha
            self.hub._dump(repo)
        self._send_json(
            {"success": True, "commitOid": sha, "commitUrl": f"{self._repo_url(repo)}/commit/{sha}",
             "hookOutput": "", "pullRequestUrl": None}
        )

    def _route_refs(self, repo_type: str, repo_id: str) -> None:
        """``list_repo_refs``: branches and tags with their target commits."""
        with self.hub._lock:
            repo = self._readable_repo(repo_type, repo_id)
            branches = [{"name": n, "ref": f"refs/heads/{n}", "targetCommit": s} for n, s in repo.branches.items()]
            tags = [{"name": n, "ref": f"refs/tags/{n}", "targetCommit": s} for n, s in repo.tags.items()]
        self._send_json({"branches": branches, "converts": [], "tags": tags, "pullRequests": []})

    def _route_commits(self, repo_type: str, repo_id: str, revision: str) -> None:
        """``list_repo_commits``: the history from ``revision`` back to the first commit, newest first."""
        with self.hub._lock:
            repo = self._readable_repo(repo_type, repo_id)
            sha: str | None = self.hub._resolve(repo, revision)
            history = []
            while sha is not None:
                commit = repo.commits[sha]
                history.append(
                    {"id": commit.sha, "title": commit.title, "message": commit.description, "date": commit.date,
                     "authors": [{"user": self.hub.username, "avatar": None}]}
                )
                sha = commit.parent
        self._send_json(history)

    def _route_branch(self, repo_type: str, repo_id: str, branch: str) -> None:
        """``create_branch`` (from ``startingPoint`` or ``main``; 409 when it exists) and ``delete_branch``."""
        with self.hub._lock:
            repo = self._readable_repo(repo_type, repo_id)
            if self.command == "DELETE":
                if branch not in repo.branches:
                    raise HubError(404, f"Branch '{branch}' not found", "RevisionNotFound")
                if branch == "main":
                    raise HubError(403, "Cannot delete the default branch")
                del repo.branches[branch]
            else:
                if branch in repo.branches:
                    raise HubError(409, f"Branch '{branch}' already exists")
                start = self._json_body().get("startingPoint") or "main"
                repo.branches[branch] = self.hub._resolve(repo, start)
            self.hub._dump(repo)
        self._send_json({})

    def _route_tag(self, repo_type: str, repo_id: str, name: str) -> None:
        """``create_tag`` (POST on the revision to tag, tag name in the body; 409 when it exists), ``delete_tag``."""
        with self.hub._lock:
            repo = self._readable_repo(repo_type, repo_id)
            if self.command == "DELETE":
                if repo.tags.pop(name, None) is None:
                    raise HubError(404, f"Tag '{name}' not found", "RevisionNotFound")
            else:
                tag = self._json_body().get("tag")
                if not tag:
                    raise HubError(400, "Missing tag name")
                if tag in repo.tags:
                    raise HubError(409, f"Tag '{tag}' already exists")
                repo.tags[tag] = self.hub._resolve(repo, name)
            self.hub._dump(repo)
        self._send_json({})

    def _route_resolve(self, repo_type: str, repo_id: str, revision: str, path: str) -> None:
        """``hf_hub_download``: HEAD gives the metadata, GET the bytes (``Range`` requests get 206).

        Headers: ``X-Repo-Commit`` (the resolved sha: the client's snapshot folder), quoted ``ETag`` (the
        git blob sha: the client's blob file name), ``Content-Length`` (the size it checks the download
        against) and ``Accept-Ranges``. A missing file is 404 ``EntryNotFound`` with ``X-Repo-Commit`` (the
        client then caches the miss under ``.no_exist/<sha>/``).
        """
        with self.hub._lock:
            repo = self._readable_repo(repo_type, repo_id)
            sha = self.hub._resolve(repo, revision)
            oid = repo.commits[sha].files.get(path)
        if oid is None:
            raise HubError(404, f"Entry not found: {path}", "EntryNotFound", {"X-Repo-Commit": sha})
        data = self.hub._read_blob(oid)
        headers = {
            "Content-Type": "application/octet-stream",
            "X-Repo-Commit": sha,
            "ETag": f'"{oid}"',
            "Accept-Ranges": "bytes",
        }
        if self.command == "HEAD":
            return self._send(200, data, headers)

        status, start, end = 200, 0, len(data) - 1
        range_header = self.headers.get("Range")
        if range_header:
            match = _RANGE_RE.match(range_header)
            if match is None or (not match.group(1) and not match.group(2)):
                raise HubError(
                    416, f"Unsupported Range {range_header!r}", headers={"Content-Range": f"bytes */{len(data)}"}
                )
            first, last = match.group(1), match.group(2)
            if first:
                start, end = int(first), min(int(last), len(data) - 1) if last else len(data) - 1
            else:
                start, end = max(len(data) - int(last), 0), len(data) - 1
            if start >= len(data) or start > end:
                raise HubError(416, "Range not satisfiable", headers={"Content-Range": f"bytes */{len(data)}"})
            status = 206
            headers["Content-Range"] = f"bytes {start}-{end}/{len(data)}"
        body = data[start : end + 1]

        rule = self.hub._take_truncation(self.request_path)
        if rule is None:
            return self._send(status, body, headers)
        keep = rule.keep if rule.keep is not None else len(data) // 2
        if rule.mode == "short":
            return self._send(status, body[: max(keep - start, 0)], headers)
        # mode == "close": announce the whole slice, send only what lies below offset `keep`, hang up.
        self.send_response(status)
        headers["Content-Length"] = str(len(body))
        for key, value in headers.items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(body[: max(keep - start, 0)])
        self.wfile.flush()
        self.close_connection = True
        try:
            self.connection.shutdown(socket.SHUT_WR)
        except OSError:
            pass
