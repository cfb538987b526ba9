"""Repair of a study table's part files from the experiments' result files (issue 18).

Every completed (experiment, cycle) has a result directory whose `result.json` is the primary
record, and a one-row part file in `table/`. A part that is missing, truncated or not the row of its
key (a full disk, a copy cut short) is rebuilt from its `result.json` with the function that wrote
it, so the row comes out the same. When the result file is unreadable too, the entry is reported
lost: the caller sets it back to pending, and it is measured again.

Works from result files and part files alone; the caller says which entries are completed (their
key, run position and result directory), however the manifest stores them.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from llem_ray.results.manifest import ManifestEntry
from llem_ray.results.persistence import RESULT_FILE, from_json
from llem_ray.results.table import read_part, result_row, write_part


@dataclass
class PartRepair:
    """What `repair_parts` did: keys whose part it rebuilt, and keys lost (no readable result) with why."""

    rebuilt: list[str] = field(default_factory=list)
    lost: dict[str, str] = field(default_factory=dict)


def repair_parts(study_dir: Path, table_dir: Path, completed: Iterable[ManifestEntry]) -> PartRepair:
    """Check the part file of every entry in `completed`; rebuild a bad or missing one from its
    result.json (under `study_dir`), or report the entry lost. Raises OSError only when a rebuilt
    part cannot be written."""
    repair = PartRepair()
    for entry in completed:
        try:
            read_part(table_dir, entry.key)
            continue
        except (OSError, ValueError):
            pass
        result_file = study_dir / (entry.result_path or "") / RESULT_FILE
        try:
            result = from_json(result_file)
        except (OSError, ValueError) as exc:  # ValueError: bad JSON, schema mismatch, validation error
            repair.lost[entry.key] = f"its part file and {result_file.name} are unreadable ({type(exc).__name__})"
            continue
        row = result_row(result, key=entry.key, order_index=entry.order_index, result_path=entry.result_path)
        write_part(table_dir, row)
        repair.rebuilt.append(entry.key)
    return repair
