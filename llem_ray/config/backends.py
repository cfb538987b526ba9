"""Backend-specific sections of an experiment (CFG-06, CFG-10).

Every field defaults to None, meaning "use the engine's own default" (CFG-10). Only what is set is
passed to the engine, so results stay comparable across engine versions. Values are strict and
bounded like the rest of the config (`limits.py`).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from llem_ray.config.limits import MAX_BYTES, MAX_ENGINE_COUNT, MAX_GIB, MAX_PROMPTS, MAX_TOKENS, StrictModel


class _Section(StrictModel):
    def explicit(self) -> dict[str, Any]:
        """Fields the user set (non-None), as a dict: what the backend passes to its engine."""
        return {k: v for k, v in self.model_dump().items() if v is not None}


class PyTorchConfig(_Section):
    """transformers `generate` on PyTorch."""

    batch_size: int | None = Field(None, ge=1, le=MAX_PROMPTS, description="Prompts per generate() call (default 1).")
    attn_implementation: Literal["eager", "sdpa", "flash_attention_2"] | None = Field(
        None, description="Attention kernel passed to from_pretrained/from_config."
    )
    torch_compile: bool | None = Field(
        None,
        description="Wrap the model's forward in torch.compile; with static_kv_cache: true turns on (mode "
        "torch_compile_mode) or false turns off the compilation transformers does itself.",
    )
    torch_compile_mode: Literal["default", "reduce-overhead", "max-autotune"] | None = Field(
        None, description="torch.compile mode (default 'default'; 'reduce-overhead' with static_kv_cache)."
    )
    static_kv_cache: bool | None = Field(
        None,
        description="Use a static KV cache (cache_implementation='static'); on CUDA transformers then compiles "
        "the decoding steps into CUDA graphs unless torch_compile is false.",
    )
    use_cache: bool | None = Field(None, description="Use the KV cache during decoding.")
    device_map: str | None = Field(
        None, description="Device map when the experiment owns several GPUs (default 'auto' then)."
    )
    low_cpu_mem_usage: bool | None = None
    load_in_8bit: bool | None = Field(None, description="bitsandbytes 8-bit weights.")
    load_in_4bit: bool | None = Field(None, description="bitsandbytes 4-bit weights.")


class VLLMConfig(_Section):
    """vLLM offline `LLM` engine arguments (`vllm.EngineArgs`) that change energy or throughput.

    Names are vLLM's own, so each set field is passed to `vllm.LLM(**fields)` as is. Set by the
    backend itself: model, dtype (precision), tensor_parallel_size (resources.gpus), seed
    (random_seed), load_format ('dummy' for weights: random), distributed_executor_backend ('mp'
    when TP > 1), disable_log_stats (False: per-request metrics need it) and enable_lora. Anything
    else goes through `passthrough_kwargs`; `python -m llem_ray.backends.coverage vllm` lists what
    this section does not cover. Every field was accepted by a real vLLM 0.25 engine on an H200
    (tests/gpu/test_vllm_engine.py); `swap_space` (ignored since vLLM 0.2x) and
    `max_num_partial_prefills` (values other than 1 refused by vLLM 0.25) are not offered.
    """

    max_num_seqs: int | None = Field(None, ge=1, le=MAX_PROMPTS, description="Maximum concurrent sequences per step.")
    max_num_batched_tokens: int | None = Field(
        None, ge=1, le=MAX_TOKENS, description="Token budget of one scheduler step."
    )
    max_model_len: int | None = Field(
        None, ge=1, le=MAX_TOKENS, description="Context length (prompt + output), tokens."
    )
    gpu_memory_utilization: float | None = Field(
        None, gt=0, le=1, description="Fraction of GPU memory for weights, activations and KV cache."
    )
    kv_cache_memory_bytes: int | None = Field(
        None, ge=1, le=MAX_BYTES, description="KV-cache size, bytes (overrides gpu_memory_utilization for the cache)."
    )
    num_gpu_blocks_override: int | None = Field(
        None, ge=1, le=MAX_ENGINE_COUNT, description="Fixed number of KV-cache blocks."
    )
    enforce_eager: bool | None = Field(None, description="Disable CUDA graphs (always run eagerly).")
    compilation_config: int | dict[str, Any] | None = Field(
        None, description="torch.compile / CUDA-graph settings: a level (0-3) or a dict (e.g. cudagraph_mode, "
        "cudagraph_capture_sizes)."
    )
    enable_chunked_prefill: bool | None = Field(None, description="Split long prefills across scheduler steps.")
    long_prefill_token_threshold: int | None = Field(
        None, ge=0, le=MAX_TOKENS, description="Prompts longer than this count as long for partial prefill, tokens."
    )
    enable_prefix_caching: bool | None = Field(
        None, description="Reuse KV blocks of shared prefixes (the backend clears the cache between workloads)."
    )
    kv_cache_dtype: str | None = Field(None, description="KV-cache dtype: auto, fp8, fp8_e4m3, fp8_e5m2.")
    calculate_kv_scales: bool | None = Field(None, description="Compute fp8 KV-cache scales on the fly.")
    block_size: int | None = Field(None, ge=1, le=MAX_TOKENS, description="KV-cache block size, tokens.")
    quantization: str | None = Field(None, description="Weight quantisation method: fp8, awq, gptq, bitsandbytes...")
    attention_backend: str | None = Field(
        None, description="Attention kernel (e.g. FLASH_ATTN, FLASHINFER); vLLM versions without the argument reject it."
    )
    disable_cascade_attn: bool | None = Field(None, description="Disable cascade attention for shared prefixes.")
    async_scheduling: bool | None = Field(None, description="Overlap CPU scheduling with GPU execution.")
    scheduling_policy: Literal["fcfs", "priority"] | None = Field(None, description="Request scheduling order.")
    disable_custom_all_reduce: bool | None = Field(
        None, description="Use NCCL instead of vLLM's custom all-reduce (TP > 1)."
    )
    enable_expert_parallel: bool | None = Field(None, description="Expert parallelism for MoE layers.")
    cpu_offload_gb: float | None = Field(
        None, ge=0, le=MAX_GIB, description="Weights offloaded to CPU memory per GPU, GiB."
    )
    max_lora_rank: int | None = Field(
        None, ge=1, le=MAX_ENGINE_COUNT, description="Largest LoRA rank to support (with `lora:`)."
    )
    speculative_config: dict[str, Any] | None = Field(
        None, description="Speculative decoding, e.g. {method: ngram, num_speculative_tokens: 4, "
        "prompt_lookup_max: 4}."
    )


TRT_PYTORCH_ONLY_FIELDS: tuple[str, ...] = (
    "attn_backend", "disable_overlap_scheduler", "torch_compile", "cuda_graph_batch_sizes", "cuda_graph_padding",
)
"""`tensorrt:` fields that apply only to the PyTorch runtime."""
TRT_ENGINE_ONLY_FIELDS: tuple[str, ...] = ("max_input_len",)
"""`tensorrt:` fields that apply only to the TensorRT engine runtime."""


class TensorRTConfig(_Section):
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
        None, description="Speculative decoding: TRT-LLM DecodingConfig fields, e.g. {decoding_type: MTP, "
        "max_draft_len: 3}."
    )

    @model_validator(mode="after")
    def _fields_fit_runtime(self) -> TensorRTConfig:
        engine = self.runtime == "engine"
        misplaced = TRT_PYTORCH_ONLY_FIELDS if engine else TRT_ENGINE_ONLY_FIELDS
        wrong = [f for f in misplaced if getattr(self, f) is not None]
        if wrong:
            raise ValueError(f"{', '.join(wrong)} apply only to runtime "
                             f"'{'pytorch' if engine else 'engine'}' (runtime is '{self.runtime or 'pytorch'}')")
        if self.cuda_graphs is False and (self.cuda_graph_batch_sizes or self.cuda_graph_padding):
            raise ValueError("cuda_graph_batch_sizes/cuda_graph_padding set but cuda_graphs is false")
        return self


BACKEND_SECTIONS: dict[str, type[_Section]] = {
    "pytorch": PyTorchConfig,
    "vllm": VLLMConfig,
    "tensorrt": TensorRTConfig,
}
