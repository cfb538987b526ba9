"""Statistics across cycles (MEAS-07, MEAS-08): one summary row per configuration of a study.

A study repeats each configuration (same `measurement_config_hash`) over cycles. Per
configuration and per metric in `CI_METRICS` this computes the number of cycles `n`, the mean,
the sample standard deviation (ddof = 1), the coefficient of variation (std / |mean|) and a 95 %
bootstrap confidence interval of the mean (`scipy.stats.bootstrap`, BCa, 9,999 resamples, fixed
seed so a report is reproducible; percentile method where BCa is undefined). One cycle gives no
std and no interval, and the row's `ci_note` says so; identical cycles give a zero-width interval.

Which metrics, and which statistic each gets, is declared once on the ExperimentResult field
(`Metric("ci" | "mean" | "max" | "any")`, results.columns); the summary's column is the study
table's column name plus the statistic (`latency.ttft.p50_ms_mean`), so the two tables name every
metric alike. The row also holds the configuration's identity, its KV-cache setting, its load curve
(results.load_series) and its resolved configuration (`config.*`, as in the study table; lists as
JSON text). It is written as `summary.parquet` and `summary.csv` (column names carry units).

scipy is optional (the `report` and `test` extras): without it `metric_stats` raises
ImportError saying how to install it.
"""

from __future__ import annotations

import inspect
import json
import math
import statistics
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from llem_ray.backends import registry as backend_registry
from llem_ray.backends.spec import engine_kv_cache_label
from llem_ray.results.columns import Column
from llem_ray.results.load_series import load_series
from llem_ray.results.schema import ExperimentResult
from llem_ray.results.table import CONFIG_COLUMNS, RESULT_COLUMNS

CONFIDENCE_LEVEL = 0.95
N_RESAMPLES = 9_999
BOOTSTRAP_SEED = 0
ONE_CYCLE_NOTE = "one cycle: no confidence interval (needs >= 2 cycles)"

SUMMARY_METRICS: tuple[Column, ...] = tuple(c for c in RESULT_COLUMNS if c.metric is not None)
"""The study table's columns marked `Metric` on ExperimentResult (results.schema), in table order."""

CI_METRICS: tuple[str, ...] = tuple(c.name for c in SUMMARY_METRICS if c.metric.summary == "ci")
"""Metrics that get n, mean, std, CV and a bootstrap CI (columns `<name>_n`, `_mean`, ... `_ci95_high`)."""

MEAN_METRICS: tuple[str, ...] = tuple(c.name for c in SUMMARY_METRICS if c.metric.summary == "mean")
"""Metrics summarised by their mean over cycles (column `<name>_mean`)."""

_CI_STATS = ("mean", "std", "cv", "ci95_low", "ci95_high")


def metric_summary_columns(column: Column) -> list[pa.Field]:
    """The summary columns of one metric column, as its `Metric.summary` declares them."""
    how = column.metric.summary if column.metric else None
    if how == "ci":
        return [pa.field(f"{column.name}_n", pa.int64())] + [
            pa.field(f"{column.name}_{stat}", pa.float64()) for stat in _CI_STATS
        ]
    if how == "mean":
        return [pa.field(f"{column.name}_mean", pa.float64())]
    if how == "max":
        return [pa.field(f"{column.name}_max", column.type)]
    if how == "any":
        return [pa.field(f"{column.name}_any", pa.bool_())]
    raise ValueError(f"{column.name}: no summary statistic ({how!r})")


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
                data,
                np.mean,
                confidence_level=CONFIDENCE_LEVEL,
                n_resamples=N_RESAMPLES,
                method=method,
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


def _metric_values(column: Column, results: Sequence[ExperimentResult]) -> tuple[dict[str, Any], str | None]:
    """The summary values of one metric over `results`, and the CI's note (None but for "ci")."""
    values = [column.value(r) for r in results]
    present = [v for v in values if v is not None]
    how = column.metric.summary if column.metric else None
    if how == "mean":
        return {f"{column.name}_mean": _mean(values)}, None
    if how == "max":
        return {f"{column.name}_max": max(present) if present else None}, None
    if how == "any":
        return {f"{column.name}_any": any(present) if present else None}, None
    st = metric_stats(values)
    return {
        f"{column.name}_n": st.n,
        f"{column.name}_mean": st.mean,
        f"{column.name}_std": st.std,
        f"{column.name}_cv": st.cv,
        f"{column.name}_ci95_low": st.ci_low,
        f"{column.name}_ci95_high": st.ci_high,
    }, st.note


def _config_type(column: Column) -> pa.DataType:
    """A config column's summary type: lists as JSON text, so summary.csv can hold every column."""
    return pa.string() if pa.types.is_list(column.type) else column.type


def _config_value(column: Column, result: ExperimentResult) -> Any:
    value = column.value(result)
    return json.dumps(value) if value is not None and pa.types.is_list(column.type) else value


def summary_row(results: Sequence[ExperimentResult]) -> dict[str, Any]:
    """The summary row of one configuration's results (all with one `measurement_config_hash`).

    Identity columns and `config.*` come from the first result; each SUMMARY_METRICS column gets the
    statistics its `Metric` declares. Raises ImportError without scipy when a CI needs a bootstrap.
    """
    first = results[0]
    key, label = load_series(first)
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
        "serving.target_rate_req_s": first.serving.target_rate_req_s if first.serving else None,
        "serving.concurrency": first.serving.concurrency if first.serving else None,
        "load_series": key,
        "load_series_label": label,
    }
    notes = []
    for column in SUMMARY_METRICS:
        values, note = _metric_values(column, results)
        row.update(values)
        if note and note != "not measured":
            notes.append(note if note == ONE_CYCLE_NOTE else f"{column.name}: {note}")
    row["n_warnings"] = sum(len(r.measurement_warnings) for r in results)
    row["ci_note"] = "; ".join(dict.fromkeys(notes)) or None
    row.update({c.name: _config_value(c, first) for c in CONFIG_COLUMNS})
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
        pa.field("serving.target_rate_req_s", pa.float64()),
        pa.field("serving.concurrency", pa.int64()),
        pa.field("load_series", pa.string()),
        pa.field("load_series_label", pa.string()),
    ]
    for column in SUMMARY_METRICS:
        fields += metric_summary_columns(column)
    fields += [pa.field("n_warnings", pa.int64()), pa.field("ci_note", pa.string())]
    fields += [pa.field(c.name, _config_type(c)) for c in CONFIG_COLUMNS]
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
