"""Backend-specific sections of an experiment (CFG-06, CFG-10).

Every field defaults to None, meaning "use the engine's own default" (CFG-10). Only what is set is
passed to the engine, so results stay comparable across engine versions.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")

    def explicit(self) -> dict[str, Any]:
        """Fields the user set (non-None), as a dict: what the backend passes to its engine."""
        return {k: v for k, v in self.model_dump().items() if v is not None}


class PyTorchConfig(_Section):
    """transformers `generate` on PyTorch."""

    batch_size: int | None = Field(None, ge=1, description="Prompts per generate() call (default 1).")
    attn_implementation: Literal["eager", "sdpa", "flash_attention_2"] | None = Field(
        None, description="Attention kernel passed to from_pretrained/from_config."
    )
    torch_compile: bool | None = Field(None, description="Wrap the model in torch.compile.")
    torch_compile_mode: Literal["default", "reduce-overhead", "max-autotune"] | None = None
    static_kv_cache: bool | None = Field(
        None, description="Use a static KV cache (cache_implementation='static'), needed for compiled decode."
    )
    use_cache: bool | None = Field(None, description="Use the KV cache during decoding.")
    device_map: str | None = Field(
        None, description="Device map when the experiment owns several GPUs (default 'auto' then)."
    )
    low_cpu_mem_usage: bool | None = None
    load_in_8bit: bool | None = Field(None, description="bitsandbytes 8-bit weights.")
    load_in_4bit: bool | None = Field(None, description="bitsandbytes 4-bit weights.")


class VLLMConfig(_Section):
    """vLLM offline `LLM` engine arguments (the energy- and throughput-relevant ones)."""

    max_num_seqs: int | None = Field(None, ge=1, description="Maximum concurrent sequences per step.")
    max_num_batched_tokens: int | None = Field(None, ge=1)
    max_model_len: int | None = Field(None, ge=1)
    gpu_memory_utilization: float | None = Field(None, gt=0, le=1)
    enforce_eager: bool | None = Field(None, description="Disable CUDA graphs.")
    enable_chunked_prefill: bool | None = None
    enable_prefix_caching: bool | None = None
    kv_cache_dtype: str | None = None
    block_size: int | None = Field(None, ge=1)
    quantization: str | None = None
    swap_space: float | None = Field(None, ge=0, description="CPU swap space per GPU, GiB.")
    cpu_offload_gb: float | None = Field(None, ge=0)
    speculative_config: dict[str, Any] | None = None


class TensorRTConfig(_Section):
    """TensorRT-LLM `LLM` API arguments (PyTorch backend by default, engine path for <= 1.2.x)."""

    runtime: Literal["pytorch", "engine"] | None = Field(
        None, description="TRT-LLM LLM-API backend: 'pytorch' (default) or a built TensorRT 'engine'."
    )
    max_batch_size: int | None = Field(None, ge=1)
    max_num_tokens: int | None = Field(None, ge=1)
    max_seq_len: int | None = Field(None, ge=1)
    kv_cache_free_gpu_memory_fraction: float | None = Field(None, gt=0, le=1)
    quantization: str | None = Field(None, description="e.g. FP8, INT8, W4A16_AWQ (QuantAlgo names).")
    enable_chunked_prefill: bool | None = None
    cuda_graphs: bool | None = None
    speculative_config: dict[str, Any] | None = None


BACKEND_SECTIONS: dict[str, type[_Section]] = {
    "pytorch": PyTorchConfig,
    "vllm": VLLMConfig,
    "tensorrt": TensorRTConfig,
}
