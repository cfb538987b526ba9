"""What `llem run` and `python -m llem_ray.study` do, without the argument parsing.

Both take one option set (`RunFlags`, declared once by `cli.run` and parsed by the same click
command in `study.py`), so a flag means the same thing at either entry point. `llem run` detects
experiment vs study: an experiment runs in this process (STU-05) and is saved under
`output.results_dir` of the user config (default `./results`) unless `--output` or the YAML's
`output_dir` says otherwise; a study runs on Ray. `python -m llem_ray.study` always runs a study
(a single-experiment YAML is a one-experiment study, CFG-17). Study dry runs print the driver's
one plan renderer (`display.preview_study`) from both entry points.

Kept apart from `cli.py` so it is testable without a terminal and `cli.py` stays a thin shell.
Every function raises LLEMError subclasses; the entry points map them to exit codes.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llem_ray.cluster.plan import cli_default_cycles
from llem_ray.config import guards
from llem_ray.config.loader import is_study_file, load_study_config, resolve_experiment
from llem_ray.display import notice, preview_experiment
from llem_ray.errors import ConfigError, StudyError

if TYPE_CHECKING:
    from llem_ray.results.schema import StudyResult

STUDY_ONLY_FLAGS = ("cycles", "order", "no_gaps", "resume", "at", "address")
"""RunFlags that only a study uses."""


@dataclass(frozen=True)
class RunFlags:
    """The options of `llem run [CONFIG]` and `python -m llem_ray.study CONFIG` (see `cli.run` for help).

    Experiment flags (`model` ... `precision`) override top-level fields of a single-experiment
    YAML (also run as a one-experiment study); a study file refuses them. None = not given.
    """

    config: Path | None = None
    model: str | None = None
    backend: str | None = None
    dataset: str | None = None
    n: int | None = None
    batch_size: int | None = None
    precision: str | None = None
    output: Path | None = None
    dry_run: bool = False
    export_csv: bool = False
    cycles: int | None = None
    order: str | None = None
    no_gaps: bool = False
    resume: Path | None = None
    at: str | None = None
    address: str | None = None
    quiet: bool = False
    verbose: bool = False

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> RunFlags:
        """RunFlags from a parsed click context's `params` (paths arrive as text)."""
        paths = {"config", "output", "resume"}
        return cls(
            **{
                f.name: Path(params[f.name]) if f.name in paths and params[f.name] is not None else params[f.name]
                for f in fields(cls)
            }
        )

    def overrides(self) -> dict[str, Any]:
        """Top-level experiment fields the experiment flags set (nested where the field is)."""
        out: dict[str, Any] = {
            k: v for k in ("model", "backend", "n", "precision") if (v := getattr(self, k)) is not None
        }
        if self.dataset is not None:
            out["dataset"] = {"source": self.dataset}
        if self.batch_size is not None:
            out["pytorch"] = {"batch_size": self.batch_size}
        return out


def parse_at(text: str, now: datetime | None = None) -> list[datetime]:
    """Comma-separated cycle start times: ISO datetimes, or HH:MM[:SS] meaning the next such local time.

    Times must be increasing. Raises ConfigError naming the bad entry.
    """
    now = now or datetime.now()
    times: list[datetime] = []
    for raw in filter(None, (part.strip() for part in text.split(","))):
        try:
            if "T" in raw or "-" in raw:
                moment = datetime.fromisoformat(raw)
            else:
                clock = datetime.strptime(raw, "%H:%M:%S" if raw.count(":") == 2 else "%H:%M").time()
                moment = datetime.combine(now.date(), clock)
                while moment <= now or (times and moment <= times[-1]):
                    moment += timedelta(days=1)
        except ValueError as exc:
            raise ConfigError(f"--at: cannot read {raw!r} as a time (HH:MM or ISO 8601): {exc}") from exc
        if times and moment <= times[-1]:
            raise ConfigError(f"--at: {raw!r} is not after the previous time")
        times.append(moment)
    if not times:
        raise ConfigError("--at: give at least one time")
    return times


def run_cli(flags: RunFlags) -> None:
    """`llem run`: a study on Ray for a study YAML, else one experiment in this process, saved."""
    if flags.output is not None:
        guards.output_flag(str(flags.output), "--output")
    if flags.config is not None and is_study_file(flags.config):
        result = run_study_cli(flags)
        if result.summary.failed:
            raise StudyError(f"{result.summary.failed} run(s) failed; see {result.output_dir}/manifest.json")
        return
    given = [f"--{name.replace('_', '-')}" for name in STUDY_ONLY_FLAGS if getattr(flags, name)]
    if given:
        raise ConfigError(
            f"{'/'.join(given)} apply to studies only: give a study YAML, or run this experiment as a "
            "one-experiment study with python -m llem_ray.study"
        )
    _run_experiment(flags)


def _run_experiment(flags: RunFlags) -> None:
    from llem_ray.config.user import load_user_config, runner_image

    if flags.config is None:
        notice(
            "notice: no config given; running the built-in default (tiny random Llama, synthetic prompts)", flags.quiet
        )
    overrides = flags.overrides()
    if flags.output is not None:
        overrides["output_dir"] = str(flags.output)
    config = resolve_experiment(flags.config, overrides)
    if config.output_dir is None:
        config = config.model_copy(update={"output_dir": load_user_config().output.results_dir})
    image = runner_image(config.backend)
    if image is not None:
        raise ConfigError(
            f"the runner of {config.backend} is docker:{image}, which an in-process run cannot start: "
            f"run it as a study (python -m llem_ray.study {flags.config or 'experiment.yaml'})"
        )
    if "model" not in config.model_fields_set:
        notice(f"notice: no model given; using the built-in tiny random-weight Llama ({config.model})", flags.quiet)
    if flags.dry_run:
        print(preview_experiment(config))
        return
    from llem_ray.measure.experiment import run_and_save
    from llem_ray.results.summary import format_result

    measured = run_and_save(config, export_csv=flags.export_csv, quiet=flags.quiet)
    print(format_result(measured.result))
    print(f"results: {measured.result_dir}")


def run_study_cli(flags: RunFlags) -> StudyResult:
    """Run `flags.config` as a study on Ray (or preview it with `--dry-run`) and return its StudyResult.

    Prints the study directory on stdout when it ran. Raises ConfigError (bad flags or config),
    StudyError or PreFlightError. The config and flags are checked before Ray is imported, so a
    configuration error is reported in milliseconds.
    """
    if flags.config is None:
        raise ConfigError("give a study YAML (or a single-experiment YAML to run as a one-experiment study)")
    if flags.export_csv:
        raise ConfigError("--export-csv applies to one experiment run in this process, not to a study")
    if flags.output is not None:
        guards.output_flag(str(flags.output), "--output")
    study = load_study_config(flags.config, flags.overrides())
    n_cycles = cli_default_cycles(study, flags.cycles, flags.config)
    at = parse_at(flags.at) if flags.at else None
    from llem_ray.cluster.driver import StudyOptions, run  # Ray: only once the config is valid

    options = StudyOptions(
        resume_dir=flags.resume,
        n_cycles=n_cycles,
        cycle_order=flags.order,
        no_gaps=flags.no_gaps,
        dry_run=flags.dry_run,
        quiet=flags.quiet,
        verbose=flags.verbose,
        at=at,
        output_dir=flags.output,
        address=flags.address,
    )
    result = run(study, options)
    if not flags.dry_run:
        print(f"study: {result.output_dir}")
    return result
