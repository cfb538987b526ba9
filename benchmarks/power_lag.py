"""How far a GPU's sampled power trails its energy counter, and what that does to window energies.

NVML's power reading is a 1 s average on Ampere and newer GPUs, so it trails the load. A window's
energy taken as "the counter over the run x the window's share of the sampled power" is then
biased wherever the load changes near the run's ends; since 436bef1 llem_ray takes window
energies from the sampled counter itself (`energy_counter_j`). This reads saved results (any
directory holding `result.json` + `timeseries.parquet` pairs, e.g. a study directory) and prints,
per run:

- `lag_s`: how far the power samples trail the counter, searched from -0.5 to 1.5 s in 10 ms steps
  (a 1 s average trails by ~0.5 s, and a wider range finds false matches where the load changes at
  a run's end). Where the timeseries has the counter (`energy_counter_j`), it is measured: the shift
  that brings the samples' running integral closest (root mean square, J) to the counter's running
  total over the whole timeseries, marked `(counter)`. Without it, it is fitted: the shift that makes
  the samples' integral over the measured window equal the counter's `energy_total_j`, marked `(fit)`;
  a fit that ends on the range's edge found no match;
- J/token as recorded (`energy_per_output_token_j`), from the share of the power samples shifted by
  that lag, and from the sampled counter where the timeseries has it;
- per configuration of each directory given, the mean of each; and, where a directory holds a
  fixed-concurrency serving configuration and an offline one, serving's difference from offline by
  each method.

    python benchmarks/power_lag.py /tmp/sstudy2

Runs without a steady or serving window, or without energy, are skipped (and counted).
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections import defaultdict
from dataclasses import replace
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from llem_ray.energy.protocol import PowerSample
from llem_ray.measure.steady_state import counter_energy_j, window_energy_j

LAG_RANGE_S = (-0.5, 1.5)
LAG_STEP_S = 0.01
METHODS = ("recorded", "lag_corrected", "counter")


def _samples(path: Path) -> tuple[list[PowerSample], float]:
    """The GPU samples of a timeseries and the Unix time (s) its measured window began."""
    rows = pq.read_table(path).to_pylist()
    samples = [
        PowerSample(r["t_s"], r["device_uuid"], r["power_w"], energy_counter_j=r.get("energy_counter_j"))
        for r in rows
        if r["power_w"] is not None
    ]
    return samples, rows[0]["t_s"] - rows[0]["elapsed_s"]


def fitted_lag_s(plain: list[PowerSample], start_s: float, duration_s: float, energy_j: float) -> float:
    """The lag (s) of the power of `plain` (samples without counters) behind the counter's `energy_j`."""

    def mismatch_j(lag_s: float) -> float:
        whole_j = window_energy_j(plain, start_s + lag_s, duration_s, (0.0, duration_s), None)
        return abs((whole_j or 0.0) - energy_j)

    return min(_lag_grid(), key=mismatch_j)


def measured_lag_s(samples: list[PowerSample]) -> float | None:
    """The lag (s) of the power behind the sampled counter, mean over devices; None without counters."""
    by_device = defaultdict(list)
    for s in samples:
        if s.energy_counter_j is not None:
            by_device[s.device_uuid].append(s)
    lags = [_trace_lag_s(trace) for trace in by_device.values() if len(trace) >= 3]
    return statistics.fmean(lags) if lags else None


def _trace_lag_s(trace: list[PowerSample]) -> float:
    """The shift (s) of one device's power whose running integral best matches its counter (RMS, J)."""
    t = np.array([s.t_s for s in trace])
    power_w = np.array([s.power_w for s in trace])
    integral_j = np.concatenate([[0.0], np.cumsum(np.diff(t) * (power_w[1:] + power_w[:-1]) / 2)])
    counted_j = np.array([s.energy_counter_j for s in trace]) - trace[0].energy_counter_j

    def mismatch_j(lag_s: float) -> float:
        keep = t + lag_s <= t[-1]
        shifted_j = np.interp(t[keep] + lag_s, t, integral_j) - np.interp(t[0] + lag_s, t, integral_j)
        return float(np.sqrt(np.mean((shifted_j - counted_j[keep]) ** 2)))

    return min(_lag_grid(), key=mismatch_j)


