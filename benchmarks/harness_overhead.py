"""Harness overhead: a backend called bare vs the same backend inside llem's measured window, one run.

`--backend pytorch` (default): one random-weight model (Llama-3.2-1B shape; `--tiny` uses
`llem/tiny-llama` so it runs on a CPU), per batch size the same synthetic prompts (random token ids,
exactly `--output` new tokens, greedy), arms alternating `--repeats` times on one loaded model:
- bare: `model.generate(input_ids, attention_mask, max_new_tokens=…, min_new_tokens=…)` per batch
  (with `--static-kv-cache`: `cache_implementation="static"`, which transformers compiles into
  CUDA graphs on a GPU: the GPU-bound configuration of this backend);
- llem: what `measure.experiment.run` does in its measured window: NVML sampler running (when NVML
  is available), energy window open, `PyTorchBackend.generate` (token timer included), devices
  synchronised before the window closes.
Both arms are warmed at the window's full shape first (compilation never lands in a timed run).

`--backend vllm`: a fresh vLLM engine per arm (default Llama-3.1-8B shape, random weights, bf16,
`--max-num-seqs 128`, 1,024 prompts × 128 in / 256 out), the same token ids and the same engine
arguments (`backends.vllm.backend.engine_kwargs`, so the bare engine also keeps vLLM's per-request stats):
- bare: `vllm.LLM(**kwargs).generate(...)`, the NVML energy counter read around it (the device layer only);
- bare_default_stats (optional arm): the same without `disable_log_stats=False`, i.e. vLLM's own
  default, which shows what llem's per-request timing costs the engine;
- llem: `VLLMBackend.generate` inside llem's measured window (NVMLMeter window + sampler).
Each arm warms its engine with one running batch, then times `--repeats` workloads (prefix cache
cleared before each). Needs a GPU and vLLM.

Printed: per arm the median tokens/s and J/token with the range over repeats; ratio = llem / bare
(targets: tok/s ratio >= 0.99, J/token within 1 %).

    python benchmarks/harness_overhead.py                                   # GPU, PyTorch, batch 1 8 32
    python benchmarks/harness_overhead.py --tiny --batch-sizes 1 4 --repeats 2   # CPU smoke run
    python benchmarks/harness_overhead.py --static-kv-cache --batch-sizes 32     # PyTorch, GPU-bound
    python benchmarks/harness_overhead.py --backend vllm --json $OUT/vllm.json   # vLLM, 8B shape (H100/H200)
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from llem_ray import device  # noqa: E402
from llem_ray.config.experiment import ExperimentConfig  # noqa: E402
from llem_ray.datasets.synthetic import synthetic_prompts  # noqa: E402
from llem_ray.energy.devices import visible_gpus  # noqa: E402
from llem_ray.energy.nvml import NVMLMeter  # noqa: E402
from llem_ray.energy.protocol import MeterUnavailable  # noqa: E402
from llem_ray.measure.experiment import synchronize  # noqa: E402


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backend", choices=["pytorch", "vllm"], default="pytorch")
    parser.add_argument("--tiny", action="store_true", help="PyTorch: llem/tiny-llama in fp32 (CPU-friendly)")
    parser.add_argument("--model", help="default llem/llama-3.2-1b (pytorch), llem/llama-3.1-8b (vllm)")
    parser.add_argument("--precision", default="bf16", choices=["fp32", "fp16", "bf16"])
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8, 32], help="PyTorch batch sizes")
    parser.add_argument("--static-kv-cache", action="store_true", help="PyTorch: static KV cache (compiled decode)")
    parser.add_argument("--input", type=int, help="input tokens per prompt (default 128)")
    parser.add_argument("--output", type=int, help="new tokens per prompt (default 128 pytorch, 256 vllm)")
    parser.add_argument("--batches", type=int, default=3, help="PyTorch: batches per timed run")
    parser.add_argument("--prompts", type=int, default=1024, help="vLLM: prompts per workload")
    parser.add_argument("--max-num-seqs", type=int, default=128, help="vLLM: concurrent sequences")
    parser.add_argument(
        "--arms",
        nargs="+",
        default=["bare", "llem"],
        choices=["bare", "bare_default_stats", "llem"],
        help="vLLM: arms, in order",
    )
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per arm (and batch size)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    return parser.parse_args()


def spread(values: list[float]) -> dict[str, float]:
    """Median, min and max of `values`."""
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


# --- PyTorch -------------------------------------------------------------------------------------


def bare_generate(model, batches, new_tokens: int, device: str, static: bool) -> float:
    """Output tokens/s of plain `model.generate` over `batches` (lists of token-id tuples)."""
    import torch

    extra = {"cache_implementation": "static"} if static else {}
    tensors = []
    for batch in batches:
        ids = torch.tensor(batch, dtype=torch.long, device=model.device)
        tensors.append((ids, torch.ones_like(ids)))
    synchronize(device)
    start_s = time.perf_counter()
    for ids, mask in tensors:
        with torch.inference_mode():
            model.generate(
                input_ids=ids,
                attention_mask=mask,
                max_new_tokens=new_tokens,
                min_new_tokens=new_tokens,
                do_sample=False,
                pad_token_id=0,
                **extra,
            )
    synchronize(device)
    return sum(len(b) for b in batches) * new_tokens / (time.perf_counter() - start_s)


def llem_window(backend, prompts, new_tokens: int, device: str, meter: NVMLMeter | None) -> tuple[float, float | None]:
    """(output tokens/s, J/token or None) of `backend.generate` inside a measured window."""
    if meter is not None:
        meter.start_sampling(10.0)
        meter.begin_window("bench")
    synchronize(device)
    start_s = time.perf_counter()
    out = backend.generate(prompts, new_tokens)
    synchronize(device)
    elapsed_s = time.perf_counter() - start_s
    energy_j = None
    if meter is not None:
        energy_j = meter.end_window("bench").total_j
        meter.stop_sampling()
    return out.output_tokens / elapsed_s, (energy_j / out.output_tokens if energy_j is not None else None)


def run_pytorch(args: argparse.Namespace) -> dict:
    import torch

    from llem_ray.backends.pytorch.backend import PyTorchBackend

    tiny = args.tiny
    model_name, precision = ("llem/tiny-llama", "fp32") if tiny else (args.model or "llem/llama-3.2-1b", args.precision)
    input_len, new_tokens = args.input or 128, args.output or 128
    device = "cuda" if torch.cuda.is_available() else "cpu"
    meter = _meter(device)
    rows = []
    for batch_size in args.batch_sizes:
        section = {"batch_size": batch_size, **({"static_kv_cache": True} if args.static_kv_cache else {})}
        config = ExperimentConfig(
            model=model_name,
            weights="random",
            precision=precision,
            dataset="synthetic",
            max_input_tokens=input_len,
            max_output_tokens=new_tokens,
            pytorch=section,
        )
        backend = PyTorchBackend()
        info = backend.load(config, device)
        prompts = synthetic_prompts(batch_size * args.batches, input_len, info.vocab_size or 32000, seed=42)
        batches = [[p.token_ids for p in prompts[i : i + batch_size]] for i in range(0, len(prompts), batch_size)]
        bare_generate(backend.model, batches[:1], new_tokens, device, args.static_kv_cache)  # warm at full shape
        llem_window(backend, prompts[:batch_size], new_tokens, device, meter)
        bare, llem = [], []
        for _ in range(args.repeats):
            bare.append(bare_generate(backend.model, batches, new_tokens, device, args.static_kv_cache))
            llem.append(llem_window(backend, prompts, new_tokens, device, meter)[0])
        backend.unload()
        row = {
            "batch_size": batch_size,
            "bare_tok_s": spread(bare),
            "llem_tok_s": spread(llem),
            "bare_runs": bare,
            "llem_runs": llem,
        }
        row["ratio"] = row["llem_tok_s"]["median"] / row["bare_tok_s"]["median"]
        rows.append(row)
        print(
            f"batch {batch_size:>3}: bare {row['bare_tok_s']['median']:>10,.1f} tok/s "
            f"({min(bare):,.1f}-{max(bare):,.1f})   llem {row['llem_tok_s']['median']:>10,.1f} tok/s "
            f"({min(llem):,.1f}-{max(llem):,.1f})   ratio {row['ratio']:.4f}",
            flush=True,
        )
    if meter is not None:
        meter.close()
    gpu = torch.cuda.get_device_name(0) if device == "cuda" else None
    return {
        "backend": "pytorch",
        "model": model_name,
        "precision": precision,
        "device": device,
        "gpu": gpu,
        "input": input_len,
        "output": new_tokens,
        "static_kv_cache": args.static_kv_cache,
        "sampler": meter is not None,
        "rows": rows,
    }


def _meter(device: str) -> NVMLMeter | None:
    if device != "cuda":
        return None
    try:
        return NVMLMeter(visible_gpus().uuids[:1])
    except MeterUnavailable as exc:
        print(f"no NVML meter ({exc}): llem runs without the sampler", file=sys.stderr)
        return None


# --- vLLM ----------------------------------------------------------------------------------------


def _counter_j(uuid) -> float:
    return device.current().energy_mj(uuid) / 1000.0


def _memory_used_mib(uuid) -> float:
    return device.current().memory_mib(uuid).used_mib


def _wait_gpu_released(uuid, timeout_s: float = 60.0, idle_mib: float = 4096.0) -> float:
    """Wait until the GPU's used memory falls under `idle_mib` (the last engine's process is gone); MiB left.

    The driver frees an exited process's memory shortly after it exits: a new engine started before
    that would size its KV cache from too little free memory, or refuse to start.
    """
    deadline = time.monotonic() + timeout_s
    while _memory_used_mib(uuid) > idle_mib and time.monotonic() < deadline:
        time.sleep(0.5)
    return _memory_used_mib(uuid)


def bare_vllm_arm(
    vllm, config: ExperimentConfig, inputs: list[dict], repeats: int, default_stats: bool, uuid
) -> list[tuple[float, float]]:
    """(tok/s, J/token) of `repeats` workloads on a fresh bare `vllm.LLM`; the engine is shut down after."""
    from llem_ray.backends.engine_common import ModelSource
    from llem_ray.backends.vllm.backend import (
        child_processes,
        engine_kwargs,
        sampling_kwargs,
        shutdown_engine,
        started_since,
    )

    kwargs = engine_kwargs(config, ModelSource.prepare(config), "cuda")
    if default_stats:
        kwargs.pop("disable_log_stats")
    before = child_processes()
    llm = vllm.LLM(**kwargs)
    engine_processes = started_since(before)
    params = vllm.SamplingParams(**sampling_kwargs(config, config.max_output_tokens))
    warm = vllm.SamplingParams(**sampling_kwargs(config, config.warmup.max_output_tokens))
    llm.generate(inputs[: config.batch_size], warm, use_tqdm=False)
    runs = []
    for _ in range(repeats):
        llm.reset_prefix_cache()
        start_j, start_s = _counter_j(uuid), time.perf_counter()
        outputs = llm.generate(inputs, params, use_tqdm=False)
        elapsed_s, energy_j = time.perf_counter() - start_s, _counter_j(uuid) - start_j
        tokens = sum(len(o.outputs[0].token_ids) for o in outputs)
        runs.append((tokens / elapsed_s, energy_j / tokens))
    shutdown_engine(llm, engine_processes)
    del llm
    gc.collect()
    return runs


def llem_vllm_arm(config: ExperimentConfig, prompts, repeats: int) -> list[tuple[float, float]]:
    """(tok/s, J/token) of `repeats` measured windows of a fresh `VLLMBackend`; unloaded after."""
    from llem_ray.backends.vllm.backend import VLLMBackend

    backend = VLLMBackend()
    backend.load(config, "cuda")
    meter = NVMLMeter(visible_gpus().uuids[:1])
    backend.generate(prompts[: config.batch_size], config.warmup.max_output_tokens)
    runs = []
    for _ in range(repeats):
        tok_s, j_per_token = llem_window(backend, prompts, config.max_output_tokens, "cuda", meter)
        runs.append((tok_s, j_per_token))
    meter.close()
    backend.unload()
    gc.collect()
    return runs


def run_vllm(args: argparse.Namespace) -> dict:
    import vllm

    model = args.model or "llem/llama-3.1-8b"
    input_len, new_tokens = args.input or 128, args.output or 256
    config = ExperimentConfig(
        backend="vllm",
        model=model,
        weights="random",
        precision=args.precision,
        dataset="synthetic",
        n=args.prompts,
        max_input_tokens=input_len,
        max_output_tokens=new_tokens,
        vllm={"max_num_seqs": args.max_num_seqs},
    )
    uuid = visible_gpus().uuids[0]
    from llem_ray.backends.engine_common import ModelSource

    vocab = ModelSource.prepare(config).vocab_size or 32000
    prompts = synthetic_prompts(args.prompts, input_len, vocab, seed=42)
    inputs = [{"prompt_token_ids": list(p.token_ids)} for p in prompts]
    arms = {}
    for arm in args.arms:
        start_s = time.perf_counter()
        if arm == "llem":
            runs = llem_vllm_arm(config, prompts, args.repeats)
        else:
            runs = bare_vllm_arm(vllm, config, inputs, args.repeats, arm == "bare_default_stats", uuid)
        arms[arm] = {
            "tok_s": spread([r[0] for r in runs]),
            "j_per_token": spread([r[1] for r in runs]),
            "runs": runs,
            "arm_wall_s": time.perf_counter() - start_s,
            "memory_used_after_mib": _wait_gpu_released(uuid),
        }
        a = arms[arm]
        print(
            f"{arm:>18}: {a['tok_s']['median']:>10,.1f} tok/s ({a['tok_s']['min']:,.1f}-{a['tok_s']['max']:,.1f})"
            f"   {a['j_per_token']['median']:.5f} J/token ({a['j_per_token']['min']:.5f}-"
            f"{a['j_per_token']['max']:.5f})   arm {a['arm_wall_s']:.0f} s, GPU memory after "
            f"{a['memory_used_after_mib']:,.0f} MiB",
            flush=True,
        )
    result = {
        "backend": "vllm",
        "vllm": vllm.__version__,
        "model": model,
        "precision": args.precision,
        "gpu": device.current().gpu_name(uuid),
        "prompts": args.prompts,
        "input": input_len,
        "output": new_tokens,
        "max_num_seqs": args.max_num_seqs,
        "repeats": args.repeats,
        "arms": arms,
    }
    if "bare" in arms and "llem" in arms:
        bare, llem = arms["bare"], arms["llem"]
        result["tok_s_ratio"] = llem["tok_s"]["median"] / bare["tok_s"]["median"]
        result["j_per_token_diff"] = llem["j_per_token"]["median"] / bare["j_per_token"]["median"] - 1
        print(
            f"llem / bare: tok/s ratio {result['tok_s_ratio']:.4f} (target >= 0.99), "
            f"J/token {result['j_per_token_diff']:+.2%} (target within 1 %)",
            flush=True,
        )
    return result


def main() -> None:
    args = parse_args()
    figures = run_vllm(args) if args.backend == "vllm" else run_pytorch(args)
    print(json.dumps({k: v for k, v in figures.items() if k not in ("rows", "arms")}))
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
