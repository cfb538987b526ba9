"""Harness overhead: bare `model.generate` vs the llem PyTorch backend's measured window.

One process, one device, one random-weight model (Llama-3.2-1B shape by default; `--tiny` uses
`llem/tiny-llama` so it runs on a CPU). For each batch size: the same synthetic prompts (input
tokens of random ids, exactly `--output` new tokens, greedy) are run
- bare: `model.generate(input_ids, attention_mask, max_new_tokens=…, min_new_tokens=…)` per batch;
- llem: what `measure.experiment.run` does in its measured window: NVML sampler running (when
  NVML is available), energy window open, `PyTorchBackend.generate` (token timer included),
  devices synchronised before the window closes.
Runs alternate bare/llem `--repeats` times; the median tokens/s of each is reported with
ratio = llem / bare (target >= 0.99).

    python benchmarks/harness_overhead.py                 # GPU, Llama-3.2-1B shape, batch 1 8 32
    python benchmarks/harness_overhead.py --tiny --batch-sizes 1 4 --repeats 2   # CPU smoke run
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from llem_ray.backends.pytorch import PyTorchBackend  # noqa: E402
from llem_ray.config.experiment import ExperimentConfig  # noqa: E402
from llem_ray.datasets.synthetic import synthetic_prompts  # noqa: E402
from llem_ray.energy.devices import visible_gpus  # noqa: E402
from llem_ray.energy.nvml import NVMLMeter  # noqa: E402
from llem_ray.energy.protocol import MeterUnavailable  # noqa: E402
from llem_ray.measure.experiment import synchronize  # noqa: E402


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny", action="store_true", help="llem/tiny-llama in fp32 (CPU-friendly)")
    parser.add_argument("--model", default="llem/llama-3.2-1b")
    parser.add_argument("--precision", default="bf16", choices=["fp32", "fp16", "bf16"])
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--input", type=int, default=128, help="input tokens per prompt")
    parser.add_argument("--output", type=int, default=128, help="new tokens per prompt")
    parser.add_argument("--batches", type=int, default=3, help="batches per timed run")
    parser.add_argument("--repeats", type=int, default=3, help="alternating bare/llem runs per batch size")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    return parser.parse_args()


def bare_run(model, batches: list[list[tuple[int, ...]]], new_tokens: int, device: str) -> float:
    """Output tokens/s of plain `model.generate` over `batches`."""
    tensors = []
    for batch in batches:
        ids = torch.tensor(batch, dtype=torch.long, device=model.device)
        tensors.append((ids, torch.ones_like(ids)))
    synchronize(device)
    start_s = time.perf_counter()
    for ids, mask in tensors:
        with torch.inference_mode():
            model.generate(
                input_ids=ids, attention_mask=mask, max_new_tokens=new_tokens, min_new_tokens=new_tokens,
                do_sample=False, pad_token_id=0,
            )
    synchronize(device)
    return sum(len(b) for b in batches) * new_tokens / (time.perf_counter() - start_s)


def llem_run(backend: PyTorchBackend, prompts, new_tokens: int, device: str, meter: NVMLMeter | None) -> float:
    """Output tokens/s of the backend inside a measured window (sampler + energy window when NVML works)."""
    if meter is not None:
        meter.start_sampling(10.0)
        meter.begin_window("bench")
    synchronize(device)
    start_s = time.perf_counter()
    out = backend.generate(prompts, new_tokens)
    synchronize(device)
    elapsed_s = time.perf_counter() - start_s
    if meter is not None:
        meter.end_window("bench")
        meter.stop_sampling()
    return out.output_tokens / elapsed_s


def main() -> None:
    args = parse_args()
    model_name, precision = ("llem/tiny-llama", "fp32") if args.tiny else (args.model, args.precision)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    gpus = visible_gpus()
    try:
        meter = NVMLMeter(gpus.uuids[:1]) if device == "cuda" else None
    except MeterUnavailable as exc:
        print(f"no NVML meter ({exc}): llem runs without the sampler", file=sys.stderr)
        meter = None
    rows = []
    for batch_size in args.batch_sizes:
        config = ExperimentConfig(
            model=model_name, weights="random", precision=precision, dataset="synthetic",
            max_input_tokens=args.input, max_output_tokens=args.output, pytorch={"batch_size": batch_size},
        )
        backend = PyTorchBackend()
        info = backend.load(config, device)
        prompts = synthetic_prompts(batch_size * args.batches, args.input, info.vocab_size or 32000, seed=42)
        batches = [[p.token_ids for p in prompts[i : i + batch_size]] for i in range(0, len(prompts), batch_size)]
        bare_run(backend.model, batches[:1], args.output, device)  # warm both paths
        llem_run(backend, prompts[:batch_size], args.output, device, meter)
        bare, llem = [], []
        for _ in range(args.repeats):
            bare.append(bare_run(backend.model, batches, args.output, device))
            llem.append(llem_run(backend, prompts, args.output, device, meter))
        backend.unload()
        row = {
            "batch_size": batch_size, "bare_tok_s": statistics.median(bare), "llem_tok_s": statistics.median(llem),
            "bare_runs": bare, "llem_runs": llem,
        }
        row["ratio"] = row["llem_tok_s"] / row["bare_tok_s"]
        rows.append(row)
        print(f"batch {batch_size:>3}: bare {row['bare_tok_s']:>10,.1f} tok/s   llem {row['llem_tok_s']:>10,.1f} tok/s   "
              f"ratio {row['ratio']:.4f}", flush=True)
    header = {"model": model_name, "precision": precision, "device": device, "input": args.input, "output": args.output,
              "gpu": torch.cuda.get_device_name(0) if device == "cuda" else None, "sampler": meter is not None}
    print(json.dumps(header))
    if args.json:
        args.json.write_text(json.dumps({**header, "rows": rows}, indent=2))
    if meter is not None:
        meter.close()


if __name__ == "__main__":
    main()
