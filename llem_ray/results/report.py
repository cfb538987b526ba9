"""`llem report STUDY_DIR`: an HTML report of a study, finished or not (RES-13..15, MEAS-07/08).

Reads the study directory the Ray engine writes (its manifest, from the store while the study runs
too: `results.manifest.read_manifest`, and each completed entry's `result_path`/`result.json` +
`timeseries.parquet`); without a manifest, every `result.json` below the directory. Writes into
`STUDY_DIR/report/` (or `out_dir`):

    report.html            one page, no external resources; images by relative link
    batch_scaling.png      J/token and tokens/s vs batch size, 95 % CI bars (offline configurations)
    pareto.png             tokens/s vs J/token with the Pareto front (offline configurations)
    serving_load_curves.png  J per SLO-meeting request and SLO attainment vs offered load, with a table
                           of the serving configurations (results.report_serving; serving studies only)
    timeline_<n>.png       power and temperature per configuration, windows shaded
    summary.csv / .parquet one row per configuration (results.aggregate.SUMMARY_SCHEMA)

A partial study (crashed, interrupted, still running) renders what completed and lists every
entry that did not, with its status, attempts and last error. Raises ConfigError when the
directory does not exist or holds neither a manifest nor any result; ImportError (naming the
`report` extra) without matplotlib or scipy.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from llem_ray.errors import ConfigError
from llem_ray.results import report_plots, report_serving
from llem_ray.results.aggregate import group_by_config, summary_table, write_summary
from llem_ray.results.manifest import MANIFEST_FILE, has_manifest, read_manifest
from llem_ray.results.persistence import RESULT_FILE, TIMESERIES_FILE, from_json
from llem_ray.results.schema import ExperimentResult

REPORT_DIR = "report"
REPORT_FILE = "report.html"
MAX_TIMELINES = 40
"""Timeline figures drawn at most (one per configuration); the rest are named as omitted."""


@dataclass(frozen=True)
class Missing:
    """A manifest entry without a usable result: status pending/running/failed, or unreadable."""

    key: str
    name: str
    cycle: int | None
    status: str
    attempts: int
    error: str | None


@dataclass
class StudyData:
    """What a study directory holds: its results (with their directories) and what is missing."""

    study_dir: Path
    name: str
    design_hash: str | None
    n_entries: int | None
    results: list[tuple[ExperimentResult, Path]] = field(default_factory=list)
    missing: list[Missing] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def load_study(study_dir: Path) -> StudyData:
    """The results and missing entries of `study_dir` (see module docstring). Raises ConfigError."""
    study_dir = Path(study_dir)
    if not study_dir.is_dir():
        raise ConfigError(f"{study_dir}: not a directory")
    if not has_manifest(study_dir):
        files = sorted(study_dir.rglob(RESULT_FILE))
        if not files:
            raise ConfigError(f"{study_dir}: no {MANIFEST_FILE} and no {RESULT_FILE} below it: nothing to report")
        data = StudyData(study_dir, study_dir.name, None, None)
        data.notes.append(f"no {MANIFEST_FILE}: reporting every {RESULT_FILE} found; what is missing is unknown")
        for path in files:
            try:
                data.results.append((from_json(path), path.parent))
            except (OSError, ValueError) as exc:  # one bad file must not hide the rest of the study
                data.notes.append(f"{path.relative_to(study_dir)} unreadable: {exc}")
        return data
    manifest = read_manifest(study_dir)
    data = StudyData(study_dir, manifest.study_name, manifest.study_design_hash, len(manifest.entries))
    for entry in sorted(manifest.entries, key=lambda e: e.order_index):
        if entry.status == "completed" and entry.result_path:
            try:
                result_dir = study_dir / entry.result_path
                data.results.append((from_json(result_dir / RESULT_FILE), result_dir))
                continue
            except (OSError, ValueError) as exc:  # completed but unusable (gone, bad JSON, schema): say why
                error = f"result unreadable: {exc}"
        else:
            error = entry.error
        data.missing.append(Missing(entry.key, entry.name, entry.cycle, entry.status, entry.attempts, error))
    return data


def _fmt(value: float | None, digits: int = 3) -> str:
    if value is None:
        return "–"
    return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.{digits}g}"


def _with_ci(row: dict[str, Any], metric: str) -> str:
    mean, low, high = row[f"{metric}_mean"], row[f"{metric}_ci95_low"], row[f"{metric}_ci95_high"]
    if mean is None:
        return "–"
    ci = f"<br><span class=ci>[{_fmt(low)}, {_fmt(high)}]</span>" if low is not None else ""
    return f"{_fmt(mean)}{ci}"


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]], cls: str = "") -> str:
    head = "".join(f"<th>{h}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f'<table class="{cls}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


HOST_BOUND_BADGE = (
    '<br><span class=warn title="GPU well under its power limit: J/token follows the host">host-bound</span>'
)


def _summary_html(rows: Sequence[dict[str, Any]]) -> str:
    e = html.escape
    body = [
        [
            f"{e(r['name'])}<br><span class=ci>{e(report_plots.series_label(r))}</span>"
            + (HOST_BOUND_BADGE if r["host_bound_any"] else ""),
            str(r["batch_size"]),
            str(r["n_cycles"]),
            e(r["measurement_methodology"]),
            _with_ci(r, "energy_per_output_token_j"),
            _fmt(r["energy_per_output_token_j_cv"], 2),
            _with_ci(r, "tokens_per_second"),
            _with_ci(r, "energy_adjusted_j"),
            _with_ci(r, "latency.ttft.p50_ms"),
            _fmt(r["peak_memory_mib_mean"]),
            _fmt(r["mean_gpu_utilization_pct_mean"]),
            e(r["kv_cache"]),
            str(r["n_warnings"]),
            e(r["ci_note"] or ""),
        ]
        for r in rows
    ]
    headers = [
        "configuration",
        "batch",
        "cycles",
        "method",
        "J / output token",
        "CV",
        "tokens/s",
        "adjusted energy (J)",
        "TTFT p50 (ms)",
        "peak memory (MiB)",
        "GPU util (%)",
        "KV cache",
        "warnings",
        "note",
    ]
    return _table(headers, body, "summary")


def _warnings_html(results: Sequence[ExperimentResult]) -> str:
    cycles: dict[tuple[str, str], list[str]] = {}
    for r in results:
        for w in r.measurement_warnings:
            cycles.setdefault((r.name, w), []).append(str(r.placement.cycle or "–"))
    if not cycles:
        return "<p>No measurement warnings.</p>"
    rows = [[html.escape(name), ", ".join(cs), html.escape(w)] for (name, w), cs in sorted(cycles.items())]
    return _table(["configuration", "cycles", "warning"], rows, "warnings")


def _missing_html(data: StudyData) -> str:
    if data.n_entries is None:
        return ""
    if not data.missing:
        return f'<p class="ok">Complete: all {data.n_entries} entries (configuration × cycle) have a result.</p>'
    rows = [
        [html.escape(m.name), str(m.cycle or "–"), m.status, str(m.attempts), html.escape(m.error or "")]
        for m in data.missing
    ]
    done = data.n_entries - len(data.missing)
    return (
        f'<div class="partial"><b>Partial study: {done} of {data.n_entries} entries have a result; '
        f"{len(data.missing)} missing.</b> Statistics below use the completed cycles only. "
        "Finish the study with <code>llem run STUDY.yaml --resume STUDY_DIR</code>.</div>"
        + _table(["configuration", "cycle", "status", "attempts", "last error"], rows, "missing")
    )


def _img(name: str | None, alt: str, missing_text: str) -> str:
    if name is None:
        return f"<p class=note>{html.escape(missing_text)}</p>"
    return f'<figure><a href="{name}"><img src="{name}" alt="{html.escape(alt)}"></a></figure>'


_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:2em auto;max-width:1200px;
color:#222;line-height:1.45;padding:0 1em}
h1{margin-bottom:.2em}h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:1.6em}
.meta{color:#555}table{border-collapse:collapse;font-size:.86em;margin:.6em 0;display:block;overflow-x:auto}
th,td{border:1px solid #ddd;padding:4px 7px;text-align:left;vertical-align:top}th{background:#f3f3f3}
table.summary td{text-align:right}
table.summary td:nth-child(1),table.summary td:nth-child(4),table.summary td:nth-child(n+12){text-align:left}
.ci{color:#777;font-size:.85em;white-space:nowrap}.warn{color:#b35900;font-weight:600;font-size:.85em}
.partial{background:#fff4e5;border:1px solid #f0b45a;padding:.6em .8em}
.ok{color:#1a7f37}.note{color:#777;font-style:italic}img{max-width:100%;border:1px solid #eee}
figure{margin:.8em 0}code{background:#f3f3f3;padding:0 .25em}
"""


