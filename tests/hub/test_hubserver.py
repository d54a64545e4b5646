"""The real ``huggingface_hub`` client against the loopback ``HubServer`` and an offline olah mirror.

These tests pin down what the fixtures in ``conftest.py`` guarantee to library tests: uploads, metadata,
downloads, revision pinning, offline mode, error mapping and truncated downloads all go through the
unmodified client over real HTTP on 127.0.0.1.
"""

from __future__ import annotations

import json
import os
import random
from pathlib import Path
from types import SimpleNamespace

import httpx2
import pytest
from hubserver import git_blob_sha
from huggingface_hub import HfApi, hf_hub_download, snapshot_download
from huggingface_hub import constants as hf_constants
from huggingface_hub import file_download as hf_file_download
from huggingface_hub.errors import (
    EntryNotFoundError,
    HfHubHTTPError,
    LocalEntryNotFoundError,
    RemoteEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from huggingface_hub.utils import _http as hf_http

REPO = "lossreg-tests/tiny-detector"


def _payload(seed: int = 0) -> dict[str, bytes]:
    """A small JSON config, a text file in a subfolder and a few KB of random binary weights."""
    rng = random.Random(seed)
    return {
        "config.json": json.dumps({"arch": "retinanet", "num_classes": 3, "seed": seed}, indent=2).encode(),
        "docs/notes.txt": f"trained with seed {seed}\n".encode(),
        "weights.bin": bytes(rng.getrandbits(8) for _ in range(6000)),
    }


def _write_folder(folder: Path, files: dict[str, bytes]) -> Path:
    for rel, data in files.items():
        target = folder / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
    return folder


def _storage(cache_dir: Path, repo_id: str = REPO) -> Path:
    return Path(cache_dir) / ("models--" + repo_id.replace("/", "--"))


def _upload(api: HfApi, folder: Path, repo_id: str = REPO, **kwargs) -> str:
    api.create_repo(repo_id, exist_ok=True)
    return api.upload_folder(repo_id=repo_id, folder_path=folder, **kwargs).oid


# ---------------------------------------------------------------------- repos and uploads


def test_create_repo_exist_ok_and_conflict(hub_server) -> None:
    api = hub_server.api()
    url = api.create_repo(REPO, exist_ok=True, private=False)
    again = api.create_repo(REPO, exist_ok=True)
    assert url.repo_id == again.repo_id == REPO
    assert str(url) == f"{hub_server.endpoint}/{REPO}"
    with pytest.raises(HfHubHTTPError) as err:
        api.create_repo(REPO)  # exist_ok=False: the 409 surfaces
    assert err.value.response.status_code == 409
    assert api.repo_exists(REPO) and not api.repo_exists("lossreg-tests/other")
    assert hub_server.server.requests.count(("POST", "/api/repos/create")) == 3
    assert hub_server.server.write_authorizations == [f"Bearer {hub_server.token}"] * 3


def test_writes_without_token_are_refused(hub_server) -> None:
    with pytest.raises(HfHubHTTPError) as err:
        hub_server.api(token=False).create_repo(REPO)
    assert err.value.response.status_code == 401
    assert hub_server.server.write_authorizations == [None]
    assert not hub_server.server.repo_exists(REPO)


@pytest.mark.parametrize("xet", [True, False], ids=["xet-pipeline", "legacy-create-commit"])
def test_upload_folder_one_commit_then_info_and_listing(hub_server, tmp_path, monkeypatch, xet: bool) -> None:
    # With hf_xet installed upload_folder takes the streamed pipeline; HF_HUB_DISABLE_XET takes create_commit.
    monkeypatch.setattr(hf_constants, "HF_HUB_DISABLE_XET", not xet)
    files = _payload()
    api = hub_server.api()
    api.create_repo(REPO, exist_ok=True)
    hub_server.server.clear_requests()

    info = api.upload_folder(repo_id=REPO, folder_path=_write_folder(tmp_path / "out", files), commit_message="v1")

    writes = [r for r in hub_server.server.requests if r[0] == "POST"]
    assert writes == [("POST", f"/api/models/{REPO}/preupload/main"), ("POST", f"/api/models/{REPO}/commit/main")]
    assert hub_server.server.write_authorizations == [f"Bearer {hub_server.token}"] * 2
    assert info.oid == hub_server.server.resolve(REPO, "main")
    assert info.commit_url == f"{hub_server.endpoint}/{REPO}/commit/{info.oid}"

    model = api.model_info(REPO, files_metadata=True)
    assert model.id == REPO and model.sha == info.oid and model.private is False
    siblings = {s.rfilename: s for s in model.siblings}
    assert set(siblings) == {".gitattributes", *files}
    for path, data in files.items():
        assert siblings[path].size == len(data)
        assert siblings[path].blob_id == git_blob_sha(data)
    assert api.list_repo_files(REPO) == sorted([".gitattributes", *files])
    top = {entry.path: type(entry).__name__ for entry in api.list_repo_tree(REPO)}
    assert top == {
        ".gitattributes": "RepoFile", "config.json": "RepoFile", "docs": "RepoFolder", "weights.bin": "RepoFile"
    }
    assert [e.path for e in api.list_repo_tree(REPO, path_in_repo="docs")] == ["docs/notes.txt"]
    for path, data in files.items():
        assert hub_server.server.read_file(REPO, path) == data
    assert [c.title for c in api.list_repo_commits(REPO)] == ["v1", "initial commit"]


def test_unchanged_upload_makes_no_commit(hub_server, tmp_path) -> None:
    folder = _write_folder(tmp_path / "out", _payload())
    api = hub_server.api()
    first = _upload(api, folder)
    hub_server.server.clear_requests()
    second = api.upload_folder(repo_id=REPO, folder_path=folder)
    # The preupload answer carries each file's oid; the client leaves identical files out: no commit at all.
    assert second.oid == first
    assert ("POST", f"/api/models/{REPO}/commit/main") not in hub_server.server.requests
    assert len(api.list_repo_commits(REPO)) == 2


# ---------------------------------------------------------------------- downloads


def test_hf_hub_download_each_file_then_from_cache(hub_server, tmp_path) -> None:
    files = _payload()
    sha = _upload(hub_server.api(), _write_folder(tmp_path / "out", files))
    hub_server.server.clear_requests()
    for path, data in files.items():
        local = hf_hub_download(REPO, path)
        assert Path(local).read_bytes() == data
        assert local == str(_storage(hub_server.cache_dir) / "snapshots" / sha / path)
        blob = _storage(hub_server.cache_dir) / "blobs" / git_blob_sha(data)
        assert Path(local).resolve() == blob.resolve()
    assert (_storage(hub_server.cache_dir) / "refs" / "main").read_text() == sha
    heads = [p for m, p in hub_server.server.requests if m == "HEAD"]
    gets = [p for m, p in hub_server.server.requests if m == "GET"]
    assert sorted(heads) == sorted(gets) == sorted(f"/{REPO}/resolve/main/{p}" for p in files)

    hub_server.server.clear_requests()
    assert Path(hf_hub_download(REPO, "config.json")).read_bytes() == files["config.json"]
    assert hub_server.server.requests == [("HEAD", f"/{REPO}/resolve/main/config.json")]  # no second GET
    hub_server.server.clear_requests()
    hf_hub_download(REPO, "config.json", revision=sha)
    assert hub_server.server.requests == []  # a cached commit sha needs no request at all


def test_revision_pinning_branches_and_tags(hub_server, tmp_path) -> None:
    api = hub_server.api()
    v1 = _payload(1)
    v2 = {path: data for path, data in _payload(2).items() if not path.startswith("docs/")}
    sha1 = _upload(api, _write_folder(tmp_path / "v1", v1), commit_message="v1")
    sha2 = _upload(api, _write_folder(tmp_path / "v2", v2), commit_message="v2", delete_patterns=["docs/*"])
    assert sha1 != sha2 and hub_server.server.resolve(REPO) == sha2

    assert Path(hf_hub_download(REPO, "config.json", revision=sha1)).read_bytes() == v1["config.json"]
    assert Path(hf_hub_download(REPO, "config.json")).read_bytes() == v2["config.json"]
    assert Path(hf_hub_download(REPO, "weights.bin", revision=sha1)).read_bytes() == v1["weights.bin"]
    assert Path(hf_hub_download(REPO, "docs/notes.txt", revision=sha1)).read_bytes() == v1["docs/notes.txt"]
    with pytest.raises(RemoteEntryNotFoundError):
        hf_hub_download(REPO, "docs/notes.txt")  # deleted by the second commit
    assert api.model_info(REPO, revision=sha1).sha == sha1
    assert "docs/notes.txt" in api.list_repo_files(REPO, revision=sha1)
    assert "docs/notes.txt" not in api.list_repo_files(REPO)

    api.create_tag(REPO, tag="v1.0", revision=sha1)
    api.create_branch(REPO, branch="dev", revision=sha1)
    sha3 = api.upload_folder(repo_id=REPO, folder_path=_write_folder(tmp_path / "v3", _payload(3)), revision="dev").oid
    refs = api.list_repo_refs(REPO)
    assert {b.name: b.target_commit for b in refs.branches} == {"main": sha2, "dev": sha3}
    assert {t.name: t.target_commit for t in refs.tags} == {"v1.0": sha1}
    assert Path(hf_hub_download(REPO, "config.json", revision="v1.0")).read_bytes() == v1["config.json"]
    assert Path(hf_hub_download(REPO, "config.json", revision="dev")).read_bytes() == _payload(3)["config.json"]


def test_snapshot_download_into_fresh_cache(hub_server, tmp_path) -> None:
    files = _payload()
    sha = _upload(hub_server.api(), _write_folder(tmp_path / "out", files))
    fresh = tmp_path / "fresh-cache"
    folder = Path(snapshot_download(REPO, cache_dir=fresh))
    assert folder == _storage(fresh) / "snapshots" / sha
    on_disk = {str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()}
    assert on_disk == {".gitattributes", *files}
    for path, data in files.items():
        assert (folder / path).read_bytes() == data
    assert not any(hub_server.cache_dir.iterdir())  # the fixture's default cache was not touched

    only_json = Path(snapshot_download(REPO, cache_dir=tmp_path / "other", allow_patterns=["*.json"]))
    assert sorted(p.name for p in only_json.rglob("*") if p.is_file()) == ["config.json"]


def test_server_side_commit_is_downloadable(hub_server) -> None:
    # Publishing without the client (HubServer.commit) is the quick way to give a library test a repo.
    sha = hub_server.server.commit(REPO, {"config.json": b"{}", "a/b.txt": "text"}, message="fixture")
    assert Path(hf_hub_download(REPO, "a/b.txt")).read_text() == "text"
    assert hub_server.api().model_info(REPO).sha == sha


# ---------------------------------------------------------------------- offline mode and errors


def test_offline_mode_serves_cached_files_only(hub_server, hf_offline, tmp_path) -> None:
    files = _payload()
    _upload(hub_server.api(), _write_folder(tmp_path / "out", files))
    online = hf_hub_download(REPO, "config.json")
    hub_server.server.clear_requests()

    hf_offline(True)
    assert hf_hub_download(REPO, "config.json") == online
    with pytest.raises(LocalEntryNotFoundError):
        hf_hub_download(REPO, "weights.bin")
    with pytest.raises(LocalEntryNotFoundError):
        snapshot_download("lossreg-tests/never-downloaded")
    # Without a complete snapshot_download first, offline snapshot_download returns the partial folder as is.
    partial = Path(snapshot_download(REPO))
    assert sorted(p.name for p in partial.iterdir()) == ["config.json"]
    assert hub_server.server.requests == []  # offline: nothing left the process

    hf_offline(False)
    full = snapshot_download(REPO)
    hf_offline(True)
    assert snapshot_download(REPO) == full
    assert Path(hf_hub_download(REPO, "weights.bin")).read_bytes() == files["weights.bin"]


def test_errors_map_to_hub_exceptions(hub_server, tmp_path) -> None:
    sha = _upload(hub_server.api(), _write_folder(tmp_path / "out", _payload()))
    api = hub_server.api()
    with pytest.raises(RepositoryNotFoundError):
        hf_hub_download("lossreg-tests/missing", "config.json")
    with pytest.raises(RepositoryNotFoundError):
        api.model_info("lossreg-tests/missing")
    with pytest.raises(RevisionNotFoundError):
        hf_hub_download(REPO, "config.json", revision="no-such-branch")
    with pytest.raises(RemoteEntryNotFoundError) as err:
        hf_hub_download(REPO, "missing.json")
    assert isinstance(err.value, EntryNotFoundError) and err.value.response.status_code == 404
    # The miss is cached against the commit reported in X-Repo-Commit.
    assert (_storage(hub_server.cache_dir) / ".no_exist" / sha / "missing.json").is_file()
    assert api.file_exists(REPO, "config.json") and not api.file_exists(REPO, "missing.json")


def test_unreachable_hub_falls_back_to_the_cache(hub_server, tmp_path, monkeypatch) -> None:
    files = _payload()
    _upload(hub_server.api(), _write_folder(tmp_path / "out", files))
    cached = hf_hub_download(REPO, "config.json")
    hub_server.server.stop()  # connection refused from now on
    # An uncached file makes the client retry the HEAD with backoff (1+2+4+8+8 s): skip the sleeps.
    monkeypatch.setattr(hf_http, "time", SimpleNamespace(sleep=lambda seconds: None))
    assert hf_hub_download(REPO, "config.json") == cached
    with pytest.raises(LocalEntryNotFoundError) as err:
        hf_hub_download(REPO, "weights.bin")
    assert isinstance(err.value.__cause__, httpx2.ConnectError)


def test_private_repo_needs_the_token(hub_server) -> None:
    hub_server.api().create_repo(REPO, private=True)
    hub_server.server.commit(REPO, {"config.json": b"{}"})
    assert hub_server.api().model_info(REPO).private is True
    with pytest.raises(RepositoryNotFoundError):
        hf_hub_download(REPO, "config.json", token=False)
    assert Path(hf_hub_download(REPO, "config.json")).read_bytes() == b"{}"


# ---------------------------------------------------------------------- truncated downloads


def _no_partial_blob(cache_dir: Path, data: bytes, sha: str, path: str) -> None:
    storage = _storage(cache_dir)
    assert not (storage / "blobs" / git_blob_sha(data)).exists()
    assert not (storage / "snapshots" / sha / path).exists()
    assert not list((storage / "blobs").glob("*.incomplete")) if (storage / "blobs").exists() else True


def test_one_interrupted_download_is_resumed(hub_server, tmp_path, monkeypatch) -> None:
    data = _payload()["weights.bin"]
    _upload(hub_server.api(), _write_folder(tmp_path / "out", _payload()))
    monkeypatch.setattr(hf_file_download, "time", SimpleNamespace(sleep=lambda seconds: None))  # 1 s before retry
    hub_server.server.truncate_next_download("/weights.bin", keep=1000)
    hub_server.server.clear_requests()
    assert Path(hf_hub_download(REPO, "weights.bin")).read_bytes() == data
    gets = [r for r in hub_server.server.records if r.method == "GET"]
    # The client retried after the cut. It asks for the whole file again (no Range header): httpx2 buffers
    # up to DOWNLOAD_CHUNK_SIZE (10 MB) before yielding, so the 1000 bytes received were never counted.
    assert [r.path for r in gets] == [f"/{REPO}/resolve/main/weights.bin"] * 2
    assert [r.headers.get("range") for r in gets] == [None, None]


def test_persistently_truncated_download_raises_and_caches_nothing(hub_server, tmp_path, monkeypatch) -> None:
    files = _payload()
    sha = _upload(hub_server.api(), _write_folder(tmp_path / "out", files))
    monkeypatch.setattr(hf_file_download, "time", SimpleNamespace(sleep=lambda seconds: None))  # 5 x 1 s retries
    hub_server.server.truncate_downloads("/weights.bin", keep=1000, times=None)
    with pytest.raises(httpx2.RemoteProtocolError):
        hf_hub_download(REPO, "weights.bin")
    _no_partial_blob(hub_server.cache_dir, files["weights.bin"], sha, "weights.bin")
    gets = [r for r in hub_server.server.records if r.method == "GET" and r.path.endswith("/weights.bin")]
    assert len(gets) == 6  # first try + 5 resumes

    hub_server.server._truncations.clear()
    assert Path(hf_hub_download(REPO, "weights.bin")).read_bytes() == files["weights.bin"]


def test_short_body_fails_the_size_check(hub_server, tmp_path) -> None:
    files = _payload()
    sha = _upload(hub_server.api(), _write_folder(tmp_path / "out", files))
    hub_server.server.truncate_downloads("/weights.bin", keep=100, mode="short")
    with pytest.raises(OSError, match="Consistency check failed"):
        hf_hub_download(REPO, "weights.bin")
    _no_partial_blob(hub_server.cache_dir, files["weights.bin"], sha, "weights.bin")


# ---------------------------------------------------------------------- olah mirror


def test_olah_mirror_downloads_git_published_repo(olah_server, tmp_path) -> None:
    repo = "lossreg-tests/olah-download"
    v1, v2 = _payload(1), _payload(2)
    sha1 = olah_server.publish(repo, v1, message="v1")
    sha2 = olah_server.publish(repo, {"config.json": v2["config.json"]}, message="v2")
    assert sha1 != sha2

    api = HfApi()  # the fixture pointed HF_ENDPOINT and the constants at olah
    assert api.endpoint == olah_server.endpoint
    info = api.model_info(repo, revision="main")
    assert info.sha == sha2 and sorted(s.rfilename for s in info.siblings) == sorted(v1)
    assert sorted(api.list_repo_files(repo)) == sorted(v1)
    assert Path(hf_hub_download(repo, "config.json")).read_bytes() == v2["config.json"]
    assert Path(hf_hub_download(repo, "config.json", revision=sha1)).read_bytes() == v1["config.json"]
    for path in ("weights.bin", "docs/notes.txt"):
        local = hf_hub_download(repo, path)
        assert Path(local).read_bytes() == v1[path]
        assert local == str(_storage(olah_server.cache_dir, repo) / "snapshots" / sha2 / path)


def test_olah_mirror_snapshot_download(olah_server, tmp_path) -> None:
    repo = "lossreg-tests/olah-snapshot"
    files = _payload(5)
    sha = olah_server.publish(repo, files)
    folder = Path(snapshot_download(repo, cache_dir=tmp_path / "fresh"))
    assert folder == _storage(tmp_path / "fresh", repo) / "snapshots" / sha
    assert {str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()} == set(files)
    for path, data in files.items():
        assert (folder / path).read_bytes() == data


def test_olah_mirror_known_limits(olah_server) -> None:
    repo = "lossreg-tests/olah-limits"
    olah_server.publish(repo, {"config.json": b"{}"})
    api = HfApi()
    with pytest.raises(RepositoryNotFoundError):
        api.model_info(repo)  # offline olah resolves no default revision for a local mirror
    with pytest.raises(RepositoryNotFoundError):
        hf_hub_download(repo, "missing.json")  # olah answers a missing file with 401 RepoNotFound
    with pytest.raises(RepositoryNotFoundError):
        hf_hub_download(repo, "config.json", revision="no-such-branch")
    with pytest.raises(RepositoryNotFoundError):
        hf_hub_download("lossreg-tests/not-mirrored", "config.json")
    assert os.environ["HF_ENDPOINT"] == olah_server.endpoint
