"""The study engine's Ray-free parts: manifest, study table, run order, placement shapes and gaps,
runtime_env checks, baseline sharing, CLI parsing, webhook, summary, dry run. No Ray instance."""

from __future__ import annotations

import json
import threading
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from llem_ray.cluster import runtime_env
from llem_ray.cluster.driver import StudyOptions, run
from llem_ray.cluster.notify import post_webhook
from llem_ray.cluster.placement import (
    ClusterInventory,
    NodeInfo,
    Slot,
    SlotShape,
    bundles_for,
    feasibility_problems,
    shape_for,
)
from llem_ray.cluster.plan import cli_default_cycles, cold_start, plan_items, unique_experiments
from llem_ray.cluster.progress import summary_table
from llem_ray.cluster.worker import CachedBaseline, StudyBaselineCache, foreign_process_warning
from llem_ray.config.experiment import ExperimentConfig, measurement_config_hash
from llem_ray.config.study import ExecutionConfig, StudyConfig
from llem_ray.energy.protocol import EnergyWindow
from llem_ray.errors import ConfigError, StudyError
from llem_ray.results.manifest import (
    AttemptRecord,
    ManifestWriter,
    StudyManifest,
    entry_key,
    export_manifest,
    read_manifest,
    utc_now,
)
from llem_ray.results.table import STUDY_TABLE_SCHEMA, consolidate, write_part
from llem_ray.runner import parse_at


def _configs(n: int) -> list[ExperimentConfig]:
    return [ExperimentConfig(random_seed=i, dataset="synthetic") for i in range(n)]


# ---- manifest -------------------------------------------------------------------------------------
def _writer(tmp_path: Path, n: int = 2) -> tuple[ManifestWriter, list[str]]:
    items = plan_items(_configs(n), 1, "interleaved", "seed")
    manifest = StudyManifest(study_name="s", study_design_hash="h", entries=[i.manifest_entry() for i in items])
    return ManifestWriter.create(tmp_path / "manifest.json", manifest), [i.key for i in items]


def test_manifest_tracks_attempts_in_its_store(tmp_path):
    writer, (a, b) = _writer(tmp_path)
    first = AttemptRecord(attempt=1, dispatched_at=utc_now())
    writer.mark_running(a, first)
    writer.mark_failed(a, "boom", first)
    second = AttemptRecord(attempt=2, dispatched_at=utc_now())
    writer.mark_running(a, second)
    writer.mark_completed(a, "experiments/x", second)
    writer.mark_completed(a, "experiments/x", second)  # replayed call: same state
    writer.mark_failed(a, "late", second)  # a completed entry stays completed

    loaded = ManifestWriter.load(tmp_path / "manifest.json").manifest
    entry = loaded.by_key()[a]
    assert (entry.status, entry.attempts, entry.result_path, entry.error) == ("completed", 2, "experiments/x", None)
    assert [(r.attempt, r.status, r.error) for r in entry.history] == [(1, "failed", "boom"), (2, "completed", None)]
    assert loaded.counts() == {"pending": 1, "running": 0, "completed": 1, "failed": 0}
    assert writer.keys_with("completed") == [a] and writer.keys_with("pending") == [b]
    assert not (tmp_path / "manifest.json").exists(), "manifest.json is an export: written by export() only"
    export_manifest(tmp_path)
    assert read_manifest(tmp_path) == StudyManifest.model_validate_json((tmp_path / "manifest.json").read_text())
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")], "a temp file was left behind"


def test_release_running_closes_the_running_attempt_and_add_missing_only_adds(tmp_path):
    """What a stopping driver does after killing its actors: every running entry is pending again,
    whether or not the driver still tracked it."""
    writer, (a, b) = _writer(tmp_path)
    writer.mark_running(a, AttemptRecord(attempt=1, dispatched_at=utc_now()))
    writer.mark_running(b, AttemptRecord(attempt=1, dispatched_at=utc_now()))
    assert writer.release_running("stopped: interrupted") == [a, b]
    entry = writer.entry(a)
    assert entry.status == "pending" and entry.history[0].status == "failed" and entry.history[0].ended_at
    assert entry.error == "stopped: interrupted" and writer.entry(b).status == "pending"
    more = plan_items(_configs(3), 1, "interleaved", "seed")
    assert writer.add_missing([i.manifest_entry() for i in more]) == [more[2].key]
    assert len(ManifestWriter.load(writer.path).manifest.entries) == 3


