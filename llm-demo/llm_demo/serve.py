"""Start Triton, block until it is ready, stop it again.

`launch` runs, in order:

1. preflight: no server recorded in `state/serve.json` may still run (else
   `LaunchError`, exit 7), every configured TLS file must exist (else
   `TlsFilesMissingError`, exit 8) and every listener's address:port must be
   free and distinct (else `PortConflictError`, exit 7). Nothing is started
   when preflight fails.
2. prepare the backend directory under `.cache/triton-backends/` (and, when
   `LLM_DEMO_STUB_SITE` names a NumPy 1.x folder, the stub's venv under
   `.cache/triton-stub-python/`: llm_demo/triton.py says why), start
   `tritonserver` in its own process group (so the Python backend stubs
   it forks can be stopped together), stdout and stderr streamed to
   `logs/<run>/triton.log`, credentials injected as environment variables;
3. poll HTTP `/v2/health/ready`, gRPC `ServerReady` (TLS when configured) and
   `/metrics` until all three answer, or the server exits, or `timeout_s`
   passes: then the whole process group is stopped, its `state/serve.json`
   record removed, and `LaunchError` (exit 7) carries the tail of the log.

The running server is recorded in `state/serve.json` (pid, process group,
endpoints, log path) for `warmup`, `chat`, `canary`, `watch` and `teardown`.
Events go to `logs/<run>/launch.jsonl`.
"""

from __future__ import annotations

import errno
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from .errors import LaunchError, PortConflictError, TlsFilesMissingError
from .events import EventLog
from .paths import Workspace, iso, read_json, utc_now, write_json_atomic
from .redact import Redactor
from .triton import (
    STUB_SITE_ENV,
    ServeOptions,
    TritonInstall,
    locate_triton,
    prepare_backend_dir,
    prepare_stub_python,
    server_command,
    server_env,
)

SERVE_STATE = "serve.json"
POLL_INTERVAL_S = 0.25


@dataclass
class ServerHandle:
    """A started server. `proc` exists only in the process that started it."""

    pid: int
    pgid: int
    run_id: str
    log_path: Path
    http_url: str
    grpc_url: str
    metrics_url: str
    tls_root_cert: str | None
    started_at: str
    proc: subprocess.Popen | None = None

    def record(self) -> dict:
        """JSON-ready description, as written to `state/serve.json`."""
        return {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(self).items() if k != "proc"}

    @classmethod
    def from_record(cls, rec: dict) -> ServerHandle:
        fields = {k: rec[k] for k in cls.__dataclass_fields__ if k in rec and k != "proc"}
        fields["log_path"] = Path(fields["log_path"])
        return cls(**fields)


def _client_host(address: str) -> str:
    """Where a client reaches a listener bound to `address` (wildcards map to loopback)."""
    return {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(address, address)


def port_in_use(address: str, port: int) -> bool:
    """True when a TCP listener cannot bind `address:port` now (EADDRINUSE)."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((address, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return True
            raise
    return False


def preflight(opts: ServeOptions) -> None:
    """Check TLS files, then ports; raise before anything is started (see module docstring)."""
    if opts.tls is not None:
        missing = [str(p) for p in opts.tls.files() if not Path(p).is_file()]
        if missing:
            raise TlsFilesMissingError(
                f"gRPC TLS is enabled but these files are missing: {', '.join(missing)}",
                remediation="create or mount the certificate/key (PEM) at the configured paths, "
                "fix --grpc-tls-cert/--grpc-tls-key, or serve without --grpc-tls",
                doc="docs/usage.md#tls",
                details={"missing": missing},
            )
    seen: dict[int, str] = {}
    for name, address, port in opts.endpoints():
        if port in seen:
            raise PortConflictError(
                f"{name} and {seen[port]} are both configured on port {port}",
                remediation="give each listener its own port: serve.http_port, serve.grpc_port and "
                "serve.metrics_port in config/serving.yaml (serve and warmup), or serve's --http-port, "
                "--grpc-port, --metrics-port",
                doc="docs/usage.md#ports",
            )
        seen[port] = name
        if port_in_use(address, port):
            raise PortConflictError(
                f"{name} port {address}:{port} is already bound by another process",
                remediation=f"stop the process holding it (`ss -ltnp 'sport = :{port}'` shows it; "
                "`llm-demo teardown` if it is an earlier llm-demo server) or pick a free port: "
                f"serve.{name}_port in config/serving.yaml (serve and warmup), or serve's --{name}-port",
                doc="docs/usage.md#ports",
                details={"listener": name, "address": address, "port": port},
            )


def refuse_if_serving(workspace: Workspace) -> None:
    """Raise LaunchError (exit 7) when `state/serve.json` records a server that still runs: a second
    one would overwrite that record, and `teardown` could no longer find the first. A record whose
    process group is gone (or an attached one whose ports are all free) is stale and is left to be
    replaced."""
    rec = read_json(workspace.state_file(SERVE_STATE))
    if not rec:
        return
    if rec["pgid"]:
        alive = bool(group_pids(rec["pgid"]))
    else:  # attached (docker compose): alive while one of its ports is bound
        alive = any(port_in_use(*host_port(url)) for url in (rec["http_url"], rec["grpc_url"]))
    if alive:
        raise LaunchError(
            f"a server recorded in {workspace.state_file(SERVE_STATE)} is still running "
            f"(pid {rec['pid'] or 'attached'}, http {rec['http_url']})",
            remediation="use it (`llm-demo chat`, `canary`, `watch`), stop it with `llm-demo teardown`, "
            "or give the new one its own workspace with --root",
            doc="docs/usage.md#serve",
            details={"server": rec},
        )


def host_port(hostport: str) -> tuple[str, int]:
    """`"127.0.0.1:8000"` or `"[::1]:8000"` -> (host, port)."""
    host, _, port = hostport.rpartition(":")
    return host.strip("[]"), int(port)


def group_pids(pgid: int) -> list[int]:
    """Live (non-zombie) processes whose process group is `pgid`, read from /proc."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if fields[0] != "Z" and int(fields[2]) == pgid:
            found.append(int(entry.name))
    return found


def stop_process_group(pgid: int, proc: subprocess.Popen | None = None, grace_s: float = 15.0) -> list[int]:
    """SIGTERM the group, SIGKILL what is left after `grace_s` seconds; return pids still alive."""
    for sig, wait_s in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 5.0)):
        if not group_pids(pgid):
            break
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            break
        deadline = time.monotonic() + wait_s
        while group_pids(pgid) and time.monotonic() < deadline:
            if proc is not None:
                proc.poll()  # reap our own child so it does not linger as a zombie
            time.sleep(0.1)
    if proc is not None:
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
    return group_pids(pgid)


