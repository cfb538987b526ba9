"""The study engine at cluster scale (issue 13): 100,000 planned entries, 64 simulated GPUs.

`--checkpoints-only` times the storage alone, without Ray (under a minute on 2 cores): a manifest store
of `--planned` entries takes `--changes` changes the way a study makes them (dispatched, started,
completed, slot released), each timed; then the JSON export and a reader's snapshot at that size, the
queries a resume makes, one rewrite of the whole manifest.json as the engine did before issue 13, and
the study table at that size (rows compacted, parts added with compaction, the repair scan, the
consolidation). It prints `checkpoint_ms_per_change_at_<planned> <mean ms>`.

Without it: a `ray.cluster_utils.Cluster` on 127.0.0.1 (head without GPUs, `--nodes` x `--gpus-per-node`
logical GPUs) and a study of `--planned` entries (`--experiments` configurations x cycles, fake backend)
of which all but the last `--run` are already completed: the study directory a driver stopped near the
end of a long study leaves (its manifest store, and the completed rows in one compacted table file).
`python -m llem_ray.study study.yaml --resume DIR` resumes it in a child process, as `ray job submit`
would, and runs the remaining `--run` experiments of `--duration` s. It prints the driver's peak RSS,
the time from its start to the first dispatch, the results actor's time per manifest change and per
stored result, GPU occupancy (sum of measured windows / (makespan x GPUs)), the dead time between two
windows on one GPU, and mean seconds per stage. Figures issue 13 sets a target for are printed as
`target <name> <value> <target> met|NOT MET`.

    python benchmarks/cluster_scale.py --checkpoints-only          # storage alone, < 1 min
    python benchmarks/cluster_scale.py                             # 16 nodes x 4 GPUs, 2,048 x 30 s (~20 min)
    python benchmarks/cluster_scale.py --nodes 2 --run 64 --duration 5   # what a 2-core machine can run
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")

import pyarrow.parquet as pq  # noqa: E402
import yaml  # noqa: E402

import llem_ray  # noqa: E402,F401  (installs the amdsmi guard before Ray is imported)
from llem_ray.cluster.plan import WorkItem, plan_rows  # noqa: E402
from llem_ray.cluster.stages import dead_times_s, gpu_occupancy, mean_stages_s  # noqa: E402
from llem_ray.config.loader import load_study_config  # noqa: E402
from llem_ray.config.study import StudyConfig  # noqa: E402
from llem_ray.results.manifest import (  # noqa: E402
    MANIFEST_FILE,
    AttemptRecord,
    ManifestWriter,
    StudyManifest,
    export_manifest,
    read_manifest,
    utc_now,
    write_json_atomic,
)
from llem_ray.results.study_dir import new_study_dir  # noqa: E402
from llem_ray.results.study_table import StudyTable  # noqa: E402
from llem_ray.results.table import read_rows, scan, write_part  # noqa: E402
from tests.ray.helpers import fabricate, planned, sweep_study, synthetic_rows  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]
STAGES = {
    "actor_start": 0.8,
    "actor_init": 0.01,
    "nvml_init": 0.02,
    "imports": 0.1,
    "preflight": 0.01,
    "load": 0.0,
    "environment": 0.05,
    "measure": 30.0,
    "metrics": 0.02,
    "unload": 0.01,
}
"""A realistic `stages_s` for the timed changes (what a completed attempt records)."""


def target(name: str, value: float, limit: float, at_most: bool = True) -> None:
    met = value <= limit if at_most else value >= limit
    print(f"target {name} {value:.3f} {'<=' if at_most else '>='} {limit:g} {'met' if met else 'NOT MET'}")


def _timed_ms(work) -> float:
    begun_s = time.perf_counter()
    work()
    return (time.perf_counter() - begun_s) * 1000


def checkpoints_only(n_entries: int, n_changes: int) -> None:
    """The storage at `n_entries` entries, no Ray (see module docstring)."""
    experiments = max(1, n_entries // 100)
    study = load_study_from(sweep_study(experiments, n_entries // experiments, 30.0, Path(tempfile.gettempdir())))
    items = planned(study)
    rows = plan_rows(items)
    with tempfile.TemporaryDirectory(prefix="llem-checkpoints-") as tmp:
        root = Path(tmp)
        begun_s = time.perf_counter()
        writer = ManifestWriter.create(root / MANIFEST_FILE, StudyManifest(study_name="s", study_design_hash="h"))
        writer.add_planned(rows)
        print(f"store of {len(rows):,} entries created in {time.perf_counter() - begun_s:.2f} s")
        resume_ms = _timed_ms(
            lambda: (
                writer.add_planned(rows),
                writer.release_running("x"),
                writer.keys_with("completed"),
                writer.attempts_not_completed(),
            )
        )
        print(
            f"a resume's queries (add_planned again, release_running, completed keys, what to run) {resume_ms:.0f} ms"
        )
        per_change = []
        for n, item in enumerate(items[: max(1, n_changes // 4)]):
            record = AttemptRecord(attempt=1, dispatched_at=utc_now())
            started = record.model_copy(
                update={
                    "started_at": utc_now(),
                    "node_id": "n" * 56,
                    "gpu_ids": [str(n % 4)],
                    "hostname": "host",
                    "actor_pid": 4242,
                }
            )
            done = started.model_copy(update={"ended_at": utc_now(), "stages_s": STAGES})
            per_change.append(_timed_ms(lambda: writer.mark_running(item.key, record)))
            per_change.append(_timed_ms(lambda: writer.mark_running(item.key, started)))
            per_change.append(_timed_ms(lambda: writer.mark_completed(item.key, f"experiments/{item.key}/r", done)))
            per_change.append(_timed_ms(lambda: writer.add_stages(item.key, 1, {"slot_release": 0.01})))
        per_change.sort()
        mean_ms = statistics.fmean(per_change)
        print(
            f"{len(per_change):,} changes: mean {mean_ms:.3f} ms, p50 {per_change[len(per_change) // 2]:.3f} ms, "
            f"p99 {per_change[int(0.99 * (len(per_change) - 1))]:.3f} ms, max {per_change[-1]:.3f} ms"
        )
        print(f"checkpoint_ms_per_change_at_{n_entries} {mean_ms:.3f}")
        target(f"checkpoint_ms_per_change_at_{n_entries}", mean_ms, 2.0)
        print(
            f"manifest.json export {_timed_ms(lambda: export_manifest(root)):.0f} ms "
            f"({(root / MANIFEST_FILE).stat().st_size / 2**20:.1f} MiB); "
            f"reader's snapshot (read_manifest) {_timed_ms(lambda: read_manifest(root)):.0f} ms"
        )
        whole = read_manifest(root)
        old_ms = _timed_ms(
            lambda: write_json_atomic(root / "old.json", json.dumps(whole.model_dump(mode="json"), indent=1))
        )
        print(f"before issue 13 every change rewrote manifest.json whole: {old_ms:.0f} ms per change at this size")
        writer.close()
        table_at_scale(root / "table-study", items)


def table_at_scale(study_dir: Path, items: list[WorkItem], n_parts: int = 1024) -> None:
    """The study table with all but `n_parts` rows compacted, then `n_parts` stored one by one."""
    study_dir.mkdir()
    table = StudyTable(study_dir)
    begun_s = time.perf_counter()
    pq.write_table(synthetic_rows(items[:-n_parts]), table.current() / "compact-t3-v000000-0.parquet")
    print(f"table: {len(items) - n_parts:,} compacted rows written in {time.perf_counter() - begun_s:.2f} s")
    parts = synthetic_rows(items[-n_parts:]).to_pylist()
    stored: set[str] = set()
    per_row = []
    for row in parts:
        stored.add(row["key"])
        per_row.append(_timed_ms(lambda: (write_part(table.path, row), table.compact(lambda keys: stored & set(keys)))))
    print(
        f"table: {n_parts} rows stored with compaction: mean {statistics.fmean(per_row):.2f} ms per row, "
        f"max {max(per_row):.0f} ms (a compaction); {len(table.parts())} parts left"
    )
    print(
        f"table: repair scan {_timed_ms(lambda: scan(table.path)):.0f} ms, "
        f"consolidation of {len(items):,} rows "
        f"{_timed_ms(lambda: read_rows(table.path, [i.key for i in items])):.0f} ms"
    )


def load_study_from(config: dict) -> StudyConfig:
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as handle:
        yaml.safe_dump(config, handle)
    try:
        return load_study_config(Path(handle.name))
    finally:
        os.unlink(handle.name)


def run_cluster(args: argparse.Namespace) -> None:
    """The Ray part (see module docstring)."""
    from ray.cluster_utils import Cluster

    gpus = args.nodes * args.gpus_per_node
    cycles = args.planned // args.experiments
    args.output.mkdir(parents=True, exist_ok=True)
    config_path = args.output / "cluster-scale.yaml"
    config_path.write_text(yaml.safe_dump(sweep_study(args.experiments, cycles, args.duration, args.output)))
    study = load_study_config(config_path)
    items = planned(study)
    study_dir = new_study_dir(args.output, study.name)
    begun_s = time.perf_counter()
    fabricate(study_dir, study, items, args.run)
    print(
        f"study directory {study_dir}: {len(items):,} planned, {len(items) - args.run:,} completed "
        f"(fabricated in {time.perf_counter() - begun_s:.1f} s), {args.run} to run"
    )

    begun_s = time.perf_counter()
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "num_gpus": 0})
    for _ in range(args.nodes):
        cluster.add_node(num_cpus=args.cpus_per_node, num_gpus=args.gpus_per_node)
    cluster.wait_for_nodes()
    print(
        f"cluster: {args.nodes} nodes x {args.gpus_per_node} logical GPUs ({args.cpus_per_node} logical CPUs) = "
        f"{gpus} GPUs, up in {time.perf_counter() - begun_s:.1f} s (simulated on {os.cpu_count()} cores, "
        f"127.0.0.1; load average {os.getloadavg()[0]:.2f})"
    )
    env = {**os.environ, "RAY_ADDRESS": cluster.address, "LLEM_PLUGINS": "tests.fakes"}
    log = (args.output / "driver.log").open("w")
    try:
        spawned = utc_now()
        driver = subprocess.Popen(
            [sys.executable, "-m", "llem_ray.study", str(config_path), "--resume", str(study_dir), "--quiet"],
            cwd=REPO_ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        _, status, usage = os.wait4(driver.pid, 0)
        driver.returncode = os.waitstatus_to_exitcode(status)
    finally:
        log.close()
        cluster.shutdown()
    print(f"driver exited {driver.returncode} (log: {args.output / 'driver.log'})")
    report(study_dir, study, items[-args.run :], gpus, spawned, usage.ru_maxrss / 1024, args.duration)


def report(
    study_dir: Path, study: StudyConfig, ran: list[WorkItem], gpus: int, spawned, peak_rss_mib: float, duration_s: float
) -> None:
    protocol = json.loads((study_dir / "study_result.json").read_text())["measurement_protocol"]
    keys = {i.key for i in ran}
    entries = [e for e in read_manifest(study_dir).entries if e.key in keys]
    records = [r for e in entries for r in e.history if r.status == "completed"]
    first_s = (min(r.dispatched_at for r in records) - spawned).total_seconds() if records else float("nan")
    busy = protocol.get("results_actor", {}).get("busy", {})
    change, stored = busy.get("change", {"calls": 0, "seconds": 0}), busy.get("record", {"calls": 0, "seconds": 0})
    change_ms = 1000 * change["seconds"] / max(1, change["calls"])
    print(
        f"completed {sum(e.status == 'completed' for e in entries)} of the {len(ran)} runs; "
        f"{len(study.experiments) * study.execution.n_cycles:,} entries planned"
    )
    print(
        f"resume to first dispatch: {protocol.get('time_to_first_dispatch_s', float('nan')):.2f} s from run() "
        f"(locked, connected, results actor opened, table repaired), {first_s:.2f} s from the driver's start"
    )
    print("  driver start-up, s since run(): " + ", ".join(f"{k} {v:.2f}" for k, v in protocol["startup_s"].items()))
    print(f"driver peak RSS {peak_rss_mib:.0f} MiB")
    print(
        f"results actor: {change['calls']} manifest changes, {change_ms:.2f} ms each; {stored['calls']} results "
        f"stored, {1000 * stored['seconds'] / max(1, stored['calls']):.1f} ms each (files, row, manifest, compaction)"
    )
    occupancy = gpu_occupancy(records, gpus)
    dead = sorted(dead_times_s(records))
    print(f"GPU occupancy {occupancy:.3f} over {len(records)} windows of {duration_s:g} s")
    if dead:
        print(
            f"dead time between windows on one GPU: mean {statistics.fmean(dead):.2f} s, "
            f"p95 {dead[int(0.95 * (len(dead) - 1))]:.2f} s ({len(dead)} pairs)"
        )
    print("stages, mean s: " + ", ".join(f"{k} {v:.2f}" for k, v in mean_stages_s(records).items()))
    target(
        f"resume_to_first_dispatch_s_at_{len(study.experiments) * study.execution.n_cycles}",
        protocol.get("time_to_first_dispatch_s", float("nan")),
        5.0,
    )
    target("driver_peak_rss_mib", peak_rss_mib, 1024)
    target(f"gpu_occupancy_{gpus}gpus_{duration_s:g}s", occupancy, 0.90, at_most=False)
    print(f"load average at the end {os.getloadavg()[0]:.2f} (1 min)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoints-only", action="store_true", help="the storage alone, no Ray")
    parser.add_argument("--planned", type=int, default=100_000, help="entries the study plans")
    parser.add_argument("--changes", type=int, default=20_000, help="manifest changes timed (--checkpoints-only)")
    parser.add_argument("--experiments", type=int, default=1_000, help="configurations (planned / this = cycles)")
    parser.add_argument("--nodes", type=int, default=16)
    parser.add_argument("--gpus-per-node", type=int, default=4)
    parser.add_argument("--cpus-per-node", type=int, default=8, help="logical CPUs per node")
    parser.add_argument("--run", type=int, default=2_048, help="experiments left to run (the rest are completed)")
    parser.add_argument("--duration", type=float, default=30.0, help="measured window of each experiment, s")
    parser.add_argument("--output", type=Path, default=Path("/tmp/llem-cluster-scale"))
    args = parser.parse_args()
    if args.checkpoints_only:
        checkpoints_only(args.planned, args.changes)
    else:
        run_cluster(args)


if __name__ == "__main__":
    main()
