"""`Sampler`: the background thread behind every meter's `start_sampling` / `stop_sampling` / `close`.

It calls a read function at `hz` readings per second on a daemon thread and keeps what it returns
(PowerSamples, oldest first). Readings are scheduled on fixed deadlines (start + k / hz), so a slow
read does not make the rate drift; a read that overruns its period is followed at once by the next.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from llem_ray.energy.protocol import PowerSample


class Sampler:
    """Daemon thread calling `read()` at `hz` and collecting its samples.

    `prime`, if given, runs on the thread before the first reading, which then comes one period
    later (for quantities measured over an interval, such as CPU utilisation); without it the
    first reading is taken as the thread starts. Exceptions from `read` end the thread.
    """

    def __init__(
        self, read: Callable[[], list[PowerSample]], name: str, prime: Callable[[], object] | None = None
    ) -> None:
        self._read = read
        self._name = name
        self._prime = prime
        self._samples: list[PowerSample] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _loop(self, interval_s: float) -> None:
        next_t = time.perf_counter()
        if self._prime is not None:
            self._prime()
            next_t += interval_s
        while not self._stop.wait(max(0.0, next_t - time.perf_counter())):
            self._samples.extend(self._read())
            next_t += interval_s

    def start_sampling(self, hz: float) -> None:
        """Start the thread at `hz` readings per second. RuntimeError if it is already running."""
        if self._thread is not None:
            raise RuntimeError("sampler already running")
        self._samples = []
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, args=(1.0 / hz,), name=self._name, daemon=True)
        self._thread.start()

    def stop_sampling(self) -> list[PowerSample]:
        """Stop the thread and return its samples, oldest first ([] if it was not running)."""
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self._thread = None
        samples, self._samples = self._samples, []
        return samples

    def close(self) -> None:
        """Stop sampling; safe to call twice."""
        self.stop_sampling()
