"""`StudyConfig` and `ExecutionConfig` (CFG-11, CFG-15..17).

A study is a resolved list of experiments plus how to execute them. Sweep grammar lives in
`sweep.py`; this module only holds the validated result.
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime
from typing import Any, Literal

from pydantic import Field, field_validator

from llem_ray.backends import registry as backend_registry
from llem_ray.config import guards
from llem_ray.config.experiment import ExperimentConfig, measurement_config_hash
from llem_ray.config.limits import MAX_CYCLES, MAX_GAP_S, MAX_RETRIES, MAX_RUNS, MAX_TIMEOUT_S, StrictModel


class RuntimeEnvConfig(StrictModel):
    """A Ray runtime_env for one backend's experiments (isolates vLLM / TRT-LLM environments)."""

    pip: list[str] | None = None
    py_executable: str | None = None
    image_uri: str | None = None
    env_vars: dict[str, str] | None = None
    working_dir: str | None = None

    def to_ray(self) -> dict[str, Any]:
        """The dict Ray's `runtime_env=` accepts (unset keys dropped)."""
        return {k: v for k, v in self.model_dump().items() if v is not None}


class ExecutionConfig(StrictModel):
    """How a study runs: cycles, order, gaps, deadlines, retries, isolation (excluded from the design hash)."""

    n_cycles: int = Field(
        1, ge=1, le=MAX_CYCLES, description="Repeat every experiment this many times (CLI default 3)."
    )
    cycle_order: Literal["sequential", "interleaved", "shuffled"] = Field(
        "interleaved",
        description="sequential: all cycles of one config together; interleaved: round-robin configs per cycle; "
        "shuffled: random order per cycle, seeded from study_design_hash.",
    )
    config_gap_seconds: float = Field(
        60.0, ge=0, le=MAX_GAP_S, description="Pause on a GPU between two experiments, s."
    )
    cycle_gap_seconds: float = Field(300.0, ge=0, le=MAX_GAP_S, description="Pause on a GPU between cycles, s.")
    timeout_s: float = Field(
        3600.0, gt=0, le=MAX_TIMEOUT_S, description="Deadline per experiment attempt, s; killed on overrun."
    )
    max_retries: int = Field(
        1,
        ge=0,
        le=MAX_RETRIES,
        description="Extra attempts after a failed or killed experiment (not after a "
        "pre-flight or configuration failure: no retry can fix those).",
    )
    circuit_breaker: int = Field(
        5, ge=1, le=MAX_RUNS, description="Stop the study after this many consecutive failed attempts."
    )
    isolation: Literal["gpu", "node"] = Field(
        "gpu", description="gpu: one experiment per GPU; node: one experiment per node while it measures."
    )
    force_cold_start: bool = Field(
        False,
        description="Measure every experiment from a cold start (CAMP-05): cold_start: true, a new actor "
        "process, no warm-up, empty compilation caches.",
    )
    schedule: list[datetime] | None = Field(
        None, strict=False, description="Start times of cycles (daemon mode, CAMP-04); None = start now."
    )
    webhook_url: str | None = Field(None, description="POST a JSON summary on completion or failure (http/https).")

    @field_validator("webhook_url")
    @classmethod
    def _webhook_http(cls, value: str | None) -> str | None:
        problem = value and guards.webhook_problem(value)
        if problem:
            raise ValueError(problem)
        return value


class SkippedPoint(StrictModel):
    """A grid point that failed validation: recorded with its reason, not fatal (CFG-14)."""

    params: dict[str, Any]
    reason: str


class StudyConfig(StrictModel):
    """Resolved study: experiments + execution. Built by `sweep.expand_study` from a study YAML."""

    name: str = "study"
    experiments: list[ExperimentConfig] = Field(..., min_length=1)
    execution: ExecutionConfig = Field(default_factory=ExecutionConfig)
    runtime_envs: dict[str, RuntimeEnvConfig] = Field(
        default_factory=dict, description="Ray runtime_env per registered backend name."
    )
    output_dir: str = Field(
        "results",
        description="Study directories go under this one (unset in a file: the user config's output.results_dir).",
    )
    skipped: list[SkippedPoint] = Field(default_factory=list)

    @field_validator("name")
    @classmethod
    def _name_printable(cls, value: str) -> str:
        return guards.printable(value)

    @field_validator("output_dir")
    @classmethod
    def _output_dir_allowed(cls, value: str) -> str:
        return guards.output_dir(value)

    @field_validator("runtime_envs")
    @classmethod
    def _runtime_envs_of_backends(cls, value: dict[str, RuntimeEnvConfig]) -> dict[str, RuntimeEnvConfig]:
        known = backend_registry.names()
        unknown = [name for name in value if name not in known]
        if unknown:
            raise ValueError(f"unknown backend {', '.join(map(repr, unknown))} (registered: {', '.join(known)})")
        return value

    @property
    def study_design_hash(self) -> str:
        """SHA-256[:16] of the experiment set (execution excluded), invariant to YAML key order (CFG-16)."""
        hashes = sorted(measurement_config_hash(e) for e in self.experiments)
        return hashlib.sha256(json.dumps(hashes).encode()).hexdigest()[:16]
