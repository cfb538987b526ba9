"""Copy running studies' directories into a folder whenever a run of theirs ends, for a GPU host
that can be taken away between calls (a lent machine loses its disk when it is released).

    python3 benchmarks/study_snapshots.py /tmp/sstudy2 /tmp/sstudy --into "$OUT" --for-s 570

Each ROOT is a study's `--output` folder (the study directories below it are found, also ones that
appear later) or a study directory itself. Once at the start and again whenever a study's count of
finished entries (completed or failed) changes, `<into>/<root name>-<study dir name>.tgz` is
rewritten whole (temporary name, then rename), so the folder always holds the latest state of each
study and nothing half-written. The archive holds the study directory as `<study dir name>/...`:
the manifest store as one consistent copy (SQLite's backup: the live store is in WAL mode, so
copying its files while a run ends can tear it), the rest as it is, without the lock and temporary
files. Unpacked under `results/`, it can be continued with `llem_ray.study ... --resume`.

Exit codes: 0 when every ROOT holds a study with nothing pending or running, 3 when `--for-s`
seconds passed first (call again), 2 on bad arguments.
"""

from __future__ import annotations

import argparse
import sqlite3
import sys
import tarfile
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from llem_ray.results.atomic import TEMP_SUFFIX, write_atomic  # noqa: E402
from llem_ray.results.manifest import read_manifest  # noqa: E402
from llem_ray.results.manifest_sql import STORE_FILE, connect, store_path  # noqa: E402
from llem_ray.results.study_dir import LOCK_FILE  # noqa: E402

SKIPPED_SUFFIXES = (TEMP_SUFFIX, "-wal", "-shm")


def study_dirs(root: Path) -> list[Path]:
    """`root` itself if it is a study directory, else the study directories directly below it."""
    if store_path(root).is_file():
        return [root]
    return sorted(p.parent for p in root.glob(f"*/{STORE_FILE}"))


def _skip(member: tarfile.TarInfo) -> tarfile.TarInfo | None:
    name = Path(member.name).name
    if name in (STORE_FILE, LOCK_FILE) or name.endswith(SKIPPED_SUFFIXES):
        return None
    return member


def snapshot(study_dir: Path, into: Path, prefix: str) -> Path:
    """Write `<into>/<prefix>-<study dir name>.tgz` (see module docstring); returns its path.
    Raises OSError or sqlite3.Error when the directory or its store cannot be read; the previous
    archive is then left as it was."""
    target = into / f"{prefix}-{study_dir.name}.tgz"
    with tempfile.TemporaryDirectory() as scratch:
        store_copy = Path(scratch) / STORE_FILE
        source = connect(store_path(study_dir), readonly=True)
        destination = sqlite3.connect(store_copy)
        try:
            source.backup(destination)
        finally:
            destination.close()
            source.close()

        def write(tmp: Path) -> None:
            with tarfile.open(tmp, "w:gz") as archive:
                archive.add(study_dir, arcname=study_dir.name, filter=_skip)
                archive.add(store_copy, arcname=f"{study_dir.name}/{STORE_FILE}")

        write_atomic(target, write)
    return target


def watch(roots: list[Path], into: Path, for_s: float, every_s: float) -> bool:
    """Snapshot the studies under `roots` into `into` until every root's studies are finished
    (returns True) or `for_s` seconds passed (returns False). Prints one line per snapshot; a study
    that cannot be read or archived at one look (OSError, sqlite3.Error, ValueError: a manifest
    being replaced, a full disk) is named and tried again at the next."""
    deadline_s = time.monotonic() + for_s
    seen: dict[Path, tuple[int, int]] = {}
    while True:
        finished = []
        for root in roots:
            dirs = study_dirs(root)
            finished.append(bool(dirs))
            for study_dir in dirs:
                try:
                    now = read_manifest(study_dir).counts()
                    state = (now["completed"], now["failed"])
                    if seen.get(study_dir) != state:
                        path = snapshot(study_dir, into, root.name)
                        seen[study_dir] = state
                        print(f"{time.strftime('%H:%M:%S')} {path.name}: {now}", flush=True)
                except (OSError, sqlite3.Error, ValueError) as exc:  # tried again at the next look
                    print(f"{time.strftime('%H:%M:%S')} {study_dir}: not readable now ({exc})", flush=True)
                    finished[-1] = False
                    continue
                finished[-1] &= now["pending"] == 0 and now["running"] == 0
        if all(finished):
            return True
        if time.monotonic() >= deadline_s:
            return False
        time.sleep(every_s)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("roots", nargs="+", type=Path, help="study --output folders or study directories")
    parser.add_argument("--into", type=Path, required=True, help="folder the archives are written to")
    parser.add_argument("--for-s", type=float, default=570.0, help="stop watching after this many seconds")
    parser.add_argument("--every-s", type=float, default=2.0, help="seconds between looks at the manifests")
    args = parser.parse_args(argv)
    if not args.into.is_dir():
        parser.error(f"--into {args.into} is not a folder")
    return 0 if watch(args.roots, args.into, args.for_s, args.every_s) else 3


if __name__ == "__main__":
    sys.exit(main())
