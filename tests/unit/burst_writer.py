"""A writer process the storage tests kill with SIGKILL at a random instant (no Ray).

    python -m tests.unit.burst_writer manifest STUDY_DIR   # mark every pending entry running, then completed
    python -m tests.unit.burst_writer table STUDY_DIR N    # store N rows (parts), compacting as it goes

Each mode prints one line per step *after* that step is durable (`running KEY`, `completed KEY`,
`row KEY`), flushed, so the test knows what must survive the kill.
"""

from __future__ import annotations

import sys
from pathlib import Path

from llem_ray.results.manifest import MANIFEST_FILE, AttemptRecord, ManifestWriter, utc_now
from llem_ray.results.study_table import StudyTable
from llem_ray.results.table import STUDY_TABLE_SCHEMA, write_part

COMPACT_PARTS = 8
FANOUT = 3


def row(key: str, order_index: int) -> dict:
    """A minimal valid table row for `key`."""
    out = {field.name: None for field in STUDY_TABLE_SCHEMA}
    out.update(key=key, order_index=order_index, cycle=1, attempt=1, name="n", measurement_config_hash=key[:8])
    out.update(throttle_reasons=[], gpu_uuids=[], pci_bus_ids=[], measurement_warnings=[], energy_total_j=1.0)
    return out


def burst_manifest(study_dir: Path) -> None:
    writer = ManifestWriter.load(study_dir / MANIFEST_FILE)
    for key in writer.keys_with("pending"):
        record = AttemptRecord(attempt=1, dispatched_at=utc_now())
        writer.mark_running(key, record)
        print(f"running {key}", flush=True)
        writer.mark_completed(key, f"experiments/{key}/run", record)
        print(f"completed {key}", flush=True)


def burst_table(study_dir: Path, n: int) -> None:
    table = StudyTable(study_dir, compact_parts=COMPACT_PARTS, fanout=FANOUT)
    done: set[str] = set()
    for i in range(n):
        key = f"{i:08d}-c1"
        write_part(table.path, row(key, i))
        done.add(key)
        print(f"row {key}", flush=True)
        table.compact(lambda keys: done & set(keys))


if __name__ == "__main__":
    mode, directory = sys.argv[1], Path(sys.argv[2])
    if mode == "manifest":
        burst_manifest(directory)
    else:
        burst_table(directory, int(sys.argv[3]))
