"""The report's figures (matplotlib, Agg backend: no display needed), each written as one PNG.

- `plot_batch_scaling`: J/output-token and tokens/s against batch size, one line per
  model · backend · precision, with 95 % CI bars where a configuration has ≥ 2 cycles.
- `plot_pareto`: every configuration in the tokens/s – J/token plane, the Pareto front (no other
  configuration is both faster and cheaper) drawn as a step line and labelled.
- `plot_timeline`: power and temperature of one configuration, one panel per cycle, the measured
  window shaded grey and the steady-state window (when used) shaded green.

Inputs are summary rows (`results.aggregate.SUMMARY_SCHEMA` as dicts) and timeseries tables
(`results.timeseries.TIMESERIES_SCHEMA`). Raises ImportError naming the extra without matplotlib.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa

DPI = 110
TIMELINE_MARGIN_FRACTION = 0.15
"""Timelines show the measured window plus this fraction of it (at least TIMELINE_MARGIN_MIN_S) each side."""
TIMELINE_MARGIN_MIN_S = 0.5
POWER_COLORS = ("tab:blue", "tab:purple", "tab:cyan", "navy")
TEMPERATURE_COLORS = ("tab:red", "tab:orange", "tab:brown", "tab:pink")
"""Per GPU of a multi-GPU experiment, in UUID order."""


def pyplot() -> Any:
    """matplotlib.pyplot on the Agg backend. Raises ImportError naming the `report` extra without matplotlib."""
    try:
        import matplotlib
    except ImportError as exc:
        raise ImportError("plots need matplotlib: pip install 'llem-ray[report]' (or pip install matplotlib)") from exc
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


LOG_MINOR_SUBS = (1.25, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0)
"""Minor ticks of a log axis spanning < ~1 decade: dense enough that the top of a decade is labelled
(14,000 and 16,000 tokens/s have no tick between 10,000 and 20,000 with matplotlib's 2-9 subs)."""


def plain_log_axis(axis: Any, limits: tuple[float, float], plt: Any) -> None:
    """Label a log axis with plain numbers (0.25, not 2.5×10⁻¹); minor ticks too when it spans < ~1 decade."""
    low, high = limits
    plain = plt.FuncFormatter(lambda value, _: f"{value:g}")
    axis.set_major_formatter(plain)
    if low > 0 and high / low < 20:
        axis.set_minor_locator(plt.LogLocator(subs=LOG_MINOR_SUBS))
        axis.set_minor_formatter(plain)
    else:
        axis.set_minor_formatter(plt.NullFormatter())


def series_label(row: dict[str, Any]) -> str:
    """'model · backend · precision' of a summary row (the model without its organisation prefix)."""
    return f"{str(row['model']).rsplit('/', 1)[-1]} · {row['backend']} · {row['precision']}"


def _err(row: dict[str, Any], metric: str) -> tuple[float, float]:
    mean, low, high = row[f"{metric}_mean"], row[f"{metric}_ci95_low"], row[f"{metric}_ci95_high"]
    if low is None or high is None:
        return 0.0, 0.0
    return max(0.0, mean - low), max(0.0, high - mean)


def plot_batch_scaling(rows: Sequence[dict[str, Any]], path: Path) -> Path | None:
    """J/token and tokens/s vs batch size per model · backend · precision; None if no row has J/token."""
    if not any(r["energy_per_output_token_j_mean"] is not None for r in rows):
        return None
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    series: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        series.setdefault(series_label(row), []).append(row)
    batches = sorted({r["batch_size"] for r in rows})
    for ax, metric, ylabel in (
        (axes[0], "energy_per_output_token_j", "energy per output token (J)"),
        (axes[1], "tokens_per_second", "throughput (output tokens/s)"),
    ):
        for label, group in sorted(series.items()):
            group = sorted((r for r in group if r[f"{metric}_mean"] is not None), key=lambda r: r["batch_size"])
            if not group:
                continue
            errs = [_err(r, metric) for r in group]
            ax.errorbar(
                [r["batch_size"] for r in group],
                [r[f"{metric}_mean"] for r in group],
                yerr=[[e[0] for e in errs], [e[1] for e in errs]],
                marker="o",
                capsize=4,
                label=label,
            )
        ax.set_xscale("log", base=2)
        ax.set_xticks(batches, [str(b) for b in batches])
        ax.xaxis.set_minor_locator(plt.NullLocator())
        ax.set_yscale("log")
        plain_log_axis(ax.yaxis, ax.get_ylim(), plt)
        ax.set_xlabel("batch size (requests)")
        ax.set_ylabel(ylabel)
        ax.grid(True, which="both", alpha=0.3)
    axes[0].set_title("Energy per token (bars: 95 % CI over cycles)")
    axes[1].set_title("Throughput")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of the Pareto-optimal (tokens/s, J/token) points, by rising tokens/s.

    A point is optimal when no other point has at least its tokens/s and at most its J/token,
    with one of the two strictly better.
    """
    order = sorted(range(len(points)), key=lambda i: (-points[i][0], points[i][1]))
    front, best_j = [], float("inf")
    for i in order:
        if points[i][1] < best_j:
            front.append(i)
            best_j = points[i][1]
    return sorted(front, key=lambda i: points[i][0])


def plot_pareto(rows: Sequence[dict[str, Any]], path: Path) -> Path | None:
    """Tokens/s vs J/token of every configuration with the Pareto front; None if none has both."""
    usable = [
        r for r in rows if r["energy_per_output_token_j_mean"] is not None and r["tokens_per_second_mean"] is not None
    ]
    if not usable:
        return None
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(8, 5))
    series: dict[str, list[dict[str, Any]]] = {}
    for row in usable:
        series.setdefault(series_label(row), []).append(row)
    for label, group in sorted(series.items()):
        xerr = [_err(r, "tokens_per_second") for r in group]
        yerr = [_err(r, "energy_per_output_token_j") for r in group]
        ax.errorbar(
            [r["tokens_per_second_mean"] for r in group],
            [r["energy_per_output_token_j_mean"] for r in group],
            xerr=[[e[0] for e in xerr], [e[1] for e in xerr]],
            yerr=[[e[0] for e in yerr], [e[1] for e in yerr]],
            fmt="o",
            capsize=3,
            label=label,
            alpha=0.85,
        )
    points = [(r["tokens_per_second_mean"], r["energy_per_output_token_j_mean"]) for r in usable]
    front = pareto_front(points)
    ax.step(
        [points[i][0] for i in front],
        [points[i][1] for i in front],
        where="post",
        color="black",
        linewidth=1.2,
        marker="o",
        markersize=13,
        markerfacecolor="none",
        label="Pareto front",
    )
    for i, point in enumerate(points):
        ax.annotate(
            f"bs{usable[i]['batch_size']}",
            point,
            textcoords="offset points",
            xytext=(5, 5),
            fontsize=8,
            fontweight="bold" if i in front else "normal",
        )
    ax.set_xscale("log")
    ax.set_yscale("log")
    plain_log_axis(ax.xaxis, ax.get_xlim(), plt)
    plain_log_axis(ax.yaxis, ax.get_ylim(), plt)
    ax.set_xlabel("throughput (output tokens/s, higher is better)")
    ax.set_ylabel("energy per output token (J, lower is better)")
    ax.set_title("Speed vs energy: configurations on the front are not beaten on both")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


@dataclass(frozen=True)
class CycleTrace:
    """One cycle's timeseries and windows: measured window [0, duration_s]; `steady_window_s` or None."""

    cycle: int | None
    timeseries: pa.Table
    duration_s: float
    steady_window_s: tuple[float, float] | None


def plot_timeline(title: str, traces: Sequence[CycleTrace], path: Path) -> Path | None:
    """Power (left axis, W) and temperature (right axis, °C) per cycle; None if no trace has samples."""
    traces = [t for t in traces if t.timeseries.num_rows > 0]
    if not traces:
        return None
    plt = pyplot()
    fig, axes = plt.subplots(len(traces), 1, figsize=(10, 2.4 * len(traces) + 0.6), squeeze=False)
    for n, (ax, trace) in enumerate(zip(axes[:, 0], traces)):
        margin_s = max(TIMELINE_MARGIN_MIN_S, TIMELINE_MARGIN_FRACTION * trace.duration_s)
        data = trace.timeseries.to_pydict()
        keep = [i for i, t in enumerate(data["elapsed_s"]) if -margin_s <= t <= trace.duration_s + margin_s]
        ax.axvspan(0.0, trace.duration_s, color="0.85", label="measured window")
        if trace.steady_window_s is not None:
            ax.axvspan(*trace.steady_window_s, color="tab:green", alpha=0.25, label="steady state")
        temp_ax = ax.twinx()
        for d, uuid in enumerate(sorted({data["device_uuid"][i] for i in keep})):
            idx = [i for i in keep if data["device_uuid"][i] == uuid]
            times = [data["elapsed_s"][i] for i in idx]
            power_color = POWER_COLORS[d % len(POWER_COLORS)]
            temp_color = TEMPERATURE_COLORS[d % len(TEMPERATURE_COLORS)]
            ax.plot(
                times, [data["power_w"][i] for i in idx], color=power_color, linewidth=1.2, label=f"power {uuid[:12]}"
            )
            temp_ax.plot(
                times,
                [data["temperature_c"][i] for i in idx],
                color=temp_color,
                linewidth=1.0,
                linestyle="--",
                label=f"temperature {uuid[:12]}",
            )
        ax.set_xlim(-margin_s, trace.duration_s + margin_s)
        ax.set_ylabel("power (W, solid)")
        temp_ax.set_ylabel("temperature (°C, dashed)")
        ax.set_title(f"cycle {trace.cycle}" if trace.cycle is not None else "run", fontsize=9, loc="left")
        if n == 0:
            handles = ax.get_legend_handles_labels()[0] + temp_ax.get_legend_handles_labels()[0]
            ax.legend(handles=handles, fontsize=7, loc="lower right", bbox_to_anchor=(1.0, 1.0), ncol=4, frameon=False)
        ax.grid(True, alpha=0.3)
    axes[-1, 0].set_xlabel("time since the measured window began (s)")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path
