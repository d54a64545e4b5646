"""Fixtures that point the real ``huggingface_hub`` client at loopback hubs.

* ``hub_server``: a ``HubServer`` (``hubserver.py``) plus a client environment aimed at it.
* ``hf_offline``: a switch that puts this process's client into offline mode (``HF_HUB_OFFLINE=1``).
* ``olah_server``: an `olah <https://github.com/vtuber-plan/olah>`_ mirror serving git repos that the test
  publishes by committing into local git repositories (skipped when olah is not installed).

``huggingface_hub`` reads its environment once, at import, into ``huggingface_hub.constants`` (and a few
modules copy values at import too), so setting environment variables is not enough: ``point_client_at``
sets the variables (for subprocesses and for code that reads ``os.environ``) *and* patches every copy
that the download, upload and info code paths read. Everything is undone by ``monkeypatch`` at teardown.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import pytest

if TYPE_CHECKING:
    from huggingface_hub import HfApi

_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:  # makes ``import hubserver`` work under --import-mode=importlib
    sys.path.insert(0, _HERE)

from hubserver import HubServer  # noqa: E402

#: Environment variables that would otherwise leak the developer's own Hub set-up into a test.
_CLEARED_ENV = (
    "HF_HUB_OFFLINE",
    "TRANSFORMERS_OFFLINE",
    "HUGGING_FACE_HUB_TOKEN",
    "HF_OIDC_RESOURCE",  # an OIDC token exchange would take precedence over HF_TOKEN
    "HUGGINGFACE_CO_STAGING",
    "HUGGINGFACE_HUB_CACHE",
    "HUGGINGFACE_ASSETS_CACHE",
    "HF_HUB_DISABLE_IMPLICIT_TOKEN",
    "HF_HUB_ENABLE_HF_TRANSFER",
    "HF_HUB_ETAG_TIMEOUT",
    "HF_HUB_DOWNLOAD_TIMEOUT",
)


@dataclass
class HubFixture:
    """What ``hub_server`` (and ``olah_server``) yield.

    Attributes:
        endpoint: ``"http://127.0.0.1:<port>"``, also in ``HF_ENDPOINT`` and ``huggingface_hub.constants.ENDPOINT``.
        cache_dir: the empty Hub cache of this test (``HF_HUB_CACHE``).
        hf_home: ``HF_HOME`` of this test (token file, xet cache, ...); ``cache_dir`` is ``hf_home / "hub"``.
        token: the token the client sends (``HF_TOKEN``), accepted by the server for writes.
        server: the ``HubServer`` (None for olah).
    """

    endpoint: str
    cache_dir: Path
    hf_home: Path
    token: str
    server: HubServer | None = None

    def api(self, token: str | bool | None = None) -> HfApi:
        """A fresh ``HfApi`` on this endpoint (``token=None`` uses ``HF_TOKEN``, ``False`` sends none)."""
        from huggingface_hub import HfApi

        return HfApi(endpoint=self.endpoint, token=token)


def point_client_at(monkeypatch: pytest.MonkeyPatch, endpoint: str, hf_home: Path, token: str) -> Path:
    """Aim this process's ``huggingface_hub`` at ``endpoint`` with an empty cache under ``hf_home``.

    Returns the Hub cache folder. Patches, besides the environment:

    * ``constants.ENDPOINT`` and ``constants.HUGGINGFACE_CO_URL_TEMPLATE`` (``hf_hub_url``/``hf_hub_download``
      build file URLs from the template, which was formatted from ``HF_ENDPOINT`` at import);
    * ``huggingface_hub.hf_api.api.endpoint``: the module-level ``HfApi`` behind the functions
      ``huggingface_hub.upload_folder``, ``model_info``, ``create_repo``, ... was built at import;
    * the cache paths (``HF_HOME``, ``HF_HUB_CACHE``, ``HF_ASSETS_CACHE``, ``HF_XET_CACHE``, token files) and the
      copies made by ``utils._cache_manager`` (``scan_cache_dir``) and ``utils._cache_assets``;
    * ``HF_HUB_OFFLINE=False``, telemetry off, progress bars off;
    * the "Hub hosts" sets used to decide which redirects keep the ``Authorization`` header;
    * the shared ``httpx2.Client`` is closed so no pooled connection to a previous server is reused.
    """
    import huggingface_hub.hf_api as hf_api
    import huggingface_hub.utils._cache_assets as cache_assets
    import huggingface_hub.utils._cache_manager as cache_manager
    import huggingface_hub.utils._http as hf_http
    from huggingface_hub import constants

    # Not `import huggingface_hub.utils.tqdm as ...`: `huggingface_hub.utils.tqdm` is also a class that
    # shadows the module of the same name.
    hf_tqdm = importlib.import_module("huggingface_hub.utils.tqdm")

    hf_home = Path(hf_home)
    cache_dir = hf_home / "hub"
    assets_dir = hf_home / "assets"
    xet_dir = hf_home / "xet"
    token_path = hf_home / "token"
    cache_dir.mkdir(parents=True, exist_ok=True)

    for name in _CLEARED_ENV:
        monkeypatch.delenv(name, raising=False)
    env = {
        "HF_ENDPOINT": endpoint,
        "HF_HOME": str(hf_home),
        "HF_HUB_CACHE": str(cache_dir),
        "HF_ASSETS_CACHE": str(assets_dir),
        "HF_XET_CACHE": str(xet_dir),
        "HF_TOKEN_PATH": str(token_path),
        "HF_TOKEN": token,
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "HF_HUB_DISABLE_PROGRESS_BARS": "1",
        "HF_HUB_DISABLE_UPDATE_CHECK": "1",
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)

    host = (urlsplit(endpoint).hostname or "").lower()
    patched = {
        "ENDPOINT": endpoint,
        "HUGGINGFACE_CO_URL_TEMPLATE": endpoint + "/{repo_id}/resolve/{revision}/{filename}",
        "HF_URL_HOSTS": frozenset(getattr(constants, "HF_URL_HOSTS", frozenset()) | {host}),  # huggingface_hub >= 1.18
        "HF_HOME": str(hf_home),
        "HF_HUB_CACHE": str(cache_dir),
        "HUGGINGFACE_HUB_CACHE": str(cache_dir),
        "HF_ASSETS_CACHE": str(assets_dir),
        "HUGGINGFACE_ASSETS_CACHE": str(assets_dir),
        "HF_XET_CACHE": str(xet_dir),
        "HF_TOKEN_PATH": str(token_path),
        "HF_STORED_TOKENS_PATH": str(hf_home / "stored_tokens"),
        "HF_HUB_OFFLINE": False,
        "HF_HUB_DISABLE_TELEMETRY": True,
        "HF_HUB_DISABLE_IMPLICIT_TOKEN": False,
        "HF_HUB_DISABLE_PROGRESS_BARS": True,
        "HF_HUB_DISABLE_UPDATE_CHECK": True,
    }
    for name, value in patched.items():
        monkeypatch.setattr(constants, name, value, raising=False)  # older clients lack some (the floors job runs them)
    monkeypatch.setattr(hf_api.api, "endpoint", endpoint)
    monkeypatch.setattr(cache_manager, "HF_HUB_CACHE", str(cache_dir))
    monkeypatch.setattr(cache_assets, "HF_ASSETS_CACHE", str(assets_dir))
    monkeypatch.setattr(hf_tqdm, "HF_HUB_DISABLE_PROGRESS_BARS", True)
    if hasattr(hf_http, "_HUB_ORIGINS"):  # huggingface_hub >= 2.2 sends the token to these origins only
        monkeypatch.setattr(hf_http, "_HUB_ORIGINS", frozenset(hf_http._HUB_ORIGINS | {hf_http._url_origin(endpoint)}))

    hf_http.close_session()
    return cache_dir


def _set_offline(monkeypatch: pytest.MonkeyPatch, enabled: bool) -> None:
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1" if enabled else "0")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", enabled)


@pytest.fixture
def hub_server(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[HubFixture]:
    """A running ``HubServer`` with this process's client aimed at it (see ``point_client_at``).

    The server accepts writes only with ``HubFixture.token`` (sent by the client from ``HF_TOKEN``).
    """
    server = HubServer(tmp_path / "hub-server-root")
    server.start()
    try:
        hf_home = tmp_path / "hf-home"
        cache_dir = point_client_at(monkeypatch, server.endpoint, hf_home, server.token)
        yield HubFixture(
            endpoint=server.endpoint, cache_dir=cache_dir, hf_home=hf_home, token=server.token, server=server
        )
    finally:
        from huggingface_hub.utils._http import close_session

        close_session()
        server.stop()


@pytest.fixture
def hf_offline(monkeypatch: pytest.MonkeyPatch) -> Callable[..., None]:
    """``hf_offline(enabled=True)`` switches the client of this process to offline mode and back.

    Sets ``HF_HUB_OFFLINE`` and ``huggingface_hub.constants.HF_HUB_OFFLINE`` (what ``is_offline_mode()`` and the
    request hook read at call time). Offline, every HTTP call raises ``OfflineModeIsEnabled`` before leaving the
    process, ``hf_hub_download``/``snapshot_download`` return cached files and raise ``LocalEntryNotFoundError``
    for anything not cached. Restored at teardown.
    """

    def switch(enabled: bool = True) -> None:
        _set_offline(monkeypatch, enabled)

    return switch


# ---------------------------------------------------------------------- olah


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _git(cwd: Path, *args: str) -> str:
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "lossreg tests",
        "GIT_AUTHOR_EMAIL": "tests@lossreg.invalid",
        "GIT_COMMITTER_NAME": "lossreg tests",
        "GIT_COMMITTER_EMAIL": "tests@lossreg.invalid",
        "GIT_CONFIG_NOSYSTEM": "1",
        "HOME": str(cwd),  # no user-level git config (hooks, signing, templates)
    }
    result = subprocess.run(["git", *args], cwd=cwd, env=env, capture_output=True, text=True, check=True)
    return result.stdout.strip()


@dataclass
class OlahMirror:
    """A running olah process serving the git repositories under ``mirrors_path`` (offline, no upstream)."""

    endpoint: str
    mirrors_path: Path
    process: subprocess.Popen
    log_file: Path

    def git_path(self, repo_id: str, repo_type: str = "model") -> Path:
        """Where olah looks for ``repo_id``: ``<mirrors_path>/<repo_type>s/<namespace>/<name>`` (a git work tree)."""
        return self.mirrors_path / f"{repo_type}s" / repo_id

    def publish(
        self,
        repo_id: str,
        files: Mapping[str, bytes | str],
        *,
        deletions: tuple[str, ...] = (),
        message: str = "publish",
        repo_type: str = "model",
    ) -> str:
        """Commit ``files`` (path -> content) and ``deletions`` on branch ``main`` of ``repo_id``; returns the sha.

        The git repository is created on first use. olah reads it on every request, so the commit is visible
        at once (``main`` moves; older shas stay resolvable).
        """
        work = self.git_path(repo_id, repo_type)
        if not (work / ".git").is_dir():
            work.mkdir(parents=True, exist_ok=True)
            _git(work, "init", "-q", "-b", "main")
        for path in deletions:
            _git(work, "rm", "-q", "--", path)
        for path, content in files.items():
            target = work / path
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(content.encode() if isinstance(content, str) else bytes(content))
            _git(work, "add", "--", path)
        _git(work, "commit", "-q", "--allow-empty", "-m", message)
        return _git(work, "rev-parse", "HEAD")

    def log_tail(self, n: int = 40) -> str:
        """The last ``n`` lines of olah's stdout/stderr (for failure messages)."""
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""