def test_resume_closes_attempts_a_killed_driver_left_running(tmp_path):
    """A SIGKILLed driver leaves an attempt `running` with no end; on resume it ends at the resume,
    before the next attempt starts, so the two cannot look as if they shared the GPU."""
    writer, (a, b) = _writer(tmp_path)
    writer.mark_running(a, AttemptRecord(attempt=1, dispatched_at=utc_now(), started_at=utc_now()))
    writer.mark_completed(b, "experiments/b", AttemptRecord(attempt=1, dispatched_at=utc_now()))
    resumed = ManifestWriter.load(writer.path)
    assert resumed.release_running("driver gone") == [a]
    entry = ManifestWriter.load(writer.path).manifest.by_key()[a]
    assert (entry.status, entry.error, entry.history[0].status) == ("pending", "driver gone", "failed")
    assert entry.history[0].started_at <= entry.history[0].ended_at <= utc_now()
    assert resumed.release_running("driver gone") == [] and resumed.entry(b).status == "completed"


# ---- study table -----------------------------------------------------------------------------------
def _row(key: str, order_index: int, energy: float | None) -> dict:
    row = {field.name: None for field in STUDY_TABLE_SCHEMA}
    row.update(key=key, order_index=order_index, cycle=1, attempt=1, name="n", measurement_config_hash=key[:4])
    row.update(energy_total_j=energy, throttle_reasons=[], gpu_uuids=[], pci_bus_ids=[], measurement_warnings=[])
    return row


def test_part_files_replace_and_consolidate_in_run_order(tmp_path):
    write_part(tmp_path / "table", _row("bbbb-c1", 1, 2.0))
    write_part(tmp_path / "table", _row("aaaa-c1", 0, None))
    write_part(tmp_path / "table", _row("aaaa-c1", 0, 1.0))  # rewritten: replaces, never duplicates
    write_part(tmp_path / "table", _row("stale-c1", 2, 9.0))
    assert len(list((tmp_path / "table").iterdir())) == 3
    table = consolidate(tmp_path / "table", tmp_path / "results.parquet", ["bbbb-c1", "aaaa-c1"])
    on_disk = pq.read_table(tmp_path / "results.parquet")
    assert on_disk.schema.equals(STUDY_TABLE_SCHEMA) and on_disk.column("key").to_pylist() == ["aaaa-c1", "bbbb-c1"]
    assert table.column("energy_total_j").to_pylist() == [1.0, 2.0]
    assert on_disk.schema.field("energy_total_j").type == pa.float64()


# ---- run order -------------------------------------------------------------------------------------
def test_orders():
    configs = _configs(4)
    hashes = [measurement_config_hash(c) for c in configs]
    seq = plan_items(configs, 2, "sequential", "s")
    assert [(i.config_hash, i.cycle) for i in seq] == [(h, c) for h in hashes for c in (1, 2)]
    inter = plan_items(configs, 2, "interleaved", "s")
    assert [(i.config_hash, i.cycle) for i in inter] == [(h, c) for c in (1, 2) for h in hashes]
    shuffled = plan_items(configs, 2, "shuffled", "s")
    assert shuffled == plan_items(configs, 2, "shuffled", "s"), "same seed, same order"
    assert plan_items(configs, 2, "shuffled", "other") != shuffled
    for cycle in (1, 2):
        assert sorted(i.config_hash for i in shuffled if i.cycle == cycle) == sorted(hashes)
    assert [i.cycle for i in shuffled] == [1] * 4 + [2] * 4
    assert [i.order_index for i in shuffled] == list(range(8))
    assert {i.key for i in shuffled} == {entry_key(h, c) for h in hashes for c in (1, 2)}
    with pytest.raises(ValueError):
        plan_items(configs, 0, "interleaved", "s")


