"""Stand-in for `tensorrt_llm.llmapi`: the config classes the LLM API takes, and the argument models.

`TorchLlmArgs` / `TrtLlmArgs` list argument names as TRT-LLM's pydantic models do (a subset); the
stand-in `LLM` classes reject names their model does not have, as TRT-LLM does.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any


@dataclass
class KvCacheConfig:
    free_gpu_memory_fraction: float | None = None
    max_tokens: int | None = None
    dtype: str = "auto"
    enable_block_reuse: bool = True
    tokens_per_block: int = 32


@dataclass
class CudaGraphConfig:
    batch_sizes: list[int] | None = None
    max_batch_size: int = 0
    enable_padding: bool = False


class QuantAlgo(enum.Enum):
    FP8 = "FP8"
    INT8 = "INT8"
    W4A16_AWQ = "W4A16_AWQ"


@dataclass
class QuantConfig:
    quant_algo: QuantAlgo | None = None


class CapacitySchedulerPolicy(enum.Enum):
    MAX_UTILIZATION = "MAX_UTILIZATION"
    GUARANTEED_NO_EVICT = "GUARANTEED_NO_EVICT"
    STATIC_BATCH = "STATIC_BATCH"


@dataclass
class SchedulerConfig:
    capacity_scheduler_policy: CapacitySchedulerPolicy = CapacitySchedulerPolicy.GUARANTEED_NO_EVICT


@dataclass
class TorchCompileConfig:
    enable_fullgraph: bool = True


@dataclass
class ExtendedRuntimePerfKnobConfig:
    cuda_graph_mode: bool = False


@dataclass
class BuildConfig:
    max_batch_size: int = 2048
    max_num_tokens: int = 8192
    max_seq_len: int | None = None
    max_input_len: int = 1024
    max_beam_width: int = 1


_COMMON = (
    "model",
    "tokenizer",
    "tokenizer_mode",
    "skip_tokenizer_init",
    "trust_remote_code",
    "tensor_parallel_size",
    "pipeline_parallel_size",
    "dtype",
    "revision",
    "kv_cache_config",
    "enable_chunked_prefill",
    "max_batch_size",
    "max_num_tokens",
    "max_seq_len",
    "max_beam_width",
    "quant_config",
    "scheduler_config",
    "speculative_config",
    "backend",
    "gpus_per_node",
    "enable_lora",
    "return_perf_metrics",
)


class TorchLlmArgs:
    model_fields: dict[str, Any] = dict.fromkeys(
        (
            *_COMMON,
            "load_format",
            "cuda_graph_config",
            "attn_backend",
            "disable_overlap_scheduler",
            "torch_compile_config",
            "moe_config",
            "stream_interval",
            "sampler_type",
        )
    )


class TrtLlmArgs:
    model_fields: dict[str, Any] = dict.fromkeys(
        (*_COMMON, "build_config", "extended_runtime_perf_knob_config", "fast_build", "embedding_parallel_mode")
    )
