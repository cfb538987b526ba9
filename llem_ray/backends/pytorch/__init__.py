"""The `pytorch` backend: transformers `generate` on PyTorch, static batches (`backend.py`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from llem_ray.backends.pytorch.config import PyTorchConfig
from llem_ray.backends.spec import BackendSpec


def kv_cache_label(section: Mapping[str, Any]) -> str:
    """'off' without a KV cache, 'static' with `static_kv_cache`, else 'dynamic' (transformers' default)."""
    if section.get("use_cache") is False:
        return "off"
    return "static" if section.get("static_kv_cache") else "dynamic"


SPEC = BackendSpec(
    name="pytorch",
    section=PyTorchConfig,
    factory="llem_ray.backends.pytorch.backend:PyTorchBackend",
    precisions=("fp32", "fp16", "bf16"),
    decoding_modes=("greedy", "sampling", "beam_search"),
    modules=("torch", "transformers"),
    install_extra="pytorch",
    static_batching=True,
    batch_size_field="batch_size",
    kv_cache_label=kv_cache_label,
)
