"""The study table: one flat row per (experiment, cycle), written as a Parquet dataset of part files.

`STUDY_TABLE_SCHEMA` is explicit so every part file, and the consolidated `results.parquet`, has the
same columns and types whatever the values (a column of None would otherwise be typed `null`).
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

from llem_ray.results.atomic import write_atomic
from llem_ray.results.schema import ExperimentResult, Percentiles
from llem_ray.results.serving_columns import SERVING_TABLE_FIELDS, serving_columns

PART_PREFIX, PART_SUFFIX = "part-", ".parquet"
COMPACT_PATTERN = re.compile(r"^compact-t(\d+)-v\d{6}-\d+\.parquet$")
"""Name of a compacted file (results/study_table.py): tier, version that wrote it, index."""
_UTC_US = pa.timestamp("us", tz="UTC")
_STRINGS = pa.list_(pa.string())

STUDY_TABLE_SCHEMA = pa.schema(
    [
        pa.field("key", pa.string(), nullable=False),
        pa.field("order_index", pa.int64(), nullable=False),
        pa.field("cycle", pa.int64(), nullable=False),
        pa.field("attempt", pa.int64(), nullable=False),
        pa.field("name", pa.string(), nullable=False),
        pa.field("measurement_config_hash", pa.string(), nullable=False),
        pa.field("backend", pa.string()),
        pa.field("model", pa.string()),
        pa.field("precision", pa.string()),
        pa.field("batch_size", pa.int64()),
        pa.field("device", pa.string()),
        pa.field("started_at", _UTC_US),
        pa.field("ended_at", _UTC_US),
        pa.field("duration_s", pa.float64()),
        pa.field("n_requests", pa.int64()),
        pa.field("input_tokens", pa.int64()),
        pa.field("output_tokens", pa.int64()),
        pa.field("tokens_per_second", pa.float64()),
        pa.field("energy_meter", pa.string()),
        pa.field("energy_total_j", pa.float64()),
        pa.field("energy_adjusted_j", pa.float64()),
        pa.field("baseline_power_w", pa.float64()),
        pa.field("baseline_source", pa.string()),
        pa.field("measurement_methodology", pa.string()),
        pa.field("energy_per_output_token_j", pa.float64()),
        pa.field("energy_per_output_token_total_j", pa.float64()),
        pa.field("prefill_duration_s", pa.float64()),
        pa.field("prefill_energy_j", pa.float64()),
        pa.field("decode_duration_s", pa.float64()),
        pa.field("decode_energy_j", pa.float64()),
        pa.field("decode_energy_per_token_j", pa.float64()),
        pa.field("request_latency_p50_ms", pa.float64()),
        pa.field("request_latency_p99_ms", pa.float64()),
        pa.field("ttft_p50_ms", pa.float64()),
        pa.field("itl_p50_ms", pa.float64()),
        pa.field("peak_memory_mib", pa.float64()),
        pa.field("mean_gpu_utilization_pct", pa.float64()),
        pa.field("mean_power_w", pa.float64()),
        pa.field("host_bound", pa.bool_()),
        pa.field("prefix_caching", pa.bool_()),
        pa.field("max_temperature_c", pa.float64()),
        pa.field("throttle_reasons", _STRINGS),
        pa.field("total_flops", pa.float64()),
        pa.field("node_id", pa.string()),
        pa.field("hostname", pa.string()),
        pa.field("gpu_uuids", _STRINGS),
        pa.field("pci_bus_ids", _STRINGS),
        pa.field("n_warnings", pa.int64()),
        pa.field("measurement_warnings", _STRINGS),
        pa.field("result_path", pa.string()),
        pa.field("schema_version", pa.string()),
        *SERVING_TABLE_FIELDS,
    ]
)


def _p(stats: Percentiles | None, attr: str) -> float | None:
    return getattr(stats, attr) if stats is not None else None


def result_row(result: ExperimentResult, *, key: str, order_index: int, result_path: str) -> dict[str, Any]:
    """The flat row of `result` (columns of STUDY_TABLE_SCHEMA). `result_path` is relative to the study dir."""
    placement, lat = result.placement, result.latency
    return {
        "key": key,
        "order_index": order_index,
        "cycle": placement.cycle or 1,
        "attempt": placement.attempt or 1,
        "name": result.name,
        "measurement_config_hash": result.measurement_config_hash,
        "backend": result.backend,
        "model": result.model,
        "precision": result.precision,
        "batch_size": result.batch_size,
        "device": result.device,
        "started_at": result.started_at,
        "ended_at": result.ended_at,
        "duration_s": result.duration_s,
        "n_requests": result.n_requests,
        "input_tokens": result.input_tokens,
        "output_tokens": result.output_tokens,
        "tokens_per_second": result.tokens_per_second,
        "energy_meter": result.energy_meter,
        "energy_total_j": result.energy_total_j,
        "energy_adjusted_j": result.energy_adjusted_j,
        "baseline_power_w": result.baseline_power_w,
        "baseline_source": result.energy_breakdown.baseline_source,
        "measurement_methodology": result.measurement_methodology,
        "energy_per_output_token_j": result.energy_per_output_token_j,
        "energy_per_output_token_total_j": result.energy_per_output_token_total_j,
        "prefill_duration_s": result.prefill.duration_s if result.prefill else None,
        "prefill_energy_j": result.prefill.energy_j if result.prefill else None,
        "decode_duration_s": result.decode.duration_s if result.decode else None,
        "decode_energy_j": result.decode.energy_j if result.decode else None,
        "decode_energy_per_token_j": result.decode.energy_per_token_j if result.decode else None,
        "request_latency_p50_ms": _p(lat.request, "p50_ms"),
        "request_latency_p99_ms": _p(lat.request, "p99_ms"),
        "ttft_p50_ms": _p(lat.ttft, "p50_ms"),
        "itl_p50_ms": _p(lat.itl, "p50_ms"),
        "peak_memory_mib": result.peak_memory_mib,
        "mean_gpu_utilization_pct": result.mean_gpu_utilization_pct,
        "mean_power_w": result.mean_power_w,
        "host_bound": result.host_bound,
        "prefix_caching": result.prefix_caching,
        "max_temperature_c": result.max_temperature_c,
        "throttle_reasons": list(result.throttle_reasons),
        "total_flops": result.flops.total_flops if result.flops else None,
        "node_id": placement.node_id,
        "hostname": placement.hostname,
        "gpu_uuids": list(placement.gpu_uuids),
        "pci_bus_ids": list(placement.pci_bus_ids),
        "n_warnings": len(result.measurement_warnings),
        "measurement_warnings": list(result.measurement_warnings),
        "result_path": result_path,
        "schema_version": result.schema_version,
        **serving_columns(result),
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
        return name[len(PART_PREFIX):-len(PART_SUFFIX)]
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
        p for p in Path(directory).iterdir()
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
        raise ValueError(f"{len(missing)} completed entries have no row in the table (e.g. {min(missing)})"
                         + (f"; unreadable: {bad}" if bad else ""))
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
