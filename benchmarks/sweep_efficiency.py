"""Sweep efficiency of the Ray study engine on a simulated cluster (no GPU needed).

A `ray.cluster_utils.Cluster` on 127.0.0.1 with `--nodes` worker nodes x `--gpus-per-node` logical
GPUs (head without GPUs) runs `--experiments` experiments of the deterministic test backend, each
sleeping `--duration` s in its measured window (gaps 0, no warm-up, no baseline). From the
manifest's attempt records (driver clock for dispatch and end, actor clock for start; one host):
- makespan / (sum of durations / GPUs), with durations both nominal (`--duration`) and measured
  (actor start to result, i.e. the experiment's own time including its imports). Issue 13's target:
  <= 1.10 for 32 x 10 s on 8 GPUs (the defaults).
- scheduling overhead per experiment: dispatch to actor running (placement group + actor start,
  model load excluded), mean / p95 / max.
- mean seconds per stage of an attempt (cluster/stages.py), and the dead time between two measured
  windows on one GPU (window end -> next window start, minus load, baseline and warm-up), from
  `--speedup-experiments` experiments of `--speedup-duration` s on 1 GPU. Target <= 1.5 s for 8 x 3 s.
- speed-up of those experiments on 1 GPU vs on all GPUs (ideal: the GPU count).
Figures issue 13 sets a target for are printed as `target <name> <value> <target> met|NOT MET`.

    LLEM_PLUGINS=tests.fakes python benchmarks/sweep_efficiency.py            # issue 13's set-up (~3 min)
    LLEM_PLUGINS=tests.fakes python benchmarks/sweep_efficiency.py --experiments 16 --duration 3
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("LLEM_PLUGINS", "tests.fakes")

# isort: off
import llem_ray  # noqa: E402,F401  (installs the amdsmi guard before Ray is imported: keep it first)

# isort: on
import ray  # noqa: E402
from ray.cluster_utils import Cluster  # noqa: E402

from llem_ray.cluster.driver import StudyOptions, run  # noqa: E402
from llem_ray.cluster.stages import dead_times_s, mean_stages_s  # noqa: E402
from llem_ray.config.experiment import ExperimentConfig  # noqa: E402
from llem_ray.config.study import ExecutionConfig, StudyConfig  # noqa: E402
from llem_ray.results.manifest import read_manifest  # noqa: E402


def study(n: int, duration_s: float, output_dir: Path) -> StudyConfig:
    """`n` distinct fake experiments (random_seed varies) of `duration_s` each, no gaps."""
    base = {
        "backend": "fake",
        "model": "llem/tiny-llama",
        "dataset": "synthetic",
        "n": 1,
        "max_output_tokens": 1,
        "prefill_split": False,
        "warmup": {"n_warmup": 0, "thermal_floor_s": 0},
        "baseline": {"enabled": False},
        "passthrough_kwargs": {"fake_duration_s": duration_s},
    }
    experiments = [ExperimentConfig(**base, random_seed=i) for i in range(n)]
    execution = ExecutionConfig(n_cycles=1, config_gap_seconds=0, cycle_gap_seconds=0, timeout_s=duration_s * 10 + 120)
    return StudyConfig(
        name="sweep-efficiency", experiments=experiments, execution=execution, output_dir=str(output_dir)
    )


def measure(n: int, duration_s: float, gpus: int, output_dir: Path) -> dict:
    """Run the study on the connected cluster and compute the figures from its manifest."""
    result = run(study(n, duration_s, output_dir), StudyOptions(quiet=True))
    assert result.summary.completed == n, result.summary
    records = [h for e in read_manifest(Path(result.output_dir)).entries for h in e.history]
    first = min(r.dispatched_at for r in records)
    makespan_s = (max(r.ended_at for r in records) - first).total_seconds()
    own_s = [(r.ended_at - r.started_at).total_seconds() for r in records]
    start_s = sorted((r.started_at - r.dispatched_at).total_seconds() for r in records)
    return {
        "makespan_s": makespan_s,
        "ratio_nominal": makespan_s / (n * duration_s / gpus),
        "ratio_measured": makespan_s / (sum(own_s) / gpus),
        "mean_experiment_s": statistics.fmean(own_s),
        "start_mean_s": statistics.fmean(start_s),
        "start_p95_s": start_s[int(0.95 * (len(start_s) - 1))],
        "start_max_s": start_s[-1],
        "stages_s": mean_stages_s(records),
        "dead_s": sorted(dead_times_s(records)),
    }


def target(name: str, value: float, limit: float, at_most: bool = True) -> None:
    """One line per figure issue 13 sets a target for."""
    met = value <= limit if at_most else value >= limit
    print(f"target {name} {value:.3f} {'<=' if at_most else '>='} {limit:g} {'met' if met else 'NOT MET'}")


def print_stages(label: str, figures: dict) -> None:
    print(f"  stages ({label}), mean s: " + ", ".join(f"{k} {v:.2f}" for k, v in figures["stages_s"].items()))
    dead = figures["dead_s"]
    if dead:
        print(
            f"  dead time between windows on one GPU: mean {statistics.fmean(dead):.2f} s, "
            f"p95 {dead[int(0.95 * (len(dead) - 1))]:.2f} s, max {dead[-1]:.2f} s ({len(dead)} pairs)"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nodes", type=int, default=4)
    parser.add_argument("--gpus-per-node", type=int, default=2)
    parser.add_argument("--cpus-per-node", type=int, default=8, help="logical CPUs (a GPU node has many per GPU)")
    parser.add_argument("--experiments", type=int, default=32)
    parser.add_argument("--duration", type=float, default=10.0, help="measured window of each experiment, s")
    parser.add_argument("--speedup-experiments", type=int, default=8)
    parser.add_argument("--speedup-duration", type=float, default=3.0)
    parser.add_argument("--output", type=Path, default=Path("/tmp/llem-sweep-efficiency"))
    args = parser.parse_args()
    gpus = args.nodes * args.gpus_per_node

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "num_gpus": 0})
    for _ in range(args.nodes):
        cluster.add_node(num_cpus=args.cpus_per_node, num_gpus=args.gpus_per_node)
    cluster.wait_for_nodes()
    ray.init(address=cluster.address)
    try:
        sweep = measure(args.experiments, args.duration, gpus, args.output)
        many = measure(args.speedup_experiments, args.speedup_duration, gpus, args.output)
    finally:
        ray.shutdown()
        cluster.shutdown()
    ray.init(address="local", num_cpus=args.cpus_per_node, num_gpus=1, include_dashboard=False)
    try:
        one = measure(args.speedup_experiments, args.speedup_duration, 1, args.output)
    finally:
        ray.shutdown()

    print(
        f"cluster: {args.nodes} nodes x {args.gpus_per_node} logical GPUs ({args.cpus_per_node} logical CPUs) "
        f"= {gpus} GPUs (simulated on {os.cpu_count()} cores, 127.0.0.1; load average {os.getloadavg()[0]:.2f})"
    )
    print(f"sweep: {args.experiments} experiments x {args.duration:g} s measured window")
    print(f"  makespan                         {sweep['makespan_s']:8.1f} s")
    print(f"  makespan / (sum nominal / {gpus})    {sweep['ratio_nominal']:8.3f}")
    print(
        f"  makespan / (sum measured / {gpus})   {sweep['ratio_measured']:8.3f}   "
        f"(experiment's own time {sweep['mean_experiment_s']:.2f} s mean)"
    )
    print(
        f"  scheduling overhead / experiment {sweep['start_mean_s']:8.2f} s mean, {sweep['start_p95_s']:.2f} s p95, "
        f"{sweep['start_max_s']:.2f} s max"
    )
    print_stages(f"{args.experiments} x {args.duration:g} s on {gpus} GPUs", sweep)
    speedup = one["makespan_s"] / many["makespan_s"]
    print(
        f"speed-up: {args.speedup_experiments} experiments x {args.speedup_duration:g} s: "
        f"1 GPU {one['makespan_s']:.1f} s, {gpus} GPUs {many['makespan_s']:.1f} s -> {speedup:.2f}x (ideal {gpus}x)"
    )
    print_stages(f"{args.speedup_experiments} x {args.speedup_duration:g} s on 1 GPU", one)
    target(f"makespan_over_ideal_{args.experiments}x{args.duration:g}s_{gpus}gpus", sweep["ratio_nominal"], 1.10)
    if one["dead_s"]:
        target(f"dead_time_s_{args.speedup_duration:g}s_experiments_1gpu", statistics.fmean(one["dead_s"]), 1.5)
    print(f"load average at the end {os.getloadavg()[0]:.2f} (1 min)")


if __name__ == "__main__":
    main()
