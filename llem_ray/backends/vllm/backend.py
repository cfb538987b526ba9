"""`VLLMBackend` (CM-02, CM-07): vLLM's offline `LLM` engine with continuous batching.

Load: `vllm.LLM(**engine_kwargs(...))` with the experiment's model source (engine_common), dtype from
`precision`, `tensor_parallel_size = resources.gpus`, seed, `load_format="dummy"` for
`weights: random`, the `vllm:` section's fields under vLLM's own names, then `passthrough_kwargs`
untouched (they win over everything). With TP > 1 the workers are vLLM's own processes
(`distributed_executor_backend="mp"`): the Ray actor holds all TP GPUs, and vLLM never tries to
build a Ray placement group inside ours. `VLLM_WORKER_MULTIPROC_METHOD=spawn`
because CUDA may already be initialised in the actor. One short request after load warms the
kernels up (lazy kernel/JIT set-up lands in load time, not in the measured window; not with
`cold_start`); warm-up batches and convergence are the measurement protocol's.

Generate: every prompt is submitted at once and vLLM schedules them (continuous batching, limited
by `max_num_seqs` / `max_num_batched_tokens`). Sampling follows `decoder` (greedy = temperature 0);
`fixed_output_length` sets `min_tokens = max_tokens`. Output is not detokenised (`detokenize=False`),
so the window holds no tokenizer work. The prefix cache is cleared before each workload, so
warm-up prompts never make the measured prefill cheaper; a refused clear raises BackendError.

Per-request timing (no streaming needed, which is what broke the seed's tool, CM-07): vLLM's
`RequestOutput.metrics` (`disable_log_stats=False` is set for this). vLLM 0.25 (V1) fills a
`RequestStateStats`: TTFT is its `first_token_latency` (arrival to first token, queueing under load
included; wall clock); latency adds the first-to-last-token span; the request's span on the
workload's time axis is (`scheduled_ts`, `first_token_ts`, `last_token_ts`) minus the monotonic
time the workload was handed over (the engine core stamps them with `time.monotonic()` in its own
process: one clock per host on Linux). Spans that fall outside the workload (another clock) are
dropped. vLLM records only the first and last token times of a request, so its ITL entries are
the request's mean decode interval repeated once per gap: token-weighted ITL means are exact, ITL
percentiles are percentiles of per-request means. Older engines' `RequestMetrics` (arrival_time,
first_scheduled_time, first_token_time, last_token_time; wall clock) are read the same way.
Without metrics, a request's latency is the workload's wall time and TTFT is None.

The steady-state window (measure/steady_state.py) comes from these spans: the engine's effective
`max_num_seqs` (read back from the built engine, `ModelInfo.max_concurrent_requests`) is the batch
that must be full.

Every failure raises BackendError; a missing vLLM names the `[vllm]` extra and the runtime_env route.
"""

from __future__ import annotations

import gc
import logging
import os
import time
from typing import TYPE_CHECKING, Any

from llem_ray.backends.engine_common import EngineBackend, ModelSource, WorkloadClock, engine_dtype
from llem_ray.backends.protocol import ModelInfo, RequestTiming
from llem_ray.backends.vllm.config import VLLMConfig
from llem_ray.errors import BackendError

if TYPE_CHECKING:
    from llem_ray.config.experiment import ExperimentConfig

logger = logging.getLogger(__name__)

