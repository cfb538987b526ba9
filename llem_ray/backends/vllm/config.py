"""The `vllm:` section of an experiment (CFG-06, CFG-10): every field None means the engine default."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from llem_ray.backends.spec import Section
from llem_ray.config.limits import MAX_BYTES, MAX_ENGINE_COUNT, MAX_GIB, MAX_PROMPTS, MAX_TOKENS


class VLLMConfig(Section):
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
        None,
        description="torch.compile / CUDA-graph settings: a level (0-3) or a dict (e.g. cudagraph_mode, "
        "cudagraph_capture_sizes).",
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
        None,
        description="Attention kernel (e.g. FLASH_ATTN, FLASHINFER); vLLM versions without the argument reject it.",
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
        None, description="Speculative decoding, e.g. {method: ngram, num_speculative_tokens: 4, prompt_lookup_max: 4}."
    )
