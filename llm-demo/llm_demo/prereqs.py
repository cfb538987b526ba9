"""Prerequisite checks: ``config/prerequisites.yaml`` evaluated against a host description.

The host description (facts) comes from :mod:`llm_demo.host_probe`: probed on the real host, or read
from a file (``llm-demo check --host-facts``).

Environment variables and the credential always come from the real environment (never from the
facts file). ``check_prerequisites`` runs every check that applies to the configured runtime, writes
``state/prereq-manifest.json`` (validated versions, hardware snapshot, each result) and
``logs/<run>/prereq.jsonl``, and raises :class:`~llm_demo.errors.PrerequisiteError` (exit 3) when a
check fails, before anything is downloaded or built. Results carry remediation text and a section of
``docs/prerequisites.md``; the credential value never appears anywhere.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import yaml

from . import credentials
from .config import DemoConfig
from .errors import ConfigError, PrerequisiteError
from .events import EventLog
from .host_probe import probe_host
from .paths import Workspace, iso, utc_now, write_json_atomic
from .redact import Redactor
from .versions import at_least, spec_matches

DOC = "docs/prerequisites.md"
_GIB = 1024**3


@dataclass(frozen=True)
class CheckResult:
    """Outcome of one check. ``status``: pass | warn | fail. ``doc``: docs/prerequisites.md#section."""

    id: str
    status: str
    observed: Any
    required: Any
    message: str
    remediation: str | None
    doc: str


def load_requirements(workspace: Workspace) -> dict[str, Any]:
    """Read prerequisites.yaml (workspace copy first, else the shipped one); ConfigError if unreadable."""
    path = workspace.config_file("prerequisites.yaml")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read {path}: {exc}", doc=f"{DOC}#machine-readable-file") from None
    if not isinstance(data, dict) or "support_matrix" not in data:
        raise ConfigError(f"{path} lacks support_matrix", doc=f"{DOC}#machine-readable-file")
    return data


def matrix_row(req: Mapping[str, Any], facts: Mapping[str, Any]) -> dict[str, Any]:
    """The support-matrix row matching the installed TensorRT-LLM, else the newest (first) row."""
    installed = (facts.get("packages") or {}).get("tensorrt_llm")
    for row in req["support_matrix"]:
        if installed and spec_matches(installed, row["tensorrt_llm"]):
            return dict(row)
    return dict(req["support_matrix"][0])


