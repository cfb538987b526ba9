"""PyTorch on a real GPU (issue #12): compiled decode is warmed before the window; eager runs are flagged.

Random-weight Llama-3.2-1B shapes. With `static_kv_cache: true` transformers compiles the decoding
steps into CUDA graphs; before the fix the reduced-output warm-up left that compilation to the
measured window (J/token CV 58 % over 3 repeats on an H200). Eager `generate` on this model is
bound by the host's kernel launches and must carry the host-bound flag.

    LLEM_GPU_FIGURES=$OUT/g.jsonl python3 -m pytest tests/gpu/test_pytorch_warmup.py -m gpu -s
"""

import statistics

from llem_ray.config.experiment import ExperimentConfig
from llem_ray.energy.baseline import BaselineCache
from llem_ray.measure.experiment import run

COMMON = dict(
    model="llem/llama-3.2-1b",
    dataset={"source": "synthetic", "input_len_tokens": 128},
    max_input_tokens=128,
    energy={"backend": "nvml"},
    baseline={"duration_s": 5},
)


def test_static_kv_cache_repeats_once_compilation_is_in_the_warm_up(record):
    cache = BaselineCache()
    config = ExperimentConfig(
        **COMMON,
        n=32 * 16,
        max_output_tokens=128,
        pytorch={"batch_size": 32, "static_kv_cache": True},
        warmup={"n_warmup": 2, "thermal_floor_s": 2},
    )
    results = [run(config, baseline_cache=cache).result for _ in range(3)]
    per_token = [r.energy_per_output_token_j for r in results]
    cv = statistics.stdev(per_token) / statistics.fmean(per_token)
    record(
        "pytorch_static_cache_cv",
        j_per_token=per_token,
        cv=cv,
        tok_s=[r.tokens_per_second for r in results],
        window_s=[r.duration_s for r in results],
        mean_power_w=[r.mean_power_w for r in results],
        gpu_util_pct=[r.mean_gpu_utilization_pct for r in results],
        host_bound=[r.host_bound for r in results],
        warmup_ms=[r.warmup.latencies_ms for r in results],
        warnings=results[-1].measurement_warnings,
    )
    windows = [r.duration_s for r in results]
    assert max(windows) / min(windows) < 1.2  # a compilation inside one window would stretch it several-fold
    assert cv <= 0.05


def test_eager_generate_on_a_small_model_is_flagged_host_bound(record):
    config = ExperimentConfig(
        **COMMON,
        n=16 * 6,
        max_output_tokens=64,
        pytorch={"batch_size": 16},
        warmup={"n_warmup": 1, "thermal_floor_s": 1},
    )
    r = run(config, baseline_cache=BaselineCache()).result
    record(
        "pytorch_eager_host_bound",
        mean_power_w=r.mean_power_w,
        gpu_util_pct=r.mean_gpu_utilization_pct,
        power_limit_w=r.environment_snapshot.gpus[0].power_limit_w,
        host_bound=r.host_bound,
        tok_s=r.tokens_per_second,
        window_s=r.duration_s,
    )
    assert r.host_bound is True
    assert any(w.startswith("host-bound") for w in r.measurement_warnings)