def test_duplicates_dropped_and_cold_start_is_a_different_measurement():
    configs = _configs(2)
    kept, dropped = unique_experiments([*configs, configs[0].model_copy(update={"name": "renamed"})])
    assert (len(kept), dropped) == (2, 1)
    converging = configs[0].warmup.model_copy(update={"convergence_detection": True})
    warm = configs[0].model_copy(update={"warmup": converging})
    cold = cold_start(warm)
    assert cold.cold_start and cold.warmup.n_warmup == 0 and not cold.warmup.convergence_detection
    assert measurement_config_hash(cold) != measurement_config_hash(configs[0])


def test_a_cold_start_actor_gets_a_runtime_env_no_idle_worker_has():
    first = runtime_env.cold_start_runtime_env(None, "k-c1-a1")
    assert first["env_vars"][runtime_env.COLD_START_ENV_VAR] == "k-c1-a1"
    retry = runtime_env.cold_start_runtime_env({"pip": ["vllm"], "env_vars": {"A": "1"}}, "k-c1-a2")
    assert retry == {"pip": ["vllm"], "env_vars": {"A": "1", runtime_env.COLD_START_ENV_VAR: "k-c1-a2"}}


# ---- placement ------------------------------------------------------------------------------------------
def test_shapes_and_bundles_never_fractional():
    gpu_cluster = ClusterInventory((NodeInfo("head", "h", 0, 4), NodeInfo("w1", "a", 2, 8)))
    cpu_cluster = ClusterInventory((NodeInfo("head", "h", 0, 4),))
    config = ExperimentConfig(resources={"gpus": 2, "cpus": 3})
    assert shape_for(config, "gpu", gpu_cluster) == SlotShape(2, 3)
    assert shape_for(config, "gpu", cpu_cluster) == SlotShape(0, 3)
    assert shape_for(config.model_copy(update={"device": "cpu"}), "gpu", gpu_cluster).gpus == 0
    assert bundles_for(SlotShape(2, 3)) == [{"CPU": 3.0, "GPU": 2.0}]
    assert bundles_for(SlotShape(0, 1)) == [{"CPU": 1.0}]
    assert bundles_for(SlotShape(1, 1, whole_node=True), gpu_cluster.nodes[1]) == [{"GPU": 2.0, "CPU": 1.0}]
    assert feasibility_problems({"a": SlotShape(2, 3)}, gpu_cluster) == []
    (problem,) = feasibility_problems({"big": SlotShape(4, 1)}, gpu_cluster)
    assert "big" in problem and "largest node has 2 GPU(s)" in problem


def test_slot_gap_depends_on_the_cycle():
    slot = Slot(pg=None, shape=SlotShape(1, 1), reserved_gpus=1, reserved_cpus=1)  # type: ignore[arg-type]
    assert slot.ready_at_s(1, 60, 300) == 0.0
    slot.last_end_s, slot.last_cycle = 100.0, 1
    assert slot.ready_at_s(1, 60, 300) == 160.0 and slot.ready_at_s(2, 60, 300) == 400.0


# ---- runtime_env (CM-10) ----------------------------------------------------------------------------------
def _study(backends: list[str], envs: dict) -> StudyConfig:
    experiments = [ExperimentConfig(backend=b, precision="bf16") for b in backends]
    return StudyConfig(experiments=experiments, runtime_envs=envs)


def test_multi_backend_study_needs_separate_environments():
    assert runtime_env.static_problems(_study(["vllm", "tensorrt"], {}))
    assert not runtime_env.static_problems(_study(["vllm", "tensorrt"], {"tensorrt": {"image_uri": "trt:1"}}))
    same = {"pip": ["x"]}
    assert runtime_env.static_problems(_study(["vllm", "tensorrt"], {"vllm": same, "tensorrt": same}))
    assert not runtime_env.static_problems(_study(["pytorch", "vllm"], {}))
    bad = runtime_env.static_problems(
        _study(["vllm"], {"vllm": {"image_uri": "v:1", "pip": ["x"], "py_executable": "py"}})
    )
    assert len(bad) == 2


