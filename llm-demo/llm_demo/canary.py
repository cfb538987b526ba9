"""Canary rollout, promotion and rollback of model versions on a running Triton.

Triton serves `models/` in explicit model-control mode. Which versions of a
model are live is set by reloading it with a config override whose
`version_policy` is `specific: [..]`; requests reach a canary only through
explicit `/versions/<v>/` routing, so production traffic (unversioned requests
go to the highest loaded version, so it is kept at the approved version until
promotion) never sees it unless asked. What a restarted server serves is the
pin in `models/<model>/config.pbtxt` (llm_demo/approvals.py), rewritten on
every promotion and rollback.

`run_canary`:

1. validate the model in the repository (exit 6, nothing deployed when invalid;
   also when `models/<model>/<candidate>` does not exist);
2. previous = the highest approved version (`production/<model>/<v>` links);
3. deploy: reload with versions [previous, candidate], wait until the
   candidate's `/versions/<v>/ready` answers (within `sla.ready_s`); a
   candidate that fails to load is a failed check;
4. smoke tests against `/versions/<candidate>/`: every prompt must answer with
   non-empty text (containing `expect` if given) within `sla.request_s`, and all
   of them within `sla.total_s`;
5. pass: promote = link `production/<model>/<candidate>` (the approved-version
   link, and the pin), reload with [candidate]; fail: roll back = reload with
   [previous] only, then raise `SmokeTestError` (exit 10).

Every step is appended to the governance log `state/governance.jsonl` (kept
across runs) and to `logs/<run>/canary.jsonl`. Times are seconds. A reload
that Triton refuses outside the deploy step (restoring the previous version,
promoting) raises `LaunchError` (exit 7) after the failure is logged.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass, field

from .approvals import approve, approved_versions, withdraw
from .client import InferenceFailed, TritonTextClient
from .errors import LaunchError, RepositoryError, SmokeTestError
from .events import EventLog
from .paths import Workspace, iso, utc_now
from .redact import Redactor
from .repo_validate import validate_or_raise

GOVERNANCE_LOG = "governance.jsonl"


@dataclass
class SmokeTest:
    prompt: str
    expect: str | None = None
    max_tokens: int = 8


@dataclass
class Sla:
    """Seconds: candidate ready, one smoke request, all smoke requests."""

    ready_s: float = 120.0
    request_s: float = 30.0
    total_s: float = 120.0


@dataclass
class CanaryResult:
    model: str
    candidate: int
    previous: int | None
    promoted: bool
    checks: list[dict] = field(default_factory=list)


def governance_event(workspace: Workspace, redactor: Redactor, event: str, **fields) -> dict:
    """Append one event to `state/governance.jsonl` (never rewritten) and return it."""
    record = redactor.redact_obj({"ts": iso(utc_now()), "event": event, **fields})
    with workspace.state_file(GOVERNANCE_LOG).open("a", encoding="utf-8") as fh:
        fh.write(json.dumps(record) + "\n")
    return record


def _post(http_url: str, path: str, body: dict, timeout_s: float) -> None:
    req = urllib.request.Request(
        f"http://{http_url}{path}",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(req, timeout=timeout_s):
            return
    except urllib.error.HTTPError as exc:
        detail = exc.read().decode(errors="replace")
        raise LaunchError(
            f"POST {path} failed: HTTP {exc.code} {detail}",
            remediation="read triton.log of the server (state/serve.json); the server must run with "
            "--model-control-mode=explicit (the default of `llm-demo serve`)",
            doc="docs/usage.md#canary",
        ) from None


def set_live_versions(client: TritonTextClient, model: str, versions: list[int], timeout_s: float = 300.0) -> None:
    """Reload `model` so that exactly `versions` are served (blocks until loaded)."""
    config = dict(client.model_config(model))
    config["version_policy"] = {"specific": {"versions": sorted(versions)}}
    _post(
        client.http_url,
        f"/v2/repository/models/{model}/load",
        {"parameters": {"config": json.dumps(config)}},
        timeout_s,
    )
    client.forget_config(model)


def version_ready(http_url: str, model: str, version: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://{http_url}/v2/models/{model}/versions/{version}/ready", timeout=5):
            return True
    except (urllib.error.URLError, OSError):
        return False


def smoke_test(client: TritonTextClient, model: str, version: int, tests: list[SmokeTest], sla: Sla) -> list[dict]:
    """Run `tests` against one version; each result says `passed` and why not."""
    results = []
    start = time.monotonic()
    for test in tests:
        check = {"prompt": test.prompt, "expect": test.expect, "passed": False}
        try:
            gen = client.generate(model, test.prompt, test.max_tokens, version=version)
        except InferenceFailed as exc:
            results.append({**check, "reason": f"request failed: {exc}"})
            continue
        check.update(latency_s=gen.latency_s, output=gen.text)
        if not gen.text.strip():
            check["reason"] = "empty output"
        elif test.expect and test.expect not in gen.text:
            check["reason"] = f"output lacks {test.expect!r}"
        elif gen.latency_s > sla.request_s:
            check["reason"] = f"latency {gen.latency_s:.3f} s over the {sla.request_s} s SLA"
        elif time.monotonic() - start > sla.total_s:
            check["reason"] = f"smoke tests exceeded the {sla.total_s} s total SLA"
        else:
            check["passed"] = True
        results.append(check)
    return results


def rollback(
    workspace: Workspace, run_id: str, client: TritonTextClient, model: str, redactor: Redactor | None = None
) -> int:
    """Withdraw the newest approval of `model` and serve the previous approved version; return it.

    Raises SmokeTestError (exit 10) when fewer than two versions are approved, LaunchError (exit 7)
    when Triton refuses to load the previous version (nothing is withdrawn then).
    """
    redactor = redactor or Redactor()
    approved = approved_versions(workspace, model)
    if len(approved) < 2:
        raise SmokeTestError(
            f"{model}: nothing to roll back to (approved versions: {approved})",
            remediation="a rollback needs two approved versions; deploy one with `llm-demo canary`",
            doc="docs/usage.md#canary",
        )
    withdrawn, restored = approved[-1], approved[-2]
    set_live_versions(client, model, [restored])
    withdraw(workspace, model, withdrawn)
    record = {"run": run_id, "model": model, "withdrawn": withdrawn, "restored": restored}
    EventLog(workspace, run_id, "canary", redactor).emit("manual_rollback", **record)
    governance_event(workspace, redactor, "manual_rollback", **record)
    return restored


def _deploy_checks(
    client: TritonTextClient, model: str, candidate: int, live: list[int], tests: list[SmokeTest], sla: Sla
) -> list[dict]:
    """Load `live`, wait for the candidate, smoke-test it; a load Triton refuses is one failed check."""
    try:
        set_live_versions(client, model, live)
    except LaunchError as exc:
        return [{"prompt": None, "passed": False, "reason": f"version {candidate} failed to load: {exc.message}"}]
    deadline = time.monotonic() + sla.ready_s
    while not version_ready(client.http_url, model, candidate):
        if time.monotonic() > deadline:
            return [{"prompt": None, "passed": False, "reason": f"not ready within {sla.ready_s} s"}]
        time.sleep(0.25)
    return smoke_test(client, model, candidate, tests, sla)


def run_canary(
    workspace: Workspace,
    run_id: str,
    client: TritonTextClient,
    model: str,
    candidate: int,
    tests: list[SmokeTest],
    sla: Sla | None = None,
    redactor: Redactor | None = None,
) -> CanaryResult:
    """Deploy `candidate` as a canary, smoke-test it, promote or roll back (module docstring)."""
    sla = sla or Sla()
    redactor = redactor or Redactor()
    events = EventLog(workspace, run_id, "canary", redactor)
    version_dir = workspace.models_dir / model / str(candidate)
    if not version_dir.is_dir():
        raise RepositoryError(
            f"{model} version {candidate} does not exist: no {version_dir}",
            remediation=f"write it first (`llm-demo repo generate --version {candidate}`)",
            doc="docs/usage.md#canary",
        )
    validate_or_raise(workspace.models_dir, model, EventLog(workspace, run_id, "repository", redactor))

    def log(event: str, **fields) -> None:
        events.emit(event, **fields)
        governance_event(workspace, redactor, event, run=run_id, model=model, **fields)

    approved = [v for v in approved_versions(workspace, model) if v != candidate]
    previous = approved[-1] if approved else None
    log("canary_deploy", candidate=candidate, previous=previous, sla=asdict(sla))
    checks = _deploy_checks(client, model, candidate, [v for v in (previous, candidate) if v is not None], tests, sla)
    for check in checks:
        log("smoke_test", candidate=candidate, **check)
    result = CanaryResult(model, candidate, previous, all(c["passed"] for c in checks) and bool(checks), checks)
    if result.promoted:
        link = approve(workspace, model, candidate)
        set_live_versions(client, model, [candidate])
        log("promote", candidate=candidate, previous=previous, approved_link=str(link))
        return result
    failed = [c for c in checks if not c["passed"]]
    try:
        if previous is not None:
            set_live_versions(client, model, [previous])
        else:
            _post(client.http_url, f"/v2/repository/models/{model}/unload", {}, 60.0)
    except LaunchError as exc:
        log("rollback_failed", candidate=candidate, restored=previous, failed=failed, error=exc.message)
        raise
    log("rollback", candidate=candidate, restored=previous, failed=failed)
    raise SmokeTestError(
        f"canary {model} version {candidate} failed: {failed[0]['reason'] if failed else 'no smoke test ran'}; "
        + (f"rolled back to version {previous}" if previous is not None else "no approved version to restore"),
        remediation="see logs/<run>/canary.jsonl for the failing checks; fix the model and deploy a new version",
        doc="docs/usage.md#canary",
        details={"checks": checks},
    )
