"""How long a garbage collection stalls the serving load generator's event loop, heap frozen or not.

The serving scenario's load generator shares its process with the engine (vLLM, torch,
transformers: hundreds of thousands of objects). A full collection walks all of them, and the
loop sends nothing meanwhile. On the H200 one stall of that size (~120 ms) made a request of a
32 req/s run late and cut its window (docs/validation.md; that it was a collection is our reading,
not yet confirmed there). The serving scenario therefore holds the heap frozen
through its run (`loadgen.frozen_gc_heap`). This benchmark shows the effect side by side, in one
process:

1. imports torch and transformers (the heap of an engine process, less the engine itself);
2. per arm, runs an asyncio loop for `--seconds`: a ticker that sleeps 1 ms and records how late
   it wakes, and a churn task that keeps `--live` small dicts alive in a FIFO (as in-flight
   requests keep their outputs), replacing `--per-ms` of them every millisecond, so objects
   survive the young generations and full collections come due;
3. prints, per arm: full (generation-2) collections, worst and 99.9th-percentile tick lateness.

    python benchmarks/gc_pause.py            # arms: plain, frozen

Lateness is wall time (ms) past the 1 ms sleep; it includes the OS scheduler's own jitter.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import gc
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from llem_ray.scenarios.loadgen import frozen_gc_heap  # noqa: E402


async def _arm(seconds: float, live: int, per_ms: int) -> list[float]:
    """Tick lateness (ms) over `seconds` while the churn task runs."""
    late_ms: list[float] = []
    fifo: collections.deque = collections.deque(maxlen=live)
    stop = time.perf_counter() + seconds

    async def churn() -> None:
        while time.perf_counter() < stop:
            fifo.extend({"tokens": [i], "t": time.perf_counter()} for i in range(per_ms))
            await asyncio.sleep(0.001)

    async def tick() -> None:
        while time.perf_counter() < stop:
            due = time.perf_counter() + 0.001
            await asyncio.sleep(0.001)
            late_ms.append((time.perf_counter() - due) * 1000)

    await asyncio.gather(churn(), tick())
    return late_ms


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each arm, s")
    parser.add_argument("--live", type=int, default=50_000, help="dicts kept alive by the churn task")
    parser.add_argument("--per-ms", type=int, default=20, help="dicts replaced per millisecond")
    args = parser.parse_args()
    import torch  # noqa: F401  (the heap of an engine process)
    import transformers  # noqa: F401

    gc.collect()
    print(f"heap: {len(gc.get_objects()):,} tracked objects; Python {sys.version.split()[0]}")
    for name, hold in (("plain", contextlib.nullcontext), ("frozen", frozen_gc_heap)):
        with hold():
            before = gc.get_stats()[2]["collections"]
            late_ms = sorted(asyncio.run(_arm(args.seconds, args.live, args.per_ms)))
            full = gc.get_stats()[2]["collections"] - before
        p999 = late_ms[int(0.999 * (len(late_ms) - 1))]
        print(
            f"{name:>6}: {full} full collections, tick lateness worst {late_ms[-1]:.1f} ms, "
            f"p99.9 {p999:.1f} ms, over {len(late_ms):,} ticks"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