def test_experiment_env_only_when_the_study_gives_one(monkeypatch):
    monkeypatch.setenv("LLEM_PLUGINS", "tests.fakes")
    study = _study(["pytorch", "vllm"], {"vllm": {"pip": ["vllm"], "env_vars": {"A": "1"}}})
    assert runtime_env.experiment_runtime_env(study, "pytorch") is None
    assert runtime_env.experiment_runtime_env(study, "vllm") == {
        "pip": ["vllm"],
        "env_vars": {"LLEM_PLUGINS": "tests.fakes", "A": "1"},
    }
    assert runtime_env.job_runtime_env() == {"env_vars": {"LLEM_PLUGINS": "tests.fakes"}}
    monkeypatch.setenv("RAY_JOB_CONFIG_JSON_ENV_VAR", "{}")
    assert runtime_env.job_runtime_env() is None, "inside ray job submit the submitter sets the env"
    assert runtime_env.no_gpu_runtime_env()["env_vars"]["CUDA_VISIBLE_DEVICES"] == ""


# ---- worker helpers ---------------------------------------------------------------------------------------
class _ConstantMeter:
    name, accuracy, device_uuids = "const", "exact", ["GPU-a"]

    def begin_window(self, key: str) -> None:
        pass

    def end_window(self, key: str) -> EnergyWindow:
        return EnergyWindow(key, 2.0, {"GPU-a": 100.0})


def test_study_baseline_cache_reuses_readings_within_the_ttl():
    fresh = CachedBaseline(42.0, datetime.now(timezone.utc) - timedelta(seconds=10), 30.0)
    cache = StudyBaselineCache({("const", "GPU-a"): fresh})
    hit = cache.get(_ConstantMeter(), duration_s=0.01, ttl_s=60)
    assert (hit.source, hit.power_w) == ("cached", {"GPU-a": 42.0}) and not cache.new_readings
    miss = cache.get(_ConstantMeter(), duration_s=0.01, ttl_s=5)
    assert miss.source == "measured" and miss.power_w == {"GPU-a": 50.0}
    assert cache.new_readings[("const", "GPU-a")].power_w == 50.0


def test_foreign_process_warning():
    assert foreign_process_warning(set(), {1}) is None
    assert foreign_process_warning({1, 2}, {1, 2}) is None
    assert "pids 7" in foreign_process_warning({1, 7}, {1})
    assert "PID namespace" in foreign_process_warning({99}, {1})


# ---- CLI, webhook, summary, dry run --------------------------------------------------------------------
def test_parse_at():
    now = datetime(2026, 1, 1, 12, 0)
    assert parse_at("13:00,14:30", now) == [datetime(2026, 1, 1, 13, 0), datetime(2026, 1, 1, 14, 30)]
    assert parse_at("11:00", now) == [datetime(2026, 1, 2, 11, 0)]
    assert parse_at("2026-01-03T00:00", now) == [datetime(2026, 1, 3)]
    for bad in ("25:00", "2026-01-03T00:00,2026-01-02T00:00", ""):
        with pytest.raises(ConfigError):
            parse_at(bad, now)


def test_cli_default_cycles():
    study = StudyConfig(experiments=_configs(1))
    assert cli_default_cycles(study, None, "s.yaml") == 3 and cli_default_cycles(study, 5, "s.yaml") == 5
    explicit = StudyConfig(experiments=_configs(1), execution=ExecutionConfig(n_cycles=1))
    assert cli_default_cycles(explicit, None, "s.yaml") is None
    with pytest.raises(ConfigError, match="--cycles: must be between 1 and 1,000, got 99,999,999,999"):
        cli_default_cycles(study, 99_999_999_999, "s.yaml")
    with pytest.raises(ConfigError, match="--cycles: must be between 1 and 1,000, got 0"):
        cli_default_cycles(study, 0, "s.yaml")
    big = StudyConfig(experiments=_configs(101), execution=ExecutionConfig(n_cycles=1000))
    with pytest.raises(ConfigError, match=r"s.yaml: execution.n_cycles: 101 experiment\(s\) x 1,000 cycle\(s\)"):
        cli_default_cycles(big, None, "s.yaml")


