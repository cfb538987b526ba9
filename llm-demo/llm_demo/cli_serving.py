"""Part-2 commands of the `llm-demo` CLI: serve, chat, canary, watch, teardown (warmup: cli_warmup.py).

Registered on `cli.app` when `cli` imports this module. Settings come from
`config/serving.yaml` (`--serving-config` to choose another); flags override
them. Each command maps anticipated failures to the exit codes of
docs/exit-codes.md through `cli.guarded`.
"""

from __future__ import annotations

import time
from pathlib import Path

import typer

from . import canary as canary_mod
from . import credentials
from .capacity import watch as watch_metrics
from .chat import ChatSession, ChatSettings
from .cli import AppState, app, guarded
from .client import InferenceFailed, TritonTextClient
from .errors import ConfigError
from .events import EventLog
from .gpu import summary_line
from .repo_validate import validate_or_raise
from .retention import RetentionPolicy
from .serve import attach, current_server, launch, stop_process_group
from .serving_config import load_serving, serve_options
from .teardown import teardown as run_teardown
from .triton import locate_triton

SERVING_CONFIG = typer.Option(
    None, "--serving-config", help="serving.yaml to use (default: <root>/config, else shipped)."
)


def _settings(state: AppState, path: Path | None) -> dict:
    return load_serving(state.workspace, path)


def start_server(state: AppState, settings: dict, repo: Path, overrides: dict, timeout_s: float | None = None):
    """Validate `repo` (exit 6), then launch Triton for it with the credential of model.yaml; return the
    ready handle. Each model serves its newest approved version from the start (the pin in its
    config.pbtxt, llm_demo/approvals.py)."""
    cfg = state.config()
    validate_or_raise(repo, None, EventLog(state.workspace, state.run_id, "repository", state.redactor))
    cred = credentials.resolve(cfg)
    injected = {}
    if cred.present:
        injected = {cfg.credentials.env_var: cred.token, "HF_TOKEN": cred.token}
    opts = serve_options(settings, repo, overrides)
    home = settings["serve"].get("triton_home")
    return launch(
        state.workspace,
        state.run_id,
        opts,
        install=locate_triton(Path(home)) if home else None,
        credentials=injected,
        timeout_s=timeout_s or float(settings["serve"]["ready_timeout_s"]),
        redactor=state.redactor,
    )


@app.command()
@guarded
def serve(
    ctx: typer.Context,
    model_repository: Path = typer.Option(
        None, "--model-repository", help="Triton repository (default: <root>/models)."
    ),
    http_address: str = typer.Option(None, "--http-address"),
    http_port: int = typer.Option(None, "--http-port"),
    grpc_address: str = typer.Option(None, "--grpc-address"),
    grpc_port: int = typer.Option(None, "--grpc-port"),
    metrics_address: str = typer.Option(None, "--metrics-address"),
    metrics_port: int = typer.Option(None, "--metrics-port"),
    grpc_tls_cert: Path = typer.Option(None, "--grpc-tls-cert", help="PEM certificate; enables gRPC TLS."),
    grpc_tls_key: Path = typer.Option(None, "--grpc-tls-key", help="PEM private key."),
    grpc_tls_root_cert: Path = typer.Option(None, "--grpc-tls-root-cert", help="PEM CA for clients / mutual TLS."),
    timeout: float = typer.Option(None, "--timeout", help="Seconds to wait for readiness."),
    foreground: bool = typer.Option(False, "--foreground", help="Stay attached; Ctrl-C stops the server."),
    attach_only: bool = typer.Option(
        False,
        "--attach",
        help="Start nothing: record a Triton already serving on these ports (docker compose) once it is ready.",
    ),
    serving_config: Path = SERVING_CONFIG,
) -> None:
    """Validate the repository (exit 6), start Triton, block until HTTP, gRPC and /metrics are ready
    (exit 7 port/launch, 8 TLS files)."""
    state: AppState = ctx.obj
    settings = _settings(state, serving_config)
    if grpc_tls_cert or grpc_tls_key:
        settings["serve"]["grpc_tls"] = {
            "enabled": True,
            "cert": grpc_tls_cert,
            "key": grpc_tls_key,
            "root_cert": grpc_tls_root_cert,
            "mutual": False,
        }
    overrides = {
        "http_address": http_address,
        "http_port": http_port,
        "grpc_address": grpc_address,
        "grpc_port": grpc_port,
        "metrics_address": metrics_address,
        "metrics_port": metrics_port,
    }
    repo = model_repository or state.workspace.models_dir
    if attach_only:
        handle = attach(
            state.workspace,
            state.run_id,
            serve_options(settings, repo, overrides),
            timeout or float(settings["serve"]["ready_timeout_s"]),
        )
    else:
        handle = start_server(state, settings, repo, overrides, timeout)
    state.echo(f"triton ready: http {handle.http_url}  grpc {handle.grpc_url}  metrics {handle.metrics_url}")
    state.echo(f"log: {handle.log_path}; stop with `llm-demo teardown`")
    if foreground:
        try:
            while handle.proc.poll() is None:
                time.sleep(1.0)
        except KeyboardInterrupt:
            stop_process_group(handle.pgid, handle.proc)


