"""`TensorRTBackend` (CM-03, INF-15): TensorRT-LLM's `LLM` API with in-flight batching.

Runtimes (`tensorrt.runtime`):
- `pytorch` (default): `tensorrt_llm.LLM` on TRT-LLM's PyTorch runtime; `weights: random` loads
  dummy weights (`load_format="dummy"`), so no checkpoint is needed.
- `engine` (TRT-LLM <= 1.2.x only): a TensorRT engine built from the checkpoint
  (`tensorrt_llm._tensorrt_engine.LLM` with a `BuildConfig`), cached under
  `~/.llenergymeasure/trt-engines/{hash}/` where the hash covers the model (name, config, weight
  files), the build flags, the GPU compute capability and the TensorRT / TRT-LLM versions
  (`engine_cache.py`). The cache is skipped, with a note, when the compute capability cannot be read.

Arguments: model source (engine_common), dtype from `precision`, `tensor_parallel_size =
resources.gpus`, `max_beam_width = decoder.num_beams` for beam search, the `tensorrt:` section
(flat fields become `KvCacheConfig`, `CudaGraphConfig`, `QuantConfig`, `SchedulerConfig`,
`TorchCompileConfig`, `BuildConfig`), then `passthrough_kwargs` untouched. TRT-LLM spawns MPI
workers even for one GPU: use one fresh Ray actor per experiment; `unload` always calls
`llm.shutdown()`. One short request after load warms the kernels up (not with `cold_start`).

Sampling follows `decoder`: greedy is `top_k=1`; beam search sets `use_beam_search` with
`best_of = num_beams`; `fixed_output_length` sets `min_tokens = max_tokens`. Synthetic prompts run
without a tokenizer, so `end_id` / `pad_id` come from the model config (-1, "never stop", when it
has none). Output is not detokenised.

Per-request timing: `return_perf_metrics=True` makes each output carry
`request_perf_metrics.timing_metrics` (arrival, first-token and last-token times on the executor's
clock). TTFT = first token - arrival; latency = last token - arrival; as with vLLM only the first and
last token times exist, so ITL entries are the request's mean decode interval once per gap.

Every failure raises BackendError; a missing TRT-LLM names the `[tensorrt]` extra, the NGC container
and the runtime_env route.
"""

from __future__ import annotations

import re
import time
from typing import TYPE_CHECKING, Any

from llem_ray.backends.engine_common import EngineBackend, ModelSource, WorkloadClock, engine_dtype
from llem_ray.backends.protocol import ModelInfo, RequestTiming
from llem_ray.backends.tensorrt.config import TensorRTConfig
from llem_ray.backends.tensorrt.engine_cache import EngineCache, engine_key, model_identity
from llem_ray.errors import BackendError

if TYPE_CHECKING:
    from llem_ray.config.experiment import ExperimentConfig

INSTALL_HINT = (
    "pip install 'llem-ray[tensorrt]' (NVIDIA's index), use the nvcr.io/nvidia/tensorrt-llm/release "
    "container, or give tensorrt experiments their own Ray runtime_env (runtime_envs.tensorrt, "
    "docs/backends.md)"
)
"""How to get TensorRT-LLM, in the BackendError of a missing one."""

ENGINE_RUNTIME_MAX_VERSION = (1, 2)
"""Newest TRT-LLM (major, minor) whose LLM API still builds TensorRT engines."""

SET_BY_BACKEND: tuple[str, ...] = (
    "model",
    "tokenizer",
    "dtype",
    "tensor_parallel_size",
    "skip_tokenizer_init",
    "load_format",
    "backend",
    "max_beam_width",
    "build_config",
)
"""TRT-LLM arguments this backend derives from the experiment (coverage counts them as covered)."""

ENGINE_ARG_OF_FIELD: dict[str, str | None] = {
    "runtime": None,
    "kv_cache_free_gpu_memory_fraction": "kv_cache_config",
    "kv_cache_max_tokens": "kv_cache_config",
    "kv_cache_dtype": "kv_cache_config",
    "kv_cache_enable_block_reuse": "kv_cache_config",
    "tokens_per_block": "kv_cache_config",
    "quantization": "quant_config",
    "cuda_graphs": "cuda_graph_config",
    "cuda_graph_batch_sizes": "cuda_graph_config",
    "cuda_graph_padding": "cuda_graph_config",
    "torch_compile": "torch_compile_config",
    "scheduler_policy": "scheduler_config",
    "max_input_len": "build_config",
}
"""Section fields whose TRT-LLM argument has another name (None: chooses the LLM class, not an argument)."""

