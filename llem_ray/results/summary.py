"""A terminal summary of one result that a person can read (energy, J/token, tok/s, warnings)."""

from __future__ import annotations

from llem_ray.results.schema import ExperimentResult


def _num(value: float | None, unit: str, digits: int = 3) -> str:
    if value is None:
        return "n/a"
    return f"{value:,.{digits}g} {unit}" if abs(value) < 1000 else f"{value:,.0f} {unit}"


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
    if result.latency.ttft is not None:
        lines.append(f"  TTFT p50/p99  {result.latency.ttft.p50_ms:,.1f} / {result.latency.ttft.p99_ms:,.1f} ms")
    if result.energy_facility_j is not None or result.co2e_g is not None:
        lines.append(f"  facility      {_num(result.energy_facility_j, 'J')}, {_num(result.co2e_g, 'g CO2e')}")
    for warning in result.measurement_warnings:
        lines.append(f"  warning: {warning}")
    return "\n".join(lines)
