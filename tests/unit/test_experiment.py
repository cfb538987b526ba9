"""The whole protocol of one experiment: with the deterministic fakes, and with the real PyTorch backend."""

import os
from dataclasses import replace
from pathlib import Path

import pytest

from llem_ray.backends import registry as backend_registry
from llem_ray.config.experiment import ExperimentConfig
from llem_ray.energy import registry as meter_registry
from llem_ray.energy.accuracy import NO_METER_NOTES
from llem_ray.errors import BackendError, PreFlightError
from llem_ray.measure.cold import COMPILATION_CACHE_VARS, WARM_PROCESS_NOTE
from llem_ray.measure.defaults import embedded_default_config
from llem_ray.measure.experiment import run, run_and_save
from llem_ray.results.persistence import from_json
from llem_ray.results.schema import Placement
from tests.fakes import FAKE_POWER_W, FakeBackend, FakeMeter, backend_spec

QUICK = dict(
    backend="fake",
    dataset="synthetic",
    n=4,
    max_output_tokens=8,
    warmup={"n_warmup": 2, "thermal_floor_s": 0.05},
    baseline={"duration_s": 0.05, "cache_ttl_s": 0},
    fake={"batch_size": 2},
    passthrough_kwargs={"fake_duration_s": 0.1},
)


def quick(backend: str) -> dict:
    """QUICK for the double registered as `backend` (its section under its name)."""
    fields = {k: v for k, v in QUICK.items() if k != "fake"}
    return {**fields, "backend": backend, backend: QUICK["fake"]}


def test_fake_run_energy_baseline_split_and_placement(fakes):
    stages = []
    placement = Placement(node_id="n1", gpu_uuids=["GPU-fake-0"], cycle=2, attempt=1)
    measured = run(ExperimentConfig(**QUICK), placement=placement, on_progress=stages.append)
    r = measured.result
    assert stages == [
        "preflight",
        "load",
        "environment",
        "baseline",
        "warmup",
        "thermal_floor",
        "measure",
        "prefill",
        "metrics",
        "unload",
    ]
    assert r.energy_meter == "fake" and r.placement == placement
    # the energy window encloses the timed generate call, by however much a busy host delays it
    assert r.energy_total_j >= FAKE_POWER_W * r.duration_s
    assert r.energy_per_device_j == {"GPU-fake-0": r.energy_total_j}
    assert r.baseline_power_w == pytest.approx(FAKE_POWER_W) and r.energy_breakdown.baseline_source == "measured"
    assert r.energy_adjusted_j == pytest.approx(r.energy_total_j - FAKE_POWER_W * r.duration_s)
    assert r.energy_per_output_token_j == pytest.approx(r.energy_total_j / 32)
    assert (
        r.output_tokens == 32 and r.input_tokens == 4 * 128 and r.tokens_per_second == pytest.approx(32 / r.duration_s)
    )
    assert r.prefill.duration_s + r.decode.duration_s == pytest.approx(r.duration_s)
    assert r.prefill.energy_j + r.decode.energy_j == pytest.approx(r.energy_total_j)
    assert r.warmup.iterations_completed == 2 and r.flops.total_flops == 2 * 1_000_000 * (512 + 32)
    assert any("< 10 s" in w for w in r.measurement_warnings)


def test_timeseries_tags_phases_and_counts_excluded_samples(fakes):
    config = ExperimentConfig(**{**QUICK, "energy": {"sample_hz": 100}})
    measured = run(config)
    phases = measured.timeseries.column("phase").to_pylist()
    assert {"warmup", "thermal_floor", "measured", "prefill"} <= set(phases)
    assert measured.result.warmup_excluded_samples == phases.count("warmup") + phases.count("thermal_floor")
    elapsed = measured.timeseries.column("elapsed_s").to_pylist()
    in_window = [e for e, p in zip(elapsed, phases) if p == "measured"]
    after = [e for e, p in zip(elapsed, phases) if p == "prefill"]
    # elapsed_s counts from the start of the measured phase, which ends before the prefill loop starts
    assert in_window and 0 <= min(in_window) and max(in_window) <= min(after)


def test_backend_is_unloaded_and_meter_closed_when_generate_fails():
    created = {}

    class Broken(FakeBackend):
        def generate(self, prompts, max_new_tokens):
            raise BackendError("boom")

    def meter_factory(uuids, config):
        created["meter"] = FakeMeter(uuids)
        return created["meter"]

    backend_registry.register(backend_spec("broken", lambda: created.setdefault("backend", Broken())))
    meter_registry.register("fake", meter_factory)
    with pytest.raises(BackendError, match="boom"):
        run(ExperimentConfig(**quick("broken")))
    assert created["backend"].loaded is False and created["meter"].closed


