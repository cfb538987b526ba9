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

import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from llem_ray.config.experiment import ExperimentConfig
from llem_ray.results.atomic import write_atomic
from llem_ray.results.columns import Column, model_columns
from llem_ray.results.schema import ExperimentResult

PART_PREFIX, PART_SUFFIX = "part-", ".parquet"
COMPACT_PATTERN = re.compile(r"^compact-t(\d+)-v\d{6}-\d+\.parquet$")
"""Name of a compacted file (results/study_table.py): tier, version that wrote it, index."""

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
    return Path(dataset_dir) / f"{PART_PREFIX}{key}{PART_SUFFIX}"


def part_key(path: Path) -> str | None:
    """The key whose part file `path` is, or None if it is no part file (temporary files included)."""
    name = Path(path).name
    if name.startswith(PART_PREFIX) and name.endswith(PART_SUFFIX) and len(name) > len(PART_PREFIX + PART_SUFFIX):
        return name[len(PART_PREFIX) : -len(PART_SUFFIX)]
    return None


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


@dataclass
class TableScan:
    """What one version of the table holds: the keys of each readable file, and the files that cannot
    be read (path -> why)."""

    keys_of: dict[Path, list[str]] = field(default_factory=dict)
    bad: dict[Path, str] = field(default_factory=dict)

    def counts(self) -> Counter[str]:
        """How many rows each key has."""
        return Counter(key for keys in self.keys_of.values() for key in keys)


def read_keys(path: Path) -> list[str]:
    """The `key` column of one table file. Raises OSError or ValueError (pyarrow's ArrowInvalid) when
    the file cannot be read, and ValueError for a part file that does not hold exactly its own row."""
    keys = pq.read_table(path, columns=["key"]).column("key").to_pylist()
    own = part_key(path)
    if own is not None and keys != [own]:
        raise ValueError(f"{path.name} does not hold exactly the row of {own}")
    return keys


def table_files(directory: Path) -> list[Path]:
    """The part and compacted files of one version (regular files, sorted by name)."""
    return sorted(
        p
        for p in Path(directory).iterdir()
        if p.is_file() and (part_key(p) is not None or COMPACT_PATTERN.match(p.name))
    )


def scan(directory: Path) -> TableScan:
    """Read the keys of every file of the version at `directory` (the `table` link or a plain directory)."""
    out = TableScan()
    for path in table_files(directory):
        try:
            keys = read_keys(path)
        except (OSError, ValueError) as exc:  # truncated, not Parquet, or the wrong row: repaired by the caller
            out.bad[path] = f"{type(exc).__name__}: {' '.join(str(exc).split())[:200]}"
            continue
        out.keys_of[path] = keys
    return out


def read_rows(directory: Path, keys: Iterable[str]) -> pa.Table:
    """The rows of `keys`, one each, sorted by run order (`order_index`), from the version at
    `directory`. Raises ValueError when a key has no row or more than one, or a file holding one of
    them cannot be read (the caller repairs, then reads again)."""
    wanted = set(keys)
    found = scan(directory)
    counts = found.counts()
    missing = [k for k in wanted if k not in counts]
    if missing:
        bad = "; ".join(f"{p.name}: {why}" for p, why in found.bad.items())
        raise ValueError(
            f"{len(missing)} completed entries have no row in the table (e.g. {min(missing)})"
            + (f"; unreadable: {bad}" if bad else "")
        )
    twice = [k for k in wanted if counts[k] > 1]
    if twice:
        raise ValueError(f"{len(twice)} entries have more than one row (e.g. {min(twice)})")
    files = [p for p, held in found.keys_of.items() if not wanted.isdisjoint(held)]
    tables = [pq.read_table(p, schema=STUDY_TABLE_SCHEMA) for p in files]
    table = pa.concat_tables(tables) if tables else STUDY_TABLE_SCHEMA.empty_table()
    mask = pc.is_in(table.column("key"), value_set=pa.array(sorted(wanted), type=pa.string()))
    return table.filter(mask).sort_by([("order_index", "ascending")])


def consolidate(dataset_dir: Path, out_path: Path, keys: Iterable[str]) -> pa.Table:
    """Write the rows of `keys` from the table at `dataset_dir` to `out_path` (atomic), sorted by run
    order; returns the table.

    Rows of keys not listed (an entry not completed, stale from an earlier, larger study) are left out.
    A listed key without exactly one readable row raises ValueError (`read_rows`): a completed entry
    must have its row (results/repair.py rebuilds it from its result.json).
    """
    table = read_rows(dataset_dir, keys)
    _write_table_atomic(table, Path(out_path))
    return table
