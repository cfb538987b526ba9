"""The serving scenario's columns: in the study table (one row per run) and the summary (one per configuration).

Offline rows hold None in every serving column (`scenario` is 'offline'). Column names carry
units. The summary adds, per configuration, mean / std / CV / 95 % bootstrap CI over cycles of
`SERVING_CI_METRICS` and the mean of `SERVING_MEAN_METRICS` (results.aggregate), and the load
curve a configuration belongs to: `load_series` groups the configurations that differ only in
their load (`serving.request_rate_req_s`, `serving.concurrency`), so a study over request rates
is one curve per engine/configuration in the report (`load_series_label` names it).
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Callable
from typing import Any

import pyarrow as pa

from llem_ray.results.schema import ExperimentResult, Percentiles, ServingResult

LOAD_FIELDS: tuple[str, ...] = ("request_rate_req_s", "concurrency")
"""`serving:` fields that place a configuration on its load curve instead of starting another curve."""


def _serving_value(get: Callable[[ServingResult], float | None]) -> Callable[[ExperimentResult], float | None]:
    return lambda r: get(r.serving) if r.serving is not None else None


def _p(stats: Percentiles | None, attr: str) -> float | None:
    return getattr(stats, attr) if stats is not None else None


_VALUES: dict[str, Callable[[ServingResult], Any]] = {
    "serving_target_rate_req_s": lambda s: s.target_rate_req_s,
    "serving_concurrency": lambda s: s.concurrency,
    "offered_rate_req_s": lambda s: s.offered_rate_req_s,
    "achieved_rate_req_s": lambda s: s.achieved_rate_req_s,
    "generator_fell_behind": lambda s: s.generator_fell_behind,
    "slo_ttft_ms": lambda s: s.slo_ttft_ms,
    "slo_tpot_ms": lambda s: s.slo_tpot_ms,
    "slo_attainment": lambda s: s.slo_attainment,
    "goodput_req_s": lambda s: s.goodput_req_s,
    "serving_ttft_p50_ms": lambda s: _p(s.latency.ttft, "p50_ms"),
    "serving_ttft_p99_ms": lambda s: _p(s.latency.ttft, "p99_ms"),
    "serving_tpot_p50_ms": lambda s: _p(s.latency.tpot, "p50_ms"),
    "serving_tpot_p99_ms": lambda s: _p(s.latency.tpot, "p99_ms"),
    "serving_e2e_p99_ms": lambda s: _p(s.latency.e2e, "p99_ms"),
    "serving_window_start_s": lambda s: s.window_start_s,
    "serving_window_end_s": lambda s: s.window_end_s,
    "serving_window_accepted": lambda s: s.window_accepted,
    "serving_mean_power_w": lambda s: s.mean_power_w,
    "serving_energy_per_output_token_j": lambda s: s.energy_per_output_token_j,
    "energy_per_request_j": lambda s: s.energy_per_request_j,
    "energy_per_slo_request_j": lambda s: s.energy_per_slo_request_j,
    "energy_per_slo_request_adjusted_j": lambda s: s.energy_per_slo_request_adjusted_j,
}
_TYPES: dict[str, pa.DataType] = {
    "serving_concurrency": pa.int64(), "generator_fell_behind": pa.bool_(), "serving_window_accepted": pa.bool_(),
}

SERVING_TABLE_FIELDS: list[pa.Field] = [
    pa.field("scenario", pa.string()),
    *(pa.field(name, _TYPES.get(name, pa.float64())) for name in _VALUES),
]
"""Columns of the study table (results.table) for the serving scenario."""


def serving_columns(result: ExperimentResult) -> dict[str, Any]:
    """The SERVING_TABLE_FIELDS values of `result` (None for an offline result)."""
    serving = result.serving
    return {"scenario": result.scenario, **{k: get(serving) if serving else None for k, get in _VALUES.items()}}


SERVING_CI_METRICS: dict[str, Callable[[ExperimentResult], float | None]] = {
    "energy_per_slo_request_j": _serving_value(lambda s: s.energy_per_slo_request_j),
    "slo_attainment": _serving_value(lambda s: s.slo_attainment),
}
"""Serving metrics with mean, std, CV and a bootstrap CI over cycles in the summary."""

SERVING_MEAN_METRICS: dict[str, Callable[[ExperimentResult], float | None]] = {
    name: _serving_value(_VALUES[name]) for name in (
        "offered_rate_req_s", "achieved_rate_req_s", "goodput_req_s", "serving_ttft_p50_ms", "serving_ttft_p99_ms",
        "serving_tpot_p50_ms", "serving_tpot_p99_ms", "serving_mean_power_w", "serving_energy_per_output_token_j",
        "energy_per_request_j", "energy_per_slo_request_adjusted_j",
    )
}
"""Serving metrics summarised by their mean over cycles (column `<name>_mean`)."""


def load_series(result: ExperimentResult) -> tuple[str | None, str | None]:
    """(key, label) of the load curve of a serving result; (None, None) for an offline one.

    The key hashes the configuration without its load fields (LOAD_FIELDS) and labels, so the
    fixed-concurrency point of a configuration sits on its rate curve; the label names model,
    backend, precision, SLO and the arrivals' shape (`serving.burstiness`).
    """
    if result.serving is None:
        return None, None
    config = copy.deepcopy(result.config)
    config.pop("name", None)
    config.pop("output_dir", None)
    for name in LOAD_FIELDS:
        (config.get("serving") or {}).pop(name, None)
    key = hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:16]
    s = result.serving
    slo = ", ".join(f"{name} ≤ {value:g} ms" for name, value in (("TTFT", s.slo_ttft_ms), ("TPOT", s.slo_tpot_ms))
                    if value is not None) or "no SLO"
    burstiness = (config.get("serving") or {}).get("burstiness", 1.0)
    shape = "Poisson" if burstiness == 1 else f"gamma {burstiness:g}"
    return key, f"{result.model.rsplit('/', 1)[-1]} · {result.backend} · {result.precision} · {slo} ({shape})"
