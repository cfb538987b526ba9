"""The study engine on a simulated cluster: head without GPUs + 2 worker nodes x 2 logical GPUs."""

from __future__ import annotations

import itertools
import threading
import time
from pathlib import Path

import pytest

from llem_ray.cluster.driver import StudyOptions, run
from llem_ray.cluster.plan import plan_items
from tests.ray.helpers import (
    assert_no_shared_gpu,
    assert_results_once,
    attempts,
    fake_experiment,
    fake_study,
    load_manifest,
)

pytestmark = pytest.mark.ray


def test_experiments_spread_over_worker_nodes_never_share_a_gpu_and_skip_the_head(ray_cluster, tmp_path):
    cluster, workers = ray_cluster
    experiments = [fake_experiment(500 + seed, duration_s=0.5) for seed in range(6)]
    study = fake_study(experiments, tmp_path)
    result = run(study, StudyOptions(quiet=True))
    assert result.summary.completed == 6
    assert_results_once(
        result.output_dir, {i.key for i in plan_items(experiments, 1, "interleaved", study.study_design_hash)}
    )
    assert assert_no_shared_gpu(result.output_dir) == 6
    nodes = {r.node_id for _, r in attempts(result.output_dir)}
    assert nodes <= {w.node_id for w in workers} and len(nodes) == 2, "both GPU workers used, never the head"


def test_node_isolation_runs_one_experiment_per_node_in_shuffled_order(ray_cluster, tmp_path):
    experiments = [fake_experiment(600 + seed, duration_s=0.3) for seed in range(3)]
    study = fake_study(experiments, tmp_path, n_cycles=2, cycle_order="shuffled", isolation="node")
    planned = plan_items(experiments, 2, "shuffled", study.study_design_hash)
    interleaved = plan_items(experiments, 2, "interleaved", study.study_design_hash)
    assert [i.key for i in planned] != [i.key for i in interleaved], "pick seeds whose shuffle differs"
    assert planned == plan_items(experiments, 2, "shuffled", study.study_design_hash), "shuffle is not seeded"

    result = run(study, StudyOptions(quiet=True))
    assert result.summary.completed == 6
    records = dict(attempts(result.output_dir))
    assert [k for k, _ in sorted(records.items(), key=lambda kv: kv[1].dispatched_at)] == [i.key for i in planned]
    for a, b in itertools.combinations(records.values(), 2):
        overlap = a.started_at < b.ended_at and b.started_at < a.ended_at
        assert not (overlap and a.node_id == b.node_id), "two experiments measured on one node at once"
    assert len({r.node_id for r in records.values()}) == 2


def _remove_node_once_busy(cluster, node, study_root: Path, removed: list[float], stop: threading.Event) -> None:
    """Remove `node` as soon as an experiment has started on it (polls the manifest)."""
    while not stop.wait(0.2):
        for manifest in study_root.glob("*/manifest.json"):
            try:
                busy = any(
                    r.node_id == node.node_id and r.started_at and not r.ended_at for _, r in attempts(manifest.parent)
                )
            except (ValueError, OSError):  # manifest being replaced: read again next poll
                continue
            if busy:
                cluster.remove_node(node)
                removed.append(time.time())
                return


def test_removing_a_node_mid_study_lets_the_rest_finish(ray_cluster, tmp_path):
    cluster, workers = ray_cluster
    experiments = [fake_experiment(700 + seed, duration_s=2.0) for seed in range(6)]
    study = fake_study(experiments, tmp_path, max_retries=2, circuit_breaker=10)
    removed: list[float] = []
    stop = threading.Event()
    killer = threading.Thread(target=_remove_node_once_busy, args=(cluster, workers[1], tmp_path, removed, stop))
    killer.start()
    try:
        result = run(study, StudyOptions(quiet=True))
    finally:
        stop.set()
        killer.join()
    assert removed, "the node was never busy, so it was never removed"
    assert result.summary.completed == 6 and result.summary.failed == 0
    assert_results_once(result.output_dir, {e.key for e in load_manifest(result.output_dir).entries})
    assert_no_shared_gpu(result.output_dir)
    records = attempts(result.output_dir)
    lost = [(k, r) for k, r in records if r.error and r.node_id == workers[1].node_id]
    assert lost, "no attempt failed when its node was removed"
    for key, _ in lost:
        retried = [r for k, r in records if k == key and r.status == "completed"]
        assert retried and retried[0].node_id == workers[0].node_id
