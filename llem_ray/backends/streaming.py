"""What the serving scenario needs from an engine: a server inside the experiment's process.

A `StreamingEngine` takes requests one at a time, while others run, and streams each request's
tokens as the engine produces them (vLLM: its in-process async engine, `backends/vllm/serving.py`).
It lives on an asyncio event loop of its own, in a thread of its own (`EngineLoop`): vLLM's async
engine ties its output handler to the loop it was first used on, so one loop serves the engine
from load to shutdown, and the load generator's requests run on that same loop. The experiment's
thread hands coroutines to the loop with `call` and waits for them; no port is opened.

A backend that can serve offers `streaming_engine()` (its spec lists `serving` among its scenarios);
`streaming_engine_of` gets it. Every engine failure raises BackendError.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import AsyncIterator, Coroutine
from typing import TYPE_CHECKING, Any, Protocol, TypeVar, runtime_checkable

from llem_ray.backends.protocol import InferenceBackend, ModelInfo, Prompt
from llem_ray.errors import BackendError

if TYPE_CHECKING:
    from llem_ray.config.experiment import ExperimentConfig

T = TypeVar("T")

LOOP_STOP_WAIT_S = 30.0
"""Longest wait for the loop's thread to finish after it was told to stop, s."""


class EngineLoop:
    """An asyncio event loop running in a daemon thread of its own until `close`."""

    def __init__(self, name: str) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name=name, daemon=True)
        self._thread.start()

    def call(self, coro: Coroutine[Any, Any, T], timeout_s: float | None = None) -> T:
        """Run `coro` on the loop and return its result (its exception propagates).

        Raises concurrent.futures.TimeoutError after `timeout_s` (the coroutine is then cancelled)
        or RuntimeError when the loop is closed.
        """
        if self._loop.is_closed():
            coro.close()
            raise RuntimeError("the engine's event loop is closed")
        future = asyncio.run_coroutine_threadsafe(coro, self._loop)
        try:
            return future.result(timeout_s)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise

    def close(self) -> None:
        """Cancel the loop's remaining tasks, stop it and join its thread; safe to call twice."""
        if self._loop.is_closed():
            return
        if self._thread.is_alive():
            self.call(_cancel_other_tasks(), LOOP_STOP_WAIT_S)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(LOOP_STOP_WAIT_S)
        if not self._thread.is_alive():
            self._loop.close()


async def _cancel_other_tasks() -> None:
    current = asyncio.current_task()
    tasks = [t for t in asyncio.all_tasks() if t is not current]
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


@runtime_checkable
class StreamingEngine(Protocol):
    """An engine serving requests on its own event loop (see module docstring). Raises BackendError."""

    name: str

    def load(self, config: ExperimentConfig, device: str) -> ModelInfo:
        """Start the engine for `config` on `device` and its event loop; blocks until it serves."""
        ...

    def encode(self, prompts: list[Prompt]) -> list[list[int]]:
        """Token ids of `prompts` (text truncated to `max_input_tokens`), as the offline backend encodes them."""
        ...

    def stream(self, request_id: str, token_ids: list[int], max_tokens: int) -> AsyncIterator[int]:
        """Run one request on the engine's loop, yielding the number of new tokens of each streamed chunk.

        Ends when the request finishes; raises BackendError when the engine fails it.
        """
        ...

    async def clear_cache(self) -> None:
        """Drop cached prefixes, so warm-up prompts never make later prefills cheaper."""
        ...

    def call(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run `coro` on the engine's event loop and wait for its result."""
        ...

    def unload(self) -> None:
        """Shut the engine and its event loop down; safe to call twice."""
        ...


def streaming_engine_of(backend: InferenceBackend) -> StreamingEngine:
    """The streaming engine of `backend`. Raises BackendError when the backend cannot serve."""
    factory = getattr(backend, "streaming_engine", None)
    if factory is None:
        raise BackendError(f"backend '{backend.name}' has no streaming engine: it cannot run scenario 'serving'")
    return factory()
