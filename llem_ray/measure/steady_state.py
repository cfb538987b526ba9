"""The steady-state window of a measurement and its validity (RES-03/04), after ML.ENERGY.

A workload ramps up (the first batch fills), runs at full batch, then drains (the last requests
finish with the batch part empty). Energy per token over the whole window mixes these phases;
ML.ENERGY reports the *steady state* instead: the time over which the running batch is full.

Method (pure functions, no I/O; `measure.assemble` calls `steady_state` once per experiment):
1. `request_spans` places each request on the measured window's time axis (s since it began):
   when it joined the running batch, its first token, its last token. A continuous-batching
   engine reports these itself (vLLM's scheduler timestamps, `RequestTiming.span_s`); for a
   static-batching backend (PyTorch: fixed batches run one after another) they are rebuilt from
   the batch times. Otherwise there are no spans and the result keeps `total`.
2. `steady_state_window`: from the first moment `batch_size` requests run together to the last
   moment the count falls below it (the drain). Short dips inside (a batch boundary, a request
   finishing before the scheduler admits the next one) stay in. For a continuous-batching
   engine `batch_size` is the most requests it runs at once (vLLM: its effective `max_num_seqs`,
   capped by the number of requests).
3. `tokens_in_window`: a request's first token at its first-token time, the rest spread evenly up
   to its last token; tokens are counted (fractionally) where they fall in the window.
4. `window_energy_j`: the difference of each GPU's energy counter, sampled at 10 Hz with the
   power, between the steady-state window's ends (`counter_energy_j`). Without sampled counters
   (a meter that has none), the counter's energy of the whole measured window times the share of
   the sampled power integral inside the steady-state window. The power reading trails the load
   (a 1 s average on Ampere and newer), which biases that share: on an H200, a serving window
   inside a longer run read ~1 % high that way (docs/methodology.md).
5. `validity_warnings` (ML.ENERGY's rules): window ≥ 30 s, every power reading ≤ 1.7 × the GPU's
   power limit (its TDP unless lowered), temperature within 20–95 °C.

`measurement_methodology` is `steady_state` when a window was found and its energy computed,
else `total` with a note saying why. `windowed` (a user-chosen window) is not produced yet.
"""

from __future__ import annotations

import math
from bisect import bisect_left, bisect_right
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import groupby, pairwise
from typing import Literal

from llem_ray.backends import registry as backend_registry
from llem_ray.backends.protocol import GenerationOutput
from llem_ray.energy.protocol import PowerSample

MIN_STEADY_STATE_S = 30.0
"""Shortest steady-state window ML.ENERGY accepts, s."""
MAX_POWER_TDP_RATIO = 1.7
"""A power reading above this multiple of the GPU's power limit is implausible (ML.ENERGY)."""
TEMPERATURE_RANGE_C = (20.0, 95.0)
"""GPU temperatures outside this range (°C) make a measurement suspect (ML.ENERGY)."""
MIN_WINDOW_SAMPLES = 2
"""Power samples (of one device) the window must hold to measure its energy."""
MAX_COUNTER_EXTRAPOLATION_S = 0.5
"""A window edge may lie this far beyond a device's first or last counter reading, s (the edge's
counter is then the nearest reading plus its power times the gap); further out, no counter energy."""

Methodology = Literal["total", "steady_state", "windowed"]


@dataclass(frozen=True)
class RequestSpan:
    """One request on the measured window's time axis, s since the window began.

    `start_s`: it joined the running batch; `end_s`: its last token; `first_token_s`: its first
    token (None when the backend cannot see it).
    """

    start_s: float
    end_s: float
    output_tokens: int
    first_token_s: float | None = None


@dataclass(frozen=True)
class WindowEnergy:
    """Energy per output token by methodology.

    `window_s`: (start_s, end_s) since the measured window began (None for `total`);
    `energy_j`: J in the window, all bound devices; `output_tokens`: tokens in the window
    (fractional at the edges); `energy_per_output_token_j`: J/token (None without energy);
    `warnings`: validity flags and the reason a steady state was not used.
    """

    methodology: Methodology
    window_s: tuple[float, float] | None
    energy_j: float | None
    output_tokens: float
    energy_per_output_token_j: float | None
    warnings: tuple[str, ...] = ()


