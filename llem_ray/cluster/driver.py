"""Run a study on Ray: `run(study, options) -> StudyResult` (LA-02, STU-06..11, CAMP-02..07).

Steps: plan the items (experiments x cycles in the configured order), resolve the study directory
to an absolute path (a new one, or `--resume DIR`), connect to Ray (plain `ray.init()`: inside
`ray job submit` it joins that cluster; run directly it starts a local Ray without dashboard),
pre-flight every experiment against the cluster and the backends' environments (all problems at
once, PreFlightError), start the results actor on this node, schedule (cluster/scheduler.py),
consolidate `results.parquet`, write `study_result.json`, print the summary table on stdout,
POST the optional webhook. On resume, only items not completed in the manifest run again.

The driver process never imports torch and never touches CUDA. Before it starts a local Ray it
sets `RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO=1` (GPU-less workers see no GPU), `CUDA_DEVICE_ORDER=
PCI_BUS_ID` and the raylet sub-reaper (engine child processes die with their actor).

Example:
    >>> from llem_ray.config.loader import load_study_config
    >>> result = run(load_study_config("study.yaml"), StudyOptions(n_cycles=3))
    >>> result.results_table
    '/abs/results/my-study_20261123T120000/results.parquet'
"""

from __future__ import annotations

import hashlib
import os
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Literal

import ray
from pydantic import BaseModel, ConfigDict, Field

from llem_ray.cluster import runtime_env
from llem_ray.cluster.collector import COLLECTOR_FILES_TIMEOUT_S, start_collector
from llem_ray.cluster.notify import post_webhook
from llem_ray.cluster.placement import ClusterInventory, feasibility_problems, shape_for
from llem_ray.cluster.plan import WorkItem, cold_start, plan_items, unique_experiments
from llem_ray.cluster.progress import Progress, summary_table
from llem_ray.cluster.scheduler import Policy, Scheduler
from llem_ray.config.study import StudyConfig
from llem_ray.display import preview_study
from llem_ray.errors import ConfigError, PreFlightError, StudyError
from llem_ray.results.manifest import MANIFEST_FILE, ManifestWriter, StudyManifest
from llem_ray.results.persistence import sanitise_name
from llem_ray.results.schema import StudyResult, StudySummary

CLI_DEFAULT_CYCLES = 3
"""Cycles a CLI run uses when neither --cycles nor the study's `execution.n_cycles` says (CFG-15)."""

RAY_START_ENV = {
    "RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO": "1",
    "CUDA_DEVICE_ORDER": "PCI_BUS_ID",
}
"""Set (if unset) before this driver starts a local Ray; document them for `ray start` on clusters.

Not `RAY_kill_child_processes_on_worker_exit_with_raylet_subreaper`: with it, Ray 2.60 ignores
SIGCHLD in the driver and every worker, so `subprocess` reports exit code 0 for every child there
(a failed `nvcc`, `pip freeze` or engine build looks like success) for the rest of the process.
docs/cluster.md says when to opt in on GPU nodes."""

PROBE_TIMEOUT_S = 900.0
"""Longest wait for the backends' environments to be built and probed at pre-flight, s."""


class StudyOptions(BaseModel):
    """How to run a study this time (CLI flags / `run_study` keyword arguments). None = the study's own."""

    model_config = ConfigDict(extra="forbid")

    resume_dir: Path | None = Field(None, description="Continue this study directory: run only what is not completed.")
    n_cycles: int | None = Field(None, ge=1, description="Override execution.n_cycles.")
    cycle_order: Literal["sequential", "interleaved", "shuffled"] | None = None
    no_gaps: bool = Field(False, description="Config and cycle gaps of 0 s.")
    dry_run: bool = Field(False, description="Print the plan; start nothing, write nothing.")
    quiet: bool = Field(False, description="No progress bar (the summary still prints).")
    verbose: bool = Field(False, description="Forward worker logs to this process.")
    at: list[datetime] | None = Field(None, description="Start times of cycles (daemon mode); overrides schedule.")
    output_dir: Path | None = Field(None, description="Override the study's output_dir.")
    address: str | None = Field(
        None, description="Ray address ('local' = always a new local Ray); None = RAY_ADDRESS, a running local cluster, or a new one."
    )


def cli_default_cycles(study: StudyConfig, cycles: int | None) -> int | None:
    """The --cycles a CLI passes: the flag, else None if the YAML set n_cycles, else CLI_DEFAULT_CYCLES."""
    if cycles is not None:
        return cycles
    return None if "n_cycles" in study.execution.model_fields_set else CLI_DEFAULT_CYCLES


def _utc(moment: datetime) -> datetime:
    return moment.astimezone(timezone.utc) if moment.tzinfo else moment.astimezone().astimezone(timezone.utc)