@app.command()
@guarded
def chat(
    ctx: typer.Context,
    model: str = typer.Option(None, "--model", help="Served model name (default: model.name of model.yaml)."),
    transport: str = typer.Option(None, "--transport", help="grpc | http"),
    message: list[str] = typer.Option([], "--message", "-m", help="Send these messages and exit (repeatable)."),
    max_tokens: int = typer.Option(None, "--max-tokens"),
    memory_budget_tokens: int = typer.Option(None, "--memory-budget-tokens"),
    rate_limit_per_min: float = typer.Option(None, "--rate-limit-per-min"),
    serving_config: Path = SERVING_CONFIG,
) -> None:
    """Chat with the served model; transcripts go to transcripts/<session>.jsonl (redacted). /exit ends."""
    state: AppState = ctx.obj
    cfg = state.config()
    c = _settings(state, serving_config)["chat"]
    settings = ChatSettings(
        model=model or cfg.model.name,
        max_tokens=max_tokens or c["max_tokens"],
        memory_budget_tokens=memory_budget_tokens or c["memory_budget_tokens"],
        rate_limit_per_min=rate_limit_per_min or c["rate_limit_per_min"],
        burst=c["burst"],
        system_prompt=c["system_prompt"] or "",
    )
    client = TritonTextClient.for_server(current_server(state.workspace), transport or c["transport"])
    session = ChatSession(
        state.workspace,
        client,
        settings,
        redactor=state.redactor,
        model_id=cfg.model_ref,
        config_hash=cfg.config_hash(),
    )
    state.echo(f"session {session.session_id}; transcript {session.path}")
    reason = "user_exit"
    try:
        for text in message or iter(lambda: input("you> "), None):
            if text.strip() in ("/exit", "/quit"):
                break
            if not text.strip():
                continue
            try:
                state.echo(f"assistant> {session.ask(text)}")
            except InferenceFailed as exc:
                state.echo(f"request failed: {exc}", err=True)
    except EOFError:
        reason = "end_of_input"
    except KeyboardInterrupt:
        reason = "interrupted"
    finally:
        session.close(reason)
    state.echo(f"session closed after {session.turns} turn(s)")


