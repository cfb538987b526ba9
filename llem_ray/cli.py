"""The `llem` command (CLI-01..14): `llem run`, `llem config`, `llem report`, `llem --version`.

Exit codes: 0 success, 1 runtime error, 2 usage or configuration error, 130 interrupted (SIGINT),
143 terminated (SIGTERM). Results go to stdout; progress, notices and errors to stderr, one line per
failure (llem_ray.entry).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Literal

import typer
import typer.core
import typer.main

from llem_ray.entry import run_guarded

app = typer.Typer(add_completion=False, no_args_is_help=False, help="Measure the energy and speed of LLM inference.")


def _version(value: bool) -> None:
    if value:
        from llem_ray import __version__

        print(f"llem {__version__}")
        raise typer.Exit(0)


@app.callback()
def main(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
) -> None:
    """llem: measure the energy and speed of LLM inference (one experiment, or a study on Ray)."""


def _guarded(action: Callable[[], None], verbose: bool) -> None:
    """Run `action`, turning errors into one line per failure on stderr and the documented exit code."""
    code = run_guarded(action, prefix="error:", verbose=verbose)
    if code:
        raise typer.Exit(code)


@app.command()
def run(
    config: Path | None = typer.Argument(
        None, help="Experiment or study YAML (llem run without one: the built-in default experiment)."
    ),
    model: str | None = typer.Option(None, "--model", help="Model hub id, local path or llem/... shape."),
    backend: str | None = typer.Option(None, "--backend", help="pytorch, vllm or tensorrt."),
    dataset: str | None = typer.Option(None, "--dataset", help="synthetic, aienergyscore or a JSONL path."),
    n: int | None = typer.Option(None, "-n", help="Number of prompts."),
    batch_size: int | None = typer.Option(None, "--batch-size", help="PyTorch batch size."),
    precision: str | None = typer.Option(None, "--precision", help="fp32, fp16 or bf16."),
    output: Path | None = typer.Option(
        None,
        "--output",
        "-o",
        help="Write results under this directory (default: the user config's output.results_dir, ./results).",
    ),
    dry_run: bool = typer.Option(False, "--dry-run", help="Validate and preview; run nothing, write nothing."),
    export_csv: bool = typer.Option(False, "--export-csv", help="Experiment: also write result CSV files."),
    cycles: int | None = typer.Option(
        None, "--cycles", min=1, help="Study: cycles (default 3 unless the YAML sets it)."
    ),
    order: Literal["sequential", "interleaved", "shuffled"] | None = typer.Option(
        None, "--order", help="Study: sequential, interleaved or shuffled."
    ),
    no_gaps: bool = typer.Option(False, "--no-gaps", help="Study: skip config and cycle gaps."),
    resume: Path | None = typer.Option(None, "--resume", help="Study: resume the study in this directory."),
    at: str | None = typer.Option(None, "--at", help="Study: start cycles at these times, e.g. 02:00,03:00."),
    address: str | None = typer.Option(
        None, "--address", help="Study: Ray address ('local' = a new local Ray; default RAY_ADDRESS, else local)."
    ),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress output; final summary only."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="More detail, worker logs, tracebacks on errors."),
) -> None:
    """Run one experiment in-process, or a study on Ray (auto-detected from the YAML)."""
    from llem_ray import runner

    flags = runner.RunFlags(
        config=config,
        model=model,
        backend=backend,
        dataset=dataset,
        n=n,
        batch_size=batch_size,
        precision=precision,
        output=output,
        dry_run=dry_run,
        export_csv=export_csv,
        cycles=cycles,
        order=order,
        no_gaps=no_gaps,
        resume=resume,
        at=at,
        address=address,
        quiet=quiet,
        verbose=verbose,
    )
    _guarded(lambda: runner.run_cli(flags), verbose)


def run_command() -> typer.core.TyperCommand:
    """The command behind `llem run`: `python -m llem_ray.study` parses its arguments with it."""
    group = typer.main.get_command(app)
    assert isinstance(group, typer.core.TyperGroup)
    return group.commands["run"]


@app.command("config")
def config_cmd(verbose: bool = typer.Option(False, "--verbose", "-v", help="Also list every package version.")) -> None:
    """Show the environment (GPUs, backends, energy meters, Ray, user config) and set-up guidance."""
    from llem_ray.environment_report import render

    _guarded(lambda: print(render(verbose)), verbose)


@app.command()
def report(
    study_dir: Path = typer.Argument(..., help="Study directory (with its manifest), finished or partial."),
    output: Path | None = typer.Option(None, "--output", "-o", help="Report directory (default STUDY_DIR/report)."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Tracebacks on errors."),
) -> None:
    """Write an HTML report (plots, summary with confidence intervals, warnings, what is missing)."""
    from llem_ray.results.report import write_report

    _guarded(lambda: print(f"report: {write_report(study_dir, output)}"), verbose)
