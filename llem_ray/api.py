"""`run_experiment` and `run_study` (LA-01..06): one return type each, no union returns."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from llem_ray.config.experiment import ExperimentConfig
from llem_ray.config.study import StudyConfig
from llem_ray.results.schema import ExperimentResult, StudyResult


def run_experiment(config: str | Path | ExperimentConfig | None = None, **overrides: Any) -> ExperimentResult:
    """Run one experiment in this process (STU-05) and return its result.

    `config` is a YAML path, an `ExperimentConfig`, or None for the built-in default (tiny random
    Llama on synthetic prompts). `overrides` replace top-level fields. Writes nothing to disk unless
    `output_dir` is set (LA-04). Raises ConfigError, PreFlightError, BackendError or ExperimentError.
    """
    from llem_ray.config.loader import resolve_experiment
    from llem_ray.measure.experiment import run_and_save

    return run_and_save(resolve_experiment(config, overrides)).result


def run_study(config: str | Path | StudyConfig, **overrides: Any) -> StudyResult:
    """Run a study on Ray (local Ray if none is running) and return its `StudyResult`.

    Always writes the study directory and manifest (LA-05). `overrides` are `StudyOptions` fields
    (resume_dir, n_cycles, cycle_order, no_gaps). Raises ConfigError or StudyError.
    """
    from llem_ray.cluster.driver import StudyOptions, run
    from llem_ray.config.loader import load_study_config

    study = config if isinstance(config, StudyConfig) else load_study_config(Path(config))
    return run(study, StudyOptions(**overrides))
