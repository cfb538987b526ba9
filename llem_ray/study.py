"""`python -m llem_ray.study study.yaml [options]`: run a study on Ray (thin: parse, load, call the driver).

Works directly (starts a local Ray) and under `ray job submit --working-dir . -- python -m
llem_ray.study study.yaml` (joins that cluster). Progress on stderr, summary table on stdout.
Exit codes (llem_ray.errors): 0 every item completed, 1 an error or an item failed for good,
2 usage or configuration error, 130 interrupted (SIGINT), 143 terminated (SIGTERM); on 130 and 143
running items go back to pending (`--resume`).
"""

from __future__ import annotations

import argparse
import sys
from datetime import datetime, timedelta
from pathlib import Path

from llem_ray.entry import run_guarded
from llem_ray.errors import EXIT_ERROR, EXIT_OK, ConfigError


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


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m llem_ray.study", description="Run an llem_ray study on Ray.")
    parser.add_argument("config", type=Path, help="study YAML (or a single-experiment YAML)")
    parser.add_argument("--resume", type=Path, metavar="DIR", help="continue this study directory")
    parser.add_argument("--cycles", type=int, metavar="N", help="cycles (default: the YAML's, else 3)")
    parser.add_argument("--order", choices=["sequential", "interleaved", "shuffled"], help="cycle order")
    parser.add_argument("--no-gaps", action="store_true", help="no config or cycle gaps")
    parser.add_argument("--dry-run", action="store_true", help="print the plan and exit")
    parser.add_argument("--at", metavar="TIMES", help="start cycles at these times, e.g. 02:00,03:00 (daemon)")
    parser.add_argument("--output", type=Path, metavar="DIR", help="write the study directory under DIR")
    parser.add_argument("--address", help="Ray address (default: RAY_ADDRESS, else a local Ray)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.add_argument("--verbose", action="store_true", help="forward worker logs")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the exit code (llem_ray.entry prints any failure as one line per problem)."""
    args = _parser().parse_args(argv)
    return run_guarded(lambda: _run(args), prefix="llem:", verbose=args.verbose,
                       resume_hint="continue with --resume <study directory>")


def _run(args: argparse.Namespace) -> int:
    """Load and check the study, then run it. The config is read before Ray is imported, so a
    configuration error is reported in milliseconds."""
    from llem_ray.cluster.plan import cli_default_cycles
    from llem_ray.config import guards
    from llem_ray.config.loader import load_study_config

    study = load_study_config(args.config)
    n_cycles = cli_default_cycles(study, args.cycles, args.config)
    at = parse_at(args.at) if args.at else None
    if args.output is not None:
        guards.output_flag(str(args.output), "--output")
    from llem_ray.cluster.driver import StudyOptions, run  # Ray: only once the config is valid

    options = StudyOptions(
        resume_dir=args.resume,
        n_cycles=n_cycles,
        cycle_order=args.order,
        no_gaps=args.no_gaps,
        dry_run=args.dry_run,
        quiet=args.quiet,
        verbose=args.verbose,
        at=at,
        output_dir=args.output,
        address=args.address,
    )
    result = run(study, options)
    if result.summary.failed:
        print(f"llem: {result.summary.failed} run(s) failed; see {result.output_dir}/manifest.json", file=sys.stderr)
        return EXIT_ERROR
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