def _statistics_note(rows: Sequence[dict[str, Any]]) -> str:
    few = any(1 < r["n_cycles"] < 5 for r in rows)
    text = (
        "Each configuration's cycles are summarised by mean, sample standard deviation (CV = std / mean) and a "
        "95 % bootstrap confidence interval of the mean (BCa, 9,999 resamples, fixed seed), shown in brackets. "
        "A configuration measured once has no interval. J/token is over the steady-state window where the "
        "method says <code>steady_state</code>, else over the whole measured window."
    )
    if few:
        text += (
            " With fewer than 5 cycles the bootstrap interval understates the uncertainty "
            "(it cannot be wider than the spread of the cycles); use 5 or more cycles for publication."
        )
    return f"<p class=note>{text}</p>"


def _timelines(data: StudyData, out_dir: Path) -> tuple[list[str], int]:
    by_hash = group_by_config([r for r, _ in data.results])
    dirs = {id(r): d for r, d in data.results}
    images = []
    for n, group in enumerate(list(by_hash.values())[:MAX_TIMELINES]):
        traces = []
        for result in group:
            ts_path = dirs[id(result)] / TIMESERIES_FILE
            if ts_path.is_file():
                traces.append(
                    report_plots.CycleTrace(
                        result.placement.cycle, pq.read_table(ts_path), result.duration_s, result.steady_state_window
                    )
                )
        path = report_plots.plot_timeline(group[0].name, traces, out_dir / f"timeline_{n + 1}.png")
        if path is not None:
            images.append(_img(path.name, f"power and temperature of {group[0].name}", ""))
    return images, max(0, len(by_hash) - MAX_TIMELINES)