@app.command()
@guarded
def canary(
    ctx: typer.Context,
    version: int = typer.Option(None, "--version", help="Candidate version directory under models/<model>/."),
    model: str = typer.Option(None, "--model", help="Served model name (default: model.name)."),
    rollback: bool = typer.Option(False, "--rollback", help="Withdraw the newest approval and serve the previous one."),
    serving_config: Path = SERVING_CONFIG,
) -> None:
    """Validate and deploy a version as canary, smoke-test it within the SLA, promote or roll back
    (exit 6 invalid repository, 10 failed canary)."""
    state: AppState = ctx.obj
    if rollback == (version is not None):
        raise ConfigError(
            "canary needs exactly one of --version N (deploy) and --rollback",
            remediation="`llm-demo canary --version 2` or `llm-demo canary --rollback`",
            doc="docs/usage.md#canary",
        )
    name = model or state.config().model.name
    client = TritonTextClient.for_server(current_server(state.workspace))
    if rollback:
        restored = canary_mod.rollback(state.workspace, state.run_id, client, name, state.redactor)
        state.echo(f"{name}: rolled back, now serving version {restored}")
        return
    c = _settings(state, serving_config)["canary"]
    tests = [canary_mod.SmokeTest(**t) for t in c["smoke_tests"]]
    result = canary_mod.run_canary(
        state.workspace, state.run_id, client, name, version, tests, canary_mod.Sla(**c["sla"]), state.redactor
    )
    state.echo(f"{name}: version {result.candidate} promoted (previous {result.previous})")


@app.command()
@guarded
def watch(
    ctx: typer.Context,
    threshold_ms: float = typer.Option(None, "--threshold-ms", help="Queue delay alert threshold (ms)."),
    window_s: float = typer.Option(
        None, "--window-s", help="Seconds the delay must stay above the threshold; 300 by default."
    ),
    interval_s: float = typer.Option(None, "--interval-s", help="Scrape period (s)."),
    duration_s: float = typer.Option(None, "--duration-s", help="Stop after this long without alert (s)."),
    webhook: str = typer.Option(None, "--webhook", help="URL that receives the JSON alert."),
    model: list[str] = typer.Option([], "--model", help="Only these models (repeatable)."),
    serving_config: Path = SERVING_CONFIG,
) -> None:
    """Watch /metrics; when the queue delay stays above the threshold for the window, alert (log,
    webhook) and exit 11."""
    state: AppState = ctx.obj
    c = _settings(state, serving_config)["capacity"]
    handle = current_server(state.workspace)
    last = watch_metrics(
        handle.metrics_url,
        EventLog(state.workspace, state.run_id, "capacity", state.redactor),
        threshold_ms=threshold_ms or c["queue_delay_threshold_ms"],
        window_s=window_s or c["window_s"],
        interval_s=interval_s or c["interval_s"],
        max_duration_s=duration_s,
        models=model or None,
        webhook=webhook or c["webhook"],
    )
    state.echo(f"no capacity alert; last interval queue delay (ms, None: nothing finished): {last}")


@app.command()
@guarded
def teardown(
    ctx: typer.Context,
    purge_cache: bool = typer.Option(False, "--purge-cache", help="Also delete .cache/ (downloads, engines)."),
    compose_file: Path = typer.Option(None, "--compose-file", help="docker-compose.yml to bring down."),
    grace_s: float = typer.Option(15.0, "--grace-s", help="Seconds between SIGTERM and SIGKILL."),
    port_wait_s: float = typer.Option(
        10.0, "--port-wait-s", help="Seconds to wait for ports and GPU memory to be released."
    ),
    serving_config: Path = SERVING_CONFIG,
) -> None:
    """Stop services, verify processes/ports/GPU memory released, rotate logs; cleanup.log (exit 12 if not clean)."""
    state: AppState = ctx.obj
    r = _settings(state, serving_config)["retention"]
    report = run_teardown(
        state.workspace,
        state.run_id,
        policy=RetentionPolicy(**r),
        purge_cache=purge_cache,
        compose_file=compose_file,
        grace_s=grace_s,
        port_wait_s=port_wait_s,
        redactor=state.redactor,
    )
    state.echo(summary_line(report["gpu"]))
    state.echo(f"teardown clean; report: {report['cleanup_log']}")
