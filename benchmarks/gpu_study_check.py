"""Verify the Ray study engine on a real GPU host (a lent H100/H200); prints figures, exits 1 on any failure.

Runs a study of `--batch-sizes` experiments x `--cycles` cycles (random-weight Llama-3.2-1B shape,
synthetic prompts, no download) through `python -m llem_ray.study`'s driver on a local Ray, while
this process (the driver) lists every GPU's compute processes through NVML every 0.2 s (NVML
never creates a CUDA context). Then it checks, from the manifest, the results and that poll:
1. every attempt's actor owned a GPU through its placement group (Ray GPU id recorded) and its
   energy sampler was bound to that GPU's UUID (result placement + energy_per_device_j keys);
2. during each measured window (timeseries phase 'measured') the GPU's compute processes were only
   that experiment's actor (driver poll, and the worker's own record `gpu_pids_seen`);
3. no process other than an experiment actor ever held a CUDA context on any GPU during the study:
   not the driver, not the results actor; and this driver process never imported torch;
4. J/token of each configuration across cycles: mean and coefficient of variation (printed).

    python benchmarks/gpu_study_check.py                      # 3 configs x 3 cycles = 9 runs (~7 min, H100)
    python benchmarks/gpu_study_check.py --batch-sizes 8 32 --output /tmp/gpu-study    # 6 runs (~5 min)
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import threading
import time
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pyarrow.parquet as pq  # noqa: E402

import llem_ray  # noqa: E402,F401  (amdsmi guard before Ray)
from llem_ray import device  # noqa: E402
from llem_ray.cluster.driver import StudyOptions, run  # noqa: E402
from llem_ray.config.experiment import ExperimentConfig  # noqa: E402
from llem_ray.config.study import ExecutionConfig, StudyConfig  # noqa: E402
from llem_ray.results.manifest import read_manifest  # noqa: E402
from llem_ray.results.persistence import from_json  # noqa: E402


class ProcessPoll(threading.Thread):
    """Every 0.2 s: (unix time, GPU UUID, pids with a compute context) for every GPU of the host."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.gpus = device.current()
        self.uuids = [g.uuid for g in self.gpus.list_gpus()]
        self.samples: list[tuple[float, str, frozenset[int]]] = []
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.wait(0.2):
            now = time.time()
            for uuid in self.uuids:
                try:
                    pids = frozenset(self.gpus.compute_pids(uuid))
                except device.DeviceError:
                    continue
                self.samples.append((now, uuid, pids))


def build_study(batch_sizes: list[int], cycles: int, output: Path) -> StudyConfig:
    experiments = [
        ExperimentConfig(
            model="llem/llama-3.2-1b",
            weights="random",
            precision="bf16",
            dataset={"source": "synthetic", "input_len_tokens": 128},
            n=8 * bs,
            max_input_tokens=128,
            max_output_tokens=128,
            pytorch={"batch_size": bs},
            warmup={"n_warmup": 2, "thermal_floor_s": 3},
            baseline={"enabled": True, "duration_s": 10, "cache_ttl_s": 3600},
            resources={"gpus": 1, "cpus": 4},
        )
        for bs in batch_sizes
    ]
    execution = ExecutionConfig(
        n_cycles=cycles, cycle_order="interleaved", config_gap_seconds=2, cycle_gap_seconds=5, timeout_s=400
    )
    return StudyConfig(name="gpu-study-check", experiments=experiments, execution=execution, output_dir=str(output))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[8, 16, 32])
    parser.add_argument("--cycles", type=int, default=3)
    parser.add_argument("--output", type=Path, default=Path("/tmp/llem-gpu-study-check"))
    args = parser.parse_args()

    poll = ProcessPoll()
    poll.start()
    result = run(build_study(args.batch_sizes, args.cycles, args.output), StudyOptions(address="local"))
    poll.stop.set()
    poll.join()

    failures: list[str] = []
    manifest = read_manifest(Path(result.output_dir))
    if result.summary.completed != result.summary.total_experiments:
        failures.append(f"only {result.summary.completed}/{result.summary.total_experiments} runs completed")
    actor_pids = {r.actor_pid for e in manifest.entries for r in e.history if r.actor_pid}
    jpt: dict[str, list[float]] = {}
    for entry in manifest.entries:
        if entry.status != "completed":
            continue
        record = entry.history[-1]
        result_dir = Path(result.output_dir) / entry.result_path
        res = from_json(result_dir / "result.json")
        uuids = res.placement.gpu_uuids
        if not record.gpu_ids or len(uuids) != 1 or record.gpu_uuids != uuids:
            failures.append(f"{entry.key}: actor GPU ids {record.gpu_ids}, UUIDs {record.gpu_uuids} vs result {uuids}")
        if set(res.energy_per_device_j or {}) != set(uuids):
            failures.append(
                f"{entry.key}: sampler bound to {sorted(res.energy_per_device_j or {})}, actor owns {uuids}"
            )
        ts = pq.read_table(result_dir / "timeseries.parquet").to_pylist()
        window = [r["t_s"] for r in ts if r["phase"] == "measured"]
        if window and uuids:
            start, end = min(window), max(window)
            seen = set().union(*[p for t, u, p in poll.samples if u == uuids[0] and start <= t <= end] or [set()])
            if seen - {record.actor_pid}:
                failures.append(
                    f"{entry.key}: processes {sorted(seen)} on the GPU in the measured window, actor {record.actor_pid}"
                )
        if set(record.gpu_pids_seen) - {record.actor_pid}:
            failures.append(f"{entry.key}: the worker saw pids {record.gpu_pids_seen} (actor {record.actor_pid})")
        if res.energy_per_output_token_j is not None:
            jpt.setdefault(entry.name, []).append(res.energy_per_output_token_j)
        figures = {
            "key": entry.key,
            "gpu_uuid": uuids,
            "ray_gpu_ids": record.gpu_ids,
            "actor_pid": record.actor_pid,
            "measured_window_s": res.duration_s,
            "j_per_token": res.energy_per_output_token_j,
            "energy_meter": res.energy_meter,
            "baseline": res.energy_breakdown.baseline_source,
            "warnings": res.measurement_warnings,
        }
        print(json.dumps(figures))
    strangers = {p for _, _, pids in poll.samples for p in pids} - actor_pids
    most = max((len(pids) for _, _, pids in poll.samples), default=0)
    if strangers:
        failures.append(
            f"non-actor processes held a CUDA context during the study: {sorted(strangers)} (at most {most} "
            "process(es) on one GPU at once; if NVML reports host PIDs of a container, compare that count)"
        )
    if "torch" in sys.modules:
        failures.append("the driver process imported torch")

    start_s = result.measurement_protocol.get("mean_actor_start_s")
    print(f"\nscheduling overhead (placement + actor start, before model load): {start_s} s mean per run")
    print(f"poll: {len(poll.samples)} samples of {len(poll.handles)} GPU(s); actor pids {sorted(actor_pids)}")
    print(f"{'configuration':<36} {'cycles':>6} {'J/token mean':>13} {'CV %':>7}")
    for name, values in jpt.items():
        cv = statistics.stdev(values) / statistics.fmean(values) * 100 if len(values) > 1 else float("nan")
        print(f"{name:<36} {len(values):>6} {statistics.fmean(values):>13.4f} {cv:>7.2f}")
    print(f"{datetime.now().isoformat(timespec='seconds')} study dir {result.output_dir}")
    for failure in failures:
        print(f"FAIL {failure}")
    print("PASS" if not failures else f"{len(failures)} check(s) failed")
    return 0 if not failures else 1


if __name__ == "__main__":
    sys.exit(main())