def _batches_statically(backend: str) -> bool:
    """The spec of `backend` says `static_batching` (False for a backend not registered here)."""
    spec = backend_registry.find(backend)
    return spec is not None and spec.static_batching


def request_spans(backend: str, output: GenerationOutput, batch_size: int, duration_s: float) -> list[RequestSpan]:
    """Spans of every request of `output`, or [] when they cannot be had.

    Reported spans first: when every request carries `span_s`, those are the spans. Otherwise
    static batching only (a backend whose spec says `static_batching`): batch k holds requests k·B … (k+1)·B − 1
    and batches run back to back. The backend reports each batch's wall time but not when it
    began, so batches are laid end to end and stretched by `duration_s` / Σ batch times: the
    host work between batches is spread evenly instead of piling up at the end. Returns [] for
    other backends, or when the request count does not match the batches.
    """
    latencies, requests = output.batch_latencies_s, output.requests
    if requests and all(r.span_s is not None for r in requests):
        return [RequestSpan(r.span_s[0], r.span_s[2], r.output_tokens, r.span_s[1]) for r in requests if r.span_s]
    total_s = sum(latencies)
    if (
        not _batches_statically(backend)
        or batch_size < 1
        or not requests
        or len(latencies) != math.ceil(len(requests) / batch_size)
        or total_s <= 0
    ):
        return []
    scale = duration_s / total_s
    spans: list[RequestSpan] = []
    start_s = 0.0
    for k, latency_s in enumerate(latencies):
        end_s = start_s + latency_s * scale
        for request in requests[k * batch_size : (k + 1) * batch_size]:
            first = None if request.ttft_s is None else min(end_s, start_s + request.ttft_s * scale)
            spans.append(RequestSpan(start_s, end_s, request.output_tokens, first))
        start_s = end_s
    return spans


def steady_state_window(spans: Sequence[RequestSpan], batch_size: int) -> tuple[float, float] | None:
    """(start_s, end_s) over which at least `batch_size` requests run together, or None.

    Starts the first time the running count reaches `batch_size`, ends the last time it falls
    below (events at one instant are applied together, so back-to-back batches do not dip).
    None when the batch never fills (fewer requests than `batch_size`) or the window is empty.
    """
    running_spans = [s for s in spans if s.end_s > s.start_s]
    events = sorted([(s.start_s, 1) for s in running_spans] + [(s.end_s, -1) for s in running_spans])
    running, begin, end = 0, None, None
    for t_s, group in groupby(events, key=lambda e: e[0]):
        before = running
        running += sum(delta for _, delta in group)
        if begin is None and running >= batch_size:
            begin = t_s
        if before >= batch_size > running:
            end = t_s
    if begin is None or end is None or end <= begin:
        return None
    return begin, end


def _overlap_s(a_s: float, b_s: float, window: tuple[float, float]) -> float:
    return max(0.0, min(b_s, window[1]) - max(a_s, window[0]))


def tokens_in_window(spans: Sequence[RequestSpan], window: tuple[float, float]) -> float:
    """Output tokens emitted inside `window` (fractional at its edges).

    A request's first token counts at `first_token_s` (when known); its other tokens are spread
    evenly over the rest of the request (over all of it when the first-token time is unknown).
    """
    total = 0.0
    for span in spans:
        tokens, begin_s = float(span.output_tokens), span.start_s
        if span.first_token_s is not None and tokens >= 1:
            total += 1.0 if window[0] <= span.first_token_s <= window[1] else 0.0
            tokens, begin_s = tokens - 1, span.first_token_s
        if span.end_s > begin_s:
            total += tokens * _overlap_s(begin_s, span.end_s, window) / (span.end_s - begin_s)
        elif window[0] <= span.end_s <= window[1]:
            total += tokens
    return total


def _power_at(trace: Sequence[tuple[float, float]], times: Sequence[float], t_s: float) -> float:
    """Power of a sorted (t_s, power_w) trace at `t_s`, W: linear between samples, held beyond its ends."""
    i = bisect_right(times, t_s)
    if i == 0:
        return trace[0][1]
    if i == len(trace):
        return trace[-1][1]
    (t0, p0), (t1, p1) = trace[i - 1], trace[i]
    return p0 + (p1 - p0) * (t_s - t0) / (t1 - t0) if t1 > t0 else p1