def test_webhook_posts_json_and_never_raises():
    received = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802
            received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        assert post_webhook(f"http://127.0.0.1:{server.server_port}/", {"event": "x"}) is None
    finally:
        server.shutdown()
        server.server_close()
    assert received == [{"event": "x"}]
    assert "http(s)" in post_webhook("file:///etc/passwd", {})
    assert "failed" in post_webhook(f"http://127.0.0.1:{server.server_port}/", {}, timeout_s=2)


def test_dry_run_of_a_resume_lists_only_what_is_left(capsys, tmp_path):
    study = StudyConfig(experiments=_configs(2), execution=ExecutionConfig(n_cycles=2), output_dir=str(tmp_path))
    items = plan_items(study.experiments, 2, "sequential", study.study_design_hash)
    manifest = StudyManifest(
        study_name=study.name, study_design_hash=study.study_design_hash, entries=[i.manifest_entry() for i in items]
    )
    writer = ManifestWriter.create(tmp_path / "manifest.json", manifest)
    record = AttemptRecord(attempt=1, dispatched_at=utc_now())
    for item in items[:2]:
        writer.mark_running(item.key, record)
        writer.mark_completed(item.key, f"experiments/{item.key}", record)
    writer.mark_running(items[2].key, record)  # left running by a killed driver: a resume runs it again
    writer.close()

    def files() -> list[str]:  # without SQLite's sidecars, which any reader of a WAL store may leave
        return sorted(p.name for p in tmp_path.iterdir() if not p.name.endswith(("-wal", "-shm")))

    before, state = files(), read_manifest(tmp_path)

    run(study, StudyOptions(dry_run=True, cycle_order="sequential", resume_dir=tmp_path))
    out = capsys.readouterr().out
    assert "Left to run: 2 of 4 (2 completed there)" in out
    listed = [line.split()[3] for line in out.splitlines() if line.split()[1:2] == ["cycle"]]
    assert listed == [items[2].config_hash, items[3].config_hash]
    assert files() == before and read_manifest(tmp_path) == state, "a dry run changed the study directory"

    other = StudyConfig(experiments=_configs(3), output_dir=str(tmp_path))
    with pytest.raises(StudyError, match="holds study .* resume with the same experiments"):
        run(other, StudyOptions(dry_run=True, resume_dir=tmp_path))


def test_summary_table_aggregates_cycles():
    rows = [
        _row(f"h1-c{c}", c, 10.0) | {"measurement_config_hash": "h1", "energy_per_output_token_j": v}
        for c, v in ((1, 1.0), (2, 3.0))
    ]
    text = summary_table(
        pa.Table.from_pylist(rows, schema=STUDY_TABLE_SCHEMA), {"h1": ("exp", 3, 1), "h2": ("never", 1, 1)}
    )
    line = next(x for x in text.splitlines() if x.startswith("exp "))
    assert "2/3" in line and " 2 " in line and "70.7" in line  # mean 2 J/token, CV = 1.414/2
    assert any(x.startswith("never") and "0/1" in x for x in text.splitlines())


def test_dry_run_prints_the_plan_without_ray(capsys, tmp_path):
    import ray

    study = StudyConfig(experiments=_configs(2), execution=ExecutionConfig(n_cycles=2), output_dir=str(tmp_path))
    result = run(study, StudyOptions(dry_run=True, cycle_order="sequential"))
    out = capsys.readouterr().out
    assert "2 configuration(s) x 2 cycle(s) = 4 run(s)" in out
    assert [line.split()[2] for line in out.splitlines() if line.split()[1:2] == ["cycle"]] == ["1", "2", "1", "2"]
    assert result.summary.total_experiments == 4 and result.result_files == []
    assert not ray.is_initialized() and list(tmp_path.iterdir()) == []
    with pytest.raises(ConfigError, match="schedule"):
        run(study, StudyOptions(dry_run=True, cycle_order="sequential", at=[datetime.now()]))
