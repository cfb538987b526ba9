"""The study engine on one local Ray node with 4 logical GPUs (fake backend through the registries)."""

from __future__ import annotations

import json
import threading
from datetime import datetime, timedelta
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest
import ray

from llem_ray.cluster.collector import start_collector
from llem_ray.cluster.driver import StudyOptions, run
from llem_ray.cluster.plan import plan_items
from llem_ray.cluster.scheduler import KILL_GRACE_S
from llem_ray.config.experiment import measurement_config_hash
from llem_ray.errors import StudyError
from llem_ray.results.manifest import StudyManifest
from llem_ray.results.persistence import from_json
from tests.ray.helpers import (
    assert_no_shared_gpu,
    assert_results_once,
    attempts,
    fake_experiment,
    fake_study,
    load_manifest,
)

pytestmark = pytest.mark.ray


class _Hook(BaseHTTPRequestHandler):
    received: list[dict] = []

    def do_POST(self) -> None:  # noqa: N802 (http.server API)
        body = self.rfile.read(int(self.headers["Content-Length"]))
        _Hook.received.append(json.loads(body))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def webhook():
    server = HTTPServer(("127.0.0.1", 0), _Hook)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    _Hook.received.clear()
    yield f"http://127.0.0.1:{server.server_port}/hook", _Hook.received
    server.shutdown()
    server.server_close()


def test_parallel_study_never_shares_a_gpu_and_stores_each_result_once(ray_4gpu, tmp_path, webhook, capsys):
    url, received = webhook
    experiments = [fake_experiment(seed, duration_s=0.4) for seed in range(5)]
    study = fake_study(experiments, tmp_path, n_cycles=2, cycle_order="interleaved", webhook_url=url)
    result = run(study, StudyOptions(quiet=True))

    planned = plan_items(experiments, 2, "interleaved", study.study_design_hash)
    assert result.summary.completed == 10 and result.summary.failed == 0
    assert_results_once(result.output_dir, {i.key for i in planned})
    assert assert_no_shared_gpu(result.output_dir) == 10
    records = dict(attempts(result.output_dir))
    assert len({tuple(r.gpu_ids) for r in records.values()}) > 1, "4 GPUs but everything ran on one"
    dispatched = sorted(planned, key=lambda i: records[i.key].dispatched_at)
    assert [i.key for i in dispatched] == [i.key for i in planned], "dispatch order is not the interleaved plan"
    assert all(Path(f).is_file() for f in result.result_files) and len(result.result_files) == 10
    assert Path(result.output_dir).is_absolute() and Path(result.output_dir, "study_result.json").is_file()
    assert "tiny-llama_fake_bf16_bs1" in capsys.readouterr().out
    assert received and received[0]["event"] == "study_completed" and received[0]["summary"]["completed"] == 10


def test_gaps_rest_each_gpu_while_the_others_work(ray_4gpu, tmp_path):
    experiments = [fake_experiment(100 + seed, duration_s=0.2) for seed in range(4)]
    study = fake_study(experiments, tmp_path, n_cycles=2, config_gap_seconds=1.0, cycle_gap_seconds=3.0)
    result = run(study, StudyOptions(quiet=True))
    assert result.summary.completed == 8
    assert_no_shared_gpu(result.output_dir)
    by_gpu: dict[str, list] = {}
    for key, record in attempts(result.output_dir):
        by_gpu.setdefault(record.gpu_ids[0], []).append(
            (record.started_at, record.ended_at, int(key.rsplit("c", 1)[1]))
        )
    rests = []
    for runs in by_gpu.values():
        runs.sort()
        for (_, end, cycle), (start, _, next_cycle) in zip(runs, runs[1:]):
            gap_s = 3.0 if next_cycle != cycle else 1.0
            rests.append((start - end).total_seconds())
            assert (start - end).total_seconds() >= gap_s, (
                f"GPU rested {(start - end).total_seconds():.2f} s < {gap_s} s"
            )
    assert rests, "no GPU ran two experiments: the gap was never exercised"
    assert len(by_gpu) > 1


