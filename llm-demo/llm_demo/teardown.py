"""Teardown: stop what `serve` started and prove it is gone.

`teardown` runs these steps and writes each result to `logs/<run>/cleanup.log`
(plain text, one line per check) and `logs/<run>/teardown.jsonl`:

1. stop the recorded server (`state/serve.json`): SIGTERM to its process
   group, SIGKILL after `grace_s` seconds, and verify none of it is left;
2. containers: with a compose file, `docker compose down`, then verify that
   `docker compose ps -q` lists nothing (skipped, and said so, without docker);
3. verify every recorded port is free (re-checked for up to `port_wait_s` s);
4. GPU: NVML snapshots; the stopped processes must hold no GPU memory (re-checked
   for up to `port_wait_s` s: the driver frees a context shortly after its process
   exits; on a host without NVML the log says it was not checked, and why);
5. purge: log run directories per the retention policy, downloads whose
   cache entry expired (`cache.retention_days`, acquire.purge), and with
   `purge_cache` the model cache `.cache/` entirely;
6. list the log, model and engine directories that remain, with sizes (bytes).

Failure mode: anything left running, bound or allocated raises
`TeardownIncompleteError` (exit 12) after the log is written.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

from .acquire import purge as purge_expired_downloads
from .errors import TeardownIncompleteError
from .events import EventLog
from .gpu import summary_line, wait_memory_released
from .paths import Workspace, iso, read_json, utc_now
from .redact import Redactor
from .retention import RetentionPolicy, rotate_logs
from .serve import SERVE_STATE, group_pids, host_port, port_in_use, stop_process_group


def _dir_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


def _ports(rec: dict) -> list[tuple[str, int]]:
    endpoints = [rec["http_url"], rec["grpc_url"], rec["metrics_url"].split("//", 1)[-1].split("/", 1)[0]]
    return [host_port(hostport) for hostport in endpoints]


def _wait_ports_free(ports: list[tuple[str, int]], wait_s: float) -> list[tuple[str, int]]:
    """Ports of `ports` still bound after waiting up to `wait_s` seconds."""
    deadline = time.monotonic() + wait_s
    bound = [(h, p) for h, p in ports if port_in_use(h, p)]
    while bound and time.monotonic() < deadline:
        time.sleep(0.2)
        bound = [(h, p) for h, p in bound if port_in_use(h, p)]
    return bound


def _containers(compose_file: Path | None, lines: list[str]) -> list[str]:
    """Bring a compose project down; return problems."""
    if compose_file is None:
        lines.append("containers: none started by llm-demo serve (no compose file given)")
        return []
    docker = shutil.which("docker")
    if docker is None:
        lines.append(f"containers: docker not installed; nothing to stop for {compose_file}")
        return []
    base = [docker, "compose", "-f", str(compose_file)]
    down = subprocess.run(base + ["down", "--remove-orphans"], capture_output=True, text=True, timeout=300)
    left = subprocess.run(base + ["ps", "-q"], capture_output=True, text=True, timeout=60)
    ids = left.stdout.split()
    lines.append(f"containers: compose down exit {down.returncode}; remaining containers: {ids or 'none'}")
    return [f"containers still running: {ids}"] if ids or down.returncode else []


def teardown(
    workspace: Workspace,
    run_id: str,
    *,
    policy: RetentionPolicy | None = None,
    purge_cache: bool = False,
    compose_file: Path | None = None,
    grace_s: float = 15.0,
    port_wait_s: float = 10.0,
    redactor: Redactor | None = None,
) -> dict:
    """Run the steps of the module docstring; return the report dict."""
    redactor = redactor or Redactor()
    events = EventLog(workspace, run_id, "teardown", redactor)
    lines = [f"llm-demo teardown, run {run_id}, started {iso(utc_now())}"]
    problems: list[str] = []
    state_path = workspace.state_dir / SERVE_STATE
    rec = read_json(state_path)
    pids: set[int] = set()
    left: list[int] = []
    if rec and rec["pgid"]:
        pids = set(group_pids(rec["pgid"])) | {rec["pid"]}
        left = stop_process_group(rec["pgid"], grace_s=grace_s)
        lines.append(
            f"server: process group {rec['pgid']} (pids {sorted(pids)}) stopped; still alive: {left or 'none'}"
        )
        events.emit("processes", pgid=rec["pgid"], pids=sorted(pids), remaining=left)
        if left:
            problems.append(f"processes still alive: {left}")
    elif rec:
        lines.append("server: attached (not started by llm-demo); stopped through the compose file, if given")
    else:
        lines.append("server: none recorded in state/serve.json (already stopped?)")
    problems += _containers(compose_file, lines)
    if rec:
        bound = _wait_ports_free(_ports(rec), port_wait_s)
        lines.append(f"ports {[p for _, p in _ports(rec)]}: still bound: {bound or 'none'}")
        events.emit("ports", checked=_ports(rec), still_bound=bound)
        if bound:
            problems.append(f"ports still bound: {bound}")
        if not left and not bound:
            state_path.unlink(missing_ok=True)
    snap, held = wait_memory_released("after-teardown", pids, port_wait_s)
    events.emit("gpu_snapshot", snapshot=snap)
    if snap["nvml"]:
        lines.append(f"gpu: {summary_line(snap)}; memory still held by stopped processes: {held} bytes")
        if held:
            problems.append(f"GPU memory still held: {held} bytes")
    else:
        lines.append(f"gpu: not checked, {snap['reason']}")
    rotation = rotate_logs(workspace, policy or RetentionPolicy(), protect={run_id})
    lines.append(f"logs: retention {rotation['policy']}; removed runs: {rotation['removed'] or 'none'}")
    expired = purge_expired_downloads(workspace)
    lines.append(f"cache: expired or invalidated downloads purged per cache.retention_days: {expired or 'none'}")
    if purge_cache and workspace.cache_dir.exists():
        shutil.rmtree(workspace.cache_dir)
        lines.append(f"cache: purged all of {workspace.cache_dir}")
    else:
        lines.append("cache: valid entries kept (pass --purge-cache to delete downloads and engines)")
    remaining = {}
    for folder in (workspace.logs_dir, workspace.models_dir, workspace.production_dir, workspace.cache_dir):
        if folder.exists():
            for child in sorted(folder.iterdir()):
                remaining[str(child)] = _dir_size(child) if child.is_dir() else child.stat().st_size
    lines.append("remaining directories (bytes):")
    lines += [f"  {path}  {size}" for path, size in remaining.items()]
    lines.append(f"result: {'INCOMPLETE: ' + '; '.join(problems) if problems else 'clean'}")
    report = {"problems": problems, "remaining": remaining, "gpu": snap, "rotation": rotation}
    events.emit("result", clean=not problems, problems=problems)
    log_path = workspace.run_dir(run_id) / "cleanup.log"
    log_path.write_text(redactor.redact("\n".join(lines)) + "\n", encoding="utf-8")
    if problems:
        raise TeardownIncompleteError(
            "teardown incomplete: " + "; ".join(problems),
            remediation=f"see {log_path}; stop leftovers by pid (`kill <pid>`) or free the ports, then rerun",
            doc="docs/usage.md#teardown",
            details=report,
        )
    report["cleanup_log"] = str(log_path)
    return report
