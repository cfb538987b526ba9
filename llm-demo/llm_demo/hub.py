"""Model hub access for acquisition: the :class:`Hub` protocol, its ``huggingface_hub`` implementation
and the offline switch.

A hub lists the files of a revision (commit sha, sizes, LFS SHA-256, git blob ids: :class:`HubFile`)
and downloads a chosen subset into a directory. :func:`is_offline` reads ``HF_HUB_OFFLINE`` /
``TRANSFORMERS_OFFLINE``; offline, :mod:`llm_demo.acquire` never calls a hub.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol


@dataclass(frozen=True)
class HubFile:
    """One file of a hub revision; ``lfs_sha256``/``blob_id`` are None when the hub gives none."""

    path: str
    size_bytes: int | None
    lfs_sha256: str | None
    blob_id: str | None


class Hub(Protocol):
    """What acquisition needs from a model hub (the default is :class:`HuggingFaceHub`)."""

    def list_files(self, repo_id: str, revision: str, token: str | None) -> tuple[str, list[HubFile]]:
        """Return (commit sha, files) of ``revision``."""

    def download(self, repo_id: str, commit: str, filenames: list[str], dest: Path, token: str | None) -> None:
        """Download ``filenames`` of ``commit`` into ``dest`` (same relative paths)."""


class HuggingFaceHub:
    """:class:`Hub` backed by ``huggingface_hub``, at ``HF_ENDPOINT`` (a mirror) or the public hub.

    Only called on a cache miss. Note that huggingface_hub 2.x also fetches ``<endpoint>/api/agent-harnesses``
    when it first builds request headers; a cache hit never imports it, so offline runs stay silent.
    """

    def list_files(self, repo_id: str, revision: str, token: str | None) -> tuple[str, list[HubFile]]:
        from huggingface_hub import HfApi

        info = HfApi().model_info(repo_id, revision=revision, files_metadata=True, token=token or False)
        files = [HubFile(s.rfilename, s.size, s.lfs.sha256 if s.lfs else None, s.blob_id) for s in info.siblings or []]
        return info.sha, files

    def download(self, repo_id: str, commit: str, filenames: list[str], dest: Path, token: str | None) -> None:
        from huggingface_hub import hf_hub_download

        for name in filenames:
            hf_hub_download(repo_id, name, revision=commit, local_dir=dest, token=token or False)


def is_offline(environ: Mapping[str, str] | None = None) -> bool:
    """True when ``HF_HUB_OFFLINE`` or ``TRANSFORMERS_OFFLINE`` is set to 1/true/yes/on."""
    env = os.environ if environ is None else environ
    return any(
        env.get(v, "").strip().lower() in ("1", "true", "yes", "on") for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    )
