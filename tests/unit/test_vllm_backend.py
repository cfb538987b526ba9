"""VLLMBackend against a stand-in `vllm` package (tests/unit/fake_engines/vllm) put first on sys.path.

The stand-in follows vLLM's documented offline interface (EngineArgs names, SamplingParams,
RequestOutput with V1 RequestStateStats metrics, reset_prefix_cache, shutdown); no llem_ray
internals are patched. What these tests cannot show (real kernels, real timings, TP workers) is
listed in docs/backends.md.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from llem_ray.backends import registry
from llem_ray.backends.engine_common import WorkloadClock
from llem_ray.backends.protocol import Prompt
from llem_ray.backends.vllm.backend import VLLMBackend, request_timing
from llem_ray.config.experiment import ExperimentConfig
from llem_ray.errors import BackendError

FAKES = Path(__file__).parent / "fake_engines"


def _drop(prefix: str) -> None:
    for name in [n for n in sys.modules if n == prefix or n.startswith(prefix + ".")]:
        del sys.modules[name]


@pytest.fixture
def fake_vllm(monkeypatch):
    _drop("vllm")
    monkeypatch.syspath_prepend(str(FAKES))
    monkeypatch.delenv("VLLM_WORKER_MULTIPROC_METHOD", raising=False)
    import vllm

    vllm.EVENTS.clear()
    vllm.LEGACY_SHUTDOWN = vllm.REFUSE_RESET = False
    yield vllm
    _drop("vllm")


def _config(**overrides) -> ExperimentConfig:
    base = dict(
        backend="vllm",
        model="llem/tiny-llama",
        weights="random",
        dataset="synthetic",
        n=4,
        max_input_tokens=16,
        max_output_tokens=8,
    )
    return ExperimentConfig(**{**base, **overrides})


def _events(vllm, kind):
    return [payload for name, payload in vllm.EVENTS if name == kind]


def test_registry_builds_the_vllm_backend():
    assert isinstance(registry.create("vllm"), VLLMBackend)


def test_engine_arguments_tp_section_and_passthrough(fake_vllm):
    config = _config(
        resources={"gpus": 2},
        vllm={"max_num_seqs": 32, "gpu_memory_utilization": 0.8, "enforce_eager": True},
        passthrough_kwargs={"max_num_seqs": 7, "tokenizer_mode": "slow"},
    )
    backend = VLLMBackend()
    info = backend.load(config, "cuda")
    (kwargs,) = _events(fake_vllm, "init")
    temp_model_dir = Path(kwargs["model"])
    assert (temp_model_dir / "config.json").is_file()
    assert kwargs["tensor_parallel_size"] == 2 and kwargs["distributed_executor_backend"] == "mp"
    assert kwargs["load_format"] == "dummy" and kwargs["dtype"] == "bfloat16" and kwargs["seed"] == 42
    assert kwargs["skip_tokenizer_init"] is True and kwargs["disable_log_stats"] is False
    assert kwargs["gpu_memory_utilization"] == 0.8 and kwargs["enforce_eager"] is True
    assert kwargs["max_num_seqs"] == 7 and kwargs["tokenizer_mode"] == "slow"  # passthrough wins, untouched
    assert os.environ["VLLM_WORKER_MULTIPROC_METHOD"] == "spawn"
    assert info.vocab_size == 4096 and info.n_parameters > 0 and info.dtype == "bfloat16"
    (warmup,) = _events(fake_vllm, "generate")  # exactly one kernel warm-up request during load
    assert len(warmup["prompts"]) == 1 and warmup["params"].max_tokens == 2
    assert info.max_concurrent_requests == 7 and info.prefix_caching is True  # read back from the engine
    backend.unload()
    assert (temp_model_dir / "config.json").is_file()  # shared, content-addressed: kept for the next experiment


def test_built_in_shape_has_one_stable_model_directory(fake_vllm):
    """vLLM keys its compilation cache by model path: the same shape must always load from the same path."""
    paths = []
    for _ in range(2):
        backend = VLLMBackend()
        backend.load(_config(), "cpu")
        paths.append(_events(fake_vllm, "init")[-1]["model"])
        backend.unload()
    other = VLLMBackend()
    other.load(_config(model="llem/qwen2.5-0.5b"), "cpu")
    other.unload()
    assert paths[0] == paths[1] != _events(fake_vllm, "init")[-1]["model"]
    assert not [p for p in Path(paths[0]).parent.iterdir() if p.name.startswith(".")]  # no staging dir left


def test_single_gpu_uses_no_executor_override_and_cpu_ignores_gpus(fake_vllm):
    VLLMBackend().load(_config(), "cuda")
    VLLMBackend().load(_config(resources={"gpus": 4}), "cpu")
    first, second = _events(fake_vllm, "init")
    assert "distributed_executor_backend" not in first and first["tensor_parallel_size"] == 1
    assert second["tensor_parallel_size"] == 1


def test_generate_fixed_length_greedy_with_request_metrics(fake_vllm):
    backend = VLLMBackend()
    backend.load(_config(), "cpu")
    prompts = [Prompt(token_ids=tuple(range(10, 10 + k))) for k in (3, 5, 7)]
    out = backend.generate(prompts, 8)
    params = _events(fake_vllm, "generate")[-1]["params"]
    assert params.min_tokens == 8 and params.max_tokens == 8 and params.temperature == 0.0
    assert params.detokenize is False
    assert out.input_tokens == 15 and out.output_tokens == 24 and len(out.batch_latencies_s) == 1
    assert [r.output_tokens for r in out.requests] == [8, 8, 8]
    assert [r.ttft_s for r in out.requests] == pytest.approx([0.01, 0.02, 0.03])
    first = out.requests[0]
    assert first.itl_s == pytest.approx([fake_vllm.TOKEN_INTERVAL_S] * 7)
    assert first.latency_s == pytest.approx(0.01 + 7 * fake_vllm.TOKEN_INTERVAL_S)
    joined, first_token, last_token = first.span_s  # engine-core monotonic stamps on the workload's axis
    assert 0 <= joined < 0.005 and first_token - joined == pytest.approx(0.01, abs=1e-6)
    assert last_token - first_token == pytest.approx(7 * fake_vllm.TOKEN_INTERVAL_S, abs=1e-6)
    assert last_token <= out.batch_latencies_s[0]
    # the prefix cache is cleared before each workload: warm-up, this generate
    assert len(_events(fake_vllm, "reset_prefix_cache")) == 2


def test_cold_start_sends_no_kernel_warm_up_request_at_load(fake_vllm):
    backend = VLLMBackend()
    backend.load(_config(cold_start=True), "cpu")
    assert _events(fake_vllm, "generate") == [], "a cold start's first request must be a measured one"
    backend.generate([Prompt(token_ids=(10, 11, 12))], 8)
    assert len(_events(fake_vllm, "generate")) == 1
    backend.unload()


def test_sampling_and_free_length(fake_vllm):
    backend = VLLMBackend()
    backend.load(
        _config(
            decoder={
                "do_sample": True,
                "temperature": 0.7,
                "top_k": 0,
                "top_p": 0.9,
                "fixed_output_length": False,
                "repetition_penalty": 1.1,
            }
        ),
        "cpu",
    )
    out = backend.generate([Prompt(token_ids=(5, 6))], 8)
    params = _events(fake_vllm, "generate")[-1]["params"]
    assert (params.temperature, params.top_k, params.top_p, params.repetition_penalty) == (0.7, -1, 0.9, 1.1)
    assert params.min_tokens == 0 and out.output_tokens == 4  # the stand-in stops early without min_tokens


def test_without_metrics_latency_is_the_workload_wall_time(fake_vllm):
    backend = VLLMBackend()
    backend.load(_config(passthrough_kwargs={"disable_log_stats": True}), "cpu")
    out = backend.generate([Prompt(token_ids=(5,)), Prompt(token_ids=(6,))], 4)
    assert all(r.ttft_s is None and r.itl_s == [] for r in out.requests)
    assert [r.latency_s for r in out.requests] == [out.batch_latencies_s[0]] * 2


def test_v0_request_metrics_are_read_too():
    metrics = SimpleNamespace(
        arrival_time=10.0, first_scheduled_time=10.2, first_token_time=10.5, last_token_time=11.5, finished_time=11.6
    )
    output = SimpleNamespace(outputs=[SimpleNamespace(token_ids=[1] * 5)], metrics=metrics)
    timing = request_timing(output, batch_wall_s=9.0, clock=WorkloadClock(wall_s=10.0, monotonic_s=5.0))
    assert timing.ttft_s == pytest.approx(0.5) and timing.latency_s == pytest.approx(1.5)
    assert timing.itl_s == pytest.approx([0.25] * 4)
    assert timing.span_s == pytest.approx((0.2, 0.5, 1.5))  # V0 stamps are wall clock


def test_spans_on_another_clock_are_dropped():
    """Stamps that cannot lie inside the workload (another clock) give no span, never a wrong window."""
    metrics = SimpleNamespace(first_token_latency=0.5, scheduled_ts=900.0, first_token_ts=900.5, last_token_ts=901.0)
    output = SimpleNamespace(outputs=[SimpleNamespace(token_ids=[1] * 3)], metrics=metrics)
    timing = request_timing(output, batch_wall_s=2.0, clock=WorkloadClock(wall_s=0.0, monotonic_s=100.0))
    assert timing.ttft_s == pytest.approx(0.5) and timing.span_s is None


def test_continuous_batching_gives_a_steady_state_window(fake_vllm):
    """Spans from the engine's stamps: the window is where max_num_seqs requests run together."""
    from llem_ray.measure.steady_state import request_spans, steady_state_window

    backend = VLLMBackend()
    backend.load(_config(n=40, vllm={"max_num_seqs": 8}), "cpu")
    out = backend.generate([Prompt(token_ids=(1, 2)) for _ in range(40)], 8)
    spans = request_spans("vllm", out, 8, out.batch_latencies_s[0])
    assert len(spans) == 40
    window = steady_state_window(spans, 8)
    assert window is not None
    first_done = min(s.end_s for s in spans)
    last_admitted = max(s.start_s for s in spans)
    assert window[0] < first_done and window[1] >= last_admitted  # full from the ramp to the drain
    assert window[1] - window[0] < out.batch_latencies_s[0]