def test_hung_experiment_is_killed_at_its_deadline_retried_then_failed_and_crash_is_retried(ray_4gpu, tmp_path):
    good = fake_experiment(200)
    hung = fake_experiment(201, fake_hang=True)
    crash = fake_experiment(202, fake_crash=True)
    study = fake_study([good, hung, crash], tmp_path, timeout_s=5, max_retries=1, circuit_breaker=10)
    result = run(study, StudyOptions(quiet=True))

    assert (result.summary.completed, result.summary.failed) == (1, 2)
    status = {e.measurement_config_hash: e for e in load_manifest(result.output_dir).entries}
    hung_entry, crash_entry = status[measurement_config_hash(hung)], status[measurement_config_hash(crash)]
    assert status[measurement_config_hash(good)].status == "completed"
    assert hung_entry.status == "failed" and hung_entry.attempts == 2
    for record in hung_entry.history:
        assert "timed out" in record.error
        ran_s = (record.ended_at - record.started_at).total_seconds()
        # killed at the deadline; Ray may take a while to report a killed actor on a busy host, and the
        # scheduler gives up waiting (and drops the slot) after KILL_GRACE_S, so this holds at any speed
        assert 5.0 <= ran_s < 5.0 + KILL_GRACE_S, f"hung attempt ended {ran_s:.1f} s after it started, deadline 5 s"
    assert [r.attempt for r in hung_entry.history] == [1, 2]
    assert crash_entry.status == "failed" and crash_entry.attempts == 2
    assert all("died" in r.error for r in crash_entry.history)
    assert_no_shared_gpu(result.output_dir)


def test_circuit_breaker_stops_the_study_and_leaves_the_rest_pending(ray_4gpu, tmp_path):
    crashes = [fake_experiment(300 + i, fake_crash=True) for i in range(4)]
    study = fake_study(crashes, tmp_path, max_retries=0, circuit_breaker=2)
    with pytest.raises(StudyError, match="circuit breaker"):
        run(study, StudyOptions(quiet=True))
    (study_dir,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    counts = load_manifest(study_dir).counts()
    assert counts["failed"] >= 2 and counts["completed"] == 0 and counts["running"] == 0
    assert counts["failed"] + counts["pending"] == 4
    assert (study_dir / "results.parquet").is_file() and (study_dir / "study_result.json").is_file()


def test_scheduled_cycle_waits_for_its_start_time(ray_4gpu, tmp_path):
    experiments = [fake_experiment(400 + seed) for seed in range(2)]
    start = datetime.now() + timedelta(seconds=6)
    study = fake_study(experiments, tmp_path, n_cycles=2)
    result = run(study, StudyOptions(quiet=True, at=[datetime.now() - timedelta(seconds=1), start]))
    assert result.summary.completed == 4
    cycle2 = [r for k, r in attempts(result.output_dir) if k.endswith("-c2")]
    assert len(cycle2) == 2 and all(r.dispatched_at >= start.astimezone() for r in cycle2)


def test_results_actor_is_pinned_to_the_driver_node_and_sees_no_gpu(ray_4gpu, tmp_path):
    manifest = StudyManifest(study_name="t", study_design_hash="0" * 16)
    actor = start_collector(tmp_path, manifest, {"name": "t"}, name="llem-results-test")
    again = start_collector(tmp_path, manifest, {"name": "t"}, name="llem-results-test")
    try:
        info = ray.get(actor.info.remote(), timeout=60)
        assert ray.get(again.info.remote(), timeout=60)["pid"] == info["pid"], "get_if_exists made a second actor"
        assert info["node_id"] == ray.get_runtime_context().get_node_id()
        assert info["cuda_visible_devices"] == "" and not info["torch_imported"]
        assert (tmp_path / "manifest.json").is_file() and (tmp_path / "study.json").is_file()
    finally:
        ray.kill(actor)


def test_force_cold_start_gives_every_attempt_a_new_process_empty_caches_and_no_warmup(ray_4gpu, tmp_path):
    experiments = [fake_experiment(800 + seed, fake_report_process=True) for seed in range(2)]
    study = fake_study(experiments, tmp_path, n_cycles=2, force_cold_start=True)
    result = run(study, StudyOptions(quiet=True))
    assert result.summary.completed == 4 and result.measurement_protocol["force_cold_start"]
    caches = []
    for path in result.result_files:
        measured = from_json(Path(path))
        assert measured.config["cold_start"] and measured.warmup.iterations_completed == 0
        (report,) = [w for w in measured.measurement_warnings if w.startswith("fake process:")]
        started_for, cache = (part.split("=", 1)[1] for part in report.removeprefix("fake process: ").split(" "))
        # Ray started this process with this attempt's own runtime_env: no pooled or pre-started worker
        assert started_for == f"{measured.measurement_config_hash}-c{measured.placement.cycle}-a1", report
        assert not any("already imported torch" in w for w in measured.measurement_warnings)
        caches.append(cache)
    assert len(set(caches)) == 4 and all(Path(c).name == "torchinductor_cache_dir" for c in caches)
    assert not any(Path(c).parent.exists() for c in caches), "a cold start's cache directory was left behind"
