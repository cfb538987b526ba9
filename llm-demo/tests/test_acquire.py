"""Model acquisition: download verification, checksum mismatch, expiry, offline cache hits."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from typer.testing import CliRunner

from llm_demo import acquire
from llm_demo.checksums import git_blob_sha1, sha256_file
from llm_demo.cli import app
from llm_demo.config import load_config
from llm_demo.errors import CacheError, ChecksumError
from llm_demo.events import read_events
from llm_demo.hub import HubFile, HuggingFaceHub
from llm_demo.paths import Workspace, read_json, utc_now
from llm_demo.redact import Redactor

COMMIT = "0123456789abcdef0123456789abcdef01234567"
TOKEN = "hf_SecretDownloadToken000000000000000"


class LocalHub:
    """A hub serving the files of a local directory: LFS SHA-256 for weights, git blob ids otherwise."""

    def __init__(self, root: Path, corrupt: set[str] = frozenset(), wrong_lfs: set[str] = frozenset()) -> None:
        self.root, self.corrupt, self.wrong_lfs = root, set(corrupt), set(wrong_lfs)
        self.calls: list[tuple[str, ...]] = []

    def list_files(self, repo_id: str, revision: str, token: str | None):
        self.calls.append(("list", repo_id, revision, token or ""))
        files = []
        for p in sorted(self.root.iterdir()):
            lfs = sha256_file(p) if p.suffix == ".safetensors" else None
            if p.name in self.wrong_lfs:
                lfs = "0" * 64
            files.append(HubFile(p.name, p.stat().st_size, lfs, None if lfs else git_blob_sha1(p)))
        files.append(HubFile("README.md", 3, None, "x"))  # not matched by allow_patterns
        return COMMIT, files

    def download(self, repo_id: str, commit: str, filenames: list[str], dest: Path, token: str | None) -> None:
        self.calls.append(("download", repo_id, commit, *filenames))
        for name in filenames:
            data = (self.root / name).read_bytes()
            if name in self.corrupt:
                data = data[:-1] + bytes([data[-1] ^ 0xFF])
            (dest / name).write_bytes(data)


class NoHub:
    def list_files(self, *args):
        raise AssertionError("the hub must not be contacted")

    download = list_files


def _cfg(**overrides: object):
    base = {"model.id": "org/tiny", "model.revision": "main", "cache.retention_days": 2}
    base.update(overrides)
    return load_config(None, base)


def test_download_verifies_and_records(
    workspace: Workspace, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    hub = LocalHub(tiny_model_dir)
    got = acquire.acquire(workspace, _cfg(), "r1", Redactor(), hub=hub, offline=False)
    entry = got.model
    assert got.tokenizer is entry and entry["status"] == "valid" and entry["commit"] == COMMIT
    assert Path(entry["path"]) == workspace.cache_dir / "hub" / "org--tiny" / COMMIT
    by_path = {f["path"]: f for f in entry["files"]}
    assert "README.md" not in by_path
    assert by_path["model.safetensors"]["verified_against"] == "lfs"
    assert by_path["config.json"]["verified_against"] == "git-blob"
    assert by_path["config.json"]["sha256"] == sha256_file(tiny_model_dir / "config.json")
    assert hub.calls[0] == ("list", "org/tiny", "main", TOKEN)  # the credential reaches the hub...
    manifest = read_json(workspace.state_dir / "cache-manifest.json")
    assert manifest["entries"][entry["key"]]["expires_at"] == entry["expires_at"]
    written = (workspace.state_dir / "cache-manifest.json").read_text() + (
        workspace.root / "logs" / "r1" / "download.jsonl"
    ).read_text()
    assert TOKEN not in written  # ...and nowhere else


def test_lfs_checksum_mismatch_aborts_with_exit_4(workspace: Workspace, tiny_model_dir: Path) -> None:
    with pytest.raises(ChecksumError) as info:
        acquire.acquire(
            workspace,
            _cfg(),
            "r1",
            Redactor(),
            hub=LocalHub(tiny_model_dir, wrong_lfs={"model.safetensors"}),
            offline=False,
        )
    assert info.value.exit_code == 4 and "model.safetensors" in info.value.message
    entry = next(iter(read_json(workspace.state_dir / "cache-manifest.json")["entries"].values()))
    assert entry["status"] == "invalidated" and "checksum mismatch" in entry["invalidated_reason"]
    assert not (Path(entry["path"]) / "model.safetensors").exists()
    assert [e["event"] for e in read_events(workspace.root / "logs" / "r1" / "download.jsonl")][
        -1
    ] == "checksum_mismatch"


def test_corrupted_small_file_fails_git_blob_check(workspace: Workspace, tiny_model_dir: Path) -> None:
    with pytest.raises(ChecksumError, match="config.json git-blob"):
        acquire.acquire(
            workspace, _cfg(), "r1", Redactor(), hub=LocalHub(tiny_model_dir, corrupt={"config.json"}), offline=False
        )


def test_pinned_sha256_is_enforced(workspace: Workspace, tiny_model_dir: Path) -> None:
    cfg = _cfg(**{"model.sha256": {"config.json": "f" * 64}})
    with pytest.raises(ChecksumError, match="config"):
        acquire.acquire(workspace, cfg, "r1", Redactor(), hub=LocalHub(tiny_model_dir), offline=False)


def test_offline_cache_hit_makes_no_network_call(workspace: Workspace, tiny_model_dir: Path, no_network: list) -> None:
    acquire.acquire(workspace, _cfg(), "r1", Redactor(), hub=LocalHub(tiny_model_dir), offline=False)
    # real hub client, HF_HUB_OFFLINE=1 from the fixture, sockets guarded: only the cache may answer
    got = acquire.acquire(workspace, _cfg(), "r2", Redactor())
    assert got.model["status"] == "valid"
    assert no_network == []
    events = read_events(workspace.root / "logs" / "r2" / "download.jsonl")
    hit = [e for e in events if e["event"] == "cache_hit"]
    assert len(hit) == 1 and hit[0]["offline"] is True
    assert not any(e["event"].startswith("download") for e in events)


def test_cache_hit_online_skips_hub_too(workspace: Workspace, tiny_model_dir: Path) -> None:
    acquire.acquire(workspace, _cfg(), "r1", Redactor(), hub=LocalHub(tiny_model_dir), offline=False)
    got = acquire.acquire(workspace, _cfg(), "r2", Redactor(), hub=NoHub(), offline=False)
    assert got.model["commit"] == COMMIT


def test_expired_entry_is_invalidated_and_redownloaded(workspace: Workspace, tiny_model_dir: Path) -> None:
    start = utc_now()
    acquire.acquire(workspace, _cfg(), "r1", Redactor(), hub=LocalHub(tiny_model_dir), offline=False, now=start)
    later = start + timedelta(days=3)
    with pytest.raises(CacheError) as info:
        acquire.acquire(workspace, _cfg(), "r2", Redactor(), hub=NoHub(), offline=True, now=later)
    assert info.value.exit_code == 4 and "expired" in info.value.message
    entry = next(iter(read_json(workspace.state_dir / "cache-manifest.json")["entries"].values()))
    assert entry["status"] == "invalidated" and entry["invalidated_reason"].startswith("expired")
    hub = LocalHub(tiny_model_dir)
    got = acquire.acquire(workspace, _cfg(), "r3", Redactor(), hub=hub, offline=False, now=later)
    assert got.model["status"] == "valid" and hub.calls[1][0] == "download"
    assert got.model["created_at"] != entry["created_at"]
    assert [e["event"] for e in read_events(workspace.root / "logs" / "r2" / "download.jsonl")].count(
        "cache_invalidated"
    ) == 1


def test_tampered_cache_file_is_invalidated(workspace: Workspace, tiny_model_dir: Path) -> None:
    got = acquire.acquire(workspace, _cfg(), "r1", Redactor(), hub=LocalHub(tiny_model_dir), offline=False)
    (Path(got.model["path"]) / "tokenizer.json").write_text("{}")
    with pytest.raises(CacheError, match="checksum mismatch: tokenizer.json"):
        acquire.acquire(workspace, _cfg(), "r2", Redactor(), hub=NoHub(), offline=True)


def test_local_dir_is_hashed_and_changes_recorded(workspace: Workspace, tiny_model_dir: Path, tmp_path: Path) -> None:
    import shutil

    local = tmp_path / "local-model"
    shutil.copytree(tiny_model_dir, local)
    cfg = _cfg(**{"model.local_dir": str(local)})
    first = acquire.acquire(workspace, cfg, "r1", Redactor(), hub=NoHub(), offline=True)
    assert first.model["source"] == "local" and {f["verified_against"] for f in first.model["files"]} == {"recorded"}
    (local / "generation_config.json").write_text('{"changed": true}')
    second = acquire.acquire(workspace, cfg, "r2", Redactor(), hub=NoHub(), offline=True)
    assert second.model["content_sha256"] != first.model["content_sha256"]
    assert "local_source_changed" in [
        e["event"] for e in read_events(workspace.root / "logs" / "r2" / "download.jsonl")
    ]


def test_separate_tokenizer_entry(workspace: Workspace, tiny_model_dir: Path) -> None:
    cfg = _cfg(**{"model.tokenizer": "org/tok"})
    got = acquire.acquire(workspace, cfg, "r1", Redactor(), hub=LocalHub(tiny_model_dir), offline=False)
    assert got.tokenizer["kind"] == "tokenizer" and got.tokenizer["key"] != got.model["key"]
    assert {f["path"] for f in got.tokenizer["files"]} == {"tokenizer.json", "tokenizer_config.json"}


def test_purge_removes_expired_downloads_only(workspace: Workspace, tiny_model_dir: Path) -> None:
    start = utc_now()
    got = acquire.acquire(workspace, _cfg(), "r1", Redactor(), hub=LocalHub(tiny_model_dir), offline=False, now=start)
    assert acquire.purge(workspace, now=start) == []
    assert acquire.purge(workspace, now=start + timedelta(days=3)) == [got.model["path"]]
    assert not Path(got.model["path"]).exists()
    assert next(iter(read_json(workspace.state_dir / "cache-manifest.json")["entries"].values()))["status"] == "purged"


def test_cli_offline_without_cache_exits_4(workspace: Workspace, no_network: list) -> None:
    result = CliRunner().invoke(app, ["--root", str(workspace.root), "--model-id", "org/none", "acquire"])
    assert result.exit_code == 4, result.output
    assert "offline" in result.output and no_network == []


class _FakeHubHandler:
    """Request handler factory for a loopback HTTP server speaking the hub's model-info/resolve API."""

    @staticmethod
    def make(root: Path, token: str, seen_auth: list[str]):
        import http.server
        import json as _json

        files = sorted(p for p in root.iterdir() if p.is_file())

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def _auth_ok(self) -> bool:
                seen_auth.append(self.headers.get("Authorization", ""))
                if self.headers.get("Authorization") != f"Bearer {token}":
                    self.send_response(401)
                    self.end_headers()
                    return False
                return True

            def _file(self):
                prefix = f"/org/tiny/resolve/{COMMIT}/"
                name = self.path.split("?")[0][len(prefix) :] if self.path.startswith(prefix) else None
                return next((p for p in files if p.name == name), None)

            def do_GET(self) -> None:  # noqa: N802 - http.server API
                if not self._auth_ok():
                    return
                if self.path.startswith("/api/models/org/tiny/revision/main"):
                    siblings = []
                    for p in files:
                        lfs = (
                            {"sha256": sha256_file(p), "size": p.stat().st_size, "pointerSize": 134}
                            if p.suffix == ".safetensors"
                            else None
                        )
                        siblings.append(
                            {"rfilename": p.name, "size": p.stat().st_size, "blobId": git_blob_sha1(p), "lfs": lfs}
                        )
                    body = _json.dumps({"id": "org/tiny", "sha": COMMIT, "siblings": siblings}).encode()
                    self._send(200, body, {"Content-Type": "application/json"})
                    return
                f = self._file()
                if f is None:
                    self._send(404, b"", {})
                    return
                self._send(200, f.read_bytes(), self._meta(f))

            def do_HEAD(self) -> None:  # noqa: N802 - http.server API
                if not self._auth_ok():
                    return
                f = self._file()
                if f is None:
                    self._send(404, b"", {}, head=True)
                    return
                self._send(200, f.read_bytes(), self._meta(f), head=True)

            def _meta(self, f: Path) -> dict[str, str]:
                etag = sha256_file(f) if f.suffix == ".safetensors" else git_blob_sha1(f)
                return {"X-Repo-Commit": COMMIT, "ETag": f'"{etag}"', "Content-Type": "application/octet-stream"}

            def _send(self, code: int, body: bytes, headers: dict[str, str], head: bool = False) -> None:
                self.send_response(code)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if not head:
                    self.wfile.write(body)

        return Handler


