"""A stand-in `vllm` package for adapter tests: the offline interface of vLLM 0.25, no GPU.

Follows vLLM's public API as the adapter uses it: `EngineArgs` (a dataclass; `LLM(**kwargs)` rejects
names it does not have, as the real `EngineArgs(**kwargs)` does), `LLM(model, **kwargs)` with
`generate(prompts, sampling_params, use_tqdm=..., lora_request=...)`, `get_tokenizer()` and
`reset_prefix_cache()`; `llm.llm_engine.vllm_config` (scheduler and cache config as the engine
resolved them) and `llm.llm_engine.engine_core.shutdown()` (vLLM 0.25 has no `LLM.shutdown`;
`LEGACY_SHUTDOWN = True` gives older releases' `LLM.shutdown` instead); `SamplingParams` (unknown
names rejected); `RequestOutput` / `CompletionOutput` and V1 `RequestStateStats` metrics (only
when `disable_log_stats=False`, as in vLLM), stamped with `time.monotonic()` like vLLM's engine core.

Deterministic continuous batching: at most `max_num_seqs` (default DEFAULT_MAX_NUM_SEQS) requests
run at once, admitted in order as others finish. Request i's prefill takes FIRST_TOKEN_S * (1 + i % 3),
then one token every TOKEN_INTERVAL_S; it yields `min_tokens` tokens when set, else half of
`max_tokens` (an early EOS). `generate` sleeps until the simulated last token, so wall time covers
the stamps. Every call is appended to `EVENTS` for assertions; `REFUSE_RESET = True` makes
`reset_prefix_cache` return False (as vLLM does while requests run).

The in-process async engine (`AsyncEngineArgs`, `AsyncLLMEngine`, vLLM 0.25's alias of V1
`AsyncLLM`) is in `_async.py`: it streams tokens at a fixed pace.
"""

from __future__ import annotations

import dataclasses
import heapq
import time
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

from vllm.sampling_params import RequestOutputKind

__version__ = "0.0.fake"
FIRST_TOKEN_S = 0.01
TOKEN_INTERVAL_S = 0.002
DEFAULT_MAX_NUM_SEQS = 256
EVENTS: list[tuple[str, Any]] = []
LEGACY_SHUTDOWN = False
REFUSE_RESET = False


@dataclass
class EngineArgs:
    model: str = ""
    tokenizer: str | None = None
    tokenizer_mode: str = "auto"
    skip_tokenizer_init: bool = False
    trust_remote_code: bool = False
    revision: str | None = None
    dtype: str = "auto"
    seed: int | None = None
    load_format: str = "auto"
    tensor_parallel_size: int = 1
    pipeline_parallel_size: int = 1
    distributed_executor_backend: str | None = None
    disable_log_stats: bool = False
    max_num_seqs: int | None = None
    max_num_batched_tokens: int | None = None
    max_model_len: int | None = None
    gpu_memory_utilization: float = 0.9
    kv_cache_memory_bytes: int | None = None
    num_gpu_blocks_override: int | None = None
    enforce_eager: bool = False
    compilation_config: Any = None
    enable_chunked_prefill: bool | None = None
    long_prefill_token_threshold: int = 0
    max_num_partial_prefills: int = 1
    enable_prefix_caching: bool | None = None
    kv_cache_dtype: str = "auto"
    calculate_kv_scales: bool = False
    block_size: int | None = None
    quantization: str | None = None
    attention_backend: str | None = None
    disable_cascade_attn: bool = False
    async_scheduling: bool = False
    scheduling_policy: str = "fcfs"
    disable_custom_all_reduce: bool = False
    enable_expert_parallel: bool = False
    swap_space: float = 4
    cpu_offload_gb: float = 0
    enable_lora: bool = False
    max_lora_rank: int = 16
    speculative_config: dict | None = None
    max_logprobs: int = 20
    hf_overrides: dict | None = None


@dataclass
class SamplingParams:
    n: int = 1
    max_tokens: int | None = 16
    min_tokens: int = 0
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    repetition_penalty: float = 1.0
    seed: int | None = None
    detokenize: bool = True
    ignore_eos: bool = False
    output_kind: RequestOutputKind = RequestOutputKind.CUMULATIVE


@dataclass
class RequestStateStats:
    num_generation_tokens: int = 0
    arrival_time: float = 0.0
    queued_ts: float = 0.0
    scheduled_ts: float = 0.0
    first_token_ts: float = 0.0
    last_token_ts: float = 0.0
    first_token_latency: float = 0.0
    is_corrupted: bool = False


