"""`VLLMStreamingEngine`: vLLM's in-process async engine (`AsyncLLMEngine`, V1 `AsyncLLM`) as a server.

What `vllm serve` runs behind its HTTP API, without the HTTP: the engine lives on the experiment's
own event loop (`backends.streaming.EngineLoop`), its engine core in vLLM's own process, and each
request streams its tokens back through `AsyncLLM.generate` as they are produced
(`RequestOutputKind.DELTA`: every output carries only the new token ids). No port is opened, and
the client-side timing the load generator records has no HTTP, JSON or network stack in it: it is
the engine's own latency as an in-process client sees it. Why not `vllm serve` on 127.0.0.1:
docs/architecture.md.

Engine arguments are the offline backend's (`backends.vllm.backend.engine_kwargs`: derived ones, the
`vllm:` section, then `passthrough_kwargs`) given to `AsyncEngineArgs`; a `compilation_config`
level becomes `{"mode": level}`, which is what `vllm.LLM` does with it. Sampling is the offline
backend's (`sampling_kwargs`: greedy = temperature 0, fixed output length = `min_tokens`). One
short request after load warms the kernels up (not with `cold_start`). The prefix cache is cleared before the serving
run (`clear_cache`). Every failure raises BackendError; the engine core process is waited for at
unload, so the next engine on this GPU finds its memory free.
"""

from __future__ import annotations

import importlib
import inspect
import os
import time
from collections.abc import AsyncIterator, Coroutine
from typing import TYPE_CHECKING, Any, TypeVar

from llem_ray.backends.engine_common import WARMUP_PROMPT_IDS, ModelSource, encode_prompts, engine_dtype
from llem_ray.backends.protocol import ModelInfo, Prompt
from llem_ray.backends.streaming import EngineLoop
from llem_ray.backends.vllm.backend import (
    engine_kwargs,
    processes_before_engine_start,
    sampling_kwargs,
    shutdown_engine,
    started_since,
)
from llem_ray.errors import BackendError

if TYPE_CHECKING:
    from llem_ray.config.experiment import ExperimentConfig

T = TypeVar("T")


def async_engine_kwargs(config: ExperimentConfig, source: ModelSource, device: str) -> dict[str, Any]:
    """Keyword arguments of `vllm.AsyncEngineArgs` for `config` (the offline engine's, see module docstring)."""
    kwargs = engine_kwargs(config, source, device)
    if isinstance(kwargs.get("compilation_config"), int):
        kwargs["compilation_config"] = {"mode": kwargs["compilation_config"]}
    return kwargs