def render_html(data: StudyData, rows: Sequence[dict[str, Any]], out_dir: Path) -> str:
    """The report page of `data` (summary `rows`), writing its figures into `out_dir`."""
    serving_rows = [r for r in rows if r["scenario"] == "serving"]
    offline_rows = [r for r in rows if r["scenario"] != "serving"]
    batch = report_plots.plot_batch_scaling(offline_rows, out_dir / "batch_scaling.png")
    pareto = report_plots.plot_pareto(offline_rows, out_dir / "pareto.png")
    timelines, omitted = _timelines(data, out_dir)
    no_energy = (
        "No completed results yet: nothing to plot."
        if not rows
        else "No energy was measured (no energy meter on the host that ran the study): no energy plot."
    )
    offline_figures = [
        "<h2>Energy and throughput vs batch size</h2>",
        _img(batch.name if batch else None, "J per token and tokens/s vs batch size", no_energy),
        "<h2>Speed–energy trade-off (Pareto front)</h2>",
        _img(pareto.name if pareto else None, "tokens/s vs J per token", no_energy),
    ]
    generated = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    meta = f"study directory <code>{html.escape(str(data.study_dir))}</code>"
    if data.design_hash:
        meta += f" · design hash <code>{html.escape(data.design_hash)}</code>"
    parts = [
        "<!DOCTYPE html><html lang=en><head><meta charset=utf-8>",
        f"<title>llem report: {html.escape(data.name)}</title><style>{_CSS}</style></head><body>",
        (
            f"<h1>Study {html.escape(data.name)}</h1><p class=meta>{meta}<br>generated {generated} · "
            f"{len(data.results)} results, {len(rows)} configurations</p>"
        ),
        *(f"<p class=note>{html.escape(n)}</p>" for n in data.notes),
        _missing_html(data),
        "<h2>Summary</h2>",
        _statistics_note(rows),
        _summary_html(rows),
        '<p>Download: <a href="summary.csv">summary.csv</a> · <a href="summary.parquet">summary.parquet</a></p>',
        *(offline_figures if offline_rows or not serving_rows else []),
        "<h2>Power and temperature timelines</h2>",
        "<p class=note>Grey: the measured window; green: the steady-state window where J/token was taken from it.</p>",
        *(timelines or ["<p class=note>No timeseries samples (no energy meter): no timelines.</p>"]),
        f"<p class=note>Timelines of {omitted} more configurations omitted; see their timeseries.parquet.</p>"
        if omitted
        else "",
        *report_serving.serving_section(serving_rows, out_dir),
        "<h2>Warnings</h2>",
        _warnings_html([r for r, _ in data.results]),
        "</body></html>",
    ]
    return "\n".join(p for p in parts if p)


def write_report(study_dir: Path, out_dir: Path | None = None) -> Path:
    """Write the report of `study_dir` into `out_dir` (default STUDY_DIR/report); returns report.html.

    Raises ConfigError (no such directory, nothing to report) or ImportError (matplotlib/scipy).
    """
    data = load_study(Path(study_dir))
    out_dir = Path(out_dir) if out_dir is not None else Path(study_dir) / REPORT_DIR
    out_dir.mkdir(parents=True, exist_ok=True)
    table = summary_table([r for r, _ in data.results])
    write_summary(table, out_dir)
    rows = table.to_pylist()
    path = out_dir / REPORT_FILE
    path.write_text(render_html(data, rows, out_dir), encoding="utf-8")
    return path
