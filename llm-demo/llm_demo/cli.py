"""The ``llm-demo`` command line.

Global options (before the command): ``--root`` (workspace, env ``LLM_DEMO_ROOT``), ``--run-id`` (env
``LLM_DEMO_RUN_ID``; default: a new id), ``--config`` (model.yaml to use). Commands receive the shared
:class:`AppState` as ``ctx.obj``. Wrap every command in :func:`guarded` so anticipated failures
(:class:`~llm_demo.errors.LlmDemoError`) print a redacted message, remediation and doc pointer, write
``logs/<run>/error.json`` and exit with the documented code (docs/exit-codes.md).

Adding a command::

    @app.command()
    @guarded
    def serve(ctx: typer.Context, port: int = 8000) -> None:
        state: AppState = ctx.obj
        ...
"""

from __future__ import annotations

import functools
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import typer

from . import __version__, acquire, build, pipeline, prereqs, repo_validate, repository, tiny_model
from .config import DemoConfig, load_config, parse_set_options
from .errors import ExitCode, LlmDemoError
from .events import EventLog
from .host_probe import load_host_facts
from .paths import Workspace, new_run_id, write_json_atomic
from .redact import Redactor
from .versions import write_tooling_manifest

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,  # rich tracebacks print local variables, which may hold secrets
    help="Warm up a TensorRT-LLM + Triton serving stack (see llm-demo/docs/usage.md).",
)

F = TypeVar("F", bound=Callable[..., Any])


@dataclass
class AppState:
    """State shared by all commands of one invocation.

    ``config()`` loads ``config_path`` (default ``workspace.config_file("model.yaml")``) with the global
    overrides once and caches it; it also extends ``redactor`` with the config's redaction section.
    """

    workspace: Workspace
    run_id: str
    config_path: Path | None = None
    overrides: dict[str, Any] = field(default_factory=dict)
    redactor: Redactor = field(default_factory=Redactor)
    _config: DemoConfig | None = None

    def config(self) -> DemoConfig:
        """Return the validated configuration (raises ConfigError, exit 2)."""
        if self._config is None:
            path = self.config_path or self.workspace.config_file("model.yaml")
            self._config = load_config(path, self.overrides)
            self.redactor = Redactor.from_config(self._config.to_dict()["redaction"], literals=self.redactor.literals)
        return self._config

    def echo(self, message: str, err: bool = False) -> None:
        """Print ``message`` after redaction."""
        typer.echo(self.redactor.redact(message), err=err)


def report_error(state: AppState, exc: LlmDemoError) -> None:
    """Print a redacted failure report to stderr and write it to ``logs/<run>/error.json``."""
    state.echo(f"error [{exc.exit_code.name.lower()}, exit {int(exc.exit_code)}]: {exc.message}", err=True)
    if exc.remediation:
        state.echo(f"remediation: {exc.remediation}", err=True)
    if exc.doc:
        state.echo(f"see: {state.workspace.doc_path(exc.doc)}", err=True)
    write_json_atomic(state.workspace.run_dir(state.run_id) / "error.json", state.redactor.redact_obj(exc.to_dict()))


def _state_from(args: tuple[Any, ...], kwargs: dict[str, Any]) -> AppState:
    for value in (*args, *kwargs.values()):
        if isinstance(getattr(value, "obj", None), AppState):  # the click context typer passes
            return value.obj
    raise TypeError("a @guarded command must take `ctx: typer.Context`")


def guarded(fn: F) -> F:
    """Decorate a command: map :class:`LlmDemoError` to its exit code, anything else to exit 1.

    The command must take ``ctx: typer.Context`` (its ``obj`` is the :class:`AppState`). Unexpected
    exceptions print a redacted traceback (never the raw one, it may hold secrets).
    """

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        state = _state_from(args, kwargs)
        try:
            return fn(*args, **kwargs)
        except LlmDemoError as exc:
            report_error(state, exc)
            raise typer.Exit(int(exc.exit_code)) from None
        except (typer.Exit, typer.Abort, KeyboardInterrupt):
            raise
        except Exception:  # noqa: BLE001 - last-resort handler, reported redacted
            state.echo(traceback.format_exc(), err=True)
            state.echo(f"unexpected error (exit {int(ExitCode.UNEXPECTED)}); see docs/exit-codes.md", err=True)
            raise typer.Exit(int(ExitCode.UNEXPECTED)) from None

    return wrapper  # type: ignore[return-value]


