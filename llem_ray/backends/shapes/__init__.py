"""Built-in model shapes (`llem/<name>`) and torch-free reading of model configs.

A shape is a transformers `config.json` shipped with the package: `weights: random` builds the
model from it with no download. `config_dict` finds a config without torch (built-in shape, local
`config.json`, or the huggingface_hub cache, never the network), and `estimate_parameters` sizes a
decoder-only transformer from it for the pre-flight VRAM check.
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


def config_dict(model: str) -> dict[str, Any] | None:
    """Config dict of `model` if it can be read without the network, else None."""
    if model.startswith(PREFIX):
        try:
            return builtin_shape(model)
        except KeyError:
            return None
    path = local_config_path(model)
    if path is None:
        try:
            from huggingface_hub import try_to_load_from_cache

            cached = try_to_load_from_cache(model, "config.json")
        except Exception:  # not a valid repo id, hub library missing
            return None
        path = Path(cached) if isinstance(cached, str) else None
    try:
        return json.loads(path.read_text()) if path else None
    except (OSError, ValueError):
        return None


def estimate_parameters(cfg: dict[str, Any]) -> int | None:
    """Parameter count of a Llama-like decoder from its config (None when keys are missing).

    Embeddings (x2 unless tied) + per layer: attention q/o (H x H) and k/v (H x kv_dim), gated
    MLP (3 x H x I), two norms; + final norm. Biases are ignored (< 0.1% of any real model).
    """
    text = cfg.get("text_config", cfg)
    try:
        hidden, layers, vocab = text["hidden_size"], text["num_hidden_layers"], text["vocab_size"]
        inter, heads = text["intermediate_size"], text["num_attention_heads"]
    except KeyError:
        return None
    head_dim = text.get("head_dim") or hidden // heads
    kv_dim = text.get("num_key_value_heads", heads) * head_dim
    per_layer = hidden * heads * head_dim * 2 + hidden * kv_dim * 2 + 3 * hidden * inter + 2 * hidden
    embeddings = vocab * hidden * (1 if text.get("tie_word_embeddings", cfg.get("tie_word_embeddings")) else 2)
    return embeddings + layers * per_layer + hidden


def kv_cache_bytes_per_token(cfg: dict[str, Any], bytes_per_value: int) -> int | None:
    """KV-cache bytes one token occupies across all layers (None when keys are missing)."""
    text = cfg.get("text_config", cfg)
    try:
        heads, layers = text["num_attention_heads"], text["num_hidden_layers"]
        head_dim = text.get("head_dim") or text["hidden_size"] // heads
    except KeyError:
        return None
    return 2 * layers * text.get("num_key_value_heads", heads) * head_dim * bytes_per_value
