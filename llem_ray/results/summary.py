"""A terminal summary of one result that a person can read (energy, J/token, tok/s, warnings)."""

from __future__ import annotations

from llem_ray.results.schema import ExperimentResult, Percentiles, ServingResult


def _num(value: float | None, unit: str, digits: int = 3) -> str:
    if value is None:
        return "n/a"
    return f"{value:,.{digits}g} {unit}" if abs(value) < 1000 else f"{value:,.0f} {unit}"


def _p50_p99(stats: Percentiles | None) -> str:
    return "n/a" if stats is None else f"{stats.p50_ms:,.1f} / {stats.p99_ms:,.1f} ms"


def _serving_lines(s: ServingResult) -> list[str]:
    load = f"{s.target_rate_req_s:g} req/s" if s.target_rate_req_s is not None else f"concurrency {s.concurrency}"
    window = (
        "no steady window"
        if s.window_start_s is None
        else (
            f"steady window {s.window_start_s:.1f}-{s.window_end_s:.1f} s"
            f"{'' if s.window_accepted else ' (rejected: < 30 s)'}"
        )
    )
    attainment = "n/a" if s.slo_attainment is None else f"{s.slo_attainment:.1%}"
    return [
        f"  serving       {load} for {_num(s.duration_s, 's')}: offered {_num(s.offered_rate_req_s, 'req/s')}, "
        f"achieved {_num(s.achieved_rate_req_s, 'req/s')}, {s.requests_sent} sent, {s.requests_failed} failed",
        f"  latency       TTFT {_p50_p99(s.latency.ttft)}, TPOT {_p50_p99(s.latency.tpot)} (p50 / p99)",
        f"  SLO           {attainment} met, goodput {_num(s.goodput_req_s, 'req/s')}; {window}",
        f"  J/request     {_num(s.energy_per_request_j, 'J')}, per SLO-meeting request "
        f"{_num(s.energy_per_slo_request_j, 'J')} raw, {_num(s.energy_per_slo_request_adjusted_j, 'J')} adjusted; "
        f"window power {_num(s.mean_power_w, 'W')}",
    ]


def format_result(result: ExperimentResult) -> str:
    """Multi-line plain-text summary of `result` (no colour codes; safe to log)."""
    lines = [
        f"{result.name}  [{result.model} · {result.backend} · {result.precision} · batch {result.batch_size}"
        f" · {result.device}]",
        f"  requests      {result.n_requests}   tokens in/out {result.input_tokens:,} / {result.output_tokens:,}",
        f"  duration      {_num(result.duration_s, 's')}   throughput {_num(result.tokens_per_second, 'tok/s')}",
    ]
    if result.energy_total_j is None:
        lines.append("  energy        not measured")
    else:
        lines.append(
            f"  energy        {_num(result.energy_total_j, 'J')} raw, {_num(result.energy_adjusted_j, 'J')} "
            f"baseline-adjusted (idle {_num(result.baseline_power_w, 'W')}, {result.energy_meter})"
        )
        lines.append(f"  J/token       {_num(result.energy_per_output_token_j, 'J')} per output token")
    for label, phase in (("prefill", result.prefill), ("decode", result.decode)):
        if phase is not None:
            lines.append(
                f"  {label:<13} {_num(phase.duration_s, 's')}, {_num(phase.energy_per_token_j, 'J/token')}, "
                f"{_num(phase.tokens_per_second, 'tok/s')}"
            )
    if result.serving is not None:
        lines += _serving_lines(result.serving)
    elif result.latency.ttft is not None:
        lines.append(f"  TTFT p50/p99  {result.latency.ttft.p50_ms:,.1f} / {result.latency.ttft.p99_ms:,.1f} ms")
    if result.energy_facility_j is not None or result.co2e_g is not None:
        lines.append(f"  facility      {_num(result.energy_facility_j, 'J')}, {_num(result.co2e_g, 'g CO2e')}")
    for warning in result.measurement_warnings:
        lines.append(f"  warning: {warning}")
    return "\n".join(lines)
