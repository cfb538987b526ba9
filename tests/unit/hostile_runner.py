"""Run config files through the dry run of both CLI entry points, each file in a fresh child process
under a time limit and a memory limit; print one JSON line per file (used by test_hostile_configs.py).

    python -m tests.unit.hostile_runner SCRATCH_DIR FILE...

The runner imports llem_ray once, then forks one child per file, so a file costs milliseconds, not an
interpreter start. The child works in its own empty directory under SCRATCH_DIR, sets
`RLIMIT_AS` to its inherited address space + MEMORY_LIMIT_BYTES and an alarm of TIME_LIMIT_S, then
runs `llem run FILE --dry-run` (the typer app behind the `llem` console script) and
`python -m llem_ray.study FILE --dry-run` (its `main`), capturing each one's exit code, stdout,
stderr, wall-clock seconds and CPU seconds. The parent kills a child that outlives the limit, and reports what the child
left in its directory.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import resource
import select
import signal
import sys
import tempfile
import time
from pathlib import Path

TIME_LIMIT_S = 10
"""Wall-clock limit of one file (both entry points), s: a hang is cut off here."""
MEMORY_LIMIT_BYTES = 200 * 2**20
"""Address space a child may add to what it inherits, bytes."""


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}")


def _entry_points() -> dict:
    from llem_ray import study
    from llem_ray.cli import app

    def llem(path: str) -> object:
        try:
            app(["run", path, "--dry-run"], prog_name="llem")
        except SystemExit as exc:
            return exc.code
        return 0

    return {"llem": llem, "study": lambda path: study.main([path, "--dry-run"])}


def _child(path: str, scratch: Path, entries: dict, write_fd: int, time_limit_s: int, memory_limit_bytes: int) -> None:
    os.chdir(scratch)
    limit = _status_kib("VmSize") * 1024 + memory_limit_bytes
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    signal.alarm(time_limit_s)
    report: dict = {}
    for name, entry in entries.items():
        out, err = io.StringIO(), io.StringIO()
        start_s, start_cpu_s = time.perf_counter(), time.process_time()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = entry(path)
            except BaseException as exc:  # what the entry point let escape is exactly what the test looks for
                code = f"raised {type(exc).__name__}: {exc}"
        report[name] = {
            "code": code,
            "stdout": out.getvalue(),
            "stderr": err.getvalue(),
            "seconds": time.perf_counter() - start_s,
            "cpu_seconds": time.process_time() - start_cpu_s,
        }
    report["peak_rss_mib"] = _status_kib("VmHWM") / 1024
    os.write(write_fd, json.dumps(report, default=str).encode())
    os._exit(0)


def run_file(
    path: str,
    scratch_root: Path,
    entries: dict,
    time_limit_s: int = TIME_LIMIT_S,
    memory_limit_bytes: int = MEMORY_LIMIT_BYTES,
) -> dict:
    """One file in one child (see module docstring): the child's report (empty when it was killed)
    plus `written`, `timed_out` and `child_status` (the raw wait status)."""
    path = os.path.abspath(path)
    scratch = Path(tempfile.mkdtemp(dir=scratch_root))
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read_fd)
        _child(path, scratch, entries, write_fd, time_limit_s, memory_limit_bytes)
    os.close(write_fd)
    chunks, deadline_s = [], time.monotonic() + time_limit_s + 5
    while time.monotonic() < deadline_s:
        ready, _, _ = select.select([read_fd], [], [], max(0.0, deadline_s - time.monotonic()))
        if not ready:
            break
        chunk = os.read(read_fd, 1 << 16)
        if not chunk:
            break
        chunks.append(chunk)
    os.close(read_fd)
    timed_out = time.monotonic() >= deadline_s
    if timed_out:
        os.kill(pid, signal.SIGKILL)
    _, status = os.waitpid(pid, 0)
    report = json.loads(b"".join(chunks) or b"{}")
    report.update(
        file=path,
        timed_out=timed_out,
        child_status=status,
        written=sorted(str(p.relative_to(scratch)) for p in scratch.rglob("*")),
    )
    return report


def main(argv: list[str]) -> None:
    scratch_root, files = Path(argv[0]), argv[1:]
    entries = _entry_points()
    for path in files:
        print(json.dumps(run_file(path, scratch_root, entries)), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
