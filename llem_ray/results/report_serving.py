"""The report's serving section: load curves and a table of the serving configurations.

- `plot_load_curves`: J per SLO-meeting request (left) and SLO attainment (right) against the
  offered request rate, one line per load curve (`summary.load_series`: configurations that
  differ only in their load), 95 % CI bars over cycles where a point has >= 2 cycles. A
  fixed-concurrency point (no configured rate) sits at its offered rate, drawn as a square and
  labelled `c<N>`. Log-log on the left: the cost per good request grows steeply past the knee.
- `serving_table_html`: one row per serving configuration: load, offered and achieved rate,
  TTFT/TPOT p50 and p99, SLO attainment, goodput, J/token, J/request, J per SLO-meeting request
  (raw and baseline-adjusted), window power.

Inputs are summary rows (`results.aggregate.SUMMARY_SCHEMA` as dicts) of `scenario: serving`.
Raises ImportError naming the extra without matplotlib.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from llem_ray.results.report_plots import DPI, plain_log_axis, pyplot


def _yerr(rows: Sequence[dict[str, Any]], metric: str, scale: float) -> list[list[float]]:
    lows, highs = [], []
    for r in rows:
        mean, low, high = r[f"{metric}_mean"], r[f"{metric}_ci95_low"], r[f"{metric}_ci95_high"]
        lows.append(max(0.0, mean - low) * scale if low is not None else 0.0)
        highs.append(max(0.0, high - mean) * scale if high is not None else 0.0)
    return [lows, highs]


def _curves(rows: Sequence[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    curves: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        if row["serving.offered_rate_req_s_mean"] is not None:
            curves.setdefault(row["load_series_label"] or row["name"], []).append(row)
    return {label: sorted(group, key=lambda r: r["serving.offered_rate_req_s_mean"]) for label, group in curves.items()}


def plot_load_curves(rows: Sequence[dict[str, Any]], path: Path) -> Path | None:
    """J per SLO-meeting request and SLO attainment vs offered rate (see module docstring); None if nothing to draw."""
    curves = _curves(rows)
    if not curves:
        return None
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.4))
    for ax, metric, scale, ylabel in (
        (axes[0], "serving.energy_per_slo_request_j", 1.0, "energy per SLO-meeting request (J)"),
        (axes[1], "serving.slo_attainment", 100.0, "SLO attainment (% of requests)"),
    ):
        drawn = [
            (label, [r for r in group if r[f"{metric}_mean"] is not None]) for label, group in sorted(curves.items())
        ]
        if not any(group for _, group in drawn):
            ax.text(
                0.5,
                0.5,
                "not measured: no accepted steady window with energy\n(or no request met the SLO)",
                ha="center",
                va="center",
                transform=ax.transAxes,
                color="0.4",
            )
        for label, group in drawn:
            if not group:
                continue
            xs = [r["serving.offered_rate_req_s_mean"] for r in group]
            line = ax.errorbar(
                xs,
                [r[f"{metric}_mean"] * scale for r in group],
                yerr=_yerr(group, metric, scale),
                marker="o",
                capsize=4,
                label=label,
            )
            for x, r in zip(xs, group):
                if r["serving.concurrency"] is not None:
                    ax.plot(
                        [x],
                        [r[f"{metric}_mean"] * scale],
                        marker="s",
                        markersize=11,
                        markerfacecolor="none",
                        color=line[0].get_color(),
                    )
                    ax.annotate(
                        f"c{r['serving.concurrency']}",
                        (x, r[f"{metric}_mean"] * scale),
                        textcoords="offset points",
                        xytext=(6, 6),
                        fontsize=8,
                    )
        ax.set_xscale("log")
        ax.xaxis.set_major_locator(plt.LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        ax.xaxis.set_major_formatter(plt.FuncFormatter(lambda value, _: f"{value:g}"))
        ax.xaxis.set_minor_locator(plt.NullLocator())
        ax.set_xlabel("offered load (requests/s)")
        ax.set_ylabel(ylabel)
        ax.grid(True, which="both", alpha=0.3)
    if axes[0].lines:
        axes[0].set_yscale("log")
        plain_log_axis(axes[0].yaxis, axes[0].get_ylim(), plt)
    axes[1].set_ylim(-3, 103)
    axes[0].set_title("Energy per request that met its SLO (bars: 95 % CI)")
    axes[1].set_title("Share of requests meeting the SLO")
    next((ax for ax in axes if ax.lines), axes[1]).legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


def _fmt(value: float | None, digits: int = 3) -> str:
    if value is None:
        return "–"
    return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.{digits}g}"


def _ci(row: dict[str, Any], metric: str, scale: float = 1.0) -> str:
    mean, low, high = row[f"{metric}_mean"], row[f"{metric}_ci95_low"], row[f"{metric}_ci95_high"]
    if mean is None:
        return "–"
    ci = f"<br><span class=ci>[{_fmt(low * scale)}, {_fmt(high * scale)}]</span>" if low is not None else ""
    return f"{_fmt(mean * scale)}{ci}"


def _load(row: dict[str, Any]) -> str:
    if row["serving.concurrency"] is not None:
        return f"concurrency {row['serving.concurrency']}"
    return f"{_fmt(row['serving.target_rate_req_s'])} req/s"


def serving_table_html(rows: Sequence[dict[str, Any]]) -> str:
    """The serving configurations as an HTML table (see module docstring)."""
    e = html.escape
    headers = [
        "configuration",
        "load",
        "cycles",
        "offered req/s",
        "achieved req/s",
        "TTFT p50 / p99 (ms)",
        "TPOT p50 / p99 (ms)",
        "SLO attainment (%)",
        "goodput (req/s)",
        "J / token (window)",
        "J / request",
        "J / SLO-meeting request",
        "adjusted J / SLO-meeting request",
        "power (W)",
    ]
    body = "".join(
        "<tr>"
        + "".join(
            f"<td>{c}</td>"
            for c in (
                f"{e(r['name'])}<br><span class=ci>{e(r['load_series_label'] or '')}</span>",
                e(_load(r)),
                str(r["n_cycles"]),
                _fmt(r["serving.offered_rate_req_s_mean"]),
                _fmt(r["serving.achieved_rate_req_s_mean"]),
                f"{_fmt(r['serving.latency.ttft.p50_ms_mean'])} / {_fmt(r['serving.latency.ttft.p99_ms_mean'])}",
                f"{_fmt(r['serving.latency.tpot.p50_ms_mean'])} / {_fmt(r['serving.latency.tpot.p99_ms_mean'])}",
                _ci(r, "serving.slo_attainment", 100.0),
                _fmt(r["serving.goodput_req_s_mean"]),
                _fmt(r["serving.energy_per_output_token_j_mean"]),
                _fmt(r["serving.energy_per_request_j_mean"]),
                _ci(r, "serving.energy_per_slo_request_j"),
                _fmt(r["serving.energy_per_slo_request_adjusted_j_mean"]),
                _fmt(r["serving.mean_power_w_mean"]),
            )
        )
        + "</tr>"
        for r in rows
    )
    head = "".join(f"<th>{h}</th>" for h in headers)
    return f'<table class="serving"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def serving_section(rows: Sequence[dict[str, Any]], out_dir: Path) -> list[str]:
    """The report's serving section (heading, note, load curves, table) for the serving `rows`; [] without any."""
    if not rows:
        return []
    path = plot_load_curves(rows, out_dir / "serving_load_curves.png")
    figure = (
        f'<figure><a href="{path.name}"><img src="{path.name}" alt="J per SLO-meeting request and SLO attainment '
        'vs offered load"></a></figure>'
        if path is not None
        else "<p class=note>No serving run has an offered rate yet: no load curves.</p>"
    )
    note = (
        "<p class=note>Each line is one configuration under rising load (configurations that differ only in "
        "<code>serving.request_rate_req_s</code> / <code>serving.concurrency</code>). Figures are over each run's "
        "steady window (after the warm-up requests, before the drain, &ge; 30 s); J per SLO-meeting request "
        "charges all of the window's energy to the requests that met their SLO, and is missing where the window "
        "was rejected, no energy was measured, or no request met the SLO. Adjusted = idle power &times; window "
        "subtracted.</p>"
    )
    return ["<h2>Serving: energy per SLO-meeting request vs load</h2>", note, figure, serving_table_html(rows)]