def _integral_j(trace: Sequence[tuple[float, float]], a_s: float, b_s: float) -> float:
    """∫ power dt over [a_s, b_s] of a sorted (t_s, power_w) trace (see `_power_at`), J; O(samples)."""
    times = [t for t, _ in trace]
    inside = trace[bisect_right(times, a_s) : bisect_left(times, b_s)]
    knots = [(a_s, _power_at(trace, times, a_s)), *inside, (b_s, _power_at(trace, times, b_s))]
    return sum((t1 - t0) * (p0 + p1) / 2 for (t0, p0), (t1, p1) in pairwise(knots))


def _traces(samples: Sequence[PowerSample], window_start_s: float) -> dict[str, list[tuple[float, float]]]:
    traces: dict[str, list[tuple[float, float]]] = {}
    for s in samples:
        if s.power_w is not None:
            traces.setdefault(s.device_uuid, []).append((s.t_s - window_start_s, s.power_w))
    return {uuid: sorted(points) for uuid, points in traces.items()}


def _counter_at(readings: Sequence[tuple[float, float, float | None]], t_s: float) -> float | None:
    """A device's counter (J) at `t_s` from sorted (t_s, counter_j, power_w) readings; None out of reach.

    Linear between readings; up to MAX_COUNTER_EXTRAPOLATION_S beyond the first or last, that
    reading plus its power times the gap (None without a power reading there).
    """
    times = [t for t, _, _ in readings]
    i = bisect_left(times, t_s)
    if i < len(readings) and times[i] == t_s:
        return readings[i][1]
    if 0 < i < len(readings):
        (t0, c0, _), (t1, c1, _) = readings[i - 1], readings[i]
        return c0 + (c1 - c0) * (t_s - t0) / (t1 - t0)
    t_near, c_near, p_near = readings[0] if i == 0 else readings[-1]
    if abs(t_s - t_near) > MAX_COUNTER_EXTRAPOLATION_S or p_near is None:
        return None
    return c_near + p_near * (t_s - t_near)


def counter_energy_j(
    samples: Sequence[PowerSample], window_start_s: float, window: tuple[float, float]
) -> float | None:
    """Energy in `window` (s since `window_start_s`) from the sampled energy counters, J, all devices.

    None when a device with power samples has no counter readings, a window edge is out of reach
    of a device's readings (see `_counter_at`), or a counter runs backwards (a reset).
    """
    readings: dict[str, list[tuple[float, float, float | None]]] = {}
    powered = {s.device_uuid for s in samples if s.power_w is not None}
    for s in samples:
        if s.energy_counter_j is not None:
            readings.setdefault(s.device_uuid, []).append((s.t_s - window_start_s, s.energy_counter_j, s.power_w))
    if not readings or not powered <= readings.keys():
        return None
    total_j = 0.0
    for points in readings.values():
        points.sort()
        begin_j, end_j = _counter_at(points, window[0]), _counter_at(points, window[1])
        if begin_j is None or end_j is None or end_j < begin_j:
            return None
        total_j += end_j - begin_j
    return total_j


def window_energy_j(
    samples: Sequence[PowerSample],
    window_start_s: float,
    duration_s: float,
    window: tuple[float, float],
    energy_total_j: float | None,
) -> float | None:
    """Energy in `window` (s since `window_start_s`, Unix s), all devices, J; None if unknown.

    From the sampled counters when every device has them (`counter_energy_j`). Otherwise, with the
    counter's `energy_total_j` over [0, `duration_s`]: that energy times the share of the sampled
    power integral inside `window`; without it, the power integral itself. None when no device has
    MIN_WINDOW_SAMPLES power samples inside `window`, or the integral is not positive.
    """
    traces = _traces(samples, window_start_s)
    if not any(sum(window[0] <= t <= window[1] for t, _ in trace) >= MIN_WINDOW_SAMPLES for trace in traces.values()):
        return None
    counter_j = counter_energy_j(samples, window_start_s, window)
    if counter_j is not None:
        return counter_j
    part_j = sum(_integral_j(trace, *window) for trace in traces.values())
    if energy_total_j is None:
        return part_j
    whole_j = sum(_integral_j(trace, 0.0, duration_s) for trace in traces.values())
    return energy_total_j * part_j / whole_j if whole_j > 0 else None


