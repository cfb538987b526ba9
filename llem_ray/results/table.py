"""The study table: one flat row per (experiment, cycle), written as a Parquet dataset of part files.

`STUDY_TABLE_SCHEMA` is derived from the models (results.columns): every ExperimentResult field under
its dotted name, and the resolved configuration as `config.<dotted>` columns. It is fixed by the
models, not by the values, so every part file and the consolidated `results.parquet` have the same
columns and types whatever backend or sections an experiment used (a column of None would
otherwise be typed `null`), and `pyarrow.dataset` reads them as one dataset.
Each part file is written to a dot-prefixed temp name and then `os.replace`d: a reader never sees a
half-written part (pyarrow's dataset reader skips `.`/`_` files), and writing the same part twice
replaces it, so a retried write never duplicates a row. Column names carry units.

No Ray here: the results actor calls these functions; tests call them directly.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from llem_ray.config.experiment import ExperimentConfig
from llem_ray.results.atomic import write_atomic
from llem_ray.results.columns import Column, model_columns
from llem_ray.results.schema import ExperimentResult

ENTRY_FIELDS: list[pa.Field] = [
    pa.field("key", pa.string(), nullable=False),
    pa.field("order_index", pa.int64(), nullable=False),
    pa.field("cycle", pa.int64(), nullable=False),
    pa.field("attempt", pa.int64(), nullable=False),
    pa.field("n_warnings", pa.int64()),
    pa.field("result_path", pa.string()),
]
"""The study's own columns: the entry's key and run order, its cycle and attempt (1 when the result
has none), the number of measurement warnings, and where its result.json lies (relative)."""

RESULT_COLUMNS: list[Column] = model_columns(ExperimentResult)
"""Every ExperimentResult field under its dotted name (results.columns), metrics included."""

CONFIG_COLUMNS: list[Column] = model_columns(ExperimentConfig, "config.", ("config",))
"""The resolved configuration (`result.config`) as `config.<dotted field>` columns, typed from the
ExperimentConfig model: every row has every backend's section columns, None where the experiment
has no such section, so part files of mixed backends share one schema. A value under no field of the
current model (a result written by another version) is not in the table."""

_NOT_NULL = {"name", "measurement_config_hash"}

STUDY_TABLE_SCHEMA = pa.schema(
    [
        *ENTRY_FIELDS,
        *(pa.field(c.name, c.type, nullable=c.name not in _NOT_NULL) for c in RESULT_COLUMNS),
        *(pa.field(c.name, c.type) for c in CONFIG_COLUMNS),
    ]
)
"""The study table's columns: ENTRY_FIELDS, RESULT_COLUMNS, CONFIG_COLUMNS, in that order."""


def result_row(result: ExperimentResult, *, key: str, order_index: int, result_path: str) -> dict[str, Any]:
    """The flat row of `result` (columns of STUDY_TABLE_SCHEMA). `result_path` is relative to the study dir."""
    return {
        "key": key,
        "order_index": order_index,
        "cycle": result.placement.cycle or 1,
        "attempt": result.placement.attempt or 1,
        "n_warnings": len(result.measurement_warnings),
        "result_path": result_path,
        **{c.name: c.value(result) for c in (*RESULT_COLUMNS, *CONFIG_COLUMNS)},
    }


def _write_table_atomic(table: pa.Table, path: Path) -> None:
    write_atomic(path, lambda tmp: pq.write_table(table, tmp))


def part_path(dataset_dir: Path, key: str) -> Path:
    """Where the part file of entry `key` lives (one file per key, so a rewrite replaces it)."""
    return Path(dataset_dir) / f"part-{key}.parquet"


def write_part(dataset_dir: Path, row: dict[str, Any]) -> Path:
    """Write one row as the part file of `row['key']` (temp name, then atomic rename); returns its path."""
    dataset_dir = Path(dataset_dir)
    dataset_dir.mkdir(parents=True, exist_ok=True)
    path = part_path(dataset_dir, row["key"])
    _write_table_atomic(pa.Table.from_pylist([row], schema=STUDY_TABLE_SCHEMA), path)
    return path


def read_part(dataset_dir: Path, key: str) -> pa.Table:
    """The one-row part file of `key`. Raises OSError (FileNotFoundError: none) or ValueError
    (pyarrow's ArrowInvalid: truncated or not Parquet; or not exactly the row of `key`)."""
    table = pq.read_table(part_path(dataset_dir, key), schema=STUDY_TABLE_SCHEMA)
    if table.num_rows != 1 or table.column("key")[0].as_py() != key:
        raise ValueError(f"{part_path(dataset_dir, key)} does not hold the row of {key}")
    return table


def consolidate(dataset_dir: Path, out_path: Path, keys: Iterable[str]) -> pa.Table:
    """Merge the part files of `keys` into `out_path` (atomic), sorted by run order; returns the table.

    Parts of keys not listed (stale from an earlier, larger study) are ignored. A listed key whose
    part is missing or unreadable raises as `read_part` does: a completed entry must have its row
    (results/repair.py rebuilds it from its result.json).
    """
    tables = [read_part(dataset_dir, k) for k in keys]
    table = pa.concat_tables(tables) if tables else STUDY_TABLE_SCHEMA.empty_table()
    table = table.sort_by([("order_index", "ascending")])
    _write_table_atomic(table, Path(out_path))
    return table
