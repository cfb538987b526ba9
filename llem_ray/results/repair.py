"""Repair of a study table from the experiments' result files (issues 18 and 13).

Every completed (experiment, cycle) has a result directory whose `result.json` is the primary
record, and exactly one row in the table (a one-row part file, or a row of a compacted file:
results/study_table.py). One pass over the table's files (`table.scan`) finds what is wrong:
- a file that cannot be read (truncated, not Parquet, a part holding another key's row) is removed;
- a part of an entry that is not completed (a driver killed between writing it and recording the
  completion; the entry is measured again) is removed, so readers never see a row the manifest
  does not count;
- a part whose key also has a compacted row is removed (one row per key);
- a completed entry left without a row is rebuilt from its `result.json` with the function that
  wrote it, so the row comes out the same. When the result file is unreadable too, the entry is
  reported lost: the caller sets it back to pending, and it is measured again.
Directories and files of no known kind are left alone. Works from result and table files alone; the
caller says which entries are completed and how to look one up, however the manifest stores them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from llem_ray.results.manifest import ManifestEntry
from llem_ray.results.persistence import RESULT_FILE, from_json
from llem_ray.results.table import part_key, result_row, scan, write_part


@dataclass
class PartRepair:
    """What `repair_parts` did: keys whose row it rebuilt, keys lost (no readable result) with why, and
    the table files it removed."""

    rebuilt: list[str] = field(default_factory=list)
    lost: dict[str, str] = field(default_factory=dict)
    removed: list[Path] = field(default_factory=list)


def repair_parts(
    study_dir: Path, table_dir: Path, completed: Sequence[str], entry_of: Callable[[str], ManifestEntry]
) -> PartRepair:
    """Make the table at `table_dir` hold one readable row per key of `completed` (in run order) and no
    part of another entry (see module docstring). `entry_of(key)` gives a completed entry's run
    position and result directory; it is called only for rows to rebuild. Raises OSError only when a
    file cannot be removed or a rebuilt part cannot be written."""
    repair = PartRepair()
    found = scan(table_dir)
    done = set(completed)
    for path in found.bad:
        path.unlink()
        repair.removed.append(path)
    in_compacted = {k for path, keys in found.keys_of.items() if part_key(path) is None for k in keys}
    for path, (key,) in [(p, keys) for p, keys in found.keys_of.items() if part_key(p) is not None]:
        if key not in done or key in in_compacted:  # an entry not completed, or a row held twice
            path.unlink()
            repair.removed.append(path)
    kept = {key for path, keys in found.keys_of.items() if path not in repair.removed for key in keys}
    for key in (k for k in completed if k not in kept):
        entry = entry_of(key)
        result_file = study_dir / (entry.result_path or "") / RESULT_FILE
        try:
            result = from_json(result_file)
        except (OSError, ValueError) as exc:  # ValueError: bad JSON, schema mismatch, validation error
            repair.lost[key] = f"its row and {result_file.name} are unreadable ({type(exc).__name__})"
            continue
        write_part(table_dir, result_row(result, key=key, order_index=entry.order_index, result_path=entry.result_path))
        repair.rebuilt.append(key)
    return repair
