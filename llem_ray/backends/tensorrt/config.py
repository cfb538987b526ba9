"""The `tensorrt:` section of an experiment (CFG-06, CFG-10): every field None means the engine default."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from llem_ray.backends.spec import Section
from llem_ray.config.limits import MAX_ENGINE_COUNT, MAX_PROMPTS, MAX_TOKENS

TRT_PYTORCH_ONLY_FIELDS: tuple[str, ...] = (
    "attn_backend",
    "disable_overlap_scheduler",
    "torch_compile",
    "cuda_graph_batch_sizes",
    "cuda_graph_padding",
)
"""`tensorrt:` fields that apply only to the PyTorch runtime."""
TRT_ENGINE_ONLY_FIELDS: tuple[str, ...] = ("max_input_len",)
"""`tensorrt:` fields that apply only to the TensorRT engine runtime."""


class TensorRTConfig(Section):
    """TensorRT-LLM `LLM` API arguments (PyTorch runtime by default, built TensorRT engine for <= 1.2.x).

    Set by the backend itself: model, dtype (precision), tensor_parallel_size (resources.gpus),
    max_beam_width (decoder.num_beams) and load_format ('dummy' for weights: random, PyTorch runtime).
    Flat fields here become TRT-LLM's nested configs (KvCacheConfig, CudaGraphConfig, QuantConfig,
    SchedulerConfig, BuildConfig for the engine runtime). Anything else goes through `passthrough_kwargs`.
    """

    runtime: Literal["pytorch", "engine"] | None = Field(
        None, description="TRT-LLM LLM-API backend: 'pytorch' (default) or a built TensorRT 'engine' (TRT-LLM <= 1.2)."
    )
    max_batch_size: int | None = Field(
        None, ge=1, le=MAX_PROMPTS, description="Maximum requests batched per iteration."
    )
    max_num_tokens: int | None = Field(None, ge=1, le=MAX_TOKENS, description="Token budget of one iteration.")
    max_seq_len: int | None = Field(None, ge=1, le=MAX_TOKENS, description="Context length (prompt + output), tokens.")
    max_input_len: int | None = Field(
        None, ge=1, le=MAX_TOKENS, description="Engine runtime: longest prompt the engine is built for."
    )
    kv_cache_free_gpu_memory_fraction: float | None = Field(
        None, gt=0, le=1, description="Fraction of free GPU memory given to the KV cache."
    )
    kv_cache_max_tokens: int | None = Field(
        None, ge=1, le=MAX_ENGINE_COUNT, description="Upper bound on KV-cache size, tokens."
    )
    kv_cache_dtype: str | None = Field(None, description="KV-cache dtype: auto or fp8.")
    kv_cache_enable_block_reuse: bool | None = Field(
        None, description="Reuse KV blocks of shared prefixes across requests (warm-up and measured prompts coincide)."
    )
    tokens_per_block: int | None = Field(None, ge=1, le=MAX_TOKENS, description="KV-cache block size, tokens.")
    quantization: str | None = Field(None, description="e.g. FP8, INT8, W4A16_AWQ (QuantAlgo names).")
    enable_chunked_prefill: bool | None = Field(None, description="Split long prefills across iterations.")
    cuda_graphs: bool | None = Field(None, description="Capture CUDA graphs for decode (False disables them).")
    cuda_graph_batch_sizes: list[int] | None = Field(None, description="PyTorch runtime: batch sizes to capture.")
    cuda_graph_padding: bool | None = Field(
        None, description="PyTorch runtime: pad batches up to the nearest captured size."
    )
    attn_backend: str | None = Field(None, description="PyTorch runtime: attention kernel (TRTLLM, FLASHINFER...).")
    disable_overlap_scheduler: bool | None = Field(
        None, description="PyTorch runtime: do not overlap CPU scheduling with GPU execution."
    )
    torch_compile: bool | None = Field(None, description="PyTorch runtime: torch.compile the model.")
    scheduler_policy: Literal["max_utilization", "guaranteed_no_evict", "static_batch"] | None = Field(
        None, description="Capacity scheduler policy."
    )
    speculative_config: dict[str, Any] | None = Field(
        None,
        description="Speculative decoding: TRT-LLM DecodingConfig fields, e.g. {decoding_type: MTP, max_draft_len: 3}.",
    )

    @model_validator(mode="after")
    def _fields_fit_runtime(self) -> TensorRTConfig:
        engine = self.runtime == "engine"
        misplaced = TRT_PYTORCH_ONLY_FIELDS if engine else TRT_ENGINE_ONLY_FIELDS
        wrong = [f for f in misplaced if getattr(self, f) is not None]
        if wrong:
            raise ValueError(
                f"{', '.join(wrong)} apply only to runtime "
                f"'{'pytorch' if engine else 'engine'}' (runtime is '{self.runtime or 'pytorch'}')"
            )
        if self.cuda_graphs is False and (self.cuda_graph_batch_sizes or self.cuda_graph_padding):
            raise ValueError("cuda_graph_batch_sizes/cuda_graph_padding set but cuda_graphs is false")
        return self
