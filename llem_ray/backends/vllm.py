"""`VLLMBackend` (CM-02, CM-07): vLLM's offline `LLM` engine with continuous batching.

Load: `vllm.LLM(**engine_kwargs(...))` with the experiment's model source (engine_common), dtype from
`precision`, `tensor_parallel_size = resources.gpus`, seed, `load_format="dummy"` for
`weights: random`, the `vllm:` section's fields under vLLM's own names, then `passthrough_kwargs`
untouched (they win over everything). With TP > 1 the workers are vLLM's own processes
(`distributed_executor_backend="mp"`): the Ray actor holds all TP GPUs, and vLLM never tries to
build a Ray placement group inside ours (spec NOTES-ray). `VLLM_WORKER_MULTIPROC_METHOD=spawn`
because CUDA may already be initialised in the actor. One short request after load warms the
kernels up (lazy kernel/JIT set-up lands in load time, not in the measured window; not with
`cold_start`); warm-up batches and convergence are the measurement protocol's.

Generate: every prompt is submitted at once and vLLM schedules them (continuous batching, limited
by `max_num_seqs` / `max_num_batched_tokens`). Sampling follows `decoder` (greedy = temperature 0);
`fixed_output_length` sets `min_tokens = max_tokens`. Output is not detokenised (`detokenize=False`),
so the window holds no tokenizer work. The prefix cache is cleared before each workload, so
warm-up prompts never make the measured prefill cheaper.

Per-request timing (no streaming needed, which is what broke the seed's tool, CM-07): vLLM's
`RequestOutput.metrics` (`disable_log_stats=False` is set for this). TTFT is the engine's
`first_token_latency` (arrival to first token, queueing under load included); latency adds the
first-to-last-token span. vLLM records only the first and last token times of a request, so its
ITL entries are the request's mean decode interval repeated once per gap: token-weighted ITL means
are exact, ITL percentiles are percentiles of per-request means. Older engines' `RequestMetrics`
(first_token_time / last_token_time / arrival_time) are read the same way. Without metrics, a
request's latency is the workload's wall time and TTFT is None.

Every failure raises BackendError; a missing vLLM names the `[vllm]` extra and the runtime_env route.
"""

from __future__ import annotations

import gc
import os
import time
from typing import TYPE_CHECKING, Any

from llem_ray.backends.engine_common import EngineBackend, ModelSource, engine_dtype
from llem_ray.backends.protocol import ModelInfo, RequestTiming
from llem_ray.config.backends import VLLMConfig
from llem_ray.errors import BackendError

if TYPE_CHECKING:
    from llem_ray.config.experiment import ExperimentConfig

SET_BY_BACKEND: tuple[str, ...] = (
    "model", "dtype", "tensor_parallel_size", "seed", "load_format", "distributed_executor_backend",
    "disable_log_stats", "skip_tokenizer_init", "enable_lora",
)
"""vLLM engine arguments this backend derives from the experiment (coverage counts them as covered)."""



def engine_kwargs(config: ExperimentConfig, source: ModelSource, device: str) -> dict[str, Any]:
    """Keyword arguments of `vllm.LLM` for `config`: derived ones, then the section, then passthrough."""
    tp = config.resources.gpus if device == "cuda" else 1
    kwargs: dict[str, Any] = {
        "model": source.path_or_id,
        "dtype": engine_dtype(config.precision),
        "tensor_parallel_size": tp,
        "seed": config.random_seed,
        "disable_log_stats": False,
    }
    if not source.needs_tokenizer:
        kwargs["skip_tokenizer_init"] = True
    if config.weights == "random":
        kwargs["load_format"] = "dummy"
    if tp > 1:
        kwargs["distributed_executor_backend"] = "mp"
    if config.lora is not None:
        kwargs["enable_lora"] = True
    kwargs.update((config.vllm or VLLMConfig()).explicit())
    kwargs.update(config.passthrough_kwargs or {})
    return kwargs


def sampling_kwargs(config: ExperimentConfig, max_tokens: int, *, prefill: bool = False) -> dict[str, Any]:
    """Keyword arguments of `vllm.SamplingParams` for one workload (prefill: one token, no minimum)."""
    decoder = config.decoder
    kwargs: dict[str, Any] = {"n": 1, "max_tokens": max_tokens, "seed": config.random_seed, "detokenize": False}
    if decoder.fixed_output_length and not prefill:
        kwargs["min_tokens"] = max_tokens
    if decoder.do_sample:
        kwargs["temperature"] = decoder.temperature
        if decoder.top_k is not None:
            kwargs["top_k"] = decoder.top_k or -1  # 0 means "no limit", which vLLM spells -1
        if decoder.top_p is not None:
            kwargs["top_p"] = decoder.top_p
    else:
        kwargs["temperature"] = 0.0
    if decoder.repetition_penalty is not None:
        kwargs["repetition_penalty"] = decoder.repetition_penalty
    return kwargs