@dataclass
class CompletionOutput:
    index: int
    text: str
    token_ids: list[int]
    cumulative_logprob: float | None = None
    logprobs: Any = None
    finish_reason: str | None = "length"


@dataclass
class RequestOutput:
    request_id: str
    prompt: str | None
    prompt_token_ids: list[int]
    prompt_logprobs: Any
    outputs: list[CompletionOutput]
    finished: bool
    metrics: RequestStateStats | None = None
    num_cached_tokens: int | None = None


class _Tokenizer:
    """Character-level: one id per character (ord % 200 + 3)."""

    def encode(self, text: str) -> list[int]:
        return [ord(c) % 200 + 3 for c in text]


class _EngineCore:
    def shutdown(self) -> None:
        EVENTS.append(("shutdown", None))


class LLM:
    def __init__(self, model: str, **kwargs: Any) -> None:
        known = {f.name for f in dataclasses.fields(EngineArgs)}
        unknown = sorted(set(kwargs) - known)
        if unknown:
            raise TypeError(f"EngineArgs.__init__() got an unexpected keyword argument '{unknown[0]}'")
        self.engine_args = args = EngineArgs(model=model, **kwargs)
        self._counter = 0
        scheduler = SimpleNamespace(max_num_seqs=args.max_num_seqs or DEFAULT_MAX_NUM_SEQS)
        cache = SimpleNamespace(enable_prefix_caching=args.enable_prefix_caching is not False)
        self.llm_engine = SimpleNamespace(
            vllm_config=SimpleNamespace(scheduler_config=scheduler, cache_config=cache), engine_core=_EngineCore()
        )
        if LEGACY_SHUTDOWN:
            self.shutdown = self._legacy_shutdown
        EVENTS.append(("init", dict(model=model, **kwargs)))

    def get_tokenizer(self) -> _Tokenizer:
        if self.engine_args.skip_tokenizer_init:
            raise ValueError("tokenizer was not initialised (skip_tokenizer_init=True)")
        return _Tokenizer()

    def reset_prefix_cache(self, reset_running_requests: bool = False, reset_connector: bool = False) -> bool:
        EVENTS.append(("reset_prefix_cache", None))
        return not REFUSE_RESET

    def generate(
        self,
        prompts: list[Any],
        sampling_params: SamplingParams | None = None,
        *,
        use_tqdm: bool = True,
        lora_request: Any = None,
    ) -> list[RequestOutput]:
        params = sampling_params or SamplingParams()
        EVENTS.append(("generate", {"prompts": prompts, "params": params, "lora_request": lora_request}))
        arrival_wall, origin = time.time(), time.monotonic()
        slots = [0.0] * self.llm_engine.vllm_config.scheduler_config.max_num_seqs  # when each slot frees, s
        heapq.heapify(slots)
        outputs, end_s = [], 0.0
        for i, prompt in enumerate(prompts):
            ids = list(prompt["prompt_token_ids"])
            n = params.min_tokens or max(1, (params.max_tokens or 16) // 2)
            start_s = heapq.heappop(slots)
            first_s = start_s + FIRST_TOKEN_S * (1 + i % 3)
            last_s = first_s + TOKEN_INTERVAL_S * (n - 1)
            heapq.heappush(slots, last_s)
            end_s = max(end_s, last_s)
            stats = (
                None
                if self.engine_args.disable_log_stats
                else RequestStateStats(
                    num_generation_tokens=n,
                    arrival_time=arrival_wall,
                    queued_ts=origin,
                    scheduled_ts=origin + start_s,
                    first_token_ts=origin + first_s,
                    last_token_ts=origin + last_s,
                    first_token_latency=first_s,
                )
            )
            completion = CompletionOutput(0, "" if not params.detokenize else "x" * n, [7] * n)
            outputs.append(RequestOutput(str(self._counter), None, ids, None, [completion], True, stats))
            self._counter += 1
        time.sleep(max(0.0, origin + end_s - time.monotonic()))
        return outputs

    def _legacy_shutdown(self) -> None:
        EVENTS.append(("shutdown", None))


from vllm._async import AsyncEngineArgs, AsyncLLMEngine  # noqa: E402, F401  (re-exported; needs EngineArgs and the outputs above)
