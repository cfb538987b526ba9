"""What `llem run` does, without the argument parsing: detect experiment vs study, apply flags,
preview (`--dry-run`) or run, and print results to stdout.

Kept apart from `cli.py` so it is testable without a terminal and `cli.py` stays a thin shell.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from llem_ray.cluster.plan import cli_default_cycles
from llem_ray.config import guards
from llem_ray.config.experiment import ExperimentConfig
from llem_ray.config.loader import is_study_file, load_study_config, resolve_experiment
from llem_ray.display import notice, preview_experiment, preview_study
from llem_ray.errors import ConfigError

def _model_notice(config: ExperimentConfig, quiet: bool) -> None:
    if "model" not in config.model_fields_set:
        notice(f"notice: no model given; using the built-in tiny random-weight Llama ({config.model})", quiet)


def run_cli(
    config_path: Path | None,
    overrides: dict[str, Any],
    study_flags: dict[str, Any],
    *,
    dry_run: bool,
    export_csv: bool,
    quiet: bool,
    verbose: bool,
) -> None:
    """Run `llem run`. Raises LLEMError subclasses; the CLI maps them to exit codes."""
    if overrides.get("output_dir"):
        guards.output_flag(overrides["output_dir"], "--output")
    if config_path is not None and is_study_file(config_path):
        _run_study(config_path, overrides, study_flags, dry_run=dry_run, quiet=quiet, verbose=verbose)
        return
    if any(v for k, v in study_flags.items() if k != "no_gaps") or study_flags.get("no_gaps"):
        raise ConfigError("--cycles/--order/--no-gaps/--resume apply to study YAMLs only")
    if config_path is None:
        notice("notice: no config given; running the built-in default (tiny random Llama, synthetic prompts)", quiet)
    config = resolve_experiment(config_path, overrides)
    _model_notice(config, quiet)
    if dry_run:
        print(preview_experiment(config))
        return
    from llem_ray.measure.experiment import run_and_save
    from llem_ray.results.summary import format_result

    measured = run_and_save(config, export_csv=export_csv, quiet=quiet)
    print(format_result(measured.result))
    if measured.result_dir is not None:
        print(f"results: {measured.result_dir}")


def _run_study(
    path: Path, overrides: dict[str, Any], flags: dict[str, Any], *, dry_run: bool, quiet: bool, verbose: bool
) -> None:
    study = load_study_config(path)
    if overrides.get("output_dir"):
        study.output_dir = overrides.pop("output_dir")
    if overrides:
        raise ConfigError(f"{path}: --{next(iter(overrides)).replace('_', '-')} applies to experiment YAMLs only; "
                          "set it in the study file")
    n_cycles = cli_default_cycles(study, flags.get("n_cycles"), path) or study.execution.n_cycles
    if dry_run:
        print(preview_study(study, n_cycles))
        return
    from llem_ray.cluster.driver import StudyOptions, run  # Ray: only once the config is valid

    options = StudyOptions(
        n_cycles=n_cycles,
        cycle_order=flags.get("cycle_order"),
        no_gaps=bool(flags.get("no_gaps")),
        resume_dir=flags.get("resume_dir"),
        quiet=quiet,
        verbose=verbose,
    )
    result = run(study, options)
    print(f"study: {result.output_dir}")