def run_checks(
    cfg: DemoConfig, req: Mapping[str, Any], facts: Mapping[str, Any], environ: Mapping[str, str]
) -> list[CheckResult]:
    """Evaluate every check that applies to ``cfg.runtime``; pure function of its inputs."""
    rt = cfg.runtime
    gpu_runtime = rt in ("engine", "llmapi")
    row = matrix_row(req, facts)
    results: list[CheckResult] = []

    def add(
        id_: str,
        ok: bool,
        observed: Any,
        required: Any,
        message: str,
        remediation: str,
        section: str,
        warn: bool = False,
    ) -> None:
        status = "pass" if ok else ("warn" if warn else "fail")
        results.append(
            CheckResult(id_, status, observed, required, message, None if ok else remediation, f"{DOC}#{section}")
        )

    py_min = req["python"]["min_version"]
    py = facts.get("python_version") or "0"
    add(
        "python",
        at_least(py, py_min),
        py,
        f">={py_min}",
        f"Python {py}",
        f"use Python >= {py_min} (the NGC container ships {row.get('python')})",
        "python",
    )

    gpus = list(facts.get("gpus") or [])
    gcfg = req["gpu"]
    supported = {cc for arch in gcfg["supported_architectures"] for cc in arch["compute_capability"]}
    if gpu_runtime or gpus:
        bad = [
            g
            for g in gpus
            if g["compute_capability"] not in supported
            or not at_least(g["compute_capability"], gcfg["min_compute_capability"])
        ]
        observed = [f"{g['name']} (cc {g['compute_capability']})" for g in gpus] or "no GPU visible"
        add(
            "gpu",
            bool(gpus) and not bad,
            observed,
            f"compute capability >= {gcfg['min_compute_capability']} in {sorted(supported)}",
            f"GPUs: {observed}",
            "install a supported NVIDIA GPU and driver, or use the python runtime on CPU",
            "gpu-architecture",
        )
        min_vram = float(gcfg["min_vram_gib"][rt])
        small = [g for g in gpus if g["memory_total_bytes"] < min_vram * _GIB]
        add(
            "vram",
            bool(gpus) and not small,
            {g["name"]: g["memory_total_bytes"] for g in gpus},
            f">= {min_vram} GiB per GPU",
            f"GPU memory below {min_vram} GiB on {[g['name'] for g in small]}"
            if small
            else ("GPU memory sufficient" if gpus else "no GPU visible"),
            "use a GPU with more memory, a smaller model or a lower precision profile",
            "gpu-memory",
        )
        driver = facts.get("driver_version")
        need = row["min_driver"] if gpu_runtime else None
        ok = bool(driver) and (need is None or at_least(driver, need))
        add(
            "driver",
            ok,
            driver,
            f">= {need}" if need else "present",
            f"NVIDIA driver {driver or 'not found'}",
            f"install NVIDIA driver >= {need or row['min_driver']}",
            "nvidia-driver",
        )
        if gpu_runtime:
            cuda = facts.get("cuda_driver_version")
            add(
                "cuda",
                bool(cuda) and at_least(cuda, row["cuda"]),
                cuda,
                f">= {row['cuda']}",
                f"driver supports CUDA {cuda or 'unknown'}",
                f"upgrade the driver to one supporting CUDA {row['cuda']}",
                "cuda",
            )
    else:
        add(
            "gpu",
            True,
            "no GPU visible",
            "optional for the python runtime",
            "no GPU: the python runtime runs on CPU",
            "",
            "gpu-architecture",
        )

    installed = facts.get("packages") or {}
    for name, spec in (req["packages"].get(rt) or {}).items():
        have = installed.get(name)
        section = "tensorrt-llm-and-tensorrt" if name.startswith("tensorrt") else "python-packages"
        add(
            f"package:{name}",
            bool(have) and spec_matches(have, spec),
            have,
            spec,
            f"{name} {have or 'not installed'}",
            f"install {name}{spec} (TensorRT-LLM: use the container {row['image']})"
            if section != "python-packages"
            else f"pip install '{name}{spec}'",
            section,
        )

    executables = facts.get("executables") or {}
    for name in req["executables"].get(rt) or []:
        add(
            f"executable:{name}",
            bool(executables.get(name)),
            executables.get(name),
            "found",
            f"{name}: {executables.get(name) or 'not found'}",
            f"put {name} on PATH or set "
            f"build.{'trtllm_build' if name == 'trtllm-build' else 'convert_script'} in config/model.yaml",
            "build-tools",
        )

    triton = facts.get("triton") or {}
    need_backend = "tensorrtllm" if rt == "engine" else "python"
    backends = triton.get("backends") or []
    add(
        "triton",
        bool(triton.get("binary")) and need_backend in backends,
        triton.get("binary"),
        f"tritonserver with the {need_backend} backend",
        f"tritonserver {triton.get('binary') or 'not found'}, backends {backends}",
        "pip install nvidia-pytriton==0.7.0 (python runtime)" if rt == "python" else f"run inside {row['image']}",
        "triton-server",
    )

    ctk = req["container_toolkit"]
    if rt in ctk["runtimes"] and not facts.get("in_container"):
        version = facts.get("nvidia_ctk_version")
        ok = bool(executables.get("docker")) and bool(version) and at_least(version, ctk["min_nvidia_ctk"])
        add(
            "container_toolkit",
            ok,
            {"docker": executables.get("docker"), "nvidia-ctk": version},
            f"docker + nvidia-ctk >= {ctk['min_nvidia_ctk']}",
            f"container toolkit {version or 'not found'}",
            "install docker and the NVIDIA Container Toolkit, "
            "then `sudo nvidia-ctk runtime configure --runtime=docker`",
            "nvidia-container-toolkit",
        )

    free = facts.get("disk_free_bytes")
    need_gib = float(req["disk"]["min_free_gib"][rt])
    add(
        "disk",
        free is not None and free >= need_gib * _GIB,
        free,
        f">= {need_gib} GiB free",
        f"{(free or 0) / _GIB:.1f} GiB free",
        "free disk space or point --root at a larger volume",
        "disk-space",
    )

    for name in req["environment"]["required"].get(rt) or []:
        add(
            f"env:{name}",
            bool(environ.get(name)),
            "set" if environ.get(name) else "unset",
            "set",
            f"environment variable {name}",
            f"export {name}=...",
            "environment-variables",
        )

    cred = credentials.resolve(cfg, environ)
    required = cfg.credentials.required
    add(
        "credential",
        cred.present,
        cred.describe(),
        "present" if required else "optional",
        f"credential from {cred.source}:{cred.location} {'found' if cred.present else 'missing'}",
        f"provide a token via {cfg.credentials.source} ({cred.location}); see the credentials section",
        "credentials",
        warn=not required,
    )
    return results


