"""The vLLM backend against a real vLLM engine on a GPU (issue #12): engine arguments, timing, windows.

Skipped without vLLM. Random-weight Llama-3.2-1B shapes, TP = 1. Each test starts a fresh engine
(about 20-60 s: compilation and CUDA-graph capture unless the test turns them off).

    . /tmp/vsite/env.sh; LLEM_GPU_FIGURES=$OUT/g.jsonl python3 -m pytest tests/gpu/test_vllm_engine.py -m gpu -s
"""

import importlib.util

import pytest

from llem_ray.backends.protocol import Prompt
from llem_ray.backends.vllm.backend import VLLMBackend, _engine_config
from llem_ray.backends.vllm.config import VLLMConfig
from llem_ray.config.experiment import ExperimentConfig
from llem_ray.energy.baseline import BaselineCache
from llem_ray.measure.experiment import run

pytestmark = pytest.mark.skipif(importlib.util.find_spec("vllm") is None, reason="vllm is not installed")

EVERY_FIELD = {
    "max_num_seqs": 16,
    "max_num_batched_tokens": 2048,
    "max_model_len": 1024,
    "gpu_memory_utilization": 0.5,
    "kv_cache_memory_bytes": 2 * 2**30,
    "num_gpu_blocks_override": 512,
    "enforce_eager": True,
    "compilation_config": {"mode": 0},
    "enable_chunked_prefill": True,
    "long_prefill_token_threshold": 256,
    "enable_prefix_caching": True,
    "kv_cache_dtype": "fp8",
    "calculate_kv_scales": False,
    "block_size": 16,
    "quantization": "fp8",
    "attention_backend": "FLASH_ATTN",
    "disable_cascade_attn": True,
    "async_scheduling": False,
    "scheduling_policy": "priority",
    "disable_custom_all_reduce": True,
    "enable_expert_parallel": False,
    "cpu_offload_gb": 0.0,
    "max_lora_rank": 8,
    "speculative_config": {
        "method": "ngram",
        "num_speculative_tokens": 2,
        "prompt_lookup_max": 3,
        "prompt_lookup_min": 1,
    },
}
"""A value for every field of the `vllm:` section (TP = 1, one H200): the test fails when a field is added
without one, so every field the backend can pass has been seen accepted by the engine."""

MODEL = "llem/llama-3.2-1b"


def _config(**overrides) -> ExperimentConfig:
    base = dict(
        backend="vllm",
        model=MODEL,
        weights="random",
        dataset="synthetic",
        n=32,
        max_input_tokens=128,
        max_output_tokens=32,
    )
    return ExperimentConfig(**{**base, **overrides})


def _prompts(n: int, length: int = 64) -> list[Prompt]:
    return [Prompt(token_ids=tuple(100 + (i * 7 + j) % 5000 for j in range(length))) for i in range(n)]


def test_every_vllm_section_field_is_accepted_by_the_engine(record):
    assert set(EVERY_FIELD) == set(VLLMConfig.model_fields)
    backend = VLLMBackend()
    info = backend.load(_config(vllm=EVERY_FIELD), "cuda")
    try:
        out = backend.generate(_prompts(32), 32)
        engine = _engine_config(backend._llm)
        landed = {
            "max_num_seqs": engine.scheduler_config.max_num_seqs,
            "max_num_batched_tokens": engine.scheduler_config.max_num_batched_tokens,
            "max_model_len": engine.model_config.max_model_len,
            "cache_dtype": engine.cache_config.cache_dtype,
            "block_size": engine.cache_config.block_size,
            "quantization": engine.model_config.quantization,
            "scheduling_policy": engine.scheduler_config.policy,
            "speculative_method": engine.speculative_config.method,
        }
    finally:
        backend.unload()
    record("vllm_every_field", load_s=round(info.load_time_s, 1), output_tokens=out.output_tokens, **landed)
    assert out.output_tokens == 32 * 32 and all(r.ttft_s is not None for r in out.requests)
    assert info.max_concurrent_requests == 16 and info.prefix_caching is True
    assert landed["max_num_batched_tokens"] == 2048 and landed["max_model_len"] == 1024
    assert landed["cache_dtype"].startswith("fp8") and landed["block_size"] == 16
    assert landed["quantization"] == "fp8" and landed["speculative_method"] == "ngram"


def test_passthrough_kwargs_reach_the_engine_and_win(record):
    config = _config(
        vllm={"max_num_seqs": 8},
        passthrough_kwargs={
            "max_num_seqs": 4,
            "max_logprobs": 3,
            "enforce_eager": True,
            "compilation_config": {"mode": 0},
        },
    )
    backend = VLLMBackend()
    info = backend.load(config, "cuda")
    try:
        out = backend.generate(_prompts(8), 16)
        engine = _engine_config(backend._llm)
        max_logprobs = engine.model_config.max_logprobs
    finally:
        backend.unload()
    record("vllm_passthrough", max_num_seqs=info.max_concurrent_requests, max_logprobs=max_logprobs)
    assert info.max_concurrent_requests == 4 and max_logprobs == 3 and out.output_tokens == 8 * 16


def test_measured_vllm_run_has_timing_steady_state_and_split(record):
    """CUDA graphs on (engine defaults): TTFT/ITL per request, a steady-state window, prefill/decode split."""
    config = _config(
        n=512,
        max_output_tokens=128,
        vllm={"max_num_seqs": 64},
        resources={"cpus": 4},
        warmup={"n_warmup": 2, "thermal_floor_s": 2},
        baseline={"duration_s": 5},
        energy={"backend": "nvml"},
    )
    r = run(config, baseline_cache=BaselineCache()).result
    record(
        "vllm_measured_run",
        tok_s=round(r.tokens_per_second),
        window_s=round(r.duration_s, 2),
        methodology=r.measurement_methodology,
        steady_window_s=r.steady_state_window,
        j_per_token=r.energy_per_output_token_j,
        j_per_token_total=r.energy_per_output_token_total_j,
        mean_power_w=r.mean_power_w,
        gpu_util_pct=r.mean_gpu_utilization_pct,
        host_bound=r.host_bound,
        ttft_p50_ms=r.latency.ttft.p50_ms,
        itl_p50_ms=r.latency.itl.p50_ms,
        prefill_j=r.prefill.energy_j,
        decode_j_per_token=r.decode.energy_per_token_j if r.decode else None,
        prefix_caching=r.prefix_caching,
        batch_size=r.batch_size,
        warnings=r.measurement_warnings,
    )
    assert r.batch_size == 64 and r.prefix_caching is True and r.output_tokens == 512 * 128
    assert r.latency.ttft.count == 512 and r.latency.itl.count > 0
    assert r.measurement_methodology == "steady_state"
    start_s, end_s = r.steady_state_window
    assert 0 < start_s < end_s < r.duration_s
    assert r.energy_per_output_token_j > 0 and r.energy_per_output_token_total_j > 0
    assert r.prefill is not None and r.prefill.energy_j > 0 and r.decode is not None
    assert not any("no per-request timing" in w for w in r.measurement_warnings)
