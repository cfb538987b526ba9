"""Statistics across cycles (MEAS-07, MEAS-08): one summary row per configuration of a study.

A study repeats each configuration (same `measurement_config_hash`) over cycles. Per
configuration and per metric in `CI_METRICS` this computes the number of cycles `n`, the mean,
the sample standard deviation (ddof = 1), the coefficient of variation (std / |mean|) and a 95 %
bootstrap confidence interval of the mean (`scipy.stats.bootstrap`, BCa, 9,999 resamples, fixed
seed so a report is reproducible; percentile method where BCa is undefined). One cycle gives no
std and no interval, and the row's `ci_note` says so; identical cycles give a zero-width interval.

The summary table adds, as means over cycles, the extended metrics of MEAS-07: memory, GPU
utilisation, latency percentiles, batch size, the KV-cache setting, power and temperature; for
the serving scenario its SLO and energy-per-request figures and load curve (results.serving_columns). It is
written as `summary.parquet` and `summary.csv` (column names carry units).

scipy is optional (the `report` and `test` extras): without it `metric_stats` raises
ImportError saying how to install it.
"""

from __future__ import annotations

import inspect
import math
import statistics
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from llem_ray.backends import registry as backend_registry
from llem_ray.backends.spec import engine_kv_cache_label
from llem_ray.results.schema import ExperimentResult
from llem_ray.results.serving_columns import SERVING_CI_METRICS, SERVING_MEAN_METRICS, load_series

CONFIDENCE_LEVEL = 0.95
N_RESAMPLES = 9_999
BOOTSTRAP_SEED = 0
ONE_CYCLE_NOTE = "one cycle: no confidence interval (needs >= 2 cycles)"

CI_METRICS: dict[str, Callable[[ExperimentResult], float | None]] = {
    "energy_per_output_token_j": lambda r: r.energy_per_output_token_j,
    "energy_per_output_token_total_j": lambda r: r.energy_per_output_token_total_j,
    "tokens_per_second": lambda r: r.tokens_per_second,
    "energy_adjusted_j": lambda r: r.energy_adjusted_j,
    "ttft_p50_ms": lambda r: r.latency.ttft.p50_ms if r.latency.ttft else None,
    **SERVING_CI_METRICS,
}
"""Metrics that get mean, std, CV and a bootstrap CI, by summary column prefix (units in the names)."""

MEAN_METRICS: dict[str, Callable[[ExperimentResult], float | None]] = {
    "energy_total_j": lambda r: r.energy_total_j,
    "duration_s": lambda r: r.duration_s,
    "peak_memory_mib": lambda r: r.peak_memory_mib,
    "mean_gpu_utilization_pct": lambda r: r.mean_gpu_utilization_pct,
    "mean_power_w": lambda r: r.mean_power_w,
    "request_latency_p50_ms": lambda r: r.latency.request.p50_ms if r.latency.request else None,
    "request_latency_p95_ms": lambda r: r.latency.request.p95_ms if r.latency.request else None,
    "itl_p50_ms": lambda r: r.latency.itl.p50_ms if r.latency.itl else None,
    "batch_latency_p50_ms": lambda r: r.latency.batch.p50_ms if r.latency.batch else None,
    **SERVING_MEAN_METRICS,
}
"""MEAS-07 metrics summarised by their mean over cycles (column `<name>_mean`)."""


@dataclass(frozen=True)
class MetricStats:
    """Summary of one metric over cycles; None where undefined (no values; std and CI need n >= 2)."""

    n: int
    mean: float | None
    std: float | None
    cv: float | None
    ci_low: float | None
    ci_high: float | None
    note: str | None = None


def _scipy_stats() -> Any:
    try:
        from scipy import stats
    except ImportError as exc:
        raise ImportError(
            "confidence intervals need scipy: pip install 'llem-ray[report]' (or pip install scipy)"
        ) from exc
    return stats