def _http_ok(url: str, timeout_s: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as resp:
            return resp.status == 200
    except (urllib.error.URLError, OSError):
        return False


def grpc_client(handle: ServerHandle):
    """A `tritonclient.grpc.InferenceServerClient` for `handle` (TLS when it was served with TLS)."""
    import tritonclient.grpc as grpcclient

    if handle.tls_root_cert:
        return grpcclient.InferenceServerClient(handle.grpc_url, ssl=True, root_certificates=handle.tls_root_cert)
    return grpcclient.InferenceServerClient(handle.grpc_url)


def _grpc_ready(handle: ServerHandle) -> bool:
    try:
        client = grpc_client(handle)
        try:
            return bool(client.is_server_ready(client_timeout=2.0))
        finally:
            client.close()
    except Exception:  # InferenceServerException, grpc errors while starting up
        return False


def probe(handle: ServerHandle) -> dict[str, bool]:
    """One readiness round: {"http": bool, "grpc": bool, "metrics": bool}."""
    return {
        "http": _http_ok(f"http://{handle.http_url}/v2/health/ready"),
        "grpc": _grpc_ready(handle),
        "metrics": _http_ok(handle.metrics_url),
    }


def _log_tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def launch(
    workspace: Workspace,
    run_id: str,
    opts: ServeOptions,
    *,
    install: TritonInstall | None = None,
    credentials: Mapping[str, str] | None = None,
    timeout_s: float = 180.0,
    redactor: Redactor | None = None,
) -> ServerHandle:
    """Preflight, start and wait for Triton (module docstring); return the ready server."""
    redactor = redactor or Redactor()
    for value in (credentials or {}).values():
        redactor.add_literal(value)
    events = EventLog(workspace, run_id, "launch", redactor)
    try:
        refuse_if_serving(workspace)
        preflight(opts)
    except (LaunchError, TlsFilesMissingError) as exc:
        events.emit("preflight_failed", error=type(exc).__name__, message=exc.message)
        raise
    install = install or locate_triton()
    run_dir = workspace.run_dir(run_id)
    backend_dir = prepare_backend_dir(install, workspace.cache_dir / "triton-backends")
    stub_site = os.environ.get(STUB_SITE_ENV)
    stub_bin = prepare_stub_python(Path(stub_site), workspace.cache_dir / "triton-stub-python") if stub_site else None
    cmd = server_command(install, backend_dir, opts)
    env = server_env(install, stub_bin=stub_bin)
    env.update(credentials or {})
    log_path = run_dir / "triton.log"
    events.emit("starting", command=cmd, log=str(log_path), credentials=sorted(credentials or {}))
    t0 = time.monotonic()
    with log_path.open("ab") as log_fh:
        proc = subprocess.Popen(
            cmd,
            stdout=log_fh,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            cwd=run_dir,
            start_new_session=True,
        )
    tls_root = None
    if opts.tls is not None:
        tls_root = str(opts.tls.root_cert or opts.tls.cert)
    handle = ServerHandle(
        pid=proc.pid,
        pgid=proc.pid,
        run_id=run_id,
        log_path=log_path,
        http_url=f"{_client_host(opts.http_address)}:{opts.http_port}",
        grpc_url=f"{_client_host(opts.grpc_address)}:{opts.grpc_port}",
        metrics_url=f"http://{_client_host(opts.metrics_address)}:{opts.metrics_port}/metrics",
        tls_root_cert=tls_root,
        started_at=iso(utc_now()),
        proc=proc,
    )
    state_path = write_json_atomic(workspace.state_file(SERVE_STATE), handle.record())
    try:
        status = _wait_ready(handle, proc, t0 + timeout_s)
    except BaseException:  # Ctrl-C or a bug while waiting: never leave a server behind
        stop_process_group(handle.pgid, proc)
        state_path.unlink(missing_ok=True)
        raise
    if status is None:
        events.emit("ready", seconds_to_ready=round(time.monotonic() - t0, 3), server=handle.record())
        return handle
    exited = proc.poll()
    left = stop_process_group(handle.pgid, proc)
    if not left:  # keep the record only while something of the group is left, for `teardown`
        state_path.unlink(missing_ok=True)
    reason = f"exited with code {exited}" if exited is not None else f"not ready after {timeout_s:.0f} s"
    tail = redactor.redact(_log_tail(log_path))
    events.emit("launch_failed", reason=reason, probes=status, remaining_pids=left, log_tail=tail)
    raise LaunchError(
        f"Triton {reason} (ready probes: {status}); processes stopped; log: {log_path}\n{tail}",
        remediation="read the log above; a model that fails to load, a missing backend or a port "
        "taken meanwhile are the usual causes. Raise --timeout for large models.",
        doc="docs/usage.md#serve",
        details={"probes": status, "pgid": handle.pgid, "remaining_pids": left},
    )


def _wait_ready(handle: ServerHandle, proc: subprocess.Popen, deadline: float) -> dict | None:
    """Poll until every probe passes (return None) or the server exits / the deadline
    (monotonic seconds) passes (return the last probe results)."""
    status = {"http": False, "grpc": False, "metrics": False}
    while time.monotonic() < deadline and proc.poll() is None:
        status = probe(handle)
        if all(status.values()):
            return None
        time.sleep(POLL_INTERVAL_S)
    return status


def attach(workspace: Workspace, run_id: str, opts: ServeOptions, timeout_s: float = 600.0) -> ServerHandle:
    """Record a server started elsewhere (docker compose) once all three probes pass.

    The record has pid = pgid = 0: teardown then stops nothing itself and relies on
    `--compose-file`. Raises LaunchError (exit 7) when not ready within `timeout_s` seconds.
    """
    handle = ServerHandle(
        pid=0,
        pgid=0,
        run_id=run_id,
        log_path=workspace.run_dir(run_id) / "triton.log",
        http_url=f"{_client_host(opts.http_address)}:{opts.http_port}",
        grpc_url=f"{_client_host(opts.grpc_address)}:{opts.grpc_port}",
        metrics_url=f"http://{_client_host(opts.metrics_address)}:{opts.metrics_port}/metrics",
        tls_root_cert=str(opts.tls.root_cert or opts.tls.cert) if opts.tls else None,
        started_at=iso(utc_now()),
    )
    deadline = time.monotonic() + timeout_s
    status = probe(handle)
    while not all(status.values()):
        if time.monotonic() > deadline:
            raise LaunchError(
                f"no ready Triton to attach to within {timeout_s:.0f} s (probes: {status})",
                remediation="check `docker compose ps` and `docker compose logs triton`",
                doc="docs/usage.md#docker-compose",
            )
        time.sleep(POLL_INTERVAL_S)
        status = probe(handle)
    EventLog(workspace, run_id, "launch").emit("attached", server=handle.record())
    write_json_atomic(workspace.state_file(SERVE_STATE), handle.record())
    return handle


def current_server(workspace: Workspace) -> ServerHandle:
    """The server recorded in `state/serve.json`; LaunchError (exit 7) when there is none."""
    rec = read_json(workspace.state_file(SERVE_STATE))
    if not rec:
        raise LaunchError(
            "no running server is recorded (state/serve.json missing)",
            remediation="start one with `llm-demo serve`",
            doc="docs/usage.md#serve",
        )
    return ServerHandle.from_record(rec)
