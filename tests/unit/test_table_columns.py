"""The study table, the summary and the progress table all come from ExperimentResult's fields."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from typing import Annotated, Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pytest
from pydantic import BaseModel

from llem_ray.cluster.progress import PROGRESS_METRICS
from llem_ray.config.experiment import ExperimentConfig
from llem_ray.results.aggregate import SUMMARY_METRICS, SUMMARY_SCHEMA, metric_summary_columns, summary_table
from llem_ray.results.columns import NOT_A_COLUMN, Metric, model_columns
from llem_ray.results.schema import ExperimentResult, Percentiles, ServingLatency, ServingResult
from llem_ray.results.table import STUDY_TABLE_SCHEMA, consolidate, result_row, write_part
from tests.result_factory import make_result

_STATS = ("_n", "_mean", "_std", "_cv", "_ci95_low", "_ci95_high", "_max", "_any")


def _metric_base(name: str) -> str | None:
    return next((name[: -len(s)] for s in _STATS if name.endswith(s)), None)


def test_study_table_and_summary_agree_on_their_metric_set():
    table_metrics = {c.name for c in SUMMARY_METRICS}
    summary_metrics = {
        base for name in SUMMARY_SCHEMA.names if (base := _metric_base(name)) is not None and base in table_metrics
    }
    assert summary_metrics == table_metrics and table_metrics <= set(STUDY_TABLE_SCHEMA.names)
    for column in SUMMARY_METRICS:  # every declared statistic is a summary column, nothing else names it
        assert all(f.name in SUMMARY_SCHEMA.names for f in metric_summary_columns(column))
    assert "latency.request.p95_ms" in STUDY_TABLE_SCHEMA.names  # was only in the summary before
    assert {c.name for c in PROGRESS_METRICS} <= table_metrics


def test_a_one_cycle_summary_mean_is_the_table_value_of_every_metric():
    lat = Percentiles(count=3, mean_ms=5.0, p50_ms=4.0, p95_ms=9.0, p99_ms=11.0)
    result = make_result().model_copy(
        update={
            "serving": ServingResult(
                mode="rate",
                duration_s=60.0,
                warmup_requests=1,
                requests_sent=10,
                requests_completed=10,
                requests_failed=0,
                send_phase_s=60.0,
                drain_s=1.0,
                offered_rate_req_s=0.2,
                generator_fell_behind=False,
                window_accepted=True,
                measured_requests=8,
                achieved_rate_req_s=0.19,
                slo_attainment=0.9,
                goodput_req_s=0.17,
                mean_power_w=250.0,
                energy_per_output_token_j=0.3,
                energy_per_request_j=30.0,
                energy_per_slo_request_j=33.0,
                energy_per_slo_request_adjusted_j=20.0,
                latency=ServingLatency(ttft=lat, tpot=lat),
            )
        }
    )
    row = result_row(result, key="k", order_index=0, result_path="r")
    summary = summary_table([result]).to_pylist()[0]
    for column in SUMMARY_METRICS:
        stat = {"ci": "mean", "mean": "mean", "max": "max", "any": "any"}[column.metric.summary]
        assert summary[f"{column.name}_{stat}"] == row[column.name], column.name
    assert row["serving.latency.ttft.p99_ms"] == 11.0 and summary["serving.latency.ttft.p99_ms_mean"] == 11.0


def test_a_new_metric_field_reaches_all_three_tables_without_another_file(tmp_path):
    """A fresh interpreter whose ExperimentResult has one more marked field: the tables follow."""
    script = textwrap.dedent("""
        import json
        from typing import Annotated
        import llem_ray.results.schema as schema
        from llem_ray.results.columns import Metric

        class Extended(schema.ExperimentResult):
            joules_per_prompt_j: Annotated[float | None, Metric("ci", progress="J/prompt")] = None

        schema.ExperimentResult = Extended  # before the tables are built from it
        from llem_ray.results.table import STUDY_TABLE_SCHEMA, result_row
        from llem_ray.results.aggregate import summary_table
        from llem_ray.cluster.progress import summary_table as progress_table
        import pyarrow as pa
        from tests.result_factory import make_result

        results = [Extended(**{**make_result(cycle=c).model_dump(), "joules_per_prompt_j": j})
                   for c, j in ((1, 2.0), (2, 4.0))]
        rows = [result_row(r, key=f"k{i}", order_index=i, result_path="r") for i, r in enumerate(results)]
        table = pa.Table.from_pylist(rows, schema=STUDY_TABLE_SCHEMA)
        summary = summary_table(results).to_pylist()[0]
        print(json.dumps({
            "table": table.column("joules_per_prompt_j").to_pylist(),
            "summary": [summary["joules_per_prompt_j_mean"], summary["joules_per_prompt_j_n"]],
            "progress": progress_table(table, {"cfg0": ("exp", 2, 0)}).splitlines()[:3],
        }))
    """)
    done = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": ":".join(sys.path)},
    )
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["table"] == [2.0, 4.0] and out["summary"] == [3.0, 2]
    header, _, line = out["progress"]
    assert "J/prompt" in header and " 3 " in line and "47.1" in line  # mean 3, CV = 1.414 / 3


def test_config_columns_let_a_mixed_pytorch_vllm_study_be_one_dataset(tmp_path):
    parts = tmp_path / "table"

    def vllm_config(seqs: int) -> dict:
        return ExperimentConfig(backend="vllm", n=100, vllm={"max_num_seqs": seqs}).model_dump(mode="json")

    results = [make_result(config_hash="pt", backend="pytorch", batch_size=4)] + [
        make_result(config_hash=f"v{seqs}", backend="vllm", batch_size=100, j_per_token=j).model_copy(
            update={"config": vllm_config(seqs)}
        )
        for seqs, j in ((32, 0.2), (128, 0.1))
    ]
    keys = []
    for i, result in enumerate(results):
        keys.append(f"{result.measurement_config_hash}-c1")
        write_part(parts, result_row(result, key=keys[-1], order_index=i, result_path="r"))
    consolidate(parts, tmp_path / "results.parquet", keys)
    on_disk = ds.dataset([*sorted(parts.glob("*.parquet")), tmp_path / "results.parquet"], format="parquet")
    assert on_disk.schema.equals(STUDY_TABLE_SCHEMA)  # every file has the same schema, whatever its backend
    table = on_disk.to_table()
    assert table.num_rows == 6 and table.schema.field("config.vllm.max_num_seqs").type == pa.int64()
    by_seqs = table.group_by("config.vllm.max_num_seqs").aggregate([("energy_per_output_token_j", "mean")])
    means = dict(
        zip(
            by_seqs.column("config.vllm.max_num_seqs").to_pylist(),
            by_seqs.column("energy_per_output_token_j_mean").to_pylist(),
        )
    )
    assert means == {None: 0.5, 32: 0.2, 128: 0.1}
    pytorch = table.filter(pc.field("backend") == "pytorch")
    assert set(pytorch.column("config.pytorch.batch_size").to_pylist()) == {4}
    assert pytorch.column("config.vllm.max_num_seqs").null_count == pytorch.num_rows


def test_column_types_come_from_annotations_and_unmapped_ones_fail_loudly():
    class Model(BaseModel):
        count: int
        share: float | None = None
        flag: bool = False
        when: Any = None
        hidden: Annotated[list[dict[str, int]], NOT_A_COLUMN] = []
        inner: Annotated[Percentiles | None, Metric("mean", of=("p50_ms",))] = None

    columns = {c.name: c for c in model_columns(Model)}
    types = (columns["count"].type, columns["share"].type, columns["flag"].type)
    assert types == (pa.int64(), pa.float64(), pa.bool_())
    assert columns["when"].as_json and "hidden" not in columns
    assert columns["inner.p50_ms"].metric.summary == "mean" and columns["inner.p95_ms"].metric is None
    assert columns["when"].value(Model(count=1, when={"b": 1})) == '{"b": 1}'
    assert columns["inner.p50_ms"].value(Model(count=1)) is None

    class Unmapped(BaseModel):
        items: list[dict[str, int]]

    with pytest.raises(TypeError, match="Unmapped.items"):
        model_columns(Unmapped)

    class BadOf(BaseModel):
        inner: Annotated[Percentiles | None, Metric("mean", of=("p51_ms",))] = None

    with pytest.raises(ValueError, match="p51_ms"):
        model_columns(BadOf)


def test_result_fields_without_a_column_are_only_the_marked_ones():
    names = set(STUDY_TABLE_SCHEMA.names)
    assert "config" not in names and "environment_snapshot.pip_freeze" not in names
    assert "placement.cycle" not in names and {"cycle", "attempt", "environment_snapshot.driver_version"} <= names
    assert all(
        not n.startswith("config.") or n.removeprefix("config.").split(".")[0] in ExperimentConfig.model_fields
        for n in names
    )
    assert ExperimentResult.model_fields["config"].metadata == [NOT_A_COLUMN]