def bootstrap_ci(values: Sequence[float]) -> tuple[float, float, str | None]:
    """95 % bootstrap CI of the mean of `values` (n >= 2, not all equal): (low, high, note or None).

    BCa first; where BCa is undefined (NaN bounds, e.g. two values) the percentile interval, and
    the note says so. Raises ImportError without scipy, ValueError if no interval is defined.
    """
    import numpy as np

    stats = _scipy_stats()
    data = (np.asarray(values, dtype=float),)
    seed_arg = "rng" if "rng" in inspect.signature(stats.bootstrap).parameters else "random_state"  # scipy < 1.15
    note = None
    for method in ("BCa", "percentile"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # DegenerateDataWarning: handled below by the NaN check
            res = stats.bootstrap(
                data, np.mean, confidence_level=CONFIDENCE_LEVEL, n_resamples=N_RESAMPLES, method=method,
                **{seed_arg: np.random.default_rng(BOOTSTRAP_SEED)},
            )
        low, high = float(res.confidence_interval.low), float(res.confidence_interval.high)
        if math.isfinite(low) and math.isfinite(high):
            return low, high, note
        note = "BCa interval undefined for these values: percentile bootstrap interval"
    raise ValueError(f"bootstrap interval undefined for {list(values)}")


def metric_stats(values: Sequence[float | None]) -> MetricStats:
    """n, mean, std (ddof = 1), CV and 95 % bootstrap CI of the non-None `values`.

    No values: all None with a note. One value: mean only, note ONE_CYCLE_NOTE. All values equal:
    std 0 and a zero-width interval at the mean (no resampling). Raises ImportError without scipy
    when a bootstrap is needed.
    """
    present = [float(v) for v in values if v is not None and math.isfinite(v)]
    n = len(present)
    if n == 0:
        return MetricStats(0, None, None, None, None, None, "not measured")
    mean = statistics.fmean(present)
    if n == 1:
        return MetricStats(1, mean, None, None, None, None, ONE_CYCLE_NOTE)
    std = statistics.stdev(present)
    cv = std / abs(mean) if mean != 0 else None
    if max(present) == min(present):
        return MetricStats(n, mean, 0.0, cv, mean, mean)
    low, high, note = bootstrap_ci(present)
    return MetricStats(n, mean, std, cv, low, high, note)

def kv_cache_setting(result: ExperimentResult) -> str:
    """The KV-cache configuration of `result` as a short label, by its backend's spec (`kv_cache_label`;
    an engine section's KV-cache fields for a backend not registered here; 'engine default' where
    nothing was set)."""
    section = result.config.get(result.backend) or {}
    spec = backend_registry.find(result.backend)
    return (spec.kv_cache_label if spec is not None else engine_kv_cache_label)(section)


def group_by_config(results: Sequence[ExperimentResult]) -> dict[str, list[ExperimentResult]]:
    """Results grouped by `measurement_config_hash`, groups in first-seen order, each sorted by cycle."""
    groups: dict[str, list[ExperimentResult]] = {}
    for result in results:
        groups.setdefault(result.measurement_config_hash, []).append(result)
    return {h: sorted(rs, key=lambda r: (r.placement.cycle or 0, r.started_at)) for h, rs in groups.items()}


def _mean(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.fmean(present) if present else None


def summary_row(results: Sequence[ExperimentResult]) -> dict[str, Any]:
    """The summary row of one configuration's results (all with one `measurement_config_hash`)."""
    first = results[0]
    row: dict[str, Any] = {
        "measurement_config_hash": first.measurement_config_hash,
        "name": first.name,
        "model": first.model,
        "backend": first.backend,
        "precision": first.precision,
        "batch_size": first.batch_size,
        "device": first.device,
        "n_cycles": len(results),
        "cycles": ",".join(str(r.placement.cycle) for r in results if r.placement.cycle is not None),
        "measurement_methodology": ",".join(sorted({r.measurement_methodology for r in results})),
        "kv_cache": kv_cache_setting(first),
        "scenario": first.scenario,
        "serving_target_rate_req_s": first.serving.target_rate_req_s if first.serving else None,
        "serving_concurrency": first.serving.concurrency if first.serving else None,
        "load_series": load_series(first)[0],
        "load_series_label": load_series(first)[1],
    }
    notes = []
    for metric, get in CI_METRICS.items():
        st = metric_stats([get(r) for r in results])
        row.update({
            f"{metric}_n": st.n, f"{metric}_mean": st.mean, f"{metric}_std": st.std, f"{metric}_cv": st.cv,
            f"{metric}_ci95_low": st.ci_low, f"{metric}_ci95_high": st.ci_high,
        })
        if st.note and st.note != "not measured":
            notes.append(st.note if st.note == ONE_CYCLE_NOTE else f"{metric}: {st.note}")
    for metric, get in MEAN_METRICS.items():
        row[f"{metric}_mean"] = _mean([get(r) for r in results])
    temps = [r.max_temperature_c for r in results if r.max_temperature_c is not None]
    row["max_temperature_c"] = max(temps) if temps else None
    flags = [r.host_bound for r in results if r.host_bound is not None]
    row["host_bound"] = any(flags) if flags else None
    row["n_warnings"] = sum(len(r.measurement_warnings) for r in results)
    row["ci_note"] = "; ".join(dict.fromkeys(notes)) or None
    return row


def _schema() -> pa.Schema:
    fields = [
        pa.field("measurement_config_hash", pa.string(), nullable=False),
        pa.field("name", pa.string()),
        pa.field("model", pa.string()),
        pa.field("backend", pa.string()),
        pa.field("precision", pa.string()),
        pa.field("batch_size", pa.int64()),
        pa.field("device", pa.string()),
        pa.field("n_cycles", pa.int64()),
        pa.field("cycles", pa.string()),
        pa.field("measurement_methodology", pa.string()),
        pa.field("kv_cache", pa.string()),
        pa.field("scenario", pa.string()),
        pa.field("serving_target_rate_req_s", pa.float64()),
        pa.field("serving_concurrency", pa.int64()),
        pa.field("load_series", pa.string()),
        pa.field("load_series_label", pa.string()),
    ]
    for metric in CI_METRICS:
        fields.append(pa.field(f"{metric}_n", pa.int64()))
        fields += [pa.field(f"{metric}_{s}", pa.float64()) for s in ("mean", "std", "cv", "ci95_low", "ci95_high")]
    fields += [pa.field(f"{metric}_mean", pa.float64()) for metric in MEAN_METRICS]
    fields += [
        pa.field("max_temperature_c", pa.float64()),
        pa.field("host_bound", pa.bool_()),
        pa.field("n_warnings", pa.int64()),
        pa.field("ci_note", pa.string()),
    ]
    return pa.schema(fields)


SUMMARY_SCHEMA = _schema()
"""Columns of the summary table, one row per configuration."""


def summary_table(results: Sequence[ExperimentResult]) -> pa.Table:
    """The summary table (SUMMARY_SCHEMA) of `results`, one row per configuration, in first-seen order."""
    rows = [summary_row(group) for group in group_by_config(results).values()]
    return pa.Table.from_pylist(rows, schema=SUMMARY_SCHEMA)


def write_summary(table: pa.Table, out_dir: Path) -> tuple[Path, Path]:
    """Write `table` as `summary.parquet` and `summary.csv` under `out_dir`; returns both paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    parquet_path, csv_path = out_dir / "summary.parquet", out_dir / "summary.csv"
    pq.write_table(table, parquet_path)
    pa_csv.write_csv(table, csv_path)
    return parquet_path, csv_path