_BUILD_FIELDS = ("max_batch_size", "max_num_tokens", "max_seq_len", "max_input_len")
ENGINE_RUNTIME_ARG_OF_FIELD: dict[str, str | None] = {
    **ENGINE_ARG_OF_FIELD,
    **dict.fromkeys(_BUILD_FIELDS, "build_config"),
    "cuda_graphs": "extended_runtime_perf_knob_config",
}
"""As ENGINE_ARG_OF_FIELD, for the engine runtime: limits go into the BuildConfig."""

_KV_FIELDS = {
    "kv_cache_free_gpu_memory_fraction": "free_gpu_memory_fraction",
    "kv_cache_max_tokens": "max_tokens",
    "kv_cache_dtype": "dtype",
    "kv_cache_enable_block_reuse": "enable_block_reuse",
    "tokens_per_block": "tokens_per_block",
}
_PLAIN_FIELDS = (
    "max_batch_size",
    "max_num_tokens",
    "max_seq_len",
    "enable_chunked_prefill",
    "attn_backend",
    "disable_overlap_scheduler",
    "speculative_config",
)


def version_tuple(version: str) -> tuple[int, int]:
    """(major, minor) of a version string such as '1.2.0rc2.post2'; (0, 0) if unparsable."""
    match = re.match(r"(\d+)\.(\d+)", version)
    return (int(match.group(1)), int(match.group(2))) if match else (0, 0)


def llm_kwargs(config: ExperimentConfig, source: ModelSource, api: Any, trtllm_version: str) -> dict[str, Any]:
    """Keyword arguments of the TRT-LLM `LLM` for `config`; `api` is `tensorrt_llm.llmapi` (config classes)."""
    section = config.tensorrt or TensorRTConfig()
    engine = section.runtime == "engine"
    kwargs: dict[str, Any] = {
        "model": source.path_or_id,
        "dtype": engine_dtype(config.precision),
        "tensor_parallel_size": config.resources.gpus,
    }
    if not source.needs_tokenizer:
        kwargs["skip_tokenizer_init"] = True
    if config.weights == "random" and not engine:
        kwargs["load_format"] = "dummy"
    if not engine and version_tuple(trtllm_version) < (1, 0):
        kwargs["backend"] = "pytorch"  # before 1.0 the TensorRT engine was the default
    if config.decoder.num_beams > 1:
        kwargs["max_beam_width"] = config.decoder.num_beams
    set_fields = section.explicit()
    kwargs.update({f: set_fields[f] for f in _PLAIN_FIELDS if f in set_fields and not (engine and f in _BUILD_FIELDS)})
    kv = {name: set_fields[f] for f, name in _KV_FIELDS.items() if f in set_fields}
    if kv:
        kwargs["kv_cache_config"] = api.KvCacheConfig(**kv)
    if "quantization" in set_fields:
        kwargs["quant_config"] = api.QuantConfig(quant_algo=getattr(api.QuantAlgo, set_fields["quantization"].upper()))
    if "scheduler_policy" in set_fields:
        policy = getattr(api.CapacitySchedulerPolicy, set_fields["scheduler_policy"].upper())
        kwargs["scheduler_config"] = api.SchedulerConfig(capacity_scheduler_policy=policy)
    if engine:
        build = {f: set_fields[f] for f in _BUILD_FIELDS if f in set_fields}
        if config.decoder.num_beams > 1:
            build["max_beam_width"] = config.decoder.num_beams
        kwargs["build_config"] = api.BuildConfig(**build)
        if set_fields.get("cuda_graphs"):
            kwargs["extended_runtime_perf_knob_config"] = api.ExtendedRuntimePerfKnobConfig(cuda_graph_mode=True)
    else:
        if set_fields.get("cuda_graphs") is False:
            kwargs["cuda_graph_config"] = None
        elif (
            "cuda_graph_batch_sizes" in set_fields
            or "cuda_graph_padding" in set_fields
            or set_fields.get("cuda_graphs")
        ):
            graphs = {
                "batch_sizes": set_fields.get("cuda_graph_batch_sizes"),
                "enable_padding": set_fields.get("cuda_graph_padding"),
            }
            kwargs["cuda_graph_config"] = api.CudaGraphConfig(**{k: v for k, v in graphs.items() if v is not None})
        if set_fields.get("torch_compile"):
            kwargs["torch_compile_config"] = api.TorchCompileConfig()
    kwargs.update(config.passthrough_kwargs or {})
    return kwargs