SET_BY_BACKEND: tuple[str, ...] = (
    "model",
    "dtype",
    "tensor_parallel_size",
    "seed",
    "load_format",
    "distributed_executor_backend",
    "disable_log_stats",
    "skip_tokenizer_init",
    "enable_lora",
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


SPAN_SLACK_S = 1.0
"""A request span may start this long before its workload was handed over (clock granularity), s."""


def _span(marks: tuple[float, float, float], origin_s: float, wall_s: float) -> tuple[float, float, float] | None:
    """(joined, first token, last token) of a request relative to `origin_s`, or None if off the workload."""
    joined, first, last = (m - origin_s for m in marks)
    if not -SPAN_SLACK_S <= joined <= first <= last <= wall_s + SPAN_SLACK_S:
        return None
    return max(joined, 0.0), max(first, 0.0), max(last, 0.0)


def request_timing(output: Any, batch_wall_s: float, clock: WorkloadClock | None = None) -> RequestTiming:
    """Timing of one `RequestOutput` from its `metrics` (see module docstring); seconds.

    `clock` is when the workload was handed over (None: no span is derived).
    """
    tokens = len(output.outputs[0].token_ids) if output.outputs else 0
    metrics = getattr(output, "metrics", None)
    ttft_s: float | None = None
    first_s = last_s = 0.0
    span: tuple[float, float, float] | None = None
    if metrics is not None and getattr(metrics, "first_token_latency", 0.0):  # V1 RequestStateStats
        ttft_s = float(metrics.first_token_latency)
        first_s, last_s = float(metrics.first_token_ts), float(metrics.last_token_ts)
        scheduled_s = float(getattr(metrics, "scheduled_ts", 0.0) or 0.0)
        if clock is not None and scheduled_s > 0:
            span = _span((scheduled_s, first_s, last_s), clock.monotonic_s, batch_wall_s)
    elif metrics is not None and getattr(metrics, "first_token_time", None) is not None:  # V0 RequestMetrics
        ttft_s = float(metrics.first_token_time - metrics.arrival_time)
        first_s = float(metrics.first_token_time)
        last_s = float(metrics.last_token_time or metrics.first_token_time)
        scheduled_s = float(getattr(metrics, "first_scheduled_time", None) or 0.0)
        if clock is not None and scheduled_s > 0:
            span = _span((scheduled_s, first_s, last_s), clock.wall_s, batch_wall_s)
    if ttft_s is None:
        return RequestTiming(latency_s=batch_wall_s, output_tokens=tokens)
    decode_s = max(0.0, last_s - first_s)
    itl_s = [decode_s / (tokens - 1)] * (tokens - 1) if tokens > 1 and decode_s > 0 else []
    return RequestTiming(latency_s=ttft_s + decode_s, output_tokens=tokens, ttft_s=ttft_s, itl_s=itl_s, span_s=span)


ENGINE_EXIT_WAIT_S = 30.0
"""Longest wait for the engine's processes to exit after shutdown, s."""


def child_processes() -> list[Any]:
    """This process's child processes (psutil.Process objects, recursive); [] without psutil."""
    try:
        import psutil

        return psutil.Process().children(recursive=True)
    except Exception:  # psutil missing, or a child exited while listing: nothing to wait for
        return []


def processes_before_engine_start() -> list[Any]:
    """This process's children just before an engine starts (for `started_since`).

    Starts multiprocessing's resource tracker first: vLLM's first `spawn` would start it, and the
    tracker lives as long as this process, so counted among the engine's processes it made every
    `shutdown_engine` wait the whole ENGINE_EXIT_WAIT_S (30 s per run, seen on the H200).
    """
    from multiprocessing import resource_tracker

    resource_tracker.ensure_running()
    return child_processes()


def started_since(before: list[Any]) -> list[Any]:
    """Child processes that are not in `before` (those an engine start just spawned)."""
    known = {p.pid for p in before}
    return [p for p in child_processes() if p.pid not in known]


def shutdown_engine(llm: Any, processes: list[Any] | None = None, wait_s: float = ENGINE_EXIT_WAIT_S) -> None:
    """Stop a `vllm.LLM`'s engine core: `LLM.shutdown` (older vLLM), else its client's `shutdown`.

    vLLM 0.25 has neither `LLM.shutdown` nor `LLMEngine.shutdown`; its engine core client
    (`llm.llm_engine.engine_core`) has, and without it the engine core process and its GPU
    memory live until the `LLM` object is garbage collected. Then waits up to `wait_s` for
    `processes` (the engine's, from `started_since`) to exit, so that the next engine on this GPU
    finds its memory free; those still alive then are named in a logged warning (the wait was
    wasted on them, or their GPU memory is not free yet). Errors of the shutdown propagate.
    """
    engine = getattr(llm, "llm_engine", None)
    for owner in (llm, engine, getattr(engine, "engine_core", None)):
        shutdown = getattr(owner, "shutdown", None)
        if callable(shutdown):
            shutdown()
            break
    if processes:
        import psutil

        _, alive = psutil.wait_procs(processes, timeout=wait_s)
        if alive:
            logger.warning(
                "vLLM engine processes still alive %.0f s after shutdown: %s",
                wait_s,
                ", ".join(str(p.pid) for p in alive),
            )


def _engine_config(llm: Any) -> Any:
    """The built engine's `VllmConfig` (vLLM >= 0.6: `llm.llm_engine.vllm_config`), or None."""
    return getattr(getattr(llm, "llm_engine", None), "vllm_config", None)


class VLLMBackend(EngineBackend):
    """vLLM offline engine, one model per instance (see module docstring). Raises BackendError."""

    name = "vllm"
    label = "vLLM"

    def __init__(self) -> None:
        super().__init__()
        self._lora_request: Any = None
        self._engine_processes: list[Any] = []

    def load(self, config: ExperimentConfig, device: str) -> ModelInfo:
        """Start the vLLM engine for `config` on every visible GPU, then run one kernel warm-up request."""
        start_s = time.perf_counter()
        vllm = self._import(
            "vllm",
            "pip install 'llem-ray[vllm]', or give vllm experiments their own Ray "
            "runtime_env (runtime_envs.vllm, docs/backends.md)",
        )
        if config.lora is not None and config.lora.merge:
            raise BackendError(
                "lora.merge is not supported by vLLM (it applies adapters at run time): set merge: false"
            )
        os.environ.setdefault("VLLM_WORKER_MULTIPROC_METHOD", "spawn")
        return self._start(start_s, vllm, config, device, lambda source: self._build(config, source, device))

    def _build(self, config: ExperimentConfig, source: ModelSource, device: str) -> list[str]:
        before = processes_before_engine_start()
        self._llm = self._engine.LLM(**engine_kwargs(config, source, device))
        self._engine_processes = started_since(before)
        if source.needs_tokenizer:
            self._tokenizer = self._llm.get_tokenizer()
        if config.lora is not None:
            from vllm.lora.request import LoRARequest

            self._lora_request = LoRARequest("llem-adapter", 1, config.lora.adapter)
        return []

    def _sampling(self, config: ExperimentConfig, max_tokens: int, *, prefill: bool = False) -> dict[str, Any]:
        return sampling_kwargs(config, max_tokens, prefill=prefill)

    def _request_timing(self, output: Any, batch_wall_s: float, clock: WorkloadClock) -> RequestTiming:
        return request_timing(output, batch_wall_s, clock)

    def _engine_facts(self) -> tuple[int | None, bool | None]:
        """(effective max_num_seqs, prefix caching on) from the built engine's config; None where unknown."""
        vllm_config = _engine_config(self._llm)
        scheduler = getattr(vllm_config, "scheduler_config", None)
        cache = getattr(vllm_config, "cache_config", None)
        max_seqs = getattr(scheduler, "max_num_seqs", None)
        prefix = getattr(cache, "enable_prefix_caching", None)
        return (max_seqs if isinstance(max_seqs, int) else None), (prefix if isinstance(prefix, bool) else None)

    def _before_workload(self) -> None:
        """Clear the prefix cache, so warm-up prompts never make a measured prefill cheaper.

        Raises BackendError when the engine refuses (vLLM returns False while requests still run).
        """
        reset = getattr(self._llm, "reset_prefix_cache", None)
        if reset is not None and reset() is False:
            raise BackendError("vLLM refused to clear its prefix cache before the workload (requests still running)")

    def _generate_extras(self) -> dict[str, Any]:
        return {"lora_request": self._lora_request} if self._lora_request is not None else {}

    def streaming_engine(self) -> Any:
        """vLLM's in-process async engine, for `scenario: serving` (backends/vllm/serving.py)."""
        from llem_ray.backends.vllm.serving import VLLMStreamingEngine

        return VLLMStreamingEngine()

    def _shutdown(self, llm: Any) -> None:
        processes, self._engine_processes = self._engine_processes, []
        shutdown_engine(llm, processes)

    def unload(self) -> None:
        """Shut the engine (and its worker processes) down and remove temporary files; safe to call twice.

        The LoRA request is dropped too, and a garbage collection frees the engine's last references.
        """
        self._lora_request = None
        try:
            super().unload()
        finally:
            gc.collect()