def test_a_refused_prefix_cache_clear_stops_the_workload(fake_vllm):
    backend = VLLMBackend()
    backend.load(_config(), "cpu")
    fake_vllm.REFUSE_RESET = True
    with pytest.raises(BackendError, match="prefix cache"):
        backend.generate([Prompt(token_ids=(1,))], 2)


def test_text_prompts_use_the_engine_tokenizer_truncated(fake_vllm):
    backend = VLLMBackend()
    info = backend.load(_config(dataset="aienergyscore"), "cpu")
    (kwargs,) = _events(fake_vllm, "init")
    assert "skip_tokenizer_init" not in kwargs
    assert (Path(kwargs["model"]) / "tokenizer.json").is_file()  # built-in shape: byte-level tokenizer written
    assert any("byte-level tokenizer" in note for note in info.notes)
    out = backend.generate([Prompt(text="x" * 40), Prompt(text="abc")], 2)
    sent = [p["prompt_token_ids"] for p in _events(fake_vllm, "generate")[-1]["prompts"]]
    assert [len(ids) for ids in sent] == [16, 3] and out.input_tokens == 19
    backend.unload()


def test_synthetic_engine_rejects_text_prompts(fake_vllm):
    backend = VLLMBackend()
    backend.load(_config(), "cpu")
    with pytest.raises(BackendError, match="text prompts need a tokenizer"):
        backend.generate([Prompt(text="hello")], 2)