def sampling_kwargs(
    config: ExperimentConfig, source: ModelSource, max_tokens: int, *, prefill: bool = False
) -> dict[str, Any]:
    """Keyword arguments of TRT-LLM `SamplingParams` for one workload (prefill: one token, no minimum)."""
    decoder = config.decoder
    kwargs: dict[str, Any] = {
        "max_tokens": max_tokens,
        "seed": config.random_seed,
        "detokenize": False,
        "return_perf_metrics": True,
    }
    if decoder.fixed_output_length and not prefill:
        kwargs["min_tokens"] = max_tokens
    if not source.needs_tokenizer:
        end_id = source.eos_token_id if source.eos_token_id is not None else -1
        kwargs["end_id"] = end_id
        kwargs["pad_id"] = source.pad_token_id if source.pad_token_id is not None else end_id
    if decoder.num_beams > 1:
        kwargs.update(use_beam_search=True, best_of=decoder.num_beams, n=1)
    elif decoder.do_sample:
        kwargs["temperature"] = decoder.temperature
        kwargs.update({k: v for k in ("top_k", "top_p") if (v := getattr(decoder, k)) is not None})
    else:
        kwargs["top_k"] = 1
    if decoder.repetition_penalty is not None:
        kwargs["repetition_penalty"] = decoder.repetition_penalty
    return kwargs


def _seconds(value: Any) -> float:
    """A TRT-LLM time point (datetime.timedelta since the executor's epoch, or plain seconds) in seconds."""
    return value.total_seconds() if hasattr(value, "total_seconds") else float(value)


def request_timing(output: Any, batch_wall_s: float) -> RequestTiming:
    """Timing of one TRT-LLM `RequestOutput` from its perf metrics (see module docstring); seconds."""
    completion = output.outputs[0] if output.outputs else None
    tokens = len(completion.token_ids) if completion is not None else 0
    perf = getattr(completion, "request_perf_metrics", None)
    timing = getattr(perf, "timing_metrics", None)
    if timing is None or not _seconds(timing.first_token_time):
        return RequestTiming(latency_s=batch_wall_s, output_tokens=tokens)
    arrival_s, first_s, last_s = (
        _seconds(timing.arrival_time),
        _seconds(timing.first_token_time),
        _seconds(timing.last_token_time),
    )
    span_s = max(0.0, last_s - first_s)
    itl_s = [span_s / (tokens - 1)] * (tokens - 1) if tokens > 1 and span_s > 0 else []
    return RequestTiming(latency_s=last_s - arrival_s, output_tokens=tokens, ttft_s=first_s - arrival_s, itl_s=itl_s)


def compute_capability() -> str | None:
    """'sm90'-style compute capability of the visible GPUs ('sm80+sm90' if mixed); None without NVML."""
    from llem_ray import device
    from llem_ray.energy.devices import visible_gpus

    gpus = visible_gpus()
    try:
        layer = device.current()
        caps = {layer.compute_capability(u) for u in gpus.uuids}
    except Exception:  # DeviceUnavailable (no NVML) or DeviceError
        return None
    return "+".join(f"sm{major}{minor}" for major, minor in sorted(caps)) or None


def tensorrt_version() -> str:
    """Version of the TensorRT library TRT-LLM runs on ('unknown' if it cannot be imported)."""
    try:
        import tensorrt
    except ImportError:
        return "unknown"
    return str(getattr(tensorrt, "__version__", "unknown"))


