"""Golden warm-up: scripted prompts against the served model, timings, golden check.

`run_warmup` sends every prompt (`repeats` times; the first round also warms
caches), writes one `inference.jsonl` line per request, takes NVML snapshots
before and after, and merges its results into `logs/<run>/summary.json`:

    {"run": ..., "success": {"inference": true, "golden": true, "gpu": true},
     "inference": {"requests": 6, "failures": 0, "transport": "grpc", "streamed": true,
                   "ttft_s": {"p50": .., "p95": ..}, "latency_s": {"p50": .., "p95": ..},
                   "tokens_per_s": {"p50": .., "mean": ..}, "output_tokens": 96,
                   "token_count_method": "tokenizer" | "stream_chunks" | "whitespace"},
     "golden": {"file": ..., "threshold": 0.9, "recorded": false, "deviations": 0, ...},
     "gpu": {"before": <snapshot>, "after": <snapshot>, ...}}   (the CLI adds before_launch, after_teardown)

`success.gpu` is true only when NVML took every GPU snapshot of the run (`gpu_captured`): false on
a host without NVML, where the snapshots say why. It never fails the warm-up.

Failure modes: a request that fails makes `success.inference` false and raises
`SmokeTestError` (exit 10) after the summary is written; outputs below the
golden threshold are saved to `logs/<run>/golden-divergence.json` and raise
`GoldenDeviationError` (exit 9) with guidance. Record mode writes the golden
file from this run's outputs instead of comparing.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from . import golden as golden_mod
from .client import InferenceFailed, TritonTextClient
from .errors import GoldenDeviationError, SmokeTestError
from .events import EventLog
from .gpu import snapshot
from .paths import Workspace, read_json, write_json_atomic
from .redact import Redactor


@dataclass
class WarmupPlan:
    """What to send. `max_tokens` is per request; `threshold` in [0, 1]."""

    model: str
    prompts: list[str]
    max_tokens: int = 16
    repeats: int = 2
    transport: str = "grpc"
    golden_path: Path | None = None
    threshold: float = 0.9
    record_golden: bool = False
    config_hash: str | None = None


def percentile(values: list[float], pct: float) -> float | None:
    """Linear-interpolated percentile (`pct` in 0..100) of `values`; None when empty."""
    if not values:
        return None
    data = sorted(values)
    rank = (len(data) - 1) * pct / 100.0
    low = int(rank)
    high = min(low + 1, len(data) - 1)
    return data[low] + (data[high] - data[low]) * (rank - low)


def _stats(values: list[float]) -> dict:
    return {
        "p50": percentile(values, 50),
        "p95": percentile(values, 95),
        "mean": sum(values) / len(values) if values else None,
        "n": len(values),
    }


def whitespace_tokens(text: str) -> int:
    """Fallback token count: whitespace-separated words."""
    return len(text.split())


def update_summary(workspace: Workspace, run_id: str, section: str, data: dict, success: bool) -> Path:
    """Merge `data` under `section` and `success[section]` into `logs/<run>/summary.json`."""
    path = workspace.run_dir(run_id) / "summary.json"
    summary = read_json(path, default={}) or {}
    summary["run"] = run_id
    summary.setdefault("success", {})[section] = success
    summary[section] = data
    return write_json_atomic(path, summary)


def gpu_captured(snapshots: dict[str, dict]) -> bool:
    """`success.gpu`: True when there are snapshots and NVML took every one; False otherwise (a host
    without NVML: each snapshot then holds `"nvml": false` and the reason)."""
    return bool(snapshots) and all(snap.get("nvml") for snap in snapshots.values())


def add_gpu_snapshot(workspace: Workspace, run_id: str, key: str, snap: dict) -> None:
    """Keep one more NVML snapshot (e.g. `before_launch`, `after_teardown`) under summary.json `gpu`."""
    summary = read_json(workspace.run_dir(run_id) / "summary.json", default={}) or {}
    snapshots = {**summary.get("gpu", {}), key: snap}
    update_summary(workspace, run_id, "gpu", snapshots, success=gpu_captured(snapshots))


def memory_delta_mib(first: dict, second: dict) -> list[float] | None:
    """Per-GPU change of used memory (MiB) from snapshot `first` to `second`; None without NVML."""
    if not (first.get("nvml") and second.get("nvml")):
        return None
    return [
        round((b["memory_used_bytes"] - a["memory_used_bytes"]) / 2**20, 1)
        for a, b in zip(first["devices"], second["devices"])
    ]


def run_warmup(
    workspace: Workspace,
    run_id: str,
    client: TritonTextClient,
    plan: WarmupPlan,
    *,
    count_tokens: Callable[[str], int] | None = None,
    redactor: Redactor | None = None,
) -> dict:
    """Run `plan` (module docstring); return the summary dict that was written."""
    redactor = redactor or Redactor()
    events = EventLog(workspace, run_id, "inference", redactor)
    method = "tokenizer" if count_tokens else None
    before = snapshot("before-warmup")
    events.emit("gpu_snapshot", snapshot=before)
    ttfts, latencies, rates = [], [], []
    outputs: dict[str, str] = {}
    failures, total_tokens, streamed = 0, 0, False
    for round_no in range(plan.repeats):
        for prompt in plan.prompts:
            try:
                gen = client.generate(plan.model, prompt, plan.max_tokens)
            except InferenceFailed as exc:
                failures += 1
                events.emit("request_failed", round=round_no, prompt=prompt, error=str(exc))
                continue
            if count_tokens:
                tokens = count_tokens(gen.text)
            elif gen.streamed:
                tokens, method = gen.chunks, method or "stream_chunks"
            else:
                tokens, method = whitespace_tokens(gen.text), "whitespace"
            rate = tokens / gen.latency_s if gen.latency_s > 0 else 0.0
            ttfts.append(gen.ttft_s)
            latencies.append(gen.latency_s)
            rates.append(rate)
            total_tokens += tokens
            streamed = streamed or gen.streamed
            outputs.setdefault(prompt, gen.text)
            events.emit(
                "request",
                round=round_no,
                prompt=prompt,
                output=gen.text,
                ttft_s=gen.ttft_s,
                latency_s=gen.latency_s,
                output_tokens=tokens,
                tokens_per_s=rate,
                chunks=gen.chunks,
                streamed=gen.streamed,
                transport=client.transport,
            )
    after = snapshot("after-warmup")
    events.emit("gpu_snapshot", snapshot=after)
    inference = {
        "model": plan.model,
        "requests": plan.repeats * len(plan.prompts),
        "failures": failures,
        "transport": client.transport,
        "streamed": streamed,
        "ttft_s": _stats(ttfts),
        "latency_s": _stats(latencies),
        "tokens_per_s": _stats(rates),
        "output_tokens": total_tokens,
        "token_count_method": method,
    }
    gpu = (read_json(workspace.run_dir(run_id) / "summary.json", default={}) or {}).get("gpu", {})
    snapshots = {**gpu, "before": before, "after": after}
    update_summary(workspace, run_id, "gpu", snapshots, success=gpu_captured(snapshots))
    ok = failures == 0 and bool(plan.prompts)
    summary_path = update_summary(workspace, run_id, "inference", redactor.redact_obj(inference), success=ok)
    if not ok:
        raise SmokeTestError(
            f"{failures} of {inference['requests']} warm-up requests failed; see {events.path}",
            remediation="check that the model is loaded (`curl <http>/v2/models/<name>/ready`) and read triton.log",
            doc="docs/usage.md#warm-up",
        )
    _golden_step(workspace, run_id, plan, outputs, events, redactor)
    return read_json(summary_path)


def _golden_step(workspace, run_id, plan: WarmupPlan, outputs, events: EventLog, redactor) -> None:
    path = plan.golden_path or workspace.state_file(f"golden/{plan.model}.json")
    info: dict = {"file": str(path), "threshold": plan.threshold, "recorded": False}
    if plan.record_golden:
        samples = [{"prompt": p, "max_tokens": plan.max_tokens, "output": o} for p, o in outputs.items()]
        golden_mod.record_golden(path, plan.model, samples, plan.config_hash)
        events.emit("golden_recorded", file=str(path), samples=len(samples))
        update_summary(workspace, run_id, "golden", {**info, "recorded": True, "samples": len(samples)}, True)
        return
    golden = golden_mod.load_golden(path)
    comparisons = golden_mod.compare(golden, outputs, plan.threshold)
    deviating = [c for c in comparisons if c.deviates]
    missing = [c.prompt for c in comparisons if c.expected is None]
    info.update(deviations=len(deviating), missing=missing, similarities={c.prompt: c.similarity for c in comparisons})
    for c in comparisons:
        events.emit("golden_compare", prompt=c.prompt, similarity=c.similarity, deviates=c.deviates)
    if not golden:
        events.emit("golden_missing", file=str(path))
        info["note"] = "no golden file: record one with --record-golden"
    if deviating:
        divergence = workspace.run_dir(run_id) / "golden-divergence.json"
        golden_mod.write_divergence(divergence, comparisons, plan.threshold, path)
        info["divergence_file"] = str(divergence)
        update_summary(workspace, run_id, "golden", redactor.redact_obj(info), success=False)
        events.emit("golden_deviation", count=len(deviating), divergence_file=str(divergence))
        raise GoldenDeviationError(
            f"{len(deviating)} of {len(comparisons)} warm-up outputs fall below the golden "
            f"similarity threshold {plan.threshold}; divergent outputs saved to {divergence}",
            remediation=golden_mod.GUIDANCE,
            doc="docs/usage.md#golden-samples",
            details={"divergence_file": str(divergence)},
        )
    update_summary(workspace, run_id, "golden", redactor.redact_obj(info), success=bool(golden))