def _version_callback(value: bool) -> None:
    if value:
        typer.echo(f"llm-demo {__version__}")
        raise typer.Exit(0)


@app.callback()
def _main(
    ctx: typer.Context,
    root: Path | None = typer.Option(
        None, "--root", envvar="LLM_DEMO_ROOT", help="Workspace root (default: the llm-demo directory)."
    ),
    run_id: str | None = typer.Option(
        None, "--run-id", envvar="LLM_DEMO_RUN_ID", help="Run id for logs/<run>/ (default: new)."
    ),
    config: Path | None = typer.Option(
        None, "--config", help="model.yaml to use (default: <root>/config/model.yaml, else the shipped one)."
    ),
    set_: list[str] = typer.Option([], "--set", help="Override a config key: section.key=value (repeatable)."),
    model_id: str | None = typer.Option(None, "--model-id", help="= --set model.id=..."),
    revision: str | None = typer.Option(None, "--revision", help="= --set model.revision=..."),
    model_dir: str | None = typer.Option(
        None, "--model-dir", help="Use a local model directory (= --set model.local_dir=...)."
    ),
    tokenizer: str | None = typer.Option(None, "--tokenizer", help="= --set model.tokenizer=..."),
    precision: str | None = typer.Option(None, "--precision", help="= --set precision.profile=..."),
    runtime: str | None = typer.Option(None, "--runtime", help="engine | llmapi | python (= --set build.runtime=...)."),
    version: bool = typer.Option(
        False, "--version", callback=_version_callback, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    named = {
        "model.id": model_id,
        "model.revision": revision,
        "model.local_dir": model_dir,
        "model.tokenizer": tokenizer,
        "precision.profile": precision,
        "build.runtime": runtime,
    }
    overrides: dict[str, Any] = {k: v for k, v in named.items() if v is not None}
    workspace = Workspace.from_root(root)
    state = AppState(workspace=workspace, run_id=run_id or new_run_id(), config_path=config, overrides=overrides)
    ctx.obj = state
    try:
        overrides.update(parse_set_options(set_))
    except LlmDemoError as exc:
        report_error(state, exc)
        raise typer.Exit(int(exc.exit_code)) from None


def print_checks(state: AppState, manifest_or_results: list[dict[str, Any]]) -> None:
    """Print one line per prerequisite check result (redacted)."""
    for r in manifest_or_results:
        state.echo(f"  [{r['status']:<4}] {r['id']:<28} {r['message']}")


@app.command()
@guarded
def check(
    ctx: typer.Context,
    host_facts: Path | None = typer.Option(
        None, "--host-facts", help="Describe the host with this YAML/JSON file instead of probing it."
    ),
) -> None:
    """Run every prerequisite check; write state/prereq-manifest.json and state/tooling-manifest.json.

    Exit 3 on failure."""
    state: AppState = ctx.obj
    cfg = state.config()
    facts = load_host_facts(host_facts) if host_facts else None
    write_tooling_manifest(state.workspace)
    try:
        manifest = prereqs.check_prerequisites(state.workspace, cfg, state.run_id, state.redactor, facts=facts)
    except LlmDemoError as exc:
        print_checks(state, exc.details.get("all", exc.details.get("failed", [])))
        raise
    print_checks(state, manifest["checks"])
    state.echo(
        f"prerequisites ok ({cfg.runtime} runtime); manifest: {state.workspace.state_dir / 'prereq-manifest.json'}"
    )


OFFLINE = typer.Option(None, "--offline/--online", help="Never contact the hub (default: HF_HUB_OFFLINE).")
REFRESH = typer.Option(False, "--refresh", help="Re-download even when the cache is valid.")


@app.command("acquire")
@guarded
def acquire_cmd(ctx: typer.Context, offline: bool | None = OFFLINE, refresh: bool = REFRESH) -> None:
    """Download (or take from model.local_dir) and verify the model; update state/cache-manifest.json.

    Exit 4 on failure."""
    state: AppState = ctx.obj
    got = acquire.acquire(
        state.workspace, state.config(), state.run_id, state.redactor, offline=offline, refresh=refresh
    )
    for entry in {id(e): e for e in (got.model, got.tokenizer)}.values():
        state.echo(
            f"{entry['kind']}: {entry['path']} ({len(entry['files'])} files, {entry['total_size_bytes']} bytes, "
            f"expires {entry['expires_at']})"
        )


@app.command("build")
@guarded
def build_cmd(ctx: typer.Context, offline: bool | None = OFFLINE) -> None:
    """Build the engine (or prepare the llmapi/python runtime) from the verified cache.

    Writes state/engine-manifest.json; exit 5 on failure."""
    state: AppState = ctx.obj
    cfg = state.config()
    got = acquire.acquire(state.workspace, cfg, state.run_id, state.redactor, offline=offline)
    manifest = build.build(state.workspace, cfg, state.run_id, state.redactor, got)
    state.echo(
        f"{cfg.runtime} build succeeded: engine sha256 {manifest['engine_sha256']}; "
        f"manifest {state.workspace.state_dir / build.MANIFEST}"
    )


@app.command("prepare")
@guarded
def prepare_cmd(
    ctx: typer.Context,
    host_facts: Path | None = typer.Option(
        None, "--host-facts", help="Describe the host with this file instead of probing it."
    ),
    offline: bool | None = OFFLINE,
    refresh: bool = REFRESH,
    version: int = typer.Option(1, "--version", min=1, help="Model version to generate in models/<name>/."),
) -> None:
    """check -> acquire -> build -> repo generate + validate; stops at the first failure (exit 3/4/5/6)."""
    state: AppState = ctx.obj
    cfg = state.config()
    write_tooling_manifest(state.workspace)
    facts = load_host_facts(host_facts) if host_facts else None
    done = pipeline.prepare(
        state.workspace,
        cfg,
        state.run_id,
        state.redactor,
        facts=facts,
        offline=offline,
        refresh=refresh,
        version=version,
    )
    state.echo(f"prepared {done.model_name} version {done.version} ({cfg.runtime} runtime) in {done.repository}")


cache_app = typer.Typer(help="Inspect and purge the download cache.", no_args_is_help=True)
app.add_typer(cache_app, name="cache")


@cache_app.command("purge")
@guarded
def cache_purge(ctx: typer.Context) -> None:
    """Delete downloads of expired or invalidated cache entries (retention policy)."""
    state: AppState = ctx.obj
    removed = acquire.purge(state.workspace)
    state.echo("\n".join(f"purged {p}" for p in removed) or "nothing to purge")


repo_app = typer.Typer(help="Generate and validate the Triton model repository (models/).", no_args_is_help=True)
app.add_typer(repo_app, name="repo")


@repo_app.command("generate")
@guarded
def repo_generate(
    ctx: typer.Context, version: int = typer.Option(1, "--version", min=1, help="Model version directory to write.")
) -> None:
    """Write models/<name>/<version>/ for the configured runtime from the last successful build."""
    state: AppState = ctx.obj
    cfg = state.config()
    repo = repository.generate(state.workspace, cfg, version=version)
    repo_validate.validate_or_raise(
        repo, cfg.model.name, EventLog(state.workspace, state.run_id, "repository", state.redactor)
    )
    state.echo(f"generated {repo / cfg.model.name / str(version)} ({cfg.runtime} runtime); valid")


@repo_app.command("validate")
@guarded
def repo_validate_cmd(
    ctx: typer.Context,
    model: str | None = typer.Option(None, "--model", help="Only this model (and its ensemble steps)."),
    repository_dir: Path | None = typer.Option(
        None, "--repository", help="Repository to check (default: <root>/models)."
    ),
) -> None:
    """Check structure and required config fields; exit 6 with every problem listed if invalid."""
    state: AppState = ctx.obj
    repo = repository_dir or state.workspace.models_dir
    repo_validate.validate_or_raise(repo, model, EventLog(state.workspace, state.run_id, "repository", state.redactor))
    state.echo(f"{repo}: valid")


@app.command("tiny-model")
@guarded
def tiny_model_cmd(
    ctx: typer.Context, directory: Path = typer.Argument(..., help="Directory to create (must not exist, or be empty).")
) -> None:
    """Write a small random-weight Llama model and its tokenizer into DIRECTORY, offline (no hub
    access); use it with `--model-dir DIRECTORY` (exit 2 if DIRECTORY holds files)."""
    state: AppState = ctx.obj
    path = tiny_model.make_tiny_model_dir(directory.expanduser())
    state.echo(f"tiny model written to {path}; use it with `llm-demo --model-dir {path} <command>`")


def main() -> None:
    """Console-script entry point (exits the process with the command's code)."""
    app()


# Part-2 commands (serve, warmup, chat, canary, watch, teardown) register themselves on `app`.
from . import cli_serving, cli_warmup  # noqa: E402,F401
