"""The `llm-demo warmup` command: prepare -> serve -> golden warm-up -> teardown -> run manifest.

Registered on `cli.app` when `cli` imports this module.

Ownership: warm-up tears down only the server it started itself. A server that `llm-demo serve` left
running is never stopped by it: a warm-up that fails before its own launch stops nothing, and its
launch refuses to start while that server runs (exit 7, `serve.refuse_if_serving`).

Exit code: the first failure decides it (3 prerequisites, 4 cache, 5 build, 6 repository, 7/8
launch, 9 golden deviation, 10 failed requests). Teardown and the run manifest still run after a
failure; if they fail as well, that is printed on stderr and listed in `error.json` under
`details.after_failure`, and the exit code stays the warm-up's. After a successful warm-up an
incomplete teardown exits 12.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import typer

from . import pipeline
from .cli import AppState, app, guarded
from .cli_serving import SERVING_CONFIG, start_server
from .client import TritonTextClient
from .config import DemoConfig
from .errors import LlmDemoError
from .gpu import snapshot, summary_line
from .host_probe import load_host_facts
from .retention import RetentionPolicy, write_run_manifest
from .serve import ServerHandle
from .serving_config import load_serving
from .teardown import teardown as run_teardown
from .versions import write_tooling_manifest
from .warmup import WarmupPlan, add_gpu_snapshot, memory_delta_mib, run_warmup


def _token_counter(ref: str):
    """Token counter from a local tokenizer directory, or None (streamed chunks are counted then)."""
    if not ref or not Path(ref).expanduser().is_dir():
        return None
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(Path(ref).expanduser()))
    return lambda text: len(tokenizer(text, add_special_tokens=False).input_ids)


@dataclass
class _Run:
    """One warm-up: what it started (`handle`), stage durations (s) and the first-snapshot baseline."""

    state: AppState
    cfg: DemoConfig
    policy: RetentionPolicy
    keep_serving: bool
    t0: float = field(default_factory=time.monotonic)
    durations_s: dict[str, float] = field(default_factory=dict)
    handle: ServerHandle | None = None
    baseline: dict | None = None

    def stage_done(self, name: str) -> None:
        self.durations_s[name] = time.monotonic() - self.t0 - sum(self.durations_s.values())

    def _teardown_own_server(self) -> None:
        if self.handle is None or self.keep_serving:
            return
        state = self.state
        tear = run_teardown(state.workspace, state.run_id, policy=self.policy, redactor=state.redactor)
        self.stage_done("teardown")
        add_gpu_snapshot(state.workspace, state.run_id, "after_teardown", tear["gpu"])
        state.echo(summary_line(tear["gpu"]))
        if self.baseline is not None:
            delta = memory_delta_mib(self.baseline, tear["gpu"])
            state.echo(f"GPU memory after teardown vs before launch (MiB per GPU): {delta or 'no NVML'}")

    def _write_manifest(self) -> None:
        state, cfg = self.state, self.cfg
        path = write_run_manifest(
            state.workspace,
            state.run_id,
            config=state.redactor.redact_obj(cfg.to_dict()),
            config_hash=cfg.config_hash(),
            durations_s=self.durations_s,
            policy=self.policy,
        )
        state.echo(f"run manifest: {path}")

    def finish(self, failure: BaseException | None) -> None:
        """Tear down what this run started and write the manifest; see the module docstring for
        which failure decides the exit code."""
        later: list[Exception] = []
        for step in (self._teardown_own_server, self._write_manifest):
            try:
                step()
            except Exception as exc:  # noqa: BLE001 - reported below, never lost
                later.append(exc)
        if not later:
            return
        if failure is None:
            raise later[0]
        notes = [f"{type(exc).__name__}: {getattr(exc, 'message', exc)}" for exc in later]
        for note in notes:
            self.state.echo(f"after the warm-up failed, this failed as well: {note}", err=True)
        if isinstance(failure, LlmDemoError):
            failure.details["after_failure"] = notes


@app.command()
@guarded
def warmup(
    ctx: typer.Context,
    record_golden: bool = typer.Option(
        False, "--record-golden", help="Write this run's outputs as the golden samples."
    ),
    threshold: float = typer.Option(
        None, "--golden-threshold", help="Similarity (0..1) below which an output deviates."
    ),
    transport: str = typer.Option(None, "--transport", help="grpc | http"),
    max_tokens: int = typer.Option(None, "--max-tokens"),
    repeats: int = typer.Option(None, "--repeats"),
    version: int = typer.Option(1, "--model-version", help="Version directory the repository step writes."),
    keep_serving: bool = typer.Option(False, "--keep-serving", help="Leave Triton running (default: tear down)."),
    host_facts: Path = typer.Option(None, "--host-facts", help="Describe the host instead of probing it."),
    serving_config: Path = SERVING_CONFIG,
) -> None:
    """Prepare (prerequisites, acquisition, build, repository) -> serve -> golden warm-up -> teardown -> manifest.

    Exit codes: 3 prerequisites, 4 cache, 5 build, 6 repository, 7/8 launch, 9 golden deviation,
    10 failed requests, 12 teardown. Tears down only the server it started.
    """
    state: AppState = ctx.obj
    cfg = state.config()
    settings = load_serving(state.workspace, serving_config)
    run = _Run(state, cfg, RetentionPolicy(**settings["retention"]), keep_serving)
    try:
        _warm_up(
            run,
            settings,
            host_facts,
            version,
            record_golden=record_golden,
            threshold=threshold,
            transport=transport,
            max_tokens=max_tokens,
            repeats=repeats,
        )
    except BaseException as exc:
        run.finish(exc)
        raise
    run.finish(None)


def _warm_up(
    run: _Run,
    settings: dict,
    host_facts: Path | None,
    version: int,
    *,
    record_golden: bool,
    threshold: float | None,
    transport: str | None,
    max_tokens: int | None,
    repeats: int | None,
) -> None:
    state, cfg, w = run.state, run.cfg, settings["warmup"]
    write_tooling_manifest(state.workspace)
    facts = load_host_facts(host_facts) if host_facts else None
    prepared = pipeline.prepare(state.workspace, cfg, state.run_id, state.redactor, facts=facts, version=version)
    run.stage_done("prepare")
    run.baseline = snapshot("before-launch")
    add_gpu_snapshot(state.workspace, state.run_id, "before_launch", run.baseline)
    run.handle = start_server(state, settings, prepared.repository, {})
    run.stage_done("launch")
    state.echo(f"triton ready: http {run.handle.http_url} grpc {run.handle.grpc_url}")
    golden_file = w["golden_file"]
    plan = WarmupPlan(
        model=cfg.model.name,
        prompts=list(w["prompts"]),
        max_tokens=max_tokens or w["max_tokens"],
        repeats=repeats or w["repeats"],
        transport=transport or w["transport"],
        golden_path=Path(golden_file) if golden_file else None,
        threshold=w["golden_threshold"] if threshold is None else threshold,
        record_golden=record_golden,
        config_hash=cfg.config_hash(),
    )
    client = TritonTextClient.for_server(run.handle, plan.transport, timeout_s=300.0)
    summary = run_warmup(
        state.workspace,
        state.run_id,
        client,
        plan,
        count_tokens=_token_counter(cfg.tokenizer_ref),
        redactor=state.redactor,
    )
    run.stage_done("inference")
    inf = summary["inference"]
    state.echo(
        f"warm-up ok: {inf['requests']} requests, TTFT p50 {inf['ttft_s']['p50']:.4f} s "
        f"p95 {inf['ttft_s']['p95']:.4f} s, latency p50 {inf['latency_s']['p50']:.4f} s "
        f"p95 {inf['latency_s']['p95']:.4f} s, {inf['tokens_per_s']['mean']:.1f} tokens/s"
    )
    state.echo(summary_line(summary["gpu"]["before"]))
    state.echo(summary_line(summary["gpu"]["after"]))
