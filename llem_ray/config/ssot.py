"""The vocabulary of backend support (CFG-08): every precision, decoding mode and scenario there is.

What one backend supports is declared by its spec (`backends/<name>/__init__.py`, a `BackendSpec`),
in these names; validators, the dry-run preview, introspection and the docs read the specs through
the backend registry, and nothing else may hard-code which backend supports what.
"""

from __future__ import annotations

PRECISIONS: tuple[str, ...] = ("fp32", "fp16", "bf16")

DECODING_MODES: tuple[str, ...] = ("greedy", "sampling", "beam_search")

SCENARIOS: tuple[str, ...] = ("offline", "serving")
"""`serving` needs a streaming engine (backends/streaming.py)."""

TORCH_DTYPES: dict[str, str] = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}

BYTES_PER_PARAM: dict[str, int] = {"fp32": 4, "fp16": 2, "bf16": 2}
