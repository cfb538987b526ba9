"""The serving scenario's load generator: open-loop requests on asyncio, timed from the client side.

`run_load` runs on the streaming engine's event loop (`StreamingEngine.call`) and returns a
`LoadTrace`: one `RequestRecord` per request sent, with when it was due, when it was sent, when
each streamed chunk of tokens arrived, and when it ended. Every time is `time.perf_counter()`
since the run began, in seconds; `LoadTrace.origin_wall_s` is the run's start on `time.time()`,
the clock of the energy meter's samples.

- **Rate mode** (`RatePlan`): request i is sent at its arrival time (`scenarios.arrivals`) whether
  or not earlier requests have finished (open loop: a slow engine does not slow the arrivals).
  The sender sleeps until each arrival; a request sent late (the loop was busy) keeps both times,
  so the lag is seen (`RequestRecord.lag_s`).
- **Fixed concurrency** (`ConcurrencyPlan`): `concurrency` requests at once from the start; each
  one that ends is replaced at once, until `duration_s`. A request is due when its slot freed.

`frozen_gc_heap` is for the caller to hold around a run (the serving scenario holds it around its
measured phase, as vLLM's own server freezes its heap after start-up): with an engine in the
process the heap holds hundreds of thousands of objects, and one full collection over them
stalls the loop for about 0.1-0.2 s (`benchmarks/gc_pause.py`), the size of the stall that cut
32 req/s windows on the H200.

After sending stops the run drains: it waits up to `drain_timeout_s` for requests still running,
then cancels them (the engine aborts them) and records them as failed. A request the engine fails
is recorded with its error and does not stop the run. Token ids come ready (rate mode, encoded
before the run so the loop does no tokenising) or from `ConcurrencyPlan.next_input` per request.
"""

from __future__ import annotations

import asyncio
import gc
import time
from array import array
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from llem_ray.backends.streaming import StreamingEngine

DRAIN_TIMEOUT_S = 120.0
"""Longest wait for running requests after sending stopped, s; the rest are cancelled as failed."""


@dataclass
class RequestRecord:
    """One request of a serving run, client side; times in s since the run began.

    `scheduled_s`: when it was due (its arrival; in fixed concurrency, when its slot freed);
    `sent_s`: when it was handed to the engine; `chunk_times_s` / `chunk_tokens`: when each
    streamed chunk arrived and how many new tokens it held; `end_s`: when the stream ended (or
    failed); `error`: why it failed, None when it finished.
    """

    index: int
    warmup: bool
    scheduled_s: float
    input_tokens: int
    sent_s: float = 0.0
    chunk_times_s: array = field(default_factory=lambda: array("d"))
    chunk_tokens: array = field(default_factory=lambda: array("l"))
    end_s: float | None = None
    error: str | None = None

    @property
    def output_tokens(self) -> int:
        """Tokens streamed back."""
        return sum(self.chunk_tokens)

    @property
    def completed(self) -> bool:
        """The stream ended normally."""
        return self.end_s is not None and self.error is None

    @property
    def lag_s(self) -> float:
        """How late it was sent, s (sent - due); 0 or more."""
        return max(0.0, self.sent_s - self.scheduled_s)

    @property
    def ttft_s(self) -> float | None:
        """Time to first token, s: first chunk - sent; None without tokens."""
        return self.chunk_times_s[0] - self.sent_s if self.chunk_times_s else None

    @property
    def e2e_s(self) -> float | None:
        """End-to-end latency of a completed request, s: end - sent."""
        return self.end_s - self.sent_s if self.completed and self.end_s is not None else None

    @property
    def tpot_s(self) -> float | None:
        """Time per output token after the first, s: (last chunk - first chunk) / (tokens - 1); None for < 2 tokens."""
        tokens = self.output_tokens
        if tokens < 2:
            return None
        return (self.chunk_times_s[-1] - self.chunk_times_s[0]) / (tokens - 1)

    @property
    def itl_s(self) -> list[float]:
        """Gaps between consecutive streamed chunks, s (inter-token latency; a chunk may hold several tokens)."""
        times = self.chunk_times_s
        return [times[i] - times[i - 1] for i in range(1, len(times))]


@dataclass(frozen=True)
class RatePlan:
    """Rate mode: request i is due at `arrivals_s[i]` with token ids `inputs[i]` (equal lengths)."""

    arrivals_s: list[float]
    inputs: list[list[int]]
    max_tokens: int
    warmup_requests: int
    duration_s: float


@dataclass(frozen=True)
class ConcurrencyPlan:
    """Fixed concurrency: `concurrency` requests in flight for `duration_s`; `next_input()` gives each one's ids."""

    concurrency: int
    next_input: Callable[[], list[int]]
    max_tokens: int
    warmup_requests: int
    duration_s: float


