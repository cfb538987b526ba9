"""Results on disk (RES-16..19, INF-20): `{name}_{timestamp}/result.json` + `timeseries.parquet`.

Every file is written to a dot-prefixed temporary name in its final directory and `os.replace`d,
so a reader never sees half a file. A result directory is never reused: on a name collision `_1`,
`_2`, … is appended. Names are sanitised to `[A-Za-z0-9._-]` with no leading dot, and the final
path is checked to lie inside the output directory, so no config value can write elsewhere.
"""

from __future__ import annotations

import csv
import io
import json
import re
from datetime import timezone
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from llem_ray.results.atomic import write_atomic, write_bytes_atomic
from llem_ray.results.flatten import flatten_dotted
from llem_ray.results.schema import SCHEMA_VERSION, ExperimentResult
from llem_ray.results.timeseries import TIMESERIES_SCHEMA

RESULT_FILE = "result.json"
TIMESERIES_FILE = "timeseries.parquet"
MAX_NAME_CHARS = 100
MAX_DIRECTORY_ATTEMPTS = 10_000
"""Result directory names tried (`_1`, `_2`, ...) before giving up."""


class UnsupportedSchemaVersion(ValueError):
    """A result file's major schema version is not one this llem_ray reads."""


def sanitise_name(name: str) -> str:
    """`name` reduced to a safe single path component: [A-Za-z0-9._-], no leading dot, ≤ 100 chars."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", name).lstrip("._")[:MAX_NAME_CHARS].rstrip("_")
    return safe or "experiment"


def to_json(result: ExperimentResult, path: str | Path | None = None) -> str:
    """The result as indented JSON; also written atomically to `path` when given."""
    text = result.model_dump_json(indent=2)
    if path is not None:
        write_bytes_atomic(Path(path), text.encode())
    return text


def from_json(source: str | Path) -> ExperimentResult:
    """Read a result from a JSON file path or a JSON string.

    Raises UnsupportedSchemaVersion when the file's major schema version differs from this
    package's, and pydantic ValidationError when the content does not match the schema.
    """
    text = Path(source).read_text() if isinstance(source, Path) or not str(source).lstrip().startswith("{") else source
    data: dict[str, Any] = json.loads(text)
    version = str(data.get("schema_version", "?"))
    if version.split(".")[0] != SCHEMA_VERSION.split(".")[0]:
        raise UnsupportedSchemaVersion(
            f"result has schema_version {version}; this llem_ray reads {SCHEMA_VERSION.split('.')[0]}.x "
            "(use the llem_ray version that wrote it, or migrate the file)"
        )
    return ExperimentResult.model_validate(data)


def to_parquet(timeseries: pa.Table, path: str | Path) -> None:
    """Write the timeseries atomically as Parquet with the explicit TIMESERIES_SCHEMA."""
    table = timeseries.cast(TIMESERIES_SCHEMA)
    write_atomic(Path(path), lambda tmp: pq.write_table(table, tmp))


def result_csv_row(result: ExperimentResult) -> dict[str, Any]:
    """The result as one flat CSV row (MEAS-07): nested fields dotted, lists as JSON; no config, no pip freeze."""
    data = result.model_dump(mode="json", exclude={"config": True, "environment_snapshot": {"pip_freeze"}})
    return flatten_dotted(data, lists_as_json=True)


def _write_csv(result: ExperimentResult, timeseries: pa.Table, directory: Path) -> None:
    row = result_csv_row(result)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(row))
    writer.writeheader()
    writer.writerow(row)
    write_bytes_atomic(directory / "result.csv", buffer.getvalue().encode())
    sink = pa.BufferOutputStream()
    pa_csv.write_csv(timeseries.cast(TIMESERIES_SCHEMA), sink)
    write_bytes_atomic(directory / "timeseries.csv", sink.getvalue().to_pybytes())


def make_unique_dir(parent: Path, base: str, attempts: int) -> Path | None:
    """Create and return `parent/base`, or the first free of `base_1`, `base_2`, … (`attempts` names in all).

    `parent` is created if missing. Returns None when every name tried exists. Raises ValueError when
    `base` would put the directory outside `parent` (a separator or '..'), OSError when a directory
    cannot be created.
    """
    parent.mkdir(parents=True, exist_ok=True)
    for counter in range(attempts):
        candidate = parent / (base if counter == 0 else f"{base}_{counter}")
        if candidate.parent != parent:
            raise ValueError(f"directory {candidate} would lie outside {parent}")
        try:
            candidate.mkdir()
        except FileExistsError:
            continue
        return candidate
    return None


def _new_directory(output_dir: Path, base: str) -> Path:
    output_dir.mkdir(parents=True, exist_ok=True)
    root = output_dir.resolve()
    directory = make_unique_dir(root, base, MAX_DIRECTORY_ATTEMPTS)
    if directory is None:
        raise FileExistsError(f"no free result directory name for {base} in {root}")
    return directory


def save_experiment(
    result: ExperimentResult, timeseries: pa.Table, output_dir: str | Path, *, export_csv: bool = False
) -> Path:
    """Write `{name}_{timestamp}/` under `output_dir` and return it (never overwrites: `_1`, `_2`).

    Holds result.json and timeseries.parquet, plus result.csv and timeseries.csv with `export_csv`.
    The timestamp is the result's start time in UTC (YYYYmmddTHHMMSSZ).
    """
    stamp = result.started_at.astimezone(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    directory = _new_directory(Path(output_dir), f"{sanitise_name(result.name)}_{stamp}")
    to_parquet(timeseries, directory / TIMESERIES_FILE)
    if export_csv:
        _write_csv(result, timeseries, directory)
    to_json(result, directory / RESULT_FILE)
    return directory
