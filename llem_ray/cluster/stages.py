"""Per-stage timing of one experiment attempt (issue 13): where the time between two measured windows goes.

Every attempt's manifest record (`AttemptRecord.stages_s`) holds seconds per stage, in the order they ran,
and the measured window's wall-clock bounds (`window_started_at`, `window_ended_at`):

  actor_start       driver, actor   dispatch (actor asked for) -> the actor's constructor runs
                                    (worker lease, process start, runtime_env)
  actor_init        actor           constructor -> `where()` begins
  nvml_init         actor           NVML initialised and the actor's GPUs listed (`where()`)
  imports           actor           `where()` returned -> the protocol begins: `run()`'s arguments
                                    unpickled, the measurement stack imported
  preflight ... unload  actor       the protocol's stages (measure/experiment.py `on_progress`):
                                    preflight, load, environment, baseline, warmup, thermal_floor,
                                    measure (the window), prefill, metrics, unload
  result_transfer   actor, driver   the actor returned -> the driver holds the outcome
  result_write      results actor   result directory and table row written, before the manifest change
  slot_release      driver          the driver ended the actor -> Ray reported it gone (the GPU is free)

Stages an attempt never reached are absent (a crashed actor's own stages are lost with its process).
Times from different processes are wall clocks (`time.time()`, s): one clock on one host, as close as
NTP keeps them across nodes; a negative difference (clock skew) is recorded as 0.

`dead_time_s` is the figure issue 13 targets: from one measured window's end to the next window's start
on the same GPU, minus the next attempt's model load, baseline and warm-up.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Iterable
from datetime import datetime, timezone

from llem_ray.results.manifest import AttemptRecord

MEASURED_STAGE = "measure"
EXCLUDED_FROM_DEAD_TIME = ("load", "baseline", "warmup")
"""Stages that are part of measuring, not dead time (issue 13's definition)."""


def utc(unix_s: float) -> datetime:
    """A `time.time()` value as a timezone-aware UTC datetime."""
    return datetime.fromtimestamp(unix_s, timezone.utc)


def elapsed_s(start_unix_s: float, end_unix_s: float) -> float:
    """`end - start` in seconds, never negative (clocks of two processes may disagree slightly)."""
    return max(0.0, end_unix_s - start_unix_s)


class StageClock:
    """Marks the start of each stage on this process's wall clock; a stage ends where the next begins."""

    def __init__(self) -> None:
        self.marks: list[tuple[str, float]] = []

    def mark(self, stage: str, at_unix_s: float | None = None) -> None:
        """`stage` starts now, or at `at_unix_s`."""
        self.marks.append((stage, time.time() if at_unix_s is None else at_unix_s))

    def durations_s(self, end_unix_s: float) -> dict[str, float]:
        """Seconds per marked stage, the last one ending at `end_unix_s` (a stage marked twice adds up)."""
        out: dict[str, float] = {}
        bounds = [t for _, t in self.marks[1:]] + [end_unix_s]
        for (stage, start_s), stop_s in zip(self.marks, bounds):
            out[stage] = out.get(stage, 0.0) + elapsed_s(start_s, stop_s)
        return out

    def window_s(self, end_unix_s: float) -> tuple[float, float] | None:
        """(start, end) unix seconds of the measured stage, or None if it never began."""
        bounds = [t for _, t in self.marks[1:]] + [end_unix_s]
        for (stage, start_s), stop_s in zip(self.marks, bounds):
            if stage == MEASURED_STAGE:
                return start_s, stop_s
        return None


def dead_time_s(previous_window_end: datetime, window_start: datetime, stages_s: dict[str, float]) -> float:
    """Seconds a GPU spent between two measured windows that were not the next attempt's load,
    baseline or warm-up (issue 13's definition of dead time)."""
    between_s = (window_start - previous_window_end).total_seconds()
    return between_s - sum(stages_s.get(s, 0.0) for s in EXCLUDED_FROM_DEAD_TIME)


def dead_times_s(records: Iterable[AttemptRecord]) -> list[float]:
    """`dead_time_s` between every two consecutive measured windows on one GPU (node and Ray GPU ids),
    from the attempts that recorded their window; attempts without GPUs are left out."""
    by_gpu: dict[tuple[str, tuple[str, ...]], list[AttemptRecord]] = defaultdict(list)
    for record in records:
        if record.window_started_at and record.window_ended_at and record.node_id and record.gpu_ids:
            by_gpu[(record.node_id, tuple(record.gpu_ids))].append(record)
    out = []
    for runs in by_gpu.values():
        runs.sort(key=lambda r: r.window_started_at)
        for previous, following in zip(runs, runs[1:]):
            out.append(dead_time_s(previous.window_ended_at, following.window_started_at, following.stages_s))
    return out


def gpu_occupancy(records: Iterable[AttemptRecord], gpus: int) -> float:
    """Sum of measured-window time / (makespan x `gpus`): makespan from the first dispatch to the last
    window's end, over the attempts that recorded a window. 0.0 when none did."""
    ran = [r for r in records if r.window_started_at and r.window_ended_at]
    if not ran or gpus < 1:
        return 0.0
    makespan_s = (max(r.window_ended_at for r in ran) - min(r.dispatched_at for r in ran)).total_seconds()
    busy_s = sum((r.window_ended_at - r.window_started_at).total_seconds() for r in ran)
    return busy_s / (makespan_s * gpus) if makespan_s > 0 else 0.0


def mean_stages_s(records: Iterable[AttemptRecord]) -> dict[str, float]:
    """Mean seconds per stage over the attempts that reached it, in the order stages first appear."""
    sums: dict[str, list[float]] = {}
    for record in records:
        for stage, seconds in record.stages_s.items():
            sums.setdefault(stage, []).append(seconds)
    return {stage: sum(values) / len(values) for stage, values in sums.items()}
