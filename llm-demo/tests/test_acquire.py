"""Model acquisition: download verification, checksum mismatch, expiry, offline cache hits."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from typer.testing import CliRunner

from llm_demo import acquire
from llm_demo.acquire import HubFile, git_blob_sha1, sha256_file
from llm_demo.cli import app
from llm_demo.config import load_config
from llm_demo.errors import CacheError, ChecksumError
from llm_demo.events import read_events
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


def test_download_verifies_and_records(workspace: Workspace, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
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
    written = (workspace.state_dir / "cache-manifest.json").read_text() + (workspace.root / "logs" / "r1" / "download.jsonl").read_text()
    assert TOKEN not in written  # ...and nowhere else


def test_lfs_checksum_mismatch_aborts_with_exit_4(workspace: Workspace, tiny_model_dir: Path) -> None:
    with pytest.raises(ChecksumError) as info:
        acquire.acquire(workspace, _cfg(), "r1", Redactor(), hub=LocalHub(tiny_model_dir, wrong_lfs={"model.safetensors"}), offline=False)
    assert info.value.exit_code == 4 and "model.safetensors" in info.value.message
    entry = next(iter(read_json(workspace.state_dir / "cache-manifest.json")["entries"].values()))
    assert entry["status"] == "invalidated" and "checksum mismatch" in entry["invalidated_reason"]
    assert not (Path(entry["path"]) / "model.safetensors").exists()
    assert [e["event"] for e in read_events(workspace.root / "logs" / "r1" / "download.jsonl")][-1] == "checksum_mismatch"


def test_corrupted_small_file_fails_git_blob_check(workspace: Workspace, tiny_model_dir: Path) -> None:
    with pytest.raises(ChecksumError, match="config.json git-blob"):
        acquire.acquire(workspace, _cfg(), "r1", Redactor(), hub=LocalHub(tiny_model_dir, corrupt={"config.json"}), offline=False)


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
    assert [e["event"] for e in read_events(workspace.root / "logs" / "r2" / "download.jsonl")].count("cache_invalidated") == 1


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
    assert "local_source_changed" in [e["event"] for e in read_events(workspace.root / "logs" / "r2" / "download.jsonl")]


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
