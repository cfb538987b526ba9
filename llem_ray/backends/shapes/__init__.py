"""Built-in model shapes (`llem/<name>`) and torch-free reading of model configs.

A shape is a transformers `config.json` shipped with the package: `weights: random` builds the
model from it with no download. (measure/vram.py reads the same files for the VRAM estimate.)
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

PREFIX = "llem/"
_DIR = Path(__file__).parent


def builtin_names() -> list[str]:
    """Names of every built-in shape, e.g. 'llem/tiny-llama'."""
    return sorted(PREFIX + p.stem for p in _DIR.glob("*.json"))


def builtin_shape(name: str) -> dict[str, Any]:
    """The config dict of built-in shape `name`. Raises KeyError listing the built-ins if unknown."""
    path = _DIR / f"{name.removeprefix(PREFIX)}.json"
    if not name.startswith(PREFIX) or not path.is_file():
        raise KeyError(f"unknown built-in model '{name}' (built-in: {', '.join(builtin_names())})")
    return json.loads(path.read_text())


def local_config_path(model: str) -> Path | None:
    """`model` itself if it is a .json file, `model/config.json` if it is a directory, else None."""
    path = Path(model).expanduser()
    if path.is_file() and path.suffix == ".json":
        return path
    if path.is_dir() and (path / "config.json").is_file():
        return path / "config.json"
    return None