def test_prefill_runs_one_token_and_counts_no_output(fake_vllm):
    backend = VLLMBackend()
    backend.load(_config(), "cpu")
    out = backend.prefill([Prompt(token_ids=(1, 2, 3))])
    params = _events(fake_vllm, "generate")[-1]["params"]
    assert params.max_tokens == 1 and params.min_tokens == 0
    assert out.input_tokens == 3 and out.output_tokens == 0 and out.requests == []


@pytest.mark.parametrize("legacy", [False, True], ids=["engine-core-client", "LLM.shutdown"])
def test_unload_shuts_down_once_and_is_safe_twice(fake_vllm, legacy):
    fake_vllm.LEGACY_SHUTDOWN = legacy
    backend = VLLMBackend()
    backend.load(_config(), "cpu")
    backend.unload()
    backend.unload()
    assert len(_events(fake_vllm, "shutdown")) == 1
    with pytest.raises(BackendError, match="no engine loaded"):
        backend.generate([Prompt(token_ids=(1,))], 2)
    with pytest.raises(BackendError, match="no engine loaded"):
        VLLMBackend().prefill([Prompt(token_ids=(1,))])


def test_lora_adapter_reaches_every_request(fake_vllm):
    backend = VLLMBackend()
    backend.load(_config(lora={"adapter": "/adapters/a"}), "cpu")
    backend.generate([Prompt(token_ids=(1,))], 2)
    assert _events(fake_vllm, "init")[0]["enable_lora"] is True
    assert _events(fake_vllm, "generate")[-1]["lora_request"].lora_path == "/adapters/a"
    with pytest.raises(BackendError, match="merge"):
        VLLMBackend().load(_config(lora={"adapter": "/adapters/a", "merge": True}), "cpu")


def test_engine_rejection_becomes_backend_error_and_cleans_up(fake_vllm):
    backend = VLLMBackend()
    with pytest.raises(BackendError, match="unexpected keyword argument 'no_such_arg'"):
        backend.load(_config(passthrough_kwargs={"no_such_arg": 1}), "cpu")
    assert backend._source is None and backend._llm is None


def test_missing_vllm_names_the_extra(monkeypatch):
    _drop("vllm")
    monkeypatch.setitem(sys.modules, "vllm", None)  # `import vllm` raises ImportError
    with pytest.raises(BackendError, match=r"llem-ray\[vllm\].*runtime_env"):
        VLLMBackend().load(_config(), "cpu")


