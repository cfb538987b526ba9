"""Figures of a serving run from its client-side records: steady window, latency, SLO, goodput, energy.

Pure functions over `loadgen.RequestRecord`s (times in s since the run began); no I/O.

- **Steady window** (`steady_window`): opens when the last warm-up request has ended (by then the
  running batch has been filled for at least one request's latency), closes when sending stops
  (`serving.duration_s`: after it the run drains). It is kept only while the offered load is
  sustained (`send_lateness`): a request sent more than MAX_SEND_LAG_S after it was due is late;
  a late request that is at most MAX_HICCUP_S late and after which a request is on time again is a
  hiccup (the loop stalled, then caught up: reported, kept); at any other late request the
  generator has fallen behind and the window closes at that request's due time. A window shorter than
  MIN_STEADY_STATE_S (30 s, ML.ENERGY's rule) is *rejected*: its energy figures are not reported
  and the result says so.
- **Counting in the window** (`window_counts`): a request counts by the share of its output tokens
  streamed inside the window (each chunk's tokens at the chunk's arrival time), so a request
  straddling an edge counts partly. `requests` is that sum, `slo_requests` the sum over requests
  meeting the SLO, `output_tokens` the tokens streamed inside the window.
- **SLO** (`meets_slo`): a request meets it when it completed, its TTFT is at most `slo.ttft_ms`
  and its TPOT at most `slo.tpot_ms`; an unset bound is not checked; a request of fewer than two
  tokens has no TPOT and passes that bound.
- **Rates**: offered = requests sent / send phase; achieved = window requests / window length;
  goodput = window SLO requests / window length; attainment = goodput / achieved.
- **Energy** (`window_energy`): J/token = window J / window tokens; J/request = window J / window
  requests; J per SLO-meeting request = window J / window SLO requests (every joule of the window
  is charged to the requests that met their SLO); each also baseline-adjusted (window J - idle W x
  window s), and mean power = window J / window s.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from llem_ray.config.serving import ServingConfig, SLOConfig
from llem_ray.measure.metrics import percentiles, quantile
from llem_ray.measure.steady_state import MIN_STEADY_STATE_S
from llem_ray.results.schema import ServingLatency, ServingResult
from llem_ray.scenarios.loadgen import LoadTrace, RequestRecord

MAX_SEND_LAG_S = 0.1
"""A request sent later than this after it was due is late, s (one NVML update)."""
MAX_HICCUP_S = 0.5
"""A late request this late at most, with the generator on time again after it, is a hiccup, s."""
OFFERED_RATE_TOLERANCE = 0.05
"""Offered rate this far (as a fraction) below the target is flagged: the generator could not keep up."""
SATURATION_FRACTION = 0.9
"""Achieved rate below this fraction of the offered rate is flagged: the engine may not keep up."""


@dataclass(frozen=True)
class Window:
    """The steady window, s since the run began; `accepted` when it is at least the minimum length."""

    start_s: float
    end_s: float
    accepted: bool

    @property
    def length_s(self) -> float:
        return self.end_s - self.start_s


@dataclass(frozen=True)
class WindowCounts:
    """Requests (token shares), SLO-meeting requests (token shares) and output tokens in a window."""

    requests: float
    slo_requests: float
    output_tokens: int


def window_start_s(records: Sequence[RequestRecord]) -> float:
    """When the steady window opens: the end of the last warm-up request (0 without one), s."""
    return max((r.end_s for r in records if r.warmup and r.end_s is not None), default=0.0)


def send_lateness(records: Sequence[RequestRecord], start_s: float) -> tuple[RequestRecord | None, list[RequestRecord]]:
    """Among the requests due from `start_s` on: where the generator fell behind, and the hiccups before it.

    Returns (the first late request that is not a hiccup, or None; the hiccups before it), per the
    module docstring.
    """
    ordered = sorted((r for r in records if r.scheduled_s >= start_s), key=lambda r: r.scheduled_s)
    last_on_time = max((i for i, r in enumerate(ordered) if r.lag_s <= MAX_SEND_LAG_S), default=-1)
    hiccups: list[RequestRecord] = []
    for i, r in enumerate(ordered):
        if r.lag_s <= MAX_SEND_LAG_S:
            continue
        if r.lag_s > MAX_HICCUP_S or i > last_on_time:
            return r, hiccups
        hiccups.append(r)
    return None, hiccups


def steady_window(
    records: Sequence[RequestRecord], duration_s: float, min_window_s: float = MIN_STEADY_STATE_S
) -> tuple[Window | None, list[str]]:
    """The steady window of a run that sent requests for `duration_s`, and warnings (see module docstring).

    None (with a warning saying why) when the warm-up requests ended after sending stopped.
    """
    warnings: list[str] = []
    start_s = window_start_s(records)
    end_s = duration_s
    late, hiccups = send_lateness(records, start_s)
    hiccups = [r for r in hiccups if r.scheduled_s < end_s]
    if hiccups:
        worst = max(hiccups, key=lambda r: r.lag_s)
        warnings.append(
            f"the load generator was late {len(hiccups)} time(s) and caught up each time (worst: request "
            f"{worst.index}, {worst.lag_s * 1000:.0f} ms after it was due at {worst.scheduled_s:.2f} s); "
            "the steady window keeps them"
        )
    if late is not None and late.scheduled_s < end_s:
        end_s = late.scheduled_s
        warnings.append(
            f"the load generator fell behind: request {late.index} was sent {late.lag_s * 1000:.0f} ms after it "
            f"was due at {late.scheduled_s:.2f} s; the steady window ends there"
        )
    if end_s <= start_s:
        warnings.append(
            f"no steady window: the warm-up requests ended at {start_s:.2f} s, when the offered load had already "
            f"ended ({end_s:.2f} s): raise serving.duration_s or lower serving.warmup_requests"
        )
        return None, warnings
    window = Window(start_s, end_s, end_s - start_s >= min_window_s)
    if not window.accepted:
        warnings.append(
            f"steady window {window.length_s:.1f} s < {min_window_s:.0f} s (ML.ENERGY validity rule): rejected, "
            "the serving energy figures are not reported (raise serving.duration_s)"
        )
    return window, warnings


def meets_slo(record: RequestRecord, slo: SLOConfig) -> bool:
    """Whether `record` completed within every set bound of `slo` (see module docstring)."""
    if not record.completed:
        return False
    ttft_s, tpot_s = record.ttft_s, record.tpot_s
    if slo.ttft_ms is not None and (ttft_s is None or ttft_s * 1000 > slo.ttft_ms):
        return False
    return slo.tpot_ms is None or tpot_s is None or tpot_s * 1000 <= slo.tpot_ms


def window_counts(records: Sequence[RequestRecord], window: Window, slo: SLOConfig) -> WindowCounts:
    """What `window` holds of `records` (see module docstring)."""
    requests = slo_requests = 0.0
    tokens = 0
    for record in records:
        total = record.output_tokens
        inside = sum(n for t, n in zip(record.chunk_times_s, record.chunk_tokens) if window.start_s < t <= window.end_s)
        if total == 0 or inside == 0:
            continue
        tokens += inside
        requests += inside / total
        if meets_slo(record, slo):
            slo_requests += inside / total
    return WindowCounts(requests, slo_requests, tokens)


def _per(value: float | None, count: float) -> float | None:
    return value / count if value is not None and count > 0 else None


def window_energy(
    energy_j: float | None, baseline_power_w: float | None, window: Window, counts: WindowCounts
) -> dict[str, float | None]:
    """The energy fields of ServingResult from the window's raw energy `energy_j` (J) and idle power (W)."""
    known = energy_j is not None and baseline_power_w is not None
    adjusted_j = energy_j - baseline_power_w * window.length_s if known else None  # type: ignore[operator]
    return {
        "energy_window_j": energy_j,
        "energy_window_adjusted_j": adjusted_j,
        "mean_power_w": _per(energy_j, window.length_s),
        "energy_per_output_token_j": _per(energy_j, counts.output_tokens),
        "energy_per_output_token_adjusted_j": _per(adjusted_j, counts.output_tokens),
        "energy_per_request_j": _per(energy_j, counts.requests),
        "energy_per_request_adjusted_j": _per(adjusted_j, counts.requests),
        "energy_per_slo_request_j": _per(energy_j, counts.slo_requests),
        "energy_per_slo_request_adjusted_j": _per(adjusted_j, counts.slo_requests),
    }


