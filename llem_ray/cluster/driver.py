"""Run a study on Ray: `run(study, options) -> StudyResult` (LA-02, STU-06..11, CAMP-02..07).

Steps: plan the items (experiments x cycles in the configured order, their number checked against
the limits first), pre-flight what needs only the file system (datasets, local models, the output
directory: every problem at once, before Ray starts), lock the study directory (a new one, or
`--resume DIR`; a second driver there is refused), connect to Ray (plain `ray.init()`: inside
`ray job submit` it joins that cluster; run directly it starts a local Ray without dashboard),
check every experiment fits the cluster, start the backends' environment probes and, while they run,
the results actor on this node (on resume it closes what a stopped driver left running and rebuilds
bad table rows from their result.json), wait for the probes (PreFlightError), schedule
(cluster/scheduler.py), consolidate `results.parquet`, write `study_result.json`, print the summary
table on stdout, POST the optional webhook. On resume, only items not completed in the manifest run
again.

The driver process never imports torch and never touches CUDA. Before it starts a local Ray it
sets `RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO=1` (GPU-less workers see no GPU) and `CUDA_DEVICE_ORDER=
PCI_BUS_ID`. `ray.init` installs a SIGTERM handler that exits 15; a handler the caller had (the
CLI's, exit 143 after the same clean-up as Ctrl-C) is put back.

Example:
    >>> from llem_ray.config.loader import load_study_config
    >>> result = run(load_study_config("study.yaml"), StudyOptions(n_cycles=3))
    >>> result.results_table
    '/abs/results/my-study_20261123T120000/results.parquet'
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import signal
import sys
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Literal

import ray
from pydantic import BaseModel, ConfigDict, Field

from llem_ray.cluster import runtime_env
from llem_ray.cluster.attempts import Policy, describe
from llem_ray.cluster.collector import COLLECTOR_FILES_TIMEOUT_S, start_collector
from llem_ray.cluster.notify import post_webhook
from llem_ray.cluster.placement import ClusterInventory, feasibility_problems, shape_for
from llem_ray.cluster.plan import WorkItem, cold_start, plan_items, plan_rows, unique_experiments
from llem_ray.cluster.progress import Progress, summary_table
from llem_ray.cluster.scheduler import Scheduler
from llem_ray.config import guards
from llem_ray.config.limits import check_runs
from llem_ray.config.study import StudyConfig
from llem_ray.display import preview_study
from llem_ray.errors import ConfigError, PreFlightError, StudyError, add_note, clean_up
from llem_ray.measure.inputs import study_problems
from llem_ray.results.manifest import StudyManifest
from llem_ray.results.persistence import sanitise_name
from llem_ray.results.schema import StudyResult, StudySummary
from llem_ray.results.study_dir import StudyLock, completed_keys, load_for_resume, new_study_dir

RAY_START_ENV = {"RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO": "1", "CUDA_DEVICE_ORDER": "PCI_BUS_ID"}
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
        None,
        description=(
            "Ray address ('local' = always a new local Ray); None = RAY_ADDRESS, a running local cluster, or a new one."
        ),
    )


def _utc(moment: datetime) -> datetime:
    return moment.astimezone(timezone.utc) if moment.tzinfo else moment.astimezone().astimezone(timezone.utc)


def _plan(study: StudyConfig, options: StudyOptions) -> tuple[list[WorkItem], Policy, list[str]]:
    execution = study.execution
    order = options.cycle_order or execution.cycle_order
    schedule = options.at if options.at is not None else execution.schedule
    if schedule and order == "sequential":
        raise ConfigError(
            "a cycle schedule needs cycle_order interleaved or shuffled (sequential runs one config at a time)"
        )
    n_cycles = options.n_cycles or execution.n_cycles
    check_runs(len(study.experiments), n_cycles, "--cycles" if options.n_cycles else "execution.n_cycles")
    experiments = [cold_start(e) for e in study.experiments] if execution.force_cold_start else list(study.experiments)
    experiments, dropped = unique_experiments(experiments)
    notes = [f"{dropped} duplicate experiment(s) dropped (same measurement_config_hash)"] if dropped else []
    items = plan_items(experiments, n_cycles, order, study.study_design_hash)
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


def _target(study: StudyConfig, options: StudyOptions) -> str:
    """Where the study's results go, in words (for the dry run)."""
    if options.resume_dir is not None:
        return f"continues {options.resume_dir.expanduser().resolve()}"
    root = (options.output_dir or Path(study.output_dir)).expanduser().resolve()
    return f"{root}/{sanitise_name(study.name)}_<UTC timestamp>/"


