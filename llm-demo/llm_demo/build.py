"""Engine build for the three runtimes; ``state/engine-manifest.json`` and failure diagnostics.

``build(workspace, cfg, run_id, redactor, acquired, prereq=None, now=None) -> dict`` returns the
engine manifest it wrote:

* ``engine``: runs ``convert_checkpoint.py`` (TensorRT-LLM's, for the model family) and then
  ``trtllm-build`` with the configured flags, each a subprocess whose merged stdout/stderr is streamed,
  line by line and redacted, to ``logs/<run>/build.log``; the engine lands in
  ``.cache/engines/<key>/engine`` where ``key`` hashes the input model, build flags, GPU compute
  capability and TensorRT/TensorRT-LLM versions (an engine is only valid for all of them). An intact
  engine with the same key is reused (``engine_cache_hit`` event). The commands and the streaming
  runner are in :mod:`llm_demo.engine_tools`.
* ``llmapi``: writes ``llm_api_config.yaml`` (LLM-API / PyTorch-backend options) instead of an engine.
* ``python``: checks the transformers model directory (``config.json`` with ``model_type``, weights,
  tokenizer files); the weights are the served artifacts.

The manifest records: input model (id, revision, commit, content SHA-256), quantisation, tokenizer
snapshot (source, SHA-256), build flags and commands, versions (TensorRT, TRT-LLM, the CUDA runtime and
cuDNN libraries, the newest CUDA the driver supports, the driver), container image and digest, GPU
compute capability, engine files with SHA-256, timestamps, deployment target, status. A copy is stored
next to the engine. On failure (non-zero exit, timeout, missing output) the tool writes
``logs/<run>/build-diagnostics.json`` (command, exit code, log tail, hints), links it from a manifest
with ``"status": "failed"`` and raises :class:`~llm_demo.errors.BuildError` (exit 5). Durations are
seconds; sizes bytes.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

from .acquire import Acquired
from .checksums import sha256_file
from .config import PRECISION_PROFILES, DemoConfig
from .engine_tools import TAIL_LINES, convert_command, run_streamed, trtllm_build_command
from .errors import BuildError
from .events import EventLog
from .paths import Workspace, iso, read_json, utc_now, write_json_atomic
from .redact import Redactor
from .versions import cuda_runtime_version, cudnn_version, package_version

MANIFEST = "engine-manifest.json"
_DOC = "docs/usage.md#engine-build"

#: (regex on the build log, hint) pairs for the diagnostics file.
HINTS: tuple[tuple[str, str], ...] = (
    (
        r"(?i)out of memory|CUDA_ERROR_OUT_OF_MEMORY|OOM",
        "GPU memory exhausted: lower build.max_batch_size / max_num_tokens / max_seq_len, "
        "or use a weight-only precision profile",
    ),
    (
        r"No module named|ModuleNotFoundError",
        "a Python module is missing: run inside the trtllm container (docs/prerequisites.md#tensorrt-llm-and-tensorrt)",
    ),
    (
        r"(?i)unrecognized arguments|no such option|invalid choice",
        "a flag is not supported by this TensorRT-LLM version: check build.extra_*_args and the support matrix",
    ),
    (
        r"(?i)compute capability|unsupported (sm|gpu|architecture)",
        "the GPU architecture is not supported by this TensorRT-LLM build (docs/prerequisites.md#gpu-architecture)",
    ),
    (
        r"(?i)no such file or directory|FileNotFoundError",
        "a path does not exist: check model.local_dir, build.convert_script and the cache",
    ),
    (
        r"(?i)permission denied",
        "a file or device is not accessible: check permissions of the workspace and /dev/nvidia*",
    ),
)


def _tree_files(root: Path) -> list[dict[str, Any]]:
    return [
        {"path": p.relative_to(root).as_posix(), "size_bytes": p.stat().st_size, "sha256": sha256_file(p)}
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name != MANIFEST
    ]


def _digest(files: list[Mapping[str, Any]]) -> str:
    return hashlib.sha256("\n".join(f"{f['path']}:{f['sha256']}" for f in files).encode()).hexdigest()


def _container(cfg: DemoConfig, prereq: Mapping[str, Any]) -> dict[str, Any]:
    image = cfg.build.container_image
    digest, source = os.environ.get("LLM_DEMO_CONTAINER_DIGEST"), "env LLM_DEMO_CONTAINER_DIGEST"
    if not digest and image and shutil.which("docker"):
        out = subprocess.run(
            ["docker", "image", "inspect", "--format", "{{index .RepoDigests 0}}", image],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        digest, source = (out.stdout.strip() or None), "docker image inspect"
    return {
        "image": image,
        "digest": digest,
        "digest_source": source if digest else "unavailable",
        "inside_container": bool((prereq.get("hardware") or {}).get("in_container")),
    }


def _base_manifest(
    workspace: Workspace, cfg: DemoConfig, run_id: str, acquired: Acquired, prereq: Mapping[str, Any], now: datetime
) -> dict[str, Any]:
    versions = prereq.get("validated_versions") or {}
    packages = versions.get("packages") or {}
    gpus = (prereq.get("hardware") or {}).get("gpus") or []
    dtype, weight_only = PRECISION_PROFILES[cfg.precision.profile]
    m, t = acquired.model, acquired.tokenizer
    return {
        "schema_version": 1,
        "run": run_id,
        "runtime": cfg.runtime,
        "model_name": cfg.model.name,
        "started_at": iso(now),
        "input_model": {
            "ref": m["ref"],
            "revision": m.get("revision"),
            "commit": m.get("commit"),
            "sha256": m["content_sha256"],
            "cache_key": m["key"],
        },
        "quantization": {
            "profile": cfg.precision.profile,
            "dtype": dtype,
            "weight_only": weight_only,
            "kv_cache_dtype": cfg.precision.kv_cache_dtype,
        },
        "tokenizer": {
            "ref": t["ref"],
            "revision": t.get("revision"),
            "commit": t.get("commit"),
            "sha256": t["content_sha256"],
            "path": t["path"],
        },
        "build_flags": {
            k: v
            for k, v in cfg.to_dict()["build"].items()
            if k not in ("container_image", "deployment_target", "timeout_s")
        },
        "versions": {
            "tensorrt": packages.get("tensorrt") or package_version("tensorrt"),
            "tensorrt_llm": packages.get("tensorrt_llm") or package_version("tensorrt_llm"),
            "cuda_runtime": versions.get("cuda_runtime") or cuda_runtime_version(),
            "cuda_driver": versions.get("cuda_driver"),
            "cudnn": versions.get("cudnn") or cudnn_version(),
            "driver": versions.get("driver"),
            "torch": package_version("torch"),
            "transformers": package_version("transformers"),
        },
        "gpu": {"name": gpus[0]["name"], "compute_capability": gpus[0]["compute_capability"]} if gpus else None,
        "container_image": _container(cfg, prereq),
        "deployment_target": cfg.build.deployment_target,
        "model_dir": m["path"],
        "tokenizer_dir": t["path"],
        "engine_dir": None,
        "engine_files": [],
        "engine_sha256": None,
        "commands": [],
        "build_log": None,
        "diagnostics": None,
        "status": "running",
    }


def _fail(
    workspace: Workspace,
    manifest: dict[str, Any],
    events: EventLog,
    stage: str,
    message: str,
    result: Mapping[str, Any] | None,
    cmd: list[str] | None,
) -> BuildError:
    run_dir = workspace.run_dir(manifest["run"])
    tail = list((result or {}).get("tail") or [])
    if manifest.get("build_log") and not tail and Path(manifest["build_log"]).exists():
        tail = Path(manifest["build_log"]).read_text(encoding="utf-8").splitlines()[-TAIL_LINES:]
    text = "\n".join(tail)
    diagnostics = {
        "run": manifest["run"],
        "stage": stage,
        "message": message,
        "command": cmd,
        "returncode": (result or {}).get("returncode"),
        "timed_out": (result or {}).get("timed_out"),
        "duration_s": (result or {}).get("duration_s"),
        "log_tail": tail,
        "build_log": manifest.get("build_log"),
        "hints": [hint for pattern, hint in HINTS if re.search(pattern, text)],
        "versions": manifest["versions"],
        "gpu": manifest["gpu"],
        "build_flags": manifest["build_flags"],
    }
    path = write_json_atomic(run_dir / "build-diagnostics.json", events.redactor.redact_obj(diagnostics))
    manifest.update(status="failed", diagnostics=str(path), finished_at=iso(utc_now()), error=message)
    write_json_atomic(workspace.state_file(MANIFEST), events.redactor.redact_obj(manifest))
    events.emit("build_failed", stage=stage, message=message, diagnostics=str(path), hints=diagnostics["hints"])
    return BuildError(
        message,
        remediation="; ".join(diagnostics["hints"]) or f"read {path} and {manifest.get('build_log')}",
        doc=_DOC,
        details={"diagnostics": str(path)},
    )


def _check_python_model(model_dir: Path, tokenizer_dir: Path) -> str | None:
    try:
        config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        return f"{model_dir}/config.json unreadable: {exc}"
    if "model_type" not in config:
        return f"{model_dir}/config.json has no model_type"
    if not any(model_dir.glob("*.safetensors")) and not any(model_dir.glob("*.bin")):
        return f"no weights (*.safetensors, *.bin) in {model_dir}"
    if not any((tokenizer_dir / n).exists() for n in ("tokenizer.json", "tokenizer.model", "vocab.json")):
        return f"no tokenizer files in {tokenizer_dir}"
    return None


def build(
    workspace: Workspace,
    cfg: DemoConfig,
    run_id: str,
    redactor: Redactor,
    acquired: Acquired,
    prereq: Mapping[str, Any] | None = None,
    now: datetime | None = None,
) -> dict[str, Any]:
    """Build/prepare for ``cfg.runtime``; write and return the engine manifest (see module docstring)."""
    now = now or utc_now()
    prereq = (
        prereq if prereq is not None else (read_json(workspace.state_dir / "prereq-manifest.json", default=None) or {})
    )
    events = EventLog(workspace, run_id, "build", redactor)
    manifest = _base_manifest(workspace, cfg, run_id, acquired, prereq, now)
    log_path = workspace.run_dir(run_id) / "build.log"
    manifest["build_log"] = str(log_path)
    events.emit(
        "start", runtime=cfg.runtime, input_model_sha256=manifest["input_model"]["sha256"], build_log=str(log_path)
    )
    model_dir, tok_dir = Path(acquired.model["path"]), Path(acquired.tokenizer["path"])

    if cfg.runtime == "python":
        problem = _check_python_model(model_dir, tok_dir)
        with log_path.open("a", encoding="utf-8") as log:
            log.write(
                f"### python runtime: model {model_dir}, tokenizer {tok_dir}: "
                f"{problem or 'ok, no compilation needed'}\n"
            )
        if problem:
            raise _fail(workspace, manifest, events, "check", problem, None, None)
        manifest["engine_files"] = [
            {k: f[k] for k in ("path", "size_bytes", "sha256")} for f in acquired.model["files"]
        ]
    else:
        key_src = json.dumps(
            [
                manifest["input_model"]["sha256"],
                manifest["tokenizer"]["sha256"],
                manifest["build_flags"],
                manifest["quantization"],
                (manifest["gpu"] or {}).get("compute_capability"),
                manifest["versions"]["tensorrt"],
                manifest["versions"]["tensorrt_llm"],
            ],
            sort_keys=True,
        )
        engine_root = workspace.cache_dir / "engines" / hashlib.sha256(key_src.encode()).hexdigest()[:16]
        engine_dir = engine_root / ("engine" if cfg.runtime == "engine" else "llmapi")
        manifest["engine_dir"] = str(engine_dir)
        previous = read_json(engine_dir / MANIFEST, default=None)
        if (
            previous
            and previous.get("status") == "succeeded"
            and engine_dir.is_dir()
            and _digest(_tree_files(engine_dir)) == previous.get("engine_sha256")
        ):
            events.emit("engine_cache_hit", engine_dir=str(engine_dir), engine_sha256=previous["engine_sha256"])
            manifest.update(
                engine_files=previous["engine_files"],
                commands=previous.get("commands", []),
                reused_from_run=previous.get("run"),
            )
        elif cfg.runtime == "engine":
            shutil.rmtree(engine_root, ignore_errors=True)
            ckpt_dir = engine_root / "checkpoint"
            steps = [
                ("convert", convert_command(cfg, str(model_dir), ckpt_dir)),
                ("trtllm-build", trtllm_build_command(cfg, ckpt_dir, engine_dir)),
            ]
            for label, cmd in steps:
                manifest["commands"].append(redactor.redact(" ".join(cmd)))
                events.emit("step_start", step=label, command=cmd)
                result = run_streamed(cmd, log_path, redactor, cfg.build.timeout_s, label)
                events.emit(
                    "step_end",
                    step=label,
                    returncode=result["returncode"],
                    duration_s=result["duration_s"],
                    timed_out=result["timed_out"],
                )
                if result["returncode"] != 0:
                    why = (
                        f"timed out after {cfg.build.timeout_s} s"
                        if result["timed_out"]
                        else f"exited with {result['returncode']}"
                    )
                    raise _fail(workspace, manifest, events, label, f"{label} {why}", result, cmd)
            ranks = cfg.build.tensor_parallelism * cfg.build.pipeline_parallelism
            missing = [
                n for n in ["config.json", *(f"rank{i}.engine" for i in range(ranks))] if not (engine_dir / n).is_file()
            ]
            if missing:
                raise _fail(
                    workspace,
                    manifest,
                    events,
                    "trtllm-build",
                    f"trtllm-build succeeded but {engine_dir} lacks {missing}",
                    None,
                    None,
                )
        else:
            engine_dir.mkdir(parents=True, exist_ok=True)
            options = {
                "model": str(model_dir),
                "tokenizer": str(tok_dir),
                "backend": "pytorch",
                "dtype": manifest["quantization"]["dtype"],
                "tensor_parallel_size": cfg.build.tensor_parallelism,
                "pipeline_parallel_size": cfg.build.pipeline_parallelism,
                "max_batch_size": cfg.build.max_batch_size,
                "max_num_tokens": cfg.build.max_num_tokens,
                "max_seq_len": cfg.build.max_seq_len,
                "kv_cache_config": {"free_gpu_memory_fraction": cfg.build.kv_cache_free_gpu_mem_fraction},
            }
            if cfg.precision.kv_cache_dtype:
                options["kv_cache_config"]["dtype"] = cfg.precision.kv_cache_dtype
            (engine_dir / "llm_api_config.yaml").write_text(yaml.safe_dump(options, sort_keys=False), encoding="utf-8")
        if not manifest["engine_files"]:
            manifest["engine_files"] = _tree_files(engine_dir)
    manifest["engine_sha256"] = _digest(manifest["engine_files"])
    manifest.update(status="succeeded", finished_at=iso(utc_now()))
    redacted = redactor.redact_obj(manifest)
    write_json_atomic(workspace.state_file(MANIFEST), redacted)
    if manifest["engine_dir"]:
        write_json_atomic(Path(manifest["engine_dir"]) / MANIFEST, redacted)
    events.emit("end", status="succeeded", engine_sha256=manifest["engine_sha256"], engine_dir=manifest["engine_dir"])
    return manifest
