"""The stand-in's in-process async engine: vLLM 0.25's `AsyncEngineArgs` and `AsyncLLMEngine` (V1 `AsyncLLM`).

As in vLLM: `AsyncEngineArgs` is `EngineArgs` plus `enable_log_requests` (unknown names rejected
by the dataclass), `AsyncLLMEngine.from_engine_args(args)` builds the engine, and
`generate(prompt, sampling_params, request_id, lora_request=...)` is an async generator of
`RequestOutput`s: with `output_kind=RequestOutputKind.DELTA` each carries only the new token ids,
else all so far; the last has `finished=True`. `get_tokenizer()` (sync, as in 0.25),
`async reset_prefix_cache()`, `shutdown()` and `vllm_config` (scheduler and cache config) are
there too. Like vLLM's, the engine belongs to the event loop it was first used on: a request from
another loop raises RuntimeError (vLLM's output handler is a task of that first loop).

Fixed pace, no GPU: at most `max_num_seqs` requests run at once (the rest wait their turn); a
running request streams its first token FIRST_TOKEN_S after it starts, then one token every
TOKEN_INTERVAL_S (module `vllm`'s constants), `min_tokens` of them when set, else half of
`max_tokens`. Every call is appended to `vllm.EVENTS`; a request id in `FAIL_REQUEST_IDS` fails
with ValueError after its first token.
"""

from __future__ import annotations

import asyncio
import dataclasses
import gc
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import vllm
from vllm.sampling_params import RequestOutputKind

FAIL_REQUEST_IDS: set[str] = set()


@dataclass
class AsyncEngineArgs(vllm.EngineArgs):
    enable_log_requests: bool = False


class AsyncLLMEngine:
    def __init__(self, args: AsyncEngineArgs) -> None:
        self.engine_args = args
        scheduler = SimpleNamespace(max_num_seqs=args.max_num_seqs or vllm.DEFAULT_MAX_NUM_SEQS)
        cache = SimpleNamespace(enable_prefix_caching=args.enable_prefix_caching is not False)
        self.vllm_config = SimpleNamespace(scheduler_config=scheduler, cache_config=cache)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._slots: asyncio.Semaphore | None = None
        self._running: set[str] = set()
        vllm.EVENTS.append(("async_init", dataclasses.asdict(args)))

    @classmethod
    def from_engine_args(cls, engine_args: AsyncEngineArgs, start_engine_loop: bool = True) -> AsyncLLMEngine:
        if not isinstance(engine_args, AsyncEngineArgs):
            raise TypeError("from_engine_args expects AsyncEngineArgs")
        return cls(engine_args)

    def _bind(self) -> asyncio.Semaphore:
        loop = asyncio.get_running_loop()
        if self._loop is None:
            self._loop = loop
            self._slots = asyncio.Semaphore(self.vllm_config.scheduler_config.max_num_seqs)
        elif self._loop is not loop:
            raise RuntimeError("AsyncLLM used from another event loop than its output handler's")
        assert self._slots is not None
        return self._slots

    def get_tokenizer(self) -> Any:
        if self.engine_args.skip_tokenizer_init:
            raise ValueError("tokenizer was not initialised (skip_tokenizer_init=True)")
        return vllm._Tokenizer()

    async def reset_prefix_cache(self, reset_running_requests: bool = False, reset_connector: bool = False) -> bool:
        self._bind()
        vllm.EVENTS.append(("async_reset_prefix_cache", len(self._running)))
        return not vllm.REFUSE_RESET

    async def generate(
        self, prompt: dict, sampling_params: vllm.SamplingParams, request_id: str, *, lora_request: Any = None
    ):
        slots = self._bind()
        if request_id in self._running:
            raise ValueError(f"request id {request_id} is already running")
        vllm.EVENTS.append(
            (
                "async_generate",
                {
                    "request_id": request_id,
                    "params": sampling_params,
                    "prompt": prompt,
                    "lora_request": lora_request,
                    # the caller's heap, frozen or not (this is its process); counted for the first
                    # request of a batch only: the count walks every frozen object
                    "gc_frozen_objects": gc.get_freeze_count() if request_id.endswith("-0") else None,
                },
            )
        )
        ids = list(prompt["prompt_token_ids"])
        n = sampling_params.min_tokens or max(1, (sampling_params.max_tokens or 16) // 2)
        delta = sampling_params.output_kind == RequestOutputKind.DELTA
        async with slots:
            self._running.add(request_id)
            try:
                await asyncio.sleep(vllm.FIRST_TOKEN_S)
                for k in range(n):
                    if k:
                        await asyncio.sleep(vllm.TOKEN_INTERVAL_S)
                    if k == 1 and request_id in FAIL_REQUEST_IDS:
                        raise ValueError(f"stand-in failure of {request_id}")
                    tokens = [7] if delta else [7] * (k + 1)
                    completion = vllm.CompletionOutput(0, "", tokens, finish_reason="length" if k == n - 1 else None)
                    yield vllm.RequestOutput(request_id, None, ids, None, [completion], k == n - 1)
            finally:
                self._running.discard(request_id)

    def shutdown(self, timeout: float | None = None) -> None:
        vllm.EVENTS.append(("async_shutdown", len(self._running)))
