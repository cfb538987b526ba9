"""benchmarks/study_job.py's consistency check: the verdict on the means, and what the cycles can tell."""

from __future__ import annotations

import importlib.util
import statistics
from pathlib import Path

from scipy import stats

_SPEC = importlib.util.spec_from_file_location(
    "study_job", Path(__file__).resolve().parents[2] / "benchmarks" / "study_job.py"
)
study_job = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(study_job)

PREFIX = "energy_per_output_token_j"


def _row(name: str, values: list[float], concurrency: str = "") -> dict[str, str]:
    mean = statistics.fmean(values)
    return {
        "name": name,
        "scenario": "serving" if concurrency else "offline",
        "serving.concurrency": concurrency,
        "serving.energy_per_output_token_j_mean": str(mean) if concurrency else "",
        "model": "m",
        "backend": "vllm",
        "measurement_methodology": "steady_state",
        f"{PREFIX}_n": str(len(values)),
        f"{PREFIX}_mean": str(mean),
        f"{PREFIX}_std": str(statistics.stdev(values)),
    }


def test_the_difference_interval_is_welchs_and_says_when_the_cycles_cannot_tell():
    serving, offline = [0.03918, 0.04090, 0.04002], [0.03888, 0.03968, 0.03890]
    low, high = study_job.difference_interval(_row("s", serving, "512"), _row("o", offline), PREFIX)
    welch = stats.ttest_ind(serving, offline, equal_var=False).confidence_interval(0.95)
    mean_o = statistics.fmean(offline)
    assert abs(low - welch.low / mean_o) < 1e-9 and abs(high - welch.high / mean_o) < 1e-9
    (line,) = study_job.consistency_lines([_row("s", serving, "512"), _row("o", offline)])
    assert "+2.25 %" in line and "across the tolerance" in line and line.endswith("NOT within 2 %")


def test_tight_cycles_put_the_interval_inside_or_outside_the_tolerance():
    (inside,) = study_job.consistency_lines([_row("s", [1.005, 1.006, 1.004], "512"), _row("o", [1.000, 1.001, 0.999])])
    assert "inside the tolerance" in inside and inside.endswith(", within 2 %")
    (outside,) = study_job.consistency_lines(
        [_row("s", [1.050, 1.051, 1.049], "512"), _row("o", [1.000, 1.001, 0.999])]
    )
    assert "outside the tolerance" in outside and "NOT within" in outside
    no_spread = study_job.consistency_lines([_row("s", [1.0, 1.0], "512"), _row("o", [1.0, 1.0])])
    assert "interval n/a" in no_spread[0]
