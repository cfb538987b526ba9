"""Single source of truth for what each backend supports (CFG-08).

Validators, the dry-run preview, introspection and the docs all read these tables; nothing else
may hard-code which backend supports which precision or decoding mode.
"""

from __future__ import annotations

BACKENDS: tuple[str, ...] = ("pytorch", "vllm", "tensorrt")

PRECISIONS: tuple[str, ...] = ("fp32", "fp16", "bf16")

PRECISION_SUPPORT: dict[str, tuple[str, ...]] = {
    "pytorch": ("fp32", "fp16", "bf16"),
    "vllm": ("fp32", "fp16", "bf16"),
    "tensorrt": ("fp16", "bf16"),
}

DECODING_MODES: tuple[str, ...] = ("greedy", "sampling", "beam_search")

DECODING_SUPPORT: dict[str, tuple[str, ...]] = {
    "pytorch": ("greedy", "sampling", "beam_search"),
    "vllm": ("greedy", "sampling"),
    "tensorrt": ("greedy", "sampling", "beam_search"),
}

SCENARIOS: tuple[str, ...] = ("offline", "serving")

SCENARIO_SUPPORT: dict[str, tuple[str, ...]] = {
    "pytorch": ("offline",),
    "vllm": ("offline", "serving"),
    "tensorrt": ("offline",),
}
"""Scenarios each backend can run: `serving` needs a streaming engine (backends/streaming.py)."""

TORCH_DTYPES: dict[str, str] = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}

BYTES_PER_PARAM: dict[str, int] = {"fp32": 4, "fp16": 2, "bf16": 2}