@dataclass
class OlahFixture(HubFixture):
    """What ``olah_server`` yields: a ``HubFixture`` (client aimed at olah) plus the ``mirror`` to publish to."""

    mirror: OlahMirror | None = None

    def publish(self, repo_id: str, files: Mapping[str, bytes | str], **kwargs) -> str:
        """Shortcut for ``mirror.publish``."""
        assert self.mirror is not None
        return self.mirror.publish(repo_id, files, **kwargs)


@pytest.fixture(scope="session")
def _olah_process(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OlahMirror]:
    """One olah process per session, offline, its upstream a dead loopback port, serving ``mirrors/``."""
    if importlib.util.find_spec("olah") is None:
        pytest.skip("olah is not installed: pip install -e '.[dev]' (it is in the dev extra)")
    if shutil.which("git") is None:
        pytest.skip("git is not on PATH: olah mirrors are git repositories")
    root = tmp_path_factory.mktemp("olah")
    mirrors = root / "mirrors"
    mirrors.mkdir()
    port, dead_port = _free_port(), _free_port()  # nothing listens on dead_port once the probe socket closes
    config = root / "olah.toml"
    config.write_text(
        "[basic]\n"
        'host = "127.0.0.1"\n'
        f"port = {port}\n"
        f'repos-path = "{root / "repos"}"\n'
        'hf-scheme = "http"\n'
        f'hf-netloc = "127.0.0.1:{dead_port}"\n'
        f'hf-lfs-netloc = "127.0.0.1:{dead_port}"\n'
        'mirror-scheme = "http"\n'
        f'mirror-netloc = "127.0.0.1:{port}"\n'
        f'mirror-lfs-netloc = "127.0.0.1:{port}"\n'
        f'mirrors-path = ["{mirrors}"]\n'
        "[accessibility]\n"
        # Offline is required: online, olah checks every repo upstream first and answers 504 when it is down.
        "offline = true\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGING"))}
    log_file = root / "olah.log"
    with open(log_file, "wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "olah.server", "--config", str(config), "--log-path", str(root / "logs")],
            cwd=root,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    mirror = OlahMirror(f"http://127.0.0.1:{port}", mirrors, process, log_file)
    try:
        deadline = time.monotonic() + 60
        while True:
            if process.poll() is not None:
                pytest.fail(f"olah exited with {process.returncode} at start-up:\n{mirror.log_tail()}")
            try:
                urllib.request.urlopen(f"{mirror.endpoint}/api/models/probe/probe/revision/main", timeout=2)
                break
            except urllib.error.HTTPError:  # any HTTP answer (401 here) means it is serving
                break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail(f"olah did not answer within 60 s:\n{mirror.log_tail()}")
                time.sleep(0.1)
        yield mirror
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


@pytest.fixture
def olah_server(_olah_process: OlahMirror, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[OlahFixture]:
    """The session's olah mirror with this process's client aimed at it and an empty cache for this test.

    Publish with ``olah_server.publish("ns/name", {"config.json": b"..."})`` (a git commit on ``main``); use
    a repo id unique to the test, since the olah process and its mirrors are shared by the session. olah
    ignores tokens in this set-up. Known olah 0.5.x limits (offline mirror mode): ``model_info``/``repo_info``
    *without* a revision answer ``RepositoryNotFoundError`` (pass ``revision="main"``; ``snapshot_download``
    and ``hf_hub_download`` always do), and a missing file or revision answers 401 ``RepoNotFound``, i.e.
    ``RepositoryNotFoundError``, rather than ``RemoteEntryNotFoundError``/``RevisionNotFoundError``.
    """
    hf_home = tmp_path / "hf-home-olah"
    token = "hf_olah_dummy_token"
    cache_dir = point_client_at(monkeypatch, _olah_process.endpoint, hf_home, token)
    try:
        yield OlahFixture(
            endpoint=_olah_process.endpoint, cache_dir=cache_dir, hf_home=hf_home, token=token, mirror=_olah_process
        )
    finally:
        from huggingface_hub.utils._http import close_session

        close_session()