def test_an_unload_that_fails_after_a_failure_never_replaces_the_cause():
    class BrokenTwice(FakeBackend):
        def generate(self, prompts, max_new_tokens):
            raise BackendError("boom")

        def unload(self):
            raise RuntimeError("engine shutdown hung")

    meters = []
    backend_registry.register(backend_spec("broken_twice", BrokenTwice))
    meter_registry.register("fake", lambda uuids, config: meters.append(FakeMeter(uuids)) or meters[-1])
    with pytest.raises(BackendError, match="boom") as info:
        run(ExperimentConfig(**quick("broken_twice")))
    assert info.value.__notes__ == [
        "also, while cleaning up (test_an_unload_that_fails_after_a_failure_never_replaces_"
        "the_cause.<locals>.BrokenTwice.unload): RuntimeError: engine shutdown hung"
    ]
    assert meters[0].closed, "the meter was left open after the unload failed"


def test_preflight_reports_every_failure_at_once(tmp_path):
    config = ExperimentConfig(device="cuda", dataset=str(tmp_path / "missing.jsonl"), energy={"backend": "nvml"})
    with pytest.raises(PreFlightError) as info:
        run(config)
    text = "\n".join(info.value.failures)
    assert len(info.value.failures) == 3
    assert "no GPU is visible" in text and "missing.jsonl" in text and "energy meter 'nvml'" in text


def test_preflight_names_a_backends_missing_engine_beside_the_other_failures(fakes, tmp_path):
    """An in-process run checks the engine's modules as the study's probe does, so a missing engine is
    reported with every other problem instead of after them, at load."""
    backend_registry.register(replace(backend_spec("needy", FakeBackend), modules=("llem_no_such_engine",)))
    try:
        with pytest.raises(PreFlightError) as info:
            run(ExperimentConfig(**{**quick("needy"), "dataset": str(tmp_path / "missing.jsonl")}))
    finally:
        backend_registry.unregister("needy")
    assert len(info.value.failures) == 2, info.value.failures
    assert "backend 'needy' needs llem_no_such_engine, not installed in this environment" in info.value.failures[0]


