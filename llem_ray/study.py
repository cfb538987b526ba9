"""`python -m llem_ray.study study.yaml [options]`: run a study on Ray (thin: parse, then runner).

The options are `llem run`'s, parsed by the same command (one option set: `runner.RunFlags`), and
`--dry-run` prints the same plan; unlike `llem run`, a single-experiment YAML runs as a
one-experiment study on Ray (CFG-17), experiment flags applied. Works directly (starts a local Ray)
and under `ray job submit --working-dir . -- python -m llem_ray.study study.yaml` (joins that
cluster). Progress on stderr, summary table and the study directory on stdout.
Exit codes (llem_ray.errors): 0 every item completed, 1 an error or an item failed for good,
2 usage or configuration error, 130 interrupted (SIGINT), 143 terminated (SIGTERM); on 130 and 143
running items go back to pending (`--resume`). Every failure is one line per problem on stderr
(llem_ray.entry).
"""

from __future__ import annotations

import copy
import sys

import typer

from llem_ray.entry import run_guarded
from llem_ray.errors import EXIT_CONFIG, EXIT_ERROR, EXIT_OK
from llem_ray.runner import RunFlags, run_study_cli

PROG = "python -m llem_ray.study"


def _parse(argv: list[str]) -> RunFlags | int:
    """The flags of `argv`, parsed by `llem run`'s own command (one option set); an exit code for
    --help (0) or a usage error (2, one line on stderr)."""
    from llem_ray.cli import run_command

    command = copy.copy(run_command())  # the same parameters, this entry point's own description
    command.help = "Run a study on Ray: a study YAML, or an experiment YAML as a one-experiment study."
    try:
        return RunFlags.from_params(command.make_context(PROG, list(argv)).params)
    except typer.Exit as exc:  # --help printed
        return exc.exit_code
    except typer.TyperException as exc:  # usage errors: unknown option, bad value
        print(f"llem: {exc.format_message() if hasattr(exc, 'format_message') else exc}", file=sys.stderr)
        return EXIT_CONFIG


def _run(flags: RunFlags) -> int:
    result = run_study_cli(flags)
    if result.summary.failed:
        print(f"llem: {result.summary.failed} run(s) failed; see {result.output_dir}/manifest.json", file=sys.stderr)
        return EXIT_ERROR
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the exit code (llem_ray.entry prints any failure as one line per problem)."""
    flags = _parse(sys.argv[1:] if argv is None else argv)
    if isinstance(flags, int):
        return flags
    return run_guarded(
        lambda: _run(flags),
        prefix="llem:",
        verbose=flags.verbose,
        resume_hint="continue with --resume <study directory>",
    )


if __name__ == "__main__":
    sys.exit(main())