def _plan(study: StudyConfig, options: StudyOptions) -> tuple[list[WorkItem], Policy, list[str]]:
    execution = study.execution
    order = options.cycle_order or execution.cycle_order
    schedule = options.at if options.at is not None else execution.schedule
    if schedule and order == "sequential":
        raise ConfigError("a cycle schedule needs cycle_order interleaved or shuffled (sequential runs one config at a time)")
    experiments = [cold_start(e) for e in study.experiments] if execution.force_cold_start else list(study.experiments)
    experiments, dropped = unique_experiments(experiments)
    notes = [f"{dropped} duplicate experiment(s) dropped (same measurement_config_hash)"] if dropped else []
    items = plan_items(experiments, options.n_cycles or execution.n_cycles, order, study.study_design_hash)
    policy = Policy(
        config_gap_seconds=0.0 if options.no_gaps else execution.config_gap_seconds,
        cycle_gap_seconds=0.0 if options.no_gaps else execution.cycle_gap_seconds,
        timeout_s=execution.timeout_s,
        max_retries=execution.max_retries,
        circuit_breaker=execution.circuit_breaker,
        isolation=execution.isolation,
        cycle_starts={n + 1: _utc(t) for n, t in enumerate(schedule or [])},
    )
    return items, policy, notes


def _new_study_dir(output_dir: Path, name: str) -> Path:
    output_dir.mkdir(parents=True, exist_ok=True)
    base = f"{sanitise_name(name)}_{datetime.now(timezone.utc).strftime('%Y%m%dT%H%M%SZ')}"
    for counter in range(1000):
        candidate = output_dir / (base if counter == 0 else f"{base}_{counter}")
        try:
            candidate.mkdir()
            return candidate
        except FileExistsError:
            continue
    raise StudyError(f"no free study directory name for {base} in {output_dir}")


def _target(study: StudyConfig, options: StudyOptions) -> str:
    """Where the study's results go, in words (for the dry run)."""
    if options.resume_dir is not None:
        return f"continues {options.resume_dir.expanduser().resolve()}"
    root = (options.output_dir or Path(study.output_dir)).expanduser().resolve()
    return f"{root}/{sanitise_name(study.name)}_<UTC timestamp>/"


def _resume_manifest(resume_dir: Path, study: StudyConfig) -> StudyManifest:
    path = resume_dir / MANIFEST_FILE
    if not path.is_file():
        raise StudyError(f"{resume_dir} is not a study directory (no {MANIFEST_FILE})")
    try:
        manifest = ManifestWriter.load(path).manifest
    except Exception as exc:
        raise StudyError(f"{path} cannot be read: {exc}") from exc
    if manifest.study_design_hash != study.study_design_hash:
        raise StudyError(
            f"{resume_dir} holds study {manifest.study_design_hash}, but this config is study "
            f"{study.study_design_hash}: resume with the same experiments"
        )
    return manifest


def _connect(options: StudyOptions) -> bool:
    """Connect to Ray unless already connected; True if this call did (and must shut it down)."""
    if ray.is_initialized():
        return False
    for key, value in RAY_START_ENV.items():
        os.environ.setdefault(key, value)
    local = options.address == "local" or (options.address is None and not os.environ.get("RAY_ADDRESS"))
    try:
        ray.init(
            address=options.address,
            include_dashboard=False if local else None,
            log_to_driver=options.verbose,
            runtime_env=runtime_env.job_runtime_env(),
        )
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise StudyError(f"cannot start or reach Ray: {exc}") from exc
    return True


def _preflight(study: StudyConfig, items: list[WorkItem], policy: Policy) -> ClusterInventory:
    inventory = ClusterInventory.from_ray()
    shapes = {i.name: shape_for(i.config, policy.isolation, inventory) for i in items}
    problems = feasibility_problems(shapes, inventory) + runtime_env.static_problems(study)
    if not problems:
        problems = runtime_env.probe_problems(study, inventory, PROBE_TIMEOUT_S)
    if problems:
        raise PreFlightError(problems)
    return inventory


