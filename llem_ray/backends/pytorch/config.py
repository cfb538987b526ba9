"""The `pytorch:` section of an experiment (CFG-06, CFG-10): every field None means the engine default."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from llem_ray.backends.spec import Section
from llem_ray.config.limits import MAX_PROMPTS


class PyTorchConfig(Section):
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