def test_no_output_dir_means_no_writes(fakes, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    measured = run_and_save(ExperimentConfig(**QUICK))
    assert measured.result_dir is None and list(tmp_path.iterdir()) == []


def test_saved_result_reads_back_and_facility_figures_apply(fakes, tmp_path, monkeypatch):
    monkeypatch.setenv("LLEM_DATACENTER_PUE", "1.5")
    monkeypatch.setenv("LLEM_CARBON_INTENSITY", "400")
    measured = run_and_save(ExperimentConfig(**QUICK, name="../escape", output_dir=str(tmp_path)))
    r = measured.result
    assert measured.result_dir.parent == tmp_path.resolve() and measured.result_dir.name.startswith("escape_")
    assert from_json(measured.result_dir / "result.json") == r
    assert r.energy_facility_j == pytest.approx(1.5 * r.energy_total_j)
    assert r.co2e_g == pytest.approx(r.energy_facility_j / 3.6e6 * 400)


def test_embedded_default_runs_for_real_without_energy_here():
    r = run(embedded_default_config()).result
    assert r.device == "cpu" and r.energy_meter is None and r.energy_total_j is None
    assert r.energy_per_output_token_j is None and r.prefill.energy_j is None
    assert any(w.startswith("energy not measured") for w in r.measurement_warnings)
    assert r.output_tokens == 16 * 32 and r.input_tokens == 16 * 64 and r.tokens_per_second > 0
    assert r.latency.ttft.count == 16 and r.latency.itl.count == 16 * 31
    assert r.flops.total_flops == 2 * 336_192 * (16 * 64 + 16 * 32)
    assert r.environment_snapshot.pip_freeze and r.warmup_excluded_samples is None
    assert r.reproducibility_notes == NO_METER_NOTES and r.peak_memory_mib is None


def test_real_backend_with_fake_meter_on_the_shared_dataset(fakes, jsonl_data, monkeypatch):
    monkeypatch.setenv("LLEM_AIENERGYSCORE_PATH", str(jsonl_data))
    config = ExperimentConfig(
        dataset="aienergyscore",
        n=6,
        max_input_tokens=32,
        max_output_tokens=16,
        precision="fp32",
        warmup={"n_warmup": 1, "thermal_floor_s": 0},
        baseline={"enabled": False},
        pytorch={"batch_size": 3},
    )
    r = run(config).result
    assert r.energy_meter == "fake" and r.energy_breakdown.baseline_source == "disabled"
    assert r.energy_adjusted_j is None and r.energy_total_j > 0
    assert 6 <= r.input_tokens <= 6 * 32 and r.output_tokens == 6 * 16
    assert r.prefill.tokens == r.input_tokens
    # 16 decoding steps normally outlast one prefill pass by far; on a busy host the prefill pass can
    # still take longer than the window, and then the split is omitted, saying so
    if r.decode is None:
        assert any("decode split omitted" in w for w in r.measurement_warnings)
    else:
        assert r.decode.tokens == 6 * 16 and r.decode.duration_s == pytest.approx(r.duration_s - r.prefill.duration_s)
    assert any("byte-level" in w for w in r.measurement_warnings)
    assert os.environ.get("CUDA_DEVICE_ORDER") == "PCI_BUS_ID"


def test_plugins_env_var_installs_fakes_in_a_fresh_process_and_crash_exits(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    code = (
        "from llem_ray.config.experiment import ExperimentConfig\n"
        "from llem_ray.measure.experiment import run\n"
        "r = run(ExperimentConfig(backend='fake', dataset='synthetic', n=2,"
        " warmup={'n_warmup': 0, 'thermal_floor_s': 0}, baseline={'enabled': False},"
        " passthrough_kwargs={'fake_crash': CRASH})).result\n"
        "print(r.energy_meter, r.output_tokens)\n"
    )
    env = {**os.environ, "LLEM_PLUGINS": "tests.fakes"}
    root = Path(__file__).resolve().parents[2]
    ok = subprocess.run(
        [sys.executable, "-c", code.replace("CRASH", "False")],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert ok.returncode == 0 and ok.stdout.split() == ["fake", str(2 * 128)]
    crash = subprocess.run(
        [sys.executable, "-c", code.replace("CRASH", "True")],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert crash.returncode == 1 and crash.stdout == ""


@pytest.mark.parametrize("specialised", [False, True])
def test_warm_up_runs_the_windows_shapes_when_code_is_compiled_per_shape(fakes, specialised):
    """Compiled, shape-specialised code (static KV cache, torch.compile) is warmed at the window's output length."""
    from tests.fakes import GENERATE_CALLS

    GENERATE_CALLS.clear()
    config = ExperimentConfig(
        **{
            **QUICK,
            "n": 5,
            "max_output_tokens": 24,
            "passthrough_kwargs": {"fake_duration_s": 0.01, "fake_shape_specialised": specialised},
        }
    )
    result = run(config).result
    warmups, window = GENERATE_CALLS[:2], GENERATE_CALLS[2]
    assert warmups == [(2, 24 if specialised else 16)] * 2 and window == (5, 24)
    partial = [w for w in result.measurement_warnings if "not a multiple of batch size" in w]
    assert bool(partial) is specialised  # n=5 with batch 2: the last batch's shape was never compiled


def test_a_cold_start_skips_warm_up_and_compiles_into_empty_caches_of_its_own(fakes, monkeypatch):
    import torch  # noqa: F401  (as earlier work in this process would have: the note below depends on it)

    monkeypatch.setenv("TRITON_CACHE_DIR", "/somewhere/warm")
    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR", raising=False)  # torch sets it once it compiles
    seen = {}

    class Recording(FakeBackend):
        def load(self, config, device):
            seen.update({name: os.environ.get(name) for name in COMPILATION_CACHE_VARS})
            return super().load(config, device)

    backend_registry.register(backend_spec("recording", Recording))
    r = run(ExperimentConfig(**{**quick("recording"), "warmup": {"thermal_floor_s": 0}}, cold_start=True)).result
    assert r.warmup.iterations_completed == 0 and r.config["cold_start"]
    roots = {str(Path(path).parent) for path in seen.values()}
    assert len(roots) == 1 and "/somewhere/warm" not in seen.values()
    assert not Path(roots.pop()).exists(), "the cold start's cache directory was left behind"
    assert os.environ["TRITON_CACHE_DIR"] == "/somewhere/warm" and "TORCHINDUCTOR_CACHE_DIR" not in os.environ
    # torch was imported before this run: the result says what a cold start in this process cannot undo
    assert WARM_PROCESS_NOTE in r.measurement_warnings


def test_a_warm_run_leaves_the_caches_alone(fakes, monkeypatch):
    monkeypatch.setenv("TRITON_CACHE_DIR", "/somewhere/warm")
    r = run(ExperimentConfig(**QUICK)).result
    assert r.warmup.iterations_completed == 2 and WARM_PROCESS_NOTE not in r.measurement_warnings
    assert os.environ["TRITON_CACHE_DIR"] == "/somewhere/warm"