def test_measurement_protocol_runs_vllm_end_to_end(fake_vllm):
    from llem_ray.measure.experiment import run

    config = _config(
        n=6,
        warmup={"n_warmup": 2, "thermal_floor_s": 0},
        baseline={"enabled": False},
        energy={"backend": "none"},
        device="cpu",
        prefill_split=True,
    )
    result = run(config).result
    assert result.backend == "vllm" and result.output_tokens == 6 * 8
    assert result.latency.ttft is not None and result.latency.ttft.count == 6
    assert result.batch_size == 6 and result.prefix_caching is True  # n < the engine's max_num_seqs
    assert len(_events(fake_vllm, "shutdown")) == 1
    warmups = [e["prompts"] for e in _events(fake_vllm, "generate")][1:3]  # after the load request
    assert [len(p) for p in warmups] == [6, 6]  # warm-up batches as large as the window's running batch


def test_warm_up_batch_is_the_engines_running_batch(fake_vllm):
    from llem_ray.measure.experiment import run

    config = _config(
        n=12,
        max_output_tokens=32,
        vllm={"max_num_seqs": 4},
        warmup={"n_warmup": 1, "thermal_floor_s": 0},
        baseline={"enabled": False},
        energy={"backend": "none"},
        device="cpu",
        prefill_split=False,
    )
    result = run(config).result
    generates = _events(fake_vllm, "generate")
    assert len(generates[1]["prompts"]) == 4 and generates[1]["params"].max_tokens == 16  # reduced output
    assert result.batch_size == 4 and result.name.endswith("_bs4")


def test_vllm_result_has_a_steady_state_and_the_total_beside_it(fake_vllm, fakes):
    """With a meter (the constant-power fake), a continuous-batching run reports J/token both ways."""
    from llem_ray.measure.experiment import run
    from tests.fakes import FAKE_POWER_W

    config = _config(
        n=48,
        max_output_tokens=24,
        vllm={"max_num_seqs": 8},
        energy={"sample_hz": 100},
        warmup={"n_warmup": 1, "thermal_floor_s": 0},
        baseline={"enabled": False},
        device="cpu",
        prefill_split=False,
    )
    result = run(config).result
    assert result.measurement_methodology == "steady_state" and result.batch_size == 8
    start_s, end_s = result.steady_state_window
    assert 0 < start_s < end_s < result.duration_s
    assert result.energy_per_output_token_total_j == pytest.approx(result.energy_total_j / result.output_tokens)
    # constant power: J/token differs between the two windows only by their token rates
    assert result.energy_per_output_token_j == pytest.approx(result.energy_per_output_token_total_j, rel=0.5)
    assert result.energy_total_j == pytest.approx(FAKE_POWER_W * result.duration_s, rel=0.01)
    assert not any("no per-request timing" in w for w in result.measurement_warnings)


ENGINE_CHILD_SCRIPT = """
import logging, multiprocessing, sys, time
from types import SimpleNamespace
from llem_ray.backends.vllm.backend import processes_before_engine_start, shutdown_engine, started_since

logging.basicConfig(level=logging.WARNING)
before = processes_before_engine_start()
engine = multiprocessing.get_context("spawn").Process(target=time.sleep, args=(60,))
engine.start()
started = started_since(before)
print("started", [p.pid for p in started] == [engine.pid])
linger = multiprocessing.get_context("spawn").Process(target=time.sleep, args=(60,))
linger.start()
t0 = time.monotonic()
engine_processes = [*started, *started_since(before + started)]
shutdown_engine(SimpleNamespace(shutdown=engine.terminate), engine_processes, wait_s=float(sys.argv[1]))
print("waited_s", time.monotonic() - t0)
linger.terminate()
"""


def test_engine_shutdown_waits_for_the_engine_processes_not_the_resource_tracker():
    """A real `spawn` child stands in for vLLM's engine core, in a fresh interpreter (no tracker yet).

    The resource tracker that `spawn` starts lives as long as its parent: counted among the engine's
    processes it made every shutdown wait the whole limit. A process that does outlive the wait (here
    one that is never stopped) is named in a warning.
    """
    import subprocess

    done = subprocess.run(
        [sys.executable, "-c", ENGINE_CHILD_SCRIPT, "2"],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])},
    )
    assert done.returncode == 0, done.stderr
    assert "started True" in done.stdout
    waited_s = float(done.stdout.split("waited_s")[1])
    assert 1.9 <= waited_s < 10  # the lingering process, not 60 s, and not the tracker
    assert "still alive 2 s after shutdown" in done.stderr