def validity_warnings(
    window: tuple[float, float],
    samples: Sequence[PowerSample],
    window_start_s: float,
    power_limits_w: Mapping[str, float | None],
    *,
    steady: bool,
) -> list[str]:
    """ML.ENERGY's validity rules over the samples inside `window` (s since `window_start_s`).

    Flags a steady-state window (`steady`) under MIN_STEADY_STATE_S, any power reading above
    MAX_POWER_TDP_RATIO × its device's power limit (devices without a known limit are skipped),
    and temperatures outside TEMPERATURE_RANGE_C. Empty when nothing is flagged.
    """
    out = []
    inside = [s for s in samples if window[0] <= s.t_s - window_start_s <= window[1]]
    if steady and window[1] - window[0] < MIN_STEADY_STATE_S:
        out.append(
            f"steady-state window {window[1] - window[0]:.1f} s < {MIN_STEADY_STATE_S:.0f} s "
            "(ML.ENERGY validity rule): J/token is noisy"
        )
    for uuid in sorted({s.device_uuid for s in inside}):
        limit_w = power_limits_w.get(uuid)
        peak_w = max((s.power_w for s in inside if s.device_uuid == uuid and s.power_w is not None), default=None)
        if limit_w and peak_w is not None and peak_w > MAX_POWER_TDP_RATIO * limit_w:
            out.append(
                f"power reading {peak_w:.0f} W on {uuid} > {MAX_POWER_TDP_RATIO} x its {limit_w:.0f} W limit: "
                "implausible reading (ML.ENERGY validity rule)"
            )
    temps = [s.temperature_c for s in inside if s.temperature_c is not None]
    low_c, high_c = TEMPERATURE_RANGE_C
    if temps and (min(temps) < low_c or max(temps) > high_c):
        out.append(
            f"GPU temperature {min(temps):.0f}-{max(temps):.0f} °C outside {low_c:.0f}-{high_c:.0f} °C "
            "(ML.ENERGY validity rule)"
        )
    return out


def _fallback_reason(spans: Sequence[RequestSpan], window: tuple[float, float] | None, batch_size: int) -> str:
    if not spans:
        return "no per-request timing from this backend: J/token over the whole measured window"
    if window is None:
        return f"the batch never ran full ({batch_size} requests at once): J/token over the whole measured window"
    return (
        f"steady-state window {window[0]:.2f}-{window[1]:.2f} s holds fewer than {MIN_WINDOW_SAMPLES} power "
        "samples per device: J/token over the whole measured window"
    )


def steady_state(
    spans: Sequence[RequestSpan],
    *,
    batch_size: int,
    duration_s: float,
    output_tokens: int,
    energy_total_j: float | None,
    samples: Sequence[PowerSample],
    window_start_s: float,
    power_limits_w: Mapping[str, float | None],
) -> WindowEnergy:
    """J/token over the steady-state window when there is one, else over the whole window.

    `spans` from `request_spans`; `duration_s`, `output_tokens` and `energy_total_j` (counter, J;
    None without a meter) describe the whole measured window, which began at `window_start_s`
    (Unix s, the time base of `samples`, which may include samples outside the window).
    `power_limits_w` maps GPU UUID to its power limit, W. Never raises on missing data: without
    energy it returns `total` with no warnings (the experiment says why there is no energy);
    otherwise the warnings say why the whole window was used, plus the validity flags.
    """
    if energy_total_j is None:
        return WindowEnergy("total", None, None, float(output_tokens), None)
    window = steady_state_window(spans, batch_size)
    if window is not None:
        energy_j = window_energy_j(samples, window_start_s, duration_s, window, energy_total_j)
        tokens = tokens_in_window(spans, window)
        if energy_j is not None and tokens > 0:
            flags = validity_warnings(window, samples, window_start_s, power_limits_w, steady=True)
            return WindowEnergy("steady_state", window, energy_j, tokens, energy_j / tokens, tuple(flags))
    flags = validity_warnings((0.0, duration_s), samples, window_start_s, power_limits_w, steady=False)
    per_token = energy_total_j / output_tokens if output_tokens > 0 else None
    return WindowEnergy(
        "total",
        None,
        energy_total_j,
        float(output_tokens),
        per_token,
        (_fallback_reason(spans, window, batch_size), *flags),
    )
