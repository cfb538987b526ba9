"""What a study shows while it runs (stderr) and when it ends (stdout) (CLI-08..11).

`Progress` is a tqdm bar on stderr: completed (or finally failed) items out of all, with running and
failed counts and a countdown while the next item waits for a gap or a scheduled cycle; an item that
fails for good gets one line with its cause.
`summary_table` is the plain-text table printed on stdout at the end: one line per configuration,
aggregated over its cycles (J/token mean and coefficient of variation, tokens/s, energy).
"""

from __future__ import annotations

import statistics
import sys
from collections import defaultdict

import pyarrow as pa
from tqdm import tqdm

from llem_ray.entry import terminal_safe


class Progress:
    """tqdm progress bar on stderr; disabled with `quiet`."""

    def __init__(self, total: int, initial: int, description: str, quiet: bool):
        self._bar = tqdm(
            total=total, initial=initial, desc=description, unit="exp", file=sys.stderr, disable=quiet, dynamic_ncols=True
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


def summary_table(table: pa.Table, configs: dict[str, tuple[str, int, int]]) -> str:
    """One line per configuration with its cycles aggregated, in the study's order.

    `configs`: measurement_config_hash -> (name, items in the study, items failed for good).
    Columns: name, cycles completed/total, J/token mean and CV (%), tok/s mean, energy (J), failed.
    """
    rows = table.select(["measurement_config_hash", "energy_per_output_token_j", "tokens_per_second", "energy_total_j"])
    by_hash: dict[str, list[dict]] = defaultdict(list)
    for row in rows.to_pylist():
        by_hash[row["measurement_config_hash"]].append(row)
    header = f"{'experiment':<40} {'cycles':>7} {'J/token':>10} {'CV %':>6} {'tok/s':>10} {'energy J':>11} {'failed':>6}"
    lines = [header, "-" * len(header)]
    for digest, (name, total, failed) in configs.items():
        done = by_hash.get(digest, [])
        jpt = [r["energy_per_output_token_j"] for r in done if r["energy_per_output_token_j"] is not None]
        tps = [r["tokens_per_second"] for r in done if r["tokens_per_second"] is not None]
        energy = [r["energy_total_j"] for r in done if r["energy_total_j"] is not None]
        mean_jpt = statistics.fmean(jpt) if jpt else None
        cv = statistics.stdev(jpt) / mean_jpt * 100 if len(jpt) > 1 and mean_jpt else None
        lines.append(
            f"{name[:40]:<40} {len(done):>3}/{total:<3} {_fmt(mean_jpt, '.4g'):>10} {_fmt(cv, '.1f'):>6} "
            f"{_fmt(statistics.fmean(tps) if tps else None, '.1f'):>10} "
            f"{_fmt(sum(energy) if energy else None, '.1f'):>11} {failed:>6}"
        )
    return "\n".join(lines)
