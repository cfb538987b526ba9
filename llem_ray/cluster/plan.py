"""The run order of a study: experiments x cycles as `WorkItem`s (CAMP-07, STU-07). No Ray here.

- `sequential`: every cycle of the first configuration, then of the second, ...
- `interleaved`: cycle 1 of every configuration, then cycle 2, ... (round-robin).
- `shuffled`: like interleaved, but each cycle visits the configurations in a random order seeded
  from `study_design_hash` and the cycle number, so the same study always runs in the same order.

The driver dispatches items strictly in this order (an item never overtakes an earlier one), so the
order is also the start order on a one-GPU cluster.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from llem_ray.config.experiment import ExperimentConfig, measurement_config_hash
from llem_ray.config.limits import check_runs
from llem_ray.config.study import StudyConfig
from llem_ray.results.manifest import ManifestEntry, PlannedRow, entry_key

CycleOrder = Literal["sequential", "interleaved", "shuffled"]

CLI_DEFAULT_CYCLES = 3
"""Cycles a CLI run uses when neither --cycles nor the study's `execution.n_cycles` says (CFG-15)."""


def cli_default_cycles(study: StudyConfig, cycles: int | None, path: str | Path) -> int | None:
    """The --cycles a CLI passes: the flag, else None if the YAML set n_cycles, else CLI_DEFAULT_CYCLES.

    Checks first that the cycles that will run fit the limits (`limits.check_runs`): ConfigError
    naming the flag, or the study file `path` and its field.
    """
    n = len(study.experiments)
    if cycles is not None:
        check_runs(n, cycles, "--cycles")
        return cycles
    if "n_cycles" in study.execution.model_fields_set:
        check_runs(n, study.execution.n_cycles, f"{path}: execution.n_cycles")
        return None
    check_runs(n, CLI_DEFAULT_CYCLES, f"{path}: execution.n_cycles (the CLI default of {CLI_DEFAULT_CYCLES})")
    return CLI_DEFAULT_CYCLES


@dataclass(frozen=True)
class WorkItem:
    """One (experiment, cycle) to measure. `key` is its identity (measurement_config_hash + cycle)."""

    key: str
    order_index: int
    config: ExperimentConfig
    config_hash: str
    cycle: int

    @property
    def name(self) -> str:
        """Human-readable experiment name."""
        return self.config.display_name()

    def manifest_entry(self) -> ManifestEntry:
        """A pending manifest entry for this item."""
        return ManifestEntry(
            key=self.key,
            order_index=self.order_index,
            name=self.name,
            measurement_config_hash=self.config_hash,
            cycle=self.cycle,
            backend=self.config.backend,
        )


def plan_rows(items: list[WorkItem]) -> list[PlannedRow]:
    """The manifest rows of `items` (pending), each configuration's name computed once."""
    names: dict[str, str] = {}
    rows = []
    for item in items:
        name = names.get(item.config_hash) or names.setdefault(item.config_hash, item.name)
        rows.append((item.key, item.order_index, name, item.config_hash, item.cycle, item.config.backend))
    return rows


def cold_start(config: ExperimentConfig) -> ExperimentConfig:
    """`config` measured from a cold start (CAMP-05, `execution.force_cold_start`), whatever its warm-up says.

    `cold_start: true` (a different measurement: its own measurement_config_hash) means: no warm-up
    batches, no engine kernel warm-up at load, empty compilation caches (measure/cold.py), and from
    the scheduler a new worker process that nothing ran in before (no pre-started or pooled one).
    """
    warmup = config.warmup.model_copy(update={"n_warmup": 0, "convergence_detection": False})
    return config.model_copy(update={"warmup": warmup, "cold_start": True})


def unique_experiments(experiments: list[ExperimentConfig]) -> tuple[list[ExperimentConfig], int]:
    """Experiments with duplicate measurement_config_hash removed (first kept), and how many were dropped."""
    seen: set[str] = set()
    kept = []
    for config in experiments:
        digest = measurement_config_hash(config)
        if digest not in seen:
            seen.add(digest)
            kept.append(config)
    return kept, len(experiments) - len(kept)


def plan_items(experiments: list[ExperimentConfig], n_cycles: int, order: CycleOrder, seed: str) -> list[WorkItem]:
    """Every (experiment, cycle) of a study in run order. `seed` (the study_design_hash) drives `shuffled`.

    `experiments` must already be unique (see `unique_experiments`); cycles are numbered from 1.
    Raises ValueError for an unknown order or n_cycles < 1.
    """
    if n_cycles < 1:
        raise ValueError(f"n_cycles must be >= 1, got {n_cycles}")
    hashes = [measurement_config_hash(c) for c in experiments]
    indices = list(range(len(experiments)))
    if order == "sequential":
        pairs = [(i, c) for i in indices for c in range(1, n_cycles + 1)]
    elif order == "interleaved":
        pairs = [(i, c) for c in range(1, n_cycles + 1) for i in indices]
    elif order == "shuffled":
        pairs = []
        for c in range(1, n_cycles + 1):
            visit = indices.copy()
            random.Random(f"{seed}-cycle-{c}").shuffle(visit)
            pairs.extend((i, c) for i in visit)
    else:
        raise ValueError(f"unknown cycle order {order!r}")
    return [
        WorkItem(key=entry_key(hashes[i], c), order_index=n, config=experiments[i], config_hash=hashes[i], cycle=c)
        for n, (i, c) in enumerate(pairs)
    ]
