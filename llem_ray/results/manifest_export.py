"""`manifest.json` kept current at a bounded rate while a study runs (issue 13).

The manifest's store (manifest_sql.py) is what the engine reads and writes; `manifest.json` is a
readable export of it, for people and tools that open the study directory. `ManifestExporter` is a
daemon thread of the results actor that writes it after changes, at most once every
`max(min_interval_s, last export's duration / EXPORT_DUTY)` seconds: at 100,000 entries an export
takes about a second, so it never takes more than EXPORT_DUTY of the actor's time, and never blocks a
change (it reads its own snapshot; SQLite builds the JSON without holding Python's GIL). A failed
export (disk full) is retried at the next interval; `flush` exports now and raises.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

from llem_ray.results.manifest import export_manifest

EXPORT_MIN_INTERVAL_S = 2.0
"""Shortest time between two exports while changes arrive, s."""
EXPORT_DUTY = 0.05
"""Largest share of wall time spent exporting."""


class ManifestExporter:
    """Writes `<study_dir>/manifest.json` from the store after `changed()`, at a bounded rate (see module
    docstring). `exports` and `export_s` count the exports done and the seconds they took."""

    def __init__(self, study_dir: Path, min_interval_s: float = EXPORT_MIN_INTERVAL_S):
        self.study_dir = Path(study_dir)
        self.min_interval_s = min_interval_s
        self.exports = 0
        self.export_s = 0.0
        self.last_error: str | None = None
        self._next_s = time.monotonic() + min_interval_s  # not while a study starts or resumes
        self._changed = threading.Event()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._loop, name="llem-manifest-export", daemon=True)
        self._thread.start()

    def changed(self) -> None:
        """The store changed: export once the interval allows."""
        self._changed.set()

    def flush(self) -> None:
        """Export now, in this thread. Raises sqlite3.Error or OSError."""
        self._changed.clear()
        self._export()

    def close(self) -> None:
        """Stop the thread (an export under way finishes first)."""
        self._stop.set()
        self._changed.set()
        self._thread.join(timeout=60)

    def _export(self) -> None:
        with self._lock:
            begun_s = time.monotonic()
            export_manifest(self.study_dir)
            took_s = time.monotonic() - begun_s
            self.exports += 1
            self.export_s += took_s
            self._next_s = time.monotonic() + max(self.min_interval_s, took_s / EXPORT_DUTY)

    def _loop(self) -> None:
        while True:
            self._changed.wait()
            if self._stop.is_set():
                return
            delay_s = self._next_s - time.monotonic()
            if delay_s > 0 and self._stop.wait(delay_s):
                return
            self._changed.clear()
            try:
                self._export()
                self.last_error = None
            except Exception as exc:  # disk full, directory gone: the store is intact; try again later
                self.last_error = f"{type(exc).__name__}: {exc}"
                self._next_s = time.monotonic() + self.min_interval_s
                self._changed.set()