def _connect(options: StudyOptions) -> bool:
    """Connect to Ray unless already connected; True if this call did (and must shut it down)."""
    if ray.is_initialized():
        return False
    for key, value in RAY_START_ENV.items():
        os.environ.setdefault(key, value)
    local = options.address == "local" or (options.address is None and not os.environ.get("RAY_ADDRESS"))
    sigterm = signal.getsignal(signal.SIGTERM)
    try:
        ray.init(
            address=options.address,
            include_dashboard=False if local else None,
            log_to_driver=options.verbose,
            runtime_env=runtime_env.job_runtime_env(),
        )
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise StudyError(f"cannot start or reach Ray: {exc}") from exc
    if callable(sigterm) and threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, sigterm)  # ray.init replaces it with sys.exit(15); keep the CLI's (exit 143)
    return True


def _feasible(items: list[WorkItem], policy: Policy) -> ClusterInventory:
    """The alive cluster, once every experiment's shape fits on one of its nodes (PreFlightError if not)."""
    inventory = ClusterInventory.from_ray()
    configs = {i.config_hash: i for i in items}.values()  # one per configuration, not per cycle
    problems = feasibility_problems(
        {i.name: shape_for(i.config, policy.isolation, inventory) for i in configs}, inventory
    )
    if problems:
        raise PreFlightError(problems)
    return inventory


def run(study: StudyConfig, options: StudyOptions | None = None) -> StudyResult:
    """Run `study` and return its StudyResult (also written to `<study_dir>/study_result.json`).

    Raises ConfigError (bad options, too many runs), PreFlightError (every problem at once: inputs
    and output directory before Ray starts, then the cluster and the backends' environments),
    StudyError (cluster unreachable, bad or locked resume directory, circuit breaker, unplaceable
    work); KeyboardInterrupt (Terminated included) passes through after running entries are set
    back to pending. The first cause is what propagates: an error while finishing or shutting down
    after it becomes a note on it (`__notes__`, printed by the CLI after the cause), never raised
    instead. Items that fail for good do not raise: they are counted in `summary.failed`.
    `--dry-run` prints the plan and returns an empty result.
    """
    options = options or StudyOptions()
    started_s = time.monotonic()
    if options.output_dir is not None:
        guards.output_flag(str(options.output_dir), "--output")
    items, policy, notes = _plan(study, options)
    protocol = {**policy.__dict__, "cycle_starts": {c: t.isoformat() for c, t in policy.cycle_starts.items()}}
    protocol.update(
        n_cycles=max(i.cycle for i in items), cycle_order=options.cycle_order or study.execution.cycle_order
    )
    protocol.update(force_cold_start=study.execution.force_cold_start, ray_version=ray.__version__)
    if options.dry_run:
        done = (
            set()
            if options.resume_dir is None
            else completed_keys(options.resume_dir.expanduser(), study.study_design_hash)
        )
        print(preview_study(study, items, protocol, notes, _target(study, options), done))
        return _study_result(study, protocol, "", {}, len(items), 0.0)
    for note in notes:
        print(f"llem: {note}", file=sys.stderr)
    resume_dir = options.resume_dir.expanduser().resolve() if options.resume_dir is not None else None
    output_dir = (options.output_dir or Path(study.output_dir)).expanduser().resolve()
    problems = study_problems(study.experiments, resume_dir or output_dir) + runtime_env.static_problems(study)
    if problems:
        raise PreFlightError(problems)
    with contextlib.ExitStack() as held:
        previous = None
        if resume_dir is not None:
            held.enter_context(StudyLock(resume_dir))
            previous = load_for_resume(resume_dir, study.study_design_hash)
            if previous is None:
                print(
                    f"llem: {resume_dir} has no manifest yet (its driver stopped first): starting there",
                    file=sys.stderr,
                )
        startup = protocol["startup_s"] = {"planned_and_locked": time.monotonic() - started_s}
        started_ray = _connect(options)
        startup["connected"] = time.monotonic() - started_s
        collector = None
        first: BaseException | None = None
        try:
            study_dir = resume_dir or new_study_dir(output_dir, study.name)
            if resume_dir is None:
                held.enter_context(StudyLock(study_dir))
            print(f"llem: study directory {study_dir}", file=sys.stderr)
            inventory = _feasible(items, policy)
            protocol["cluster"] = {
                "nodes": len(inventory.nodes),
                "gpus": inventory.total_gpus,
                "cpus": inventory.total_cpus,
            }
            probes = runtime_env.start_probes(study, inventory)  # they run while the results actor opens
            collector = _open_collector(study, items, study_dir, previous is not None)
            startup["results_actor_open"] = time.monotonic() - started_s
            problems = runtime_env.probe_problems(probes, PROBE_TIMEOUT_S)
            if problems:
                raise PreFlightError(problems)
            startup["probed"] = time.monotonic() - started_s
            return _schedule(study, items, policy, protocol, collector, study_dir, options, started_s)
        except BaseException as exc:
            first = exc
            raise
        finally:
            steps = [functools.partial(ray.kill, collector, no_restart=True)] if collector is not None else []
            steps += [ray.shutdown] if started_ray else []
            clean_up(steps, first=first)