def _lag_grid() -> list[float]:
    """The lags (s) searched, LAG_RANGE_S in LAG_STEP_S steps."""
    steps = round((LAG_RANGE_S[1] - LAG_RANGE_S[0]) / LAG_STEP_S)
    return [LAG_RANGE_S[0] + i * LAG_STEP_S for i in range(steps + 1)]


def run_figures(result_path: Path) -> dict | None:
    """Name, kind and the J/token of one run by each method, or None when it has no window energy."""
    result = json.loads(result_path.read_text())
    serving = result.get("serving")
    window = result.get("steady_state_window")
    energy_j, recorded = result.get("energy_total_j"), result.get("energy_per_output_token_j")
    if not window or energy_j is None or recorded is None:
        return None
    samples, start_s = _samples(result_path.parent / "timeseries.parquet")
    duration_s, window = result["duration_s"], (window[0], window[1])
    plain = [replace(s, energy_counter_j=None) for s in samples]
    lag_s = measured_lag_s(samples)
    lag_method = "counter"
    if lag_s is None:
        lag_s, lag_method = fitted_lag_s(plain, start_s, duration_s, energy_j), "fit"
    # the window's tokens: a serving run records them; offline, from the energy the run itself took
    # (by the method of its code) over its J/token
    tokens = (serving or {}).get("output_tokens_in_window") or (
        (window_energy_j(samples, start_s, duration_s, window, energy_j) or 0.0) / recorded
    )
    shifted_window_j = window_energy_j(plain, start_s + lag_s, duration_s, window, energy_j)
    counter_j = counter_energy_j(samples, start_s, window)
    kind = "offline" if serving is None else serving["mode"]
    return {
        "name": result["name"],
        "kind": kind,
        "lag_s": lag_s,
        "lag_method": lag_method,
        "recorded": recorded,
        "lag_corrected": shifted_window_j / tokens if tokens and shifted_window_j else None,
        "counter": counter_j / tokens if tokens and counter_j else None,
    }


def report(directory: Path) -> None:
    """Print the figures of every run below `directory`, then per configuration and the gap."""
    runs, skipped = [], 0
    for path in sorted(directory.rglob("result.json")):
        if (path.parent / "timeseries.parquet").exists():
            figures = run_figures(path)
            if figures is None:
                skipped += 1
            else:
                runs.append(figures)
    print(f"{directory}:")
    for run in runs:
        cells = "  ".join(f"{m} {run[m]:.5f}" if run[m] is not None else f"{m} -" for m in METHODS)
        lag = f"lag {run['lag_s']:+.2f} s ({run['lag_method']})"
        print(f"  {run['name']:<40} {run['kind']:<12} {lag}  J/token: {cells}")
    by_name = defaultdict(list)
    for run in runs:
        by_name[(run["name"], run["kind"])].append(run)
    means = {}
    for (name, kind), group in by_name.items():
        means[(name, kind)] = {
            m: statistics.fmean(r[m] for r in group) if all(r[m] is not None for r in group) else None for m in METHODS
        }
        cells = "  ".join(f"{m} {v:.5f}" if (v := means[(name, kind)][m]) else f"{m} -" for m in METHODS)
        lags = [r["lag_s"] for r in group]
        print(f"  mean {name} ({kind}, {len(group)} runs, lag {min(lags):.2f}-{max(lags):.2f} s): {cells}")
    offline = [v for (_, kind), v in means.items() if kind == "offline"]
    for (name, kind), mean in means.items():
        if kind == "concurrency" and len(offline) == 1:
            gaps = "  ".join(
                f"{m} {100 * (mean[m] / offline[0][m] - 1):+.2f} %" for m in METHODS if mean[m] and offline[0][m]
            )
            print(f"  serving {name} vs offline: {gaps}")
    if skipped:
        print(f"  skipped {skipped} runs without a window energy")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("directories", nargs="+", type=Path, help="study or result directories, each reported apart")
    for directory in parser.parse_args().directories:
        report(directory)


if __name__ == "__main__":
    main()