def _latency(measured: Sequence[RequestRecord]) -> ServingLatency:
    return ServingLatency(
        ttft=percentiles([r.ttft_s for r in measured if r.completed and r.ttft_s is not None]),
        tpot=percentiles([r.tpot_s for r in measured if r.completed and r.tpot_s is not None]),
        itl=percentiles([gap for r in measured if r.completed for gap in r.itl_s]),
        e2e=percentiles([r.e2e_s for r in measured if r.e2e_s is not None]),
    )


def _rate_warnings(serving: ServingConfig, offered: float, achieved: float | None) -> list[str]:
    out = []
    target = serving.request_rate_req_s
    if target is not None and offered < target * (1 - OFFERED_RATE_TOLERANCE):
        out.append(
            f"offered rate {offered:.3g} req/s is {1 - offered / target:.0%} below the target {target:g} "
            "req/s: the load generator could not keep up"
        )
    if achieved is not None and achieved < SATURATION_FRACTION * offered:
        out.append(
            f"achieved rate {achieved:.3g} req/s in the steady window is {1 - achieved / offered:.0%} below "
            f"the offered {offered:.3g} req/s: the engine may not keep up with this load (saturation: "
            "queueing grows through the window)"
        )
    return out


def serving_result(
    serving: ServingConfig,
    trace: LoadTrace,
    window: Window | None,
    energy_j: float | None,
    baseline_power_w: float | None,
) -> tuple[ServingResult, list[str]]:
    """The ServingResult of a run and its warnings (besides `steady_window`'s).

    `energy_j` is the raw GPU energy inside `window` (None without a meter or for a rejected
    window), `baseline_power_w` the idle power (None without a baseline).
    """
    records = trace.records
    warnings: list[str] = []
    failed = [r for r in records if r.error is not None]
    if failed:
        warnings.append(
            f"{len(failed)} of {len(records)} requests failed (first: request {failed[0].index}: {failed[0].error})"
        )
    if serving.slo.ttft_ms is None and serving.slo.tpot_ms is None:
        warnings.append("no SLO bound set (serving.slo): every completed request counts as meeting the SLO")
    lags = sorted(r.lag_s * 1000 for r in records)
    offered = len(records) / trace.send_end_s if trace.send_end_s > 0 else 0.0
    fields: dict[str, float | None] = {}
    measured = [r for r in records if not r.warmup]
    counts = None
    if window is not None:
        measured = [r for r in measured if window.start_s <= r.sent_s <= window.end_s]
        counts = window_counts(records, window, serving.slo)
        if window.accepted:
            fields = window_energy(energy_j, baseline_power_w, window, counts)
    achieved = counts.requests / window.length_s if counts is not None and window is not None else None
    warnings += _rate_warnings(serving, offered, achieved)
    result = ServingResult(
        mode="rate" if serving.request_rate_req_s is not None else "concurrency",
        target_rate_req_s=serving.request_rate_req_s,
        burstiness=serving.burstiness if serving.request_rate_req_s is not None else None,
        concurrency=serving.concurrency,
        duration_s=serving.duration_s,
        warmup_requests=serving.warmup_requests,
        slo_ttft_ms=serving.slo.ttft_ms,
        slo_tpot_ms=serving.slo.tpot_ms,
        requests_sent=len(records),
        requests_completed=sum(r.completed for r in records),
        requests_failed=len(failed),
        send_phase_s=trace.send_end_s,
        drain_s=max(0.0, trace.end_s - trace.send_end_s),
        offered_rate_req_s=offered,
        generator_lag_p99_ms=quantile(lags, 0.99) if lags else None,
        generator_lag_max_ms=lags[-1] if lags else None,
        generator_fell_behind=send_lateness(records, window_start_s(records))[0] is not None,
        window_start_s=window.start_s if window else None,
        window_end_s=window.end_s if window else None,
        window_accepted=bool(window and window.accepted),
        measured_requests=len(measured),
        requests_in_window=counts.requests if counts else None,
        slo_requests_in_window=counts.slo_requests if counts else None,
        output_tokens_in_window=counts.output_tokens if counts else None,
        achieved_rate_req_s=achieved,
        slo_attainment=_per(counts.slo_requests, counts.requests) if counts else None,
        goodput_req_s=counts.slo_requests / window.length_s if counts and window else None,
        latency=_latency(measured),
        **fields,
    )
    return result, warnings
