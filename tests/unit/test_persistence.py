"""Result files: JSON round trip, Parquet schema, CSV, collisions, path safety (INF-20)."""

import json
import subprocess
import sys
from datetime import datetime, timezone

import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from llem_ray.energy.protocol import PowerSample
from llem_ray.results.persistence import UnsupportedSchemaVersion, from_json, sanitise_name, save_experiment, to_json
from llem_ray.results.schema import SCHEMA_VERSION, EnvironmentSnapshot, ExperimentResult
from llem_ray.results.timeseries import TIMESERIES_SCHEMA, samples_to_table
from llem_ray.results.timeseries_columns import COLUMN_NAMES


def _result(name="exp"):
    now = datetime(2026, 11, 23, 12, 0, 0, tzinfo=timezone.utc)
    return ExperimentResult(
        name=name,
        measurement_config_hash="0123456789abcdef",
        config={"model": "m"},
        backend="pytorch",
        model="m",
        precision="bf16",
        batch_size=1,
        device="cpu",
        started_at=now,
        ended_at=now,
        duration_s=1.5,
        n_requests=2,
        input_tokens=10,
        output_tokens=20,
        tokens_per_second=13.3,
        energy_total_j=12.5,
        measurement_warnings=["w"],
        reproducibility_notes="notes",
        environment_snapshot=EnvironmentSnapshot(
            tool_version="2.0.0", python_version="3.11", platform="p", hostname="h"
        ),
    )


def _table():
    samples = [
        PowerSample(100.0 + i, "GPU-1", 50.0 + i, 40.0, None, 1.0, 1500.0, ("sw_power_cap",) * i, 9e6 + 50.0 * i)
        for i in range(3)
    ]
    return samples_to_table(samples, [("warmup", 99.0, 100.5), ("measured", 100.6, 103.0)], window_start_s=100.6)


def test_json_round_trip_from_string_and_file(tmp_path):
    result = _result()
    assert from_json(to_json(result)) == result
    to_json(result, tmp_path / "r.json")
    assert from_json(tmp_path / "r.json") == result
    assert not list(tmp_path.glob(".*"))  # no temp file left behind


def test_unknown_major_schema_version_is_rejected_clearly():
    data = json.loads(to_json(_result()))
    data["schema_version"] = "9.0"
    with pytest.raises(UnsupportedSchemaVersion, match="9.0"):
        from_json(json.dumps(data))
    data["schema_version"] = "2.0"  # before peak_memory_mib and the meters' own reproducibility notes
    with pytest.raises(UnsupportedSchemaVersion, match="2.0"):
        from_json(json.dumps(data))
    data["schema_version"] = f"{SCHEMA_VERSION.split('.')[0]}.7"
    with pytest.raises(ValueError):  # same major, but validation still applies to the content
        from_json(json.dumps({**data, "bogus": 1}))


def test_timeseries_phases_and_parquet_schema(tmp_path):
    table = _table()
    assert table.column("phase").to_pylist() == ["warmup", "measured", "measured"]
    assert table.column("elapsed_s").to_pylist() == pytest.approx([-0.6, 0.4, 1.4])
    directory = save_experiment(_result(), table, tmp_path)
    read = pq.read_table(directory / "timeseries.parquet")
    assert read.schema.equals(TIMESERIES_SCHEMA) and read.num_rows == 3
    assert read.column("throttle_reasons").to_pylist() == ["", "sw_power_cap", "sw_power_cap,sw_power_cap"]
    assert read.column("energy_counter_j").to_pylist() == [9e6, 9e6 + 50.0, 9e6 + 100.0]


def test_result_directories_never_overwrite(tmp_path):
    dirs = [save_experiment(_result(), _table(), tmp_path) for _ in range(3)]
    assert [d.name for d in dirs] == ["exp_20261123T120000Z", "exp_20261123T120000Z_1", "exp_20261123T120000Z_2"]
    assert all((d / "result.json").is_file() and (d / "timeseries.parquet").is_file() for d in dirs)
    assert not (dirs[0] / "result.csv").exists()


def test_csv_export_is_opt_in_and_flat(tmp_path):
    directory = save_experiment(_result(), _table(), tmp_path, export_csv=True)
    header, row = (directory / "result.csv").read_text().splitlines()[:2]
    columns = header.split(",")
    assert "energy_total_j" in columns and "energy_breakdown.baseline_source" in columns
    assert "energy_breakdown" not in columns and "config" not in columns
    assert "environment_snapshot.hostname" in header and "pip_freeze" not in header
    assert (directory / "timeseries.csv").read_text().count("\n") == 4


def test_hostile_names_stay_inside_the_output_dir(tmp_path):
    for name in ("../../etc/passwd", "/abs/path", "..", "a/../../b", ".hidden", "\x00evil"):
        directory = save_experiment(_result(name), _table(), tmp_path / "out")
        assert directory.parent == (tmp_path / "out").resolve()
        assert not directory.name.startswith(".")


@settings(max_examples=200, deadline=None)
@given(st.text())
def test_sanitised_names_are_single_safe_components(name):
    safe = sanitise_name(name)
    assert safe and "/" not in safe and "\\" not in safe and not safe.startswith(".") and len(safe) <= 100
    assert set(safe) <= set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")


def test_flatten_dotted_serves_csv_rows_and_value_comparison():
    from llem_ray.results.flatten import flatten_dotted

    data = {"a": {"b": 1, "c": [1, 2]}, "empty": {}, "d": (3,)}
    assert flatten_dotted(data, lists_as_json=True) == {"a.b": 1, "a.c": "[1, 2]", "d": "[3]"}
    assert flatten_dotted(data) == {"a.b": 1, "a.c": [1, 2], "empty": {}, "d": (3,)}


def test_make_unique_dir_appends_a_counter_and_stays_inside(tmp_path):
    from llem_ray.results.persistence import make_unique_dir

    assert make_unique_dir(tmp_path / "new", "run", 3) == tmp_path / "new" / "run"
    assert make_unique_dir(tmp_path / "new", "run", 3) == tmp_path / "new" / "run_1"
    assert make_unique_dir(tmp_path / "new", "run", 2) is None
    with pytest.raises(ValueError, match="outside"):
        make_unique_dir(tmp_path, "../escape", 1)


def test_the_plain_columns_an_experiment_builds_are_the_schema_s_columns():
    assert tuple(TIMESERIES_SCHEMA.names) == COLUMN_NAMES


def test_an_experiment_s_process_imports_no_pyarrow():
    """The modules an experiment's fresh process imports leave pyarrow (and the pandas it pulls in) out."""
    code = (
        "import sys, llem_ray.cluster.worker, llem_ray.measure.experiment;"
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'pyarrow', 'pandas'}))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert done.stdout.strip() == "[]"
