"""Warm-up before the measured window (CM-21..24).

Fixed count by default (`n_warmup` batches, full-length prompts, reduced output); opt-in
convergence detection runs batches until the coefficient of variation (stdev / mean) of the last
`window_size` latencies drops below `target_cv`, or `max_prompts` batches have run.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from typing import TYPE_CHECKING

from llem_ray.results.schema import WarmupResult

if TYPE_CHECKING:
    from llem_ray.config.experiment import WarmupConfig


def coefficient_of_variation(values: list[float]) -> float | None:
    """Sample stdev / mean of `values`; None with fewer than 2 values or a zero mean."""
    if len(values) < 2:
        return None
    mean = statistics.fmean(values)
    return statistics.stdev(values) / mean if mean > 0 else None


def run_warmup(run_batch: Callable[[], float], config: WarmupConfig) -> WarmupResult:
    """Call `run_batch()` (returns its latency in seconds) per the warm-up config.

    With convergence detection: at least `window_size` batches, at most `max_prompts`; `converged`
    says whether the CV target was met. Fixed count: exactly `n_warmup` batches; `converged` says
    whether the last window's CV happens to meet the target.
    """
    latencies_ms: list[float] = []

    def window_cv() -> float | None:
        return coefficient_of_variation(latencies_ms[-config.window_size :])

    if config.convergence_detection:
        while len(latencies_ms) < config.max_prompts:
            latencies_ms.append(run_batch() * 1000.0)
            cv = window_cv()
            if len(latencies_ms) >= config.window_size and cv is not None and cv < config.target_cv:
                break
    else:
        for _ in range(config.n_warmup):
            latencies_ms.append(run_batch() * 1000.0)
    final_cv = window_cv()
    return WarmupResult(
        converged=final_cv is not None and final_cv < config.target_cv,
        final_cv=final_cv,
        iterations_completed=len(latencies_ms),
        target_cv=config.target_cv,
        max_prompts=config.max_prompts,
        latencies_ms=latencies_ms,
    )