def test_real_huggingface_hub_client_against_loopback_hub(
    workspace: Workspace, tiny_model_dir: Path, no_network: list, monkeypatch: pytest.MonkeyPatch
) -> None:
    import http.server
    import threading

    from huggingface_hub import constants

    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    seen_auth: list[str] = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _FakeHubHandler.make(tiny_model_dir, TOKEN, seen_auth))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    # what HF_ENDPOINT=<mirror> sets when huggingface_hub is imported
    mirror = f"http://127.0.0.1:{server.server_address[1]}"
    monkeypatch.setattr(constants, "ENDPOINT", mirror)
    monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", mirror + "/{repo_id}/resolve/{revision}/{filename}")
    monkeypatch.setattr(constants, "AGENT_HARNESSES_PATH", str(workspace.root / "agent-harnesses.json"))
    try:
        got = acquire.acquire(workspace, _cfg(), "r1", Redactor(), hub=HuggingFaceHub(), offline=False)
    finally:
        server.shutdown()
        server.server_close()
    assert got.model["commit"] == COMMIT and no_network == []
    assert {f["verified_against"] for f in got.model["files"]} == {"lfs", "git-blob"}
    for f in got.model["files"]:
        assert sha256_file(Path(got.model["path"]) / f["path"]) == sha256_file(tiny_model_dir / f["path"])
    assert seen_auth and set(seen_auth) <= {f"Bearer {TOKEN}", ""}  # "" = the agent-registry probe
    assert seen_auth.count(f"Bearer {TOKEN}") >= 1 + len(got.model["files"])
    assert TOKEN not in (workspace.state_dir / "cache-manifest.json").read_text()