@dataclass
class LoadTrace:
    """What a serving run did: its requests in sending order, and its clock (s since it began).

    `send_end_s`: when sending stopped (the duration, or the last send when that was later);
    `end_s`: when the run ended (all requests ended, or the drain timed out).
    """

    records: list[RequestRecord]
    origin_wall_s: float
    send_end_s: float
    end_s: float


@contextmanager
def frozen_gc_heap() -> Iterator[None]:
    """Collect, then freeze every object alive now (`gc.freeze`) until the block ends; unfreeze after.

    Collections inside the block then walk only the objects made there, not the engine's whole heap
    (one full collection over it is ~0.1 s in which the event loop sends nothing). Garbage is
    collected before freezing, so nothing unreachable is kept; objects freed in the block are
    freed by reference counting as ever.
    """
    gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


async def _send(
    engine: StreamingEngine, record: RequestRecord, token_ids: list[int], max_tokens: int, origin_s: float
) -> None:
    record.sent_s = time.perf_counter() - origin_s
    try:
        async for new_tokens in engine.stream(f"llem-serve-{record.index}", token_ids, max_tokens):
            record.chunk_times_s.append(time.perf_counter() - origin_s)
            record.chunk_tokens.append(new_tokens)
    except Exception as exc:  # BackendError from the engine: recorded, the run goes on
        record.error = f"{type(exc).__name__}: {exc}"
    record.end_s = time.perf_counter() - origin_s


async def _rate(
    engine: StreamingEngine, plan: RatePlan, origin_s: float, records: list[RequestRecord], tasks: list[asyncio.Task]
) -> None:
    for i, (due_s, ids) in enumerate(zip(plan.arrivals_s, plan.inputs)):
        delay_s = due_s - (time.perf_counter() - origin_s)
        if delay_s > 0:
            await asyncio.sleep(delay_s)
        record = RequestRecord(i, i < plan.warmup_requests, due_s, len(ids))
        records.append(record)
        tasks.append(asyncio.ensure_future(_send(engine, record, ids, plan.max_tokens, origin_s)))


async def _slot(engine: StreamingEngine, plan: ConcurrencyPlan, origin_s: float, records: list[RequestRecord]) -> None:
    due_s = 0.0
    while time.perf_counter() - origin_s < plan.duration_s:
        ids = plan.next_input()
        record = RequestRecord(len(records), len(records) < plan.warmup_requests, due_s, len(ids))
        records.append(record)
        await _send(engine, record, ids, plan.max_tokens, origin_s)
        due_s = record.end_s if record.end_s is not None else due_s


async def _drain(
    tasks: list[asyncio.Task], wait_s: float, drain_timeout_s: float, records: list[RequestRecord], origin_s: float
) -> None:
    """Wait up to `wait_s` for `tasks`, cancel the rest, and record unfinished requests as failed."""
    if not tasks:
        return
    _, pending = await asyncio.wait(tasks, timeout=max(0.0, wait_s))
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    now_s = time.perf_counter() - origin_s
    for record in records:
        if record.end_s is None:
            record.end_s = now_s
            record.error = f"cancelled: still running {drain_timeout_s:g} s after sending stopped (drain timeout)"


async def run_load(
    engine: StreamingEngine, plan: RatePlan | ConcurrencyPlan, drain_timeout_s: float = DRAIN_TIMEOUT_S
) -> LoadTrace:
    """Send `plan`'s requests to `engine` and wait for them (see module docstring); must run on the engine's loop.

    Never raises for a failed request (it is recorded); cancellation of the run propagates.
    """
    records: list[RequestRecord] = []
    origin_wall_s, origin_s = time.time(), time.perf_counter()
    if isinstance(plan, RatePlan):
        tasks: list[asyncio.Task] = []
        await _rate(engine, plan, origin_s, records, tasks)
        send_end_s = max(plan.duration_s, time.perf_counter() - origin_s)
        await _drain(tasks, drain_timeout_s, drain_timeout_s, records, origin_s)
    else:
        slots = [asyncio.ensure_future(_slot(engine, plan, origin_s, records)) for _ in range(plan.concurrency)]
        wait_s = plan.duration_s - (time.perf_counter() - origin_s) + drain_timeout_s
        await _drain(slots, wait_s, drain_timeout_s, records, origin_s)
        send_end_s = plan.duration_s
    return LoadTrace(records, origin_wall_s, send_end_s, time.perf_counter() - origin_s)


async def run_batch(engine: StreamingEngine, inputs: list[list[int]], max_tokens: int, tag: str) -> int:
    """Send every input at once and wait for all (a warm-up batch); returns the tokens streamed.

    Raises the first request's BackendError (the others are cancelled).
    """

    async def one(i: int, ids: list[int]) -> int:
        return sum([n async for n in engine.stream(f"llem-{tag}-{i}", ids, max_tokens)])

    tasks = [asyncio.ensure_future(one(i, ids)) for i, ids in enumerate(inputs)]
    try:
        return sum(await asyncio.gather(*tasks))
    finally:
        for task in tasks:
            task.cancel()
