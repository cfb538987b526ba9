"""Statistics across cycles: mean, std, CV, bootstrap CI, and the summary table (results/aggregate.py)."""

from __future__ import annotations

import csv
import statistics
import sys

import numpy as np
import pyarrow.parquet as pq
import pytest

from llem_ray.results.aggregate import (
    CI_METRICS,
    ONE_CYCLE_NOTE,
    SUMMARY_SCHEMA,
    metric_stats,
    summary_table,
    write_summary,
)
from tests.result_factory import make_result


def test_constant_samples_give_a_zero_width_interval():
    st = metric_stats([0.25, 0.25, 0.25, 0.25])
    assert (st.n, st.mean, st.std, st.cv) == (4, 0.25, 0.0, 0.0)
    assert st.ci_low == st.ci_high == 0.25


def test_interval_of_a_known_distribution_covers_its_mean_with_the_right_width():
    # 30 evenly spaced quantiles of N(10, 1): a sample with mean exactly 10 and sd close to 1
    from scipy.stats import norm

    values = norm.ppf((np.arange(30) + 0.5) / 30, loc=10.0, scale=1.0)
    st = metric_stats(list(values))
    assert st.mean == pytest.approx(values.mean())
    assert st.std == pytest.approx(values.std(ddof=1))
    assert st.cv == pytest.approx(st.std / st.mean)
    assert st.ci_low < 10.0 < st.ci_high
    # the normal-theory 95 % interval of the mean is +/- 1.96 sd / sqrt(n): about 0.72 wide here
    assert 0.5 < st.ci_high - st.ci_low < 1.0
    assert st.ci_low < st.mean < st.ci_high


def test_interval_covers_the_true_mean_about_95_percent_of_the_time():
    rng = np.random.default_rng(11)
    trials = 80
    covered = 0
    for _ in range(trials):
        st = metric_stats(list(rng.normal(5.0, 2.0, size=20)))
        covered += st.ci_low <= 5.0 <= st.ci_high
    # a data range (too wide) would cover 100 %; a std-of-data slip (too narrow) far less than 85 %
    assert 0.85 <= covered / trials < 1.0


def test_one_cycle_gives_no_interval_and_says_so():
    st = metric_stats([0.4])
    assert (st.n, st.mean, st.std, st.ci_low, st.ci_high) == (1, 0.4, None, None, None)
    assert st.note == ONE_CYCLE_NOTE
    row = summary_table([make_result(j_per_token=0.4)]).to_pylist()[0]
    assert row["energy_per_output_token_j_ci95_low"] is None
    assert row["ci_note"] == ONE_CYCLE_NOTE


def test_missing_values_are_skipped_and_none_measured_is_said():
    st = metric_stats([1.0, None, 3.0])
    assert st.n == 2 and st.mean == 2.0 and st.ci_low is not None
    assert metric_stats([None, None]).note == "not measured"


def test_summary_groups_cycles_by_configuration():
    results = [
        make_result(config_hash="a", cycle=c, batch_size=1, j_per_token=v) for c, v in ((1, 0.50), (2, 0.52), (3, 0.48))
    ] + [make_result(config_hash="b", cycle=c, batch_size=8, j_per_token=0.1, ttft_ms=None) for c in (1, 2)]
    table = summary_table(results)
    assert table.schema == SUMMARY_SCHEMA
    rows = {r["measurement_config_hash"]: r for r in table.to_pylist()}
    a, b = rows["a"], rows["b"]
    assert (a["n_cycles"], a["cycles"], b["n_cycles"]) == (3, "1,2,3", 2)
    assert a["energy_per_output_token_j_mean"] == pytest.approx(0.50)
    assert a["energy_per_output_token_j_std"] == pytest.approx(statistics.stdev([0.50, 0.52, 0.48]))
    assert a["energy_per_output_token_j_ci95_low"] < 0.50 < a["energy_per_output_token_j_ci95_high"]
    assert b["energy_per_output_token_j_ci95_low"] == b["energy_per_output_token_j_ci95_high"] == 0.1
    assert b["latency.ttft.p50_ms_n"] == 0 and b["latency.ttft.p50_ms_mean"] is None
    assert (b["batch_size"], b["kv_cache"], b["peak_memory_mib_mean"]) == (8, "dynamic", 512.0)
    assert all(f"{m}_ci95_high" in a for m in CI_METRICS)


def test_summary_is_written_as_parquet_and_csv_with_meas07_columns(tmp_path):
    results = [make_result(cycle=c, tokens_per_s=100.0 + c) for c in (1, 2)]
    parquet_path, csv_path = write_summary(summary_table(results), tmp_path / "out")
    assert pq.read_table(parquet_path).num_rows == 1
    with open(csv_path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 1
    for column in (
        "peak_memory_mib_mean",
        "mean_gpu_utilization_pct_mean",
        "latency.request.p95_ms_mean",
        "batch_size",
        "kv_cache",
        "tokens_per_second_ci95_low",
    ):
        assert column in rows[0]
    assert float(rows[0]["tokens_per_second_mean"]) == pytest.approx(101.5)


def test_without_scipy_the_error_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "scipy", None)
    with pytest.raises(ImportError, match=r"llem-ray\[report\]"):
        metric_stats([1.0, 2.0, 3.0])