def request_timing(output: Any, batch_wall_s: float) -> RequestTiming:
    """Timing of one `RequestOutput` from its `metrics` (see module docstring); seconds."""
    tokens = len(output.outputs[0].token_ids) if output.outputs else 0
    metrics = getattr(output, "metrics", None)
    ttft_s: float | None = None
    first_s = last_s = 0.0
    if metrics is not None and getattr(metrics, "first_token_latency", 0.0):  # V1 RequestStateStats
        ttft_s = float(metrics.first_token_latency)
        first_s, last_s = float(metrics.first_token_ts), float(metrics.last_token_ts)
    elif metrics is not None and getattr(metrics, "first_token_time", None) is not None:  # V0 RequestMetrics
        ttft_s = float(metrics.first_token_time - metrics.arrival_time)
        first_s = float(metrics.first_token_time)
        last_s = float(metrics.last_token_time or metrics.first_token_time)
    if ttft_s is None:
        return RequestTiming(latency_s=batch_wall_s, output_tokens=tokens)
    span_s = max(0.0, last_s - first_s)
    itl_s = [span_s / (tokens - 1)] * (tokens - 1) if tokens > 1 and span_s > 0 else []
    return RequestTiming(latency_s=ttft_s + span_s, output_tokens=tokens, ttft_s=ttft_s, itl_s=itl_s)


class VLLMBackend(EngineBackend):
    """vLLM offline engine, one model per instance (see module docstring). Raises BackendError."""

    name = "vllm"
    label = "vLLM"

    def __init__(self) -> None:
        super().__init__()
        self._lora_request: Any = None

    def load(self, config: ExperimentConfig, device: str) -> ModelInfo:
        """Start the vLLM engine for `config` on every visible GPU, then run one kernel warm-up request."""
        start_s = time.perf_counter()
        vllm = self._import("vllm", "pip install 'llem-ray[vllm]', or give vllm experiments their own Ray "
                                    "runtime_env (runtime_envs.vllm, docs/backends.md)")
        if config.lora is not None and config.lora.merge:
            raise BackendError("lora.merge is not supported by vLLM (it applies adapters at run time): set merge: false")
        os.environ.setdefault("VLLM_WORKER_MULTIPROC_METHOD", "spawn")
        return self._start(start_s, vllm, config, device, lambda source: self._build(config, source, device))

    def _build(self, config: ExperimentConfig, source: ModelSource, device: str) -> list[str]:
        self._llm = self._engine.LLM(**engine_kwargs(config, source, device))
        if source.needs_tokenizer:
            self._tokenizer = self._llm.get_tokenizer()
        if config.lora is not None:
            from vllm.lora.request import LoRARequest

            self._lora_request = LoRARequest("llem-adapter", 1, config.lora.adapter)
        return []

    def _sampling(self, config: ExperimentConfig, max_tokens: int, *, prefill: bool = False) -> dict[str, Any]:
        return sampling_kwargs(config, max_tokens, prefill=prefill)

    def _request_timing(self, output: Any, batch_wall_s: float) -> RequestTiming:
        return request_timing(output, batch_wall_s)

    def _before_workload(self) -> None:
        """Clear the prefix cache, so warm-up prompts never make a measured prefill cheaper."""
        reset = getattr(self._llm, "reset_prefix_cache", None)
        if reset is not None:
            reset()

    def _generate_extras(self) -> dict[str, Any]:
        return {"lora_request": self._lora_request} if self._lora_request is not None else {}

    def _shutdown(self, llm: Any) -> None:
        shutdown = getattr(llm, "shutdown", None) or getattr(getattr(llm, "llm_engine", None), "shutdown", None)
        if shutdown is not None:
            shutdown()

    def unload(self) -> None:
        """Shut the engine (and its worker processes) down and remove temporary files; safe to call twice.

        The LoRA request is dropped too, and a garbage collection frees the engine's last references.
        """
        self._lora_request = None
        try:
            super().unload()
        finally:
            gc.collect()