def run(study: StudyConfig, options: StudyOptions | None = None) -> StudyResult:
    """Run `study` and return its StudyResult (also written to `<study_dir>/study_result.json`).

    Raises ConfigError (bad options), StudyError (cluster unreachable, bad resume directory,
    circuit breaker, unplaceable work) or PreFlightError; KeyboardInterrupt passes through after
    running entries are set back to pending. Items that fail for good do not raise: they are
    counted in `summary.failed`. `--dry-run` prints the plan and returns an empty result.
    """
    options = options or StudyOptions()
    started_s = time.monotonic()
    items, policy, notes = _plan(study, options)
    protocol = {**policy.__dict__, "cycle_starts": {c: t.isoformat() for c, t in policy.cycle_starts.items()}}
    protocol.update(n_cycles=max(i.cycle for i in items), cycle_order=options.cycle_order or study.execution.cycle_order)
    protocol.update(force_cold_start=study.execution.force_cold_start, ray_version=ray.__version__)
    if options.dry_run:
        print(preview_study(study, items, protocol, notes, _target(study, options)))
        return _study_result(study, protocol, "", {}, len(items), 0.0)
    for note in notes:
        print(f"llem: {note}", file=sys.stderr)
    previous = None
    if options.resume_dir is not None:
        study_dir = options.resume_dir.expanduser().resolve()
        previous = _resume_manifest(study_dir, study)
    done = set(previous.keys_with("completed")) if previous else set()
    first_attempt = {e.key: e.attempts + 1 for e in previous.entries} if previous else {}
    todo = [i for i in items if i.key not in done]

    started_ray = _connect(options)
    collector = None
    try:
        if previous is None:
            output_dir = (options.output_dir or Path(study.output_dir)).expanduser().resolve()
            study_dir = _new_study_dir(output_dir, study.name)
        print(f"llem: study directory {study_dir}", file=sys.stderr)
        inventory = _preflight(study, items, policy)
        protocol["cluster"] = {"nodes": len(inventory.nodes), "gpus": inventory.total_gpus, "cpus": inventory.total_cpus}
        entries = [i.manifest_entry() for i in items]
        manifest = StudyManifest(study_name=study.name, study_design_hash=study.study_design_hash, entries=entries)
        job = ray.get_runtime_context().get_job_id()
        name = f"llem-results-{hashlib.sha256(str(study_dir).encode()).hexdigest()[:12]}-{job}"
        collector = start_collector(study_dir, manifest, study.model_dump(mode="json"), name)
        if previous is not None:
            released = ray.get(collector.release_running.remote(), timeout=COLLECTOR_FILES_TIMEOUT_S)
            if released:
                print(f"llem: {len(released)} entries left running by the stopped driver are pending again", file=sys.stderr)
        envs = {b: runtime_env.experiment_runtime_env(study, b) for b in {i.config.backend for i in items}}
        progress = Progress(len(items), len(items) - len(todo), study.name, options.quiet)
        stopped: BaseException | None = None
        try:
            report = Scheduler(todo, policy, collector, envs, progress, first_attempt).run()
        except (StudyError, KeyboardInterrupt) as exc:
            stopped, report = exc, None
        finally:
            progress.close()
        files = ray.get(collector.finish.remote([i.key for i in items]), timeout=COLLECTOR_FILES_TIMEOUT_S)
        if report is not None and report.start_overheads_s:
            protocol["mean_actor_start_s"] = sum(report.start_overheads_s) / len(report.start_overheads_s)
        result = _study_result(study, protocol, str(study_dir), files, len(items), time.monotonic() - started_s)
        ray.get(collector.write_study_result.remote(result.model_dump(mode="json")), timeout=COLLECTOR_FILES_TIMEOUT_S)
        print(summary_table(files["table"], files["configs"]))
        _notify(study, result, stopped)
        if stopped is not None:
            raise stopped
        return result
    finally:
        if collector is not None:
            ray.kill(collector, no_restart=True)
        if started_ray:
            ray.shutdown()


def _study_result(
    study: StudyConfig, protocol: dict, study_dir: str, files: dict, n_items: int, wall_time_s: float
) -> StudyResult:
    """The StudyResult from the results actor's `finish()` output (`files`; empty for a dry run)."""
    counts = files.get("counts", {})
    summary = StudySummary(
        total_experiments=n_items,
        completed=counts.get("completed", 0),
        failed=counts.get("failed", 0),
        skipped=len(study.skipped),
        total_energy_j=files.get("total_energy_j"),
        wall_time_s=wall_time_s,
    )
    return StudyResult(
        study_name=study.name,
        study_design_hash=study.study_design_hash,
        measurement_protocol=protocol,
        output_dir=study_dir,
        result_files=files.get("result_files", []),
        results_table=files.get("results_table"),
        summary=summary,
        skipped=[s.model_dump() for s in study.skipped],
    )


def _notify(study: StudyConfig, result: StudyResult, stopped: BaseException | None) -> None:
    url = study.execution.webhook_url
    if not url:
        return
    failed = stopped is not None or result.summary.failed > 0
    payload = {
        "event": "study_failed" if failed else "study_completed",
        "study_name": study.name,
        "study_design_hash": study.study_design_hash,
        "output_dir": result.output_dir,
        "summary": result.summary.model_dump(),
        "error": str(stopped) if stopped is not None else None,
    }
    problem = post_webhook(url, payload)
    if problem:
        print(f"llem: {problem}", file=sys.stderr)
