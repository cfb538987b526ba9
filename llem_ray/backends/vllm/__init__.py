"""The `vllm` backend: vLLM's offline `LLM` engine (`backend.py`) and its streaming engine (`serving.py`)."""

from __future__ import annotations

from llem_ray.backends.spec import BackendSpec
from llem_ray.backends.vllm.config import VLLMConfig

SPEC = BackendSpec(
    name="vllm",
    section=VLLMConfig,
    factory="llem_ray.backends.vllm.backend:VLLMBackend",
    precisions=("fp32", "fp16", "bf16"),
    decoding_modes=("greedy", "sampling"),
    scenarios=("offline", "serving"),
    modules=("vllm",),
    install_extra="vllm",
    must_isolate=True,
    batch_size_field="max_num_seqs",
    engine_module="vllm",
    engine_arguments="llem_ray.backends.vllm.arguments",
)
