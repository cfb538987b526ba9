"""VRAM estimate of an experiment, GB, from the model's architecture config (no weights needed).

weights = parameters x bytes per parameter (precision); KV cache = 2 x layers x KV heads x head dim
x (input + output tokens) x batch x bytes; plus 10% for activations and allocator slack. The
estimate is for pre-flight and `--dry-run`: returns None when the architecture config cannot be
read without a download (hub id not in the local cache).
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Any

from llem_ray.config.experiment import ExperimentConfig
from llem_ray.config.ssot import BYTES_PER_PARAM

_OVERHEAD_FACTOR = 1.10


def architecture_config(model: str) -> dict[str, Any] | None:
    """The model's `config.json` as a dict: built-in `llem/...` shape, local directory/file, or hub cache."""
    if model.startswith("llem/"):
        shape = resources.files("llem_ray.backends").joinpath("shapes", f"{model.removeprefix('llem/')}.json")
        return json.loads(shape.read_text()) if shape.is_file() else None
    path = Path(model)
    if path.is_dir():
        path = path / "config.json"
    if path.is_file():
        return json.loads(path.read_text())
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return None
    cached = try_to_load_from_cache(model, "config.json")
    return json.loads(Path(cached).read_text()) if isinstance(cached, str) else None


def count_parameters(arch: dict[str, Any]) -> int:
    """Decoder-only transformer parameter count from hidden size, layers, heads, MLP and vocab sizes."""
    hidden = arch["hidden_size"]
    layers = arch["num_hidden_layers"]
    heads = arch["num_attention_heads"]
    kv_heads = arch.get("num_key_value_heads") or heads
    head_dim = arch.get("head_dim") or hidden // heads
    inter = arch.get("intermediate_size") or 4 * hidden
    vocab = arch["vocab_size"]
    attention = hidden * heads * head_dim * 2 + hidden * kv_heads * head_dim * 2
    mlp = 3 * hidden * inter
    per_layer = attention + mlp + 2 * hidden
    embeddings = vocab * hidden * (1 if arch.get("tie_word_embeddings", False) else 2)
    return layers * per_layer + embeddings + hidden


def estimate_vram_gb(config: ExperimentConfig) -> float | None:
    """Estimated peak device memory of `config`, GB (1e9 bytes), or None if the architecture is unknown."""
    arch = architecture_config(config.model)
    if arch is None:
        return None
    bytes_per = BYTES_PER_PARAM[config.precision]
    weights = count_parameters(arch) * bytes_per
    heads = arch["num_attention_heads"]
    kv_heads = arch.get("num_key_value_heads") or heads
    head_dim = arch.get("head_dim") or arch["hidden_size"] // heads
    tokens = config.max_input_tokens + config.max_output_tokens
    kv_cache = 2 * arch["num_hidden_layers"] * kv_heads * head_dim * tokens * config.batch_size * bytes_per
    return (weights + kv_cache) * _OVERHEAD_FACTOR / 1e9
