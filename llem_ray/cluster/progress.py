"""What a study shows while it runs (stderr) and when it ends (stdout) (CLI-08..11).

`Progress` is a tqdm bar on stderr: completed (or finally failed) items out of all, with running and
failed counts and a countdown while the next item waits for a gap or a scheduled cycle; an item that
fails for good gets one line with its cause.
`summary_table` is the plain-text table printed on stdout at the end: one line per configuration,
aggregated over its cycles: the metrics marked `Metric(progress=...)` on ExperimentResult (J/token
mean and coefficient of variation, tokens/s, energy per cycle).
"""

from __future__ import annotations

import statistics
import sys
from collections import defaultdict

import pyarrow as pa
from tqdm import tqdm

from llem_ray.entry import terminal_safe
from llem_ray.results.columns import Column
from llem_ray.results.table import RESULT_COLUMNS


class Progress:
    """tqdm progress bar on stderr; disabled with `quiet`."""

    def __init__(self, total: int, initial: int, description: str, quiet: bool):
        self._bar = tqdm(
            total=total,
            initial=initial,
            desc=description,
            unit="exp",
            file=sys.stderr,
            disable=quiet,
            dynamic_ncols=True,
        )
        self._last = ""

    def advance(self) -> None:
        """One more item finished (completed or failed for good)."""
        self._bar.update(1)

    def failed(self, name: str, cycle: int, error: str) -> None:
        """An item failed for good: one line on stderr with its cause, above the bar (even with quiet)."""
        tqdm.write(terminal_safe(f"llem: {name} cycle {cycle} failed: {error}"), file=sys.stderr)

    def status(self, running: int, failed: int, waiting: str) -> None:
        """Refresh the postfix: running and failed counts, and what the next item waits for."""
        text = f"running {running}, failed {failed}" + (f", {waiting}" if waiting else "")
        if text != self._last:
            self._last = text
            self._bar.set_postfix_str(text)

    def close(self) -> None:
        self._bar.close()


def clock_text(seconds: float) -> str:
    """A countdown as M:SS or H:MM:SS (rounded up to whole seconds)."""
    seconds = int(seconds + 0.999)
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60:d}:{rest % 60:02d}"


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


PROGRESS_METRICS: tuple[Column, ...] = tuple(c for c in RESULT_COLUMNS if c.metric and c.metric.progress)
"""Study-table columns marked `Metric(progress=...)` on ExperimentResult: the end-of-study table's metrics."""


def summary_table(table: pa.Table, configs: dict[str, tuple[str, int, int]]) -> str:
    """One line per configuration with its cycles aggregated, in the study's order.

    `table`: the study table (STUDY_TABLE_SCHEMA rows). `configs`: measurement_config_hash -> (name,
    items in the study, items failed for good). Columns: name, cycles completed/total, then per
    PROGRESS_METRICS column its mean over the completed cycles (and its CV in % for a "ci" metric,
    with two cycles or more), then failed. "-" where nothing was measured.
    """
    names = [c.name for c in PROGRESS_METRICS]
    by_hash: dict[str, list[dict]] = defaultdict(list)
    for row in table.select(["measurement_config_hash", *names]).to_pylist():
        by_hash[row["measurement_config_hash"]].append(row)
    headers = [f"{'experiment':<40}", f"{'cycles':>7}"]
    for column in PROGRESS_METRICS:
        headers.append(f"{column.metric.progress:>10}")
        if column.metric.summary == "ci":
            headers.append(f"{'CV %':>6}")
    header = " ".join([*headers, f"{'failed':>6}"])
    lines = [header, "-" * len(header)]
    for digest, (name, total, failed) in configs.items():
        done = by_hash.get(digest, [])
        cells = [f"{name[:40]:<40}", f"{len(done):>3}/{total:<3}"]
        for column in PROGRESS_METRICS:
            values = [r[column.name] for r in done if r[column.name] is not None]
            mean = statistics.fmean(values) if values else None
            cells.append(f"{_fmt(mean, column.metric.progress_format):>10}")
            if column.metric.summary == "ci":
                cv = statistics.stdev(values) / abs(mean) * 100 if len(values) > 1 and mean else None
                cells.append(f"{_fmt(cv, '.1f'):>6}")
        lines.append(" ".join([*cells, f"{failed:>6}"]))
    return "\n".join(lines)