def load_engine_llm(
    llm_cls: Any, kwargs: dict[str, Any], key: str | None, cache: EngineCache, manifest: dict[str, Any]
) -> tuple[Any, list[str]]:
    """(LLM on a TensorRT engine, notes): the cached engine for `key`, else build, save and cache it.

    `key` None means "do not cache" (build only). The cached engine is loaded with the runtime
    arguments only (no build_config); the tokenizer stays the original model's.
    """
    cached = cache.lookup(key) if key is not None else None
    if cached is not None:
        runtime = {k: v for k, v in kwargs.items() if k != "build_config"}
        if not runtime.get("skip_tokenizer_init"):
            runtime["tokenizer"] = kwargs["model"]
        return llm_cls(**{**runtime, "model": str(cached)}), [f"TensorRT engine reused from {cached}"]
    llm = llm_cls(**kwargs)
    if key is None:
        return llm, ["TensorRT engine built and not cached (GPU compute capability unknown)"]
    path = cache.store(key, lambda directory: llm.save(str(directory)), manifest)
    return llm, [f"TensorRT engine built and cached at {path}"]


class TensorRTBackend(EngineBackend):
    """TensorRT-LLM `LLM` API, one model per instance (see module docstring). Raises BackendError."""

    name = "tensorrt"
    label = "TensorRT-LLM"

    def __init__(self, engine_cache: EngineCache | None = None) -> None:
        super().__init__()
        self._cache = engine_cache or EngineCache()

    def load(self, config: ExperimentConfig, device: str) -> ModelInfo:
        """Start TRT-LLM for `config` on every visible GPU, then run one kernel warm-up request."""
        start_s = time.perf_counter()
        tensorrt_llm = self._import("tensorrt_llm", INSTALL_HINT)
        llmapi = self._import("tensorrt_llm.llmapi", INSTALL_HINT)
        version = str(getattr(tensorrt_llm, "__version__", "0.0"))
        engine = (config.tensorrt or TensorRTConfig()).runtime == "engine"
        if engine and version_tuple(version) > ENGINE_RUNTIME_MAX_VERSION:
            raise BackendError(
                f"tensorrt.runtime 'engine' needs TensorRT-LLM <= 1.2.x (installed: {version}); use runtime: pytorch"
            )
        if engine and config.weights == "random":
            raise BackendError(
                "tensorrt.runtime 'engine' builds from a checkpoint: use weights: pretrained "
                "or runtime: pytorch (dummy weights)"
            )
        return self._start(
            start_s, tensorrt_llm, config, device, lambda source: self._build(config, source, llmapi, version, engine)
        )

    def _build(
        self, config: ExperimentConfig, source: ModelSource, llmapi: Any, version: str, engine: bool
    ) -> list[str]:
        kwargs = llm_kwargs(config, source, llmapi, version)
        notes: list[str] = []
        if engine:
            self._llm, notes = self._load_engine(kwargs, config, version)
        else:
            self._llm = self._engine.LLM(**kwargs)
        self._tokenizer = getattr(self._llm, "tokenizer", None) if source.needs_tokenizer else None
        return notes

    def _load_engine(self, kwargs: dict[str, Any], config: ExperimentConfig, version: str) -> tuple[Any, list[str]]:
        try:
            from tensorrt_llm._tensorrt_engine import LLM as engine_llm_cls
        except ImportError:  # before 1.0 the default LLM built TensorRT engines
            engine_llm_cls = self._engine.LLM
        from llem_ray.measure.vram import architecture_config

        capability = compute_capability()
        build_flags = {k: v for k, v in kwargs.items() if k not in ("model", "tokenizer", "skip_tokenizer_init")}
        identity = model_identity(config.model, architecture_config(config.model))
        trt_version = tensorrt_version()
        key = engine_key(identity, build_flags, capability, trt_version, version) if capability else None
        manifest = {
            "identity": identity,
            "build_flags": build_flags,
            "compute_capability": capability,
            "tensorrt": trt_version,
            "tensorrt_llm": version,
        }
        return load_engine_llm(engine_llm_cls, kwargs, key, self._cache, manifest)

    def _sampling(self, config: ExperimentConfig, max_tokens: int, *, prefill: bool = False) -> dict[str, Any]:
        return sampling_kwargs(config, self._source, max_tokens, prefill=prefill)

    def _request_timing(self, output: Any, batch_wall_s: float, clock: WorkloadClock) -> RequestTiming:
        return request_timing(output, batch_wall_s)

    def _shutdown(self, llm: Any) -> None:
        """`llm.shutdown()`: ends the MPI workers."""
        llm.shutdown()
