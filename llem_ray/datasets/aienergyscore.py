"""The AIEnergyScore text-generation prompts (hub dataset `AIEnergyScore/text_generation`).

Resolution order: env `LLEM_AIENERGYSCORE_PATH` (a JSONL/Parquet/CSV file or a directory holding
one), then the huggingface_hub cache / a download (`snapshot_download`, cached for later runs).
Offline with nothing cached raises `DatasetUnavailable` naming the env var and the JSONL-path
alternative.
"""

from __future__ import annotations

import os
from pathlib import Path

REPO_ID = "AIEnergyScore/text_generation"
ENV_VAR = "LLEM_AIENERGYSCORE_PATH"
_FILE_SUFFIXES = (".jsonl", ".parquet", ".csv", ".json")


class DatasetUnavailable(Exception):
    """A dataset cannot be read here; `str()` says why and what to do."""


def _data_file(root: Path) -> Path | None:
    if root.is_file():
        return root
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in _FILE_SUFFIXES and not p.name.startswith("."))
    return files[0] if files else None


def resolve_path() -> Path:
    """Local file of the dataset (downloading it once if needed). Raises DatasetUnavailable."""
    env = os.environ.get(ENV_VAR)
    if env:
        found = _data_file(Path(env)) if Path(env).exists() else None
        if found is None:
            raise DatasetUnavailable(f"{ENV_VAR}={env} names no JSONL/Parquet/CSV file")
        return found
    try:
        from huggingface_hub import snapshot_download

        root = Path(snapshot_download(REPO_ID, repo_type="dataset"))
    except Exception as exc:
        raise DatasetUnavailable(
            f"dataset '{REPO_ID}' could not be fetched from the Hugging Face hub ({type(exc).__name__}: {exc}). "
            f"Offline? Point {ENV_VAR} at a local copy (e.g. aienergyscore.jsonl), "
            "or set `dataset: /path/to/prompts.jsonl`, or use `dataset: synthetic`."
        ) from None
    found = _data_file(root)
    if found is None:
        raise DatasetUnavailable(f"dataset '{REPO_ID}' downloaded to {root} holds no data file")
    return found