def _open_collector(study: StudyConfig, items: list[WorkItem], study_dir: Path, resuming: bool):
    """The results actor of `study_dir`, its manifest holding every planned item (as plain rows: at
    100,000 entries, models would cost seconds to build and send); on resume it first closes what a
    stopped driver left running and repairs the table from the results' result.json."""
    manifest = StudyManifest(study_name=study.name, study_design_hash=study.study_design_hash)
    job = ray.get_runtime_context().get_job_id()
    name = f"llem-results-{hashlib.sha256(str(study_dir).encode()).hexdigest()[:12]}-{job}"
    collector = start_collector(study_dir, manifest, study.model_dump(mode="json"), name)
    rows = [list(row) for row in plan_rows(items)]  # Ray serialises a list of tuples ~5x slower
    ray.get(collector.add_planned.remote(rows), timeout=COLLECTOR_FILES_TIMEOUT_S)
    if resuming:
        released = ray.get(collector.release_running.remote(), timeout=COLLECTOR_FILES_TIMEOUT_S)
        if released:
            print(
                f"llem: {len(released)} entries left running by the stopped driver are pending again", file=sys.stderr
            )
        repaired = ray.get(collector.repair.remote(), timeout=COLLECTOR_FILES_TIMEOUT_S)
        if repaired["rebuilt"]:
            print(f"llem: rebuilt {len(repaired['rebuilt'])} table part(s) from their result.json", file=sys.stderr)
        if repaired["removed"]:
            print(f"llem: removed {repaired['removed']} unreadable or orphaned table file(s)", file=sys.stderr)
        if repaired["lost"]:
            print(
                f"llem: {len(repaired['lost'])} completed entries lost their result files: measured again",
                file=sys.stderr,
            )
    return collector


def _schedule(
    study: StudyConfig,
    items: list[WorkItem],
    policy: Policy,
    protocol: dict,
    collector,
    study_dir: Path,
    options: StudyOptions,
    started_s: float,
) -> StudyResult:
    """Run what the manifest does not have completed, then finish the study directory.

    A StudyError or interrupt from the scheduler is re-raised after the study directory is
    finished; an error while finishing then becomes a note on it, never raised in its place.
    """
    not_done = ray.get(collector.resume_state.remote(), timeout=COLLECTOR_FILES_TIMEOUT_S)
    first_attempt = {key: attempts + 1 for key, attempts in not_done.items()}
    todo = [i for i in items if i.key in not_done]
    protocol.setdefault("startup_s", {})["todo_known"] = time.monotonic() - started_s
    envs = {b: runtime_env.experiment_runtime_env(study, b) for b in {i.config.backend for i in items}}
    progress = Progress(len(items), len(items) - len(todo), study.name, options.quiet)
    stopped: BaseException | None = None
    report = None
    try:
        report = Scheduler(todo, policy, collector, envs, progress, first_attempt).run()
    except (StudyError, KeyboardInterrupt) as exc:
        stopped = exc
    finally:
        progress.close()
    result = None
    try:
        result = _conclude(study, items, protocol, collector, study_dir, report, started_s, stopped)
    except Exception as exc:
        if stopped is None:
            raise
        add_note(stopped, f"also, while finishing the stopped study: {describe(exc)}")
    if stopped is not None:
        raise stopped
    return result


def _conclude(
    study: StudyConfig,
    items: list[WorkItem],
    protocol: dict,
    collector,
    study_dir: Path,
    report,
    started_s: float,
    stopped: BaseException | None,
) -> StudyResult:
    """Consolidate the table, write study_result.json, print the summary, POST the webhook."""
    try:
        files = ray.get(collector.finish.remote([i.key for i in items]), timeout=COLLECTOR_FILES_TIMEOUT_S)
        protocol["results_actor"] = ray.get(collector.stats.remote(), timeout=COLLECTOR_FILES_TIMEOUT_S)
    except Exception as exc:
        raise StudyError(f"the results actor could not finish the study: {describe(exc)}") from exc
    if report is not None and report.start_overheads_s:
        protocol["mean_actor_start_s"] = sum(report.start_overheads_s) / len(report.start_overheads_s)
    if report is not None and report.first_dispatch_s is not None:
        protocol["time_to_first_dispatch_s"] = report.first_dispatch_s - started_s
    result = _study_result(study, protocol, str(study_dir), files, len(items), time.monotonic() - started_s)
    ray.get(collector.write_study_result.remote(result.model_dump(mode="json")), timeout=COLLECTOR_FILES_TIMEOUT_S)
    print(summary_table(files["table"], files["configs"]))
    _notify(study, result, stopped)
    lost = files["counts"]["pending"]
    if stopped is None and lost:
        raise StudyError(
            f"{lost} completed entries lost their result files while the study ran; --resume measures them again"
        )
    return result


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