def hardware_snapshot(facts: Mapping[str, Any]) -> dict[str, Any]:
    """The hardware part of the facts, for manifests."""
    keys = (
        "gpus",
        "driver_version",
        "cuda_driver_version",
        "cpu_count",
        "platform",
        "disk_free_bytes",
        "in_container",
        "described_by",
    )
    return {k: facts.get(k) for k in keys}


def check_prerequisites(
    workspace: Workspace,
    cfg: DemoConfig,
    run_id: str,
    redactor: Redactor,
    facts: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Run the checks, write the manifest and events, return the manifest; PrerequisiteError on failure."""
    env = os.environ if environ is None else environ
    cred = credentials.resolve(cfg, env)
    redactor.add_literal(cred.token)
    events = EventLog(workspace, run_id, "prereq", redactor)
    req = load_requirements(workspace)
    facts = dict(facts) if facts is not None else probe_host(cfg, workspace)
    events.emit("start", runtime=cfg.runtime, host_facts=facts.get("described_by", "probed"))
    results = run_checks(cfg, req, facts, env)
    for r in results:
        events.emit("check", **asdict(r))
    failed = [r for r in results if r.status == "fail"]
    row = matrix_row(req, facts)
    manifest = {
        "checked_at": iso(utc_now()),
        "run": run_id,
        "runtime": cfg.runtime,
        "ok": not failed,
        "support_matrix_row": row,
        "validated_versions": {
            "python": facts.get("python_version"),
            "driver": facts.get("driver_version"),
            "cuda_driver": facts.get("cuda_driver_version"),
            "cuda_runtime": facts.get("cuda_runtime_version"),
            "cudnn": facts.get("cudnn_version"),
            "packages": facts.get("packages") or {},
            "tritonserver": (facts.get("triton") or {}).get("binary"),
            "nvidia_ctk": facts.get("nvidia_ctk_version"),
        },
        "hardware": hardware_snapshot(facts),
        "credential": cred.describe(),
        "checks": [asdict(r) for r in results],
    }
    write_json_atomic(workspace.state_file("prereq-manifest.json"), redactor.redact_obj(manifest))
    events.emit("end", ok=not failed, failed=[r.id for r in failed])
    if failed:
        lines = [f"{r.id}: {r.message} -> {r.remediation} ({r.doc})" for r in failed]
        raise PrerequisiteError(
            f"{len(failed)} prerequisite check(s) failed: {', '.join(r.id for r in failed)}",
            remediation="\n  " + "\n  ".join(lines),
            doc=failed[0].doc,
            details={"failed": [asdict(r) for r in failed], "all": [asdict(r) for r in results]},
        )
    return manifest
