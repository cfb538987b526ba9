"""What the scheduler (scheduler.py) keeps per attempt and reports, and how it describes a failure.

`Policy` is the execution settings of one driver run; `Attempt` one attempt in flight (its actor, Ray
refs, deadlines and manifest record); `Report` what a scheduler run did. `describe` turns whatever
ended an attempt into the one line the manifest and the terminal show. No Ray calls here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from ray.exceptions import RayActorError, RayTaskError

from llem_ray.cluster.placement import Slot
from llem_ray.cluster.plan import WorkItem
from llem_ray.errors import LLEMError
from llem_ray.results.manifest import AttemptRecord

MAX_ERROR_CHARS = 500
"""Longest error text recorded for one attempt."""


@dataclass(frozen=True)
class Policy:
    """Effective execution settings of one driver run (CLI overrides applied). Times in seconds."""

    config_gap_seconds: float
    cycle_gap_seconds: float
    timeout_s: float
    max_retries: int
    circuit_breaker: int
    isolation: Literal["gpu", "node"]
    cycle_starts: dict[int, datetime] = field(default_factory=dict)


@dataclass
class Attempt:
    item: WorkItem
    slot: Slot
    actor: Any
    where_ref: Any
    run_ref: Any
    dispatched_s: float
    deadline_s: float
    record: AttemptRecord
    dispatched_unix_s: float = 0.0
    started: bool = False
    killed: str | None = None
    killed_s: float = 0.0


@dataclass
class Report:
    """What a scheduler run did: keys completed / failed for good, attempts started, actor start overheads
    (s), and when the first attempt was dispatched (`time.monotonic()` s; None if none was)."""

    completed: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    attempts: int = 0
    start_overheads_s: list[float] = field(default_factory=list)
    first_dispatch_s: float | None = None


def cause_of(exc: BaseException) -> BaseException:
    """The exception an actor raised, unwrapped from Ray's RayTaskError."""
    return exc.cause if isinstance(exc, RayTaskError) and exc.cause is not None else exc


def describe(exc: BaseException) -> str:
    """One line (at most MAX_ERROR_CHARS) saying why an attempt failed: the cause comes first.

    An LLEMError's whole message is kept (a PreFlightError lists every failure); of anything else,
    the first line (a RayTaskError without its cause would otherwise bring a whole traceback).
    """
    exc = cause_of(exc)
    if isinstance(exc, RayActorError):
        return "the experiment's actor process died (crash, out of memory or lost node)"
    lines = [line for line in str(exc).splitlines() if line.strip()]
    text = " ".join(" ".join(lines).split()) if isinstance(exc, LLEMError) else (lines[0].strip() if lines else "")
    return f"{type(exc).__name__}: {text}"[:MAX_ERROR_CHARS]
