"""The `tensorrt` backend: TensorRT-LLM's `LLM` API (`backend.py`), built engines cached by `engine_cache.py`."""

from __future__ import annotations

from llem_ray.backends.spec import BackendSpec
from llem_ray.backends.tensorrt.config import TensorRTConfig

SPEC = BackendSpec(
    name="tensorrt",
    section=TensorRTConfig,
    factory="llem_ray.backends.tensorrt.backend:TensorRTBackend",
    precisions=("fp16", "bf16"),
    decoding_modes=("greedy", "sampling", "beam_search"),
    modules=("tensorrt_llm",),
    install_extra="tensorrt",
    must_isolate=True,
    batch_size_field="max_batch_size",
    supports_lora=False,
    engine_module="tensorrt_llm",
    engine_arguments="llem_ray.backends.tensorrt.arguments",
)
