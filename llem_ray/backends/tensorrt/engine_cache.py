"""TensorRT-LLM engine cache (INF-15): `~/.llenergymeasure/trt-engines/{hash}/`.

A built TensorRT engine is only valid for the model, build flags, GPU architecture and TensorRT /
TensorRT-LLM versions it was built with, and building one takes minutes. `engine_key` hashes all
of those; `EngineCache` finds a complete engine by key or stores a freshly built one.

Storing is atomic: the engine is saved to a dot-prefixed temporary directory next to its final
place (with `MANIFEST` naming what the key covers), then renamed into place. Two processes building
the same engine at once both build; the first rename wins and the other copy is discarded. Only a
directory holding `MANIFEST` counts as a cached engine.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

DEFAULT_ROOT = Path("~/.llenergymeasure/trt-engines")
MANIFEST = "llem-engine.json"
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf")


def model_identity(model: str, config: dict[str, Any] | None) -> dict[str, Any]:
    """What identifies a model's weights: its name, config, and for a local directory its weight files.

    Weight files count by name, size (bytes) and modification time (ns), so a re-exported
    checkpoint in the same directory gets a new key without hashing gigabytes.
    """
    identity: dict[str, Any] = {"model": model, "config": config}
    path = Path(model).expanduser()
    if path.is_dir():
        identity["weights"] = sorted(
            (p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in path.iterdir() if p.suffix in _WEIGHT_SUFFIXES
        )
    return identity


def engine_key(
    identity: dict[str, Any],
    build_flags: dict[str, Any],
    compute_capability: str,
    tensorrt_version: str,
    trtllm_version: str,
) -> str:
    """SHA-256[:16] over everything a built engine depends on (stable across dict key order)."""
    payload = {
        "identity": identity,
        "build_flags": build_flags,
        "compute_capability": compute_capability,
        "tensorrt": tensorrt_version,
        "tensorrt_llm": trtllm_version,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


class EngineCache:
    """Engines by key under `root` (default `~/.llenergymeasure/trt-engines`)."""

    def __init__(self, root: Path | str = DEFAULT_ROOT):
        self.root = Path(root).expanduser()

    def path(self, key: str) -> Path:
        """Directory of the engine with `key` (whether or not it exists)."""
        return self.root / key

    def lookup(self, key: str) -> Path | None:
        """The cached engine directory for `key`, or None when there is no complete one."""
        path = self.path(key)
        return path if (path / MANIFEST).is_file() else None

    def store(self, key: str, save: Callable[[Path], None], manifest: dict[str, Any]) -> Path:
        """Save an engine with `save(directory)` and publish it under `key`; returns its directory.

        Raises whatever `save` raises (the temporary directory is removed) and OSError when the
        cache directory cannot be written.
        """
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = self.root / f".{key}.{os.getpid()}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        try:
            save(tmp)
            (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=True, default=str))
            try:
                os.replace(tmp, self.path(key))
            except OSError:  # another process published the same key first: keep theirs
                if self.lookup(key) is None:
                    raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return self.path(key)