class VLLMStreamingEngine:
    """vLLM's async engine on an event loop of its own (see module docstring). Raises BackendError."""

    name = "vllm"

    def __init__(self) -> None:
        self._vllm: Any = None
        self._delta: Any = None  # vllm.sampling_params.RequestOutputKind.DELTA
        self._engine: Any = None
        self._loop: EngineLoop | None = None
        self._config: ExperimentConfig | None = None
        self._tokenizer: Any = None
        self._lora_request: Any = None
        self._params: dict[int, Any] = {}
        self._processes: list[Any] = []

    def load(self, config: ExperimentConfig, device: str) -> ModelInfo:
        """Start the engine on every visible GPU and its event loop, then run one kernel warm-up request
        (none for `config.cold_start`: its first request meets the engine cold)."""
        start_s = time.perf_counter()
        try:
            self._vllm = importlib.import_module("vllm")
            self._delta = importlib.import_module("vllm.sampling_params").RequestOutputKind.DELTA
        except ImportError as exc:
            raise BackendError(
                f"vLLM is not installed in this environment ({exc}): pip install 'llem-ray[vllm]', "
                "or give vllm experiments their own Ray runtime_env (docs/backends.md)"
            ) from exc
        if config.lora is not None and config.lora.merge:
            raise BackendError(
                "lora.merge is not supported by vLLM (it applies adapters at run time): set merge: false"
            )
        os.environ.setdefault("VLLM_WORKER_MULTIPROC_METHOD", "spawn")
        self._config = config
        source = ModelSource.prepare(config)
        self._loop = EngineLoop("llem-vllm-serving")
        try:
            before = processes_before_engine_start()
            self._loop.call(self._build(config, source, device))
            self._processes = started_since(before)
            if not config.cold_start:
                self._loop.call(self._drain(self.stream("llem-load-warmup", list(WARMUP_PROMPT_IDS), 2)))
        except BackendError:
            self.unload()
            raise
        except Exception as exc:  # vLLM raises anything from ValueError to CUDA errors at start
            self.unload()
            raise BackendError(f"vLLM could not start serving '{config.model}': {type(exc).__name__}: {exc}") from exc
        vllm_config = getattr(self._engine, "vllm_config", None)
        max_seqs = getattr(getattr(vllm_config, "scheduler_config", None), "max_num_seqs", None)
        prefix = getattr(getattr(vllm_config, "cache_config", None), "enable_prefix_caching", None)
        return ModelInfo(
            n_parameters=source.n_parameters or 0,
            dtype=engine_dtype(config.precision),
            device=device,
            load_time_s=time.perf_counter() - start_s,
            vocab_size=source.vocab_size,
            notes=tuple(source.notes),
            max_concurrent_requests=max_seqs if isinstance(max_seqs, int) else None,
            prefix_caching=prefix if isinstance(prefix, bool) else None,
        )

    async def _build(self, config: ExperimentConfig, source: ModelSource, device: str) -> None:
        """Build the engine inside the loop, so its output handler is one of the loop's tasks."""
        args = self._vllm.AsyncEngineArgs(**async_engine_kwargs(config, source, device))
        self._engine = self._vllm.AsyncLLMEngine.from_engine_args(args)
        if source.needs_tokenizer:
            tokenizer = self._engine.get_tokenizer()
            self._tokenizer = await tokenizer if inspect.isawaitable(tokenizer) else tokenizer
        if config.lora is not None:
            from vllm.lora.request import LoRARequest

            self._lora_request = LoRARequest("llem-adapter", 1, config.lora.adapter)

    @staticmethod
    async def _drain(chunks: AsyncIterator[int]) -> int:
        return sum([n async for n in chunks])

    def _loaded(self) -> ExperimentConfig:
        if self._engine is None or self._config is None or self._loop is None:
            raise BackendError("the vLLM streaming engine has no engine loaded")
        return self._config

    def encode(self, prompts: list[Prompt]) -> list[list[int]]:
        """Token ids of `prompts`: ids as given, text through the engine's tokenizer, cut at `max_input_tokens`."""
        return encode_prompts(prompts, self._tokenizer, self._loaded().max_input_tokens)

    def _sampling(self, max_tokens: int) -> Any:
        if max_tokens not in self._params:
            kwargs = sampling_kwargs(self._loaded(), max_tokens)
            self._params[max_tokens] = self._vllm.SamplingParams(**kwargs, output_kind=self._delta)
        return self._params[max_tokens]

    async def stream(self, request_id: str, token_ids: list[int], max_tokens: int) -> AsyncIterator[int]:
        """Run one request, yielding the number of new tokens in each output vLLM streams (DELTA outputs).

        Raises BackendError when vLLM fails the request; cancelling the caller aborts it in the engine.
        """
        params = self._sampling(max_tokens)
        extra = {"lora_request": self._lora_request} if self._lora_request is not None else {}
        try:
            async for output in self._engine.generate({"prompt_token_ids": token_ids}, params, request_id, **extra):
                new = len(output.outputs[0].token_ids) if output.outputs else 0
                if new:
                    yield new
        except Exception as exc:  # EngineDeadError, EngineGenerateError, ValueError (bad request)
            raise BackendError(f"vLLM request {request_id} failed: {type(exc).__name__}: {exc}") from exc

    async def clear_cache(self) -> None:
        """Clear vLLM's prefix cache. Raises BackendError when vLLM refuses (requests still running)."""
        self._loaded()
        if await self._engine.reset_prefix_cache() is False:
            raise BackendError("vLLM refused to clear its prefix cache before the serving run (requests still running)")

    def call(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run `coro` on the engine's event loop and wait for it. Raises BackendError when not loaded."""
        if self._loop is None:
            coro.close()
            raise BackendError("the vLLM streaming engine has no event loop (not loaded)")
        return self._loop.call(coro)

    def unload(self) -> None:
        """Shut the engine down on its loop, wait for its processes, close the loop; safe to call twice."""
        engine, self._engine = self._engine, None
        loop, self._loop = self._loop, None
        processes, self._processes = self._processes, []
        self._tokenizer = self._lora_request = None
        self._params = {}
        try:
            if engine is not None and loop is not None:
                loop.call(_shutdown(engine, processes))
        except Exception as exc:
            raise BackendError(f"vLLM shutdown failed: {type(exc).__name__}: {exc}") from exc
        finally:
            if loop is not None:
                loop.close()


async def _shutdown(engine: Any, processes: list[Any]) -> None:
    """Stop `engine` from inside its loop (its output handler is a task there), then wait for its processes."""
    shutdown_engine(engine, processes)
