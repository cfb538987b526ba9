"""Host description for the prerequisite checks of :mod:`llm_demo.prereqs`.

``probe_host(cfg, workspace)`` describes the real host (NVML, installed packages, programs on PATH, Triton
install, disk, container); ``load_host_facts(path)`` reads the same description from a YAML/JSON
file instead (``llm-demo check --host-facts``: dry runs and tests on "described" hosts). Host facts::

    python_version: "3.12.3"         in_container: true
    gpus: [{index: 0, name: ..., compute_capability: "9.0", memory_total_bytes: ...}]
    driver_version: "590.48"         cuda_driver_version: "13.1"   # the newest CUDA the driver supports
    cuda_runtime_version: "13.1"     cudnn_version: "9.10.2"        # libraries a build links (None: absent)
    packages: {tensorrt_llm: "1.2.1", ...}        # missing = not installed
    executables: {trtllm-build: /path, convert_checkpoint: /path, docker: null, nvidia-ctk: null}
    nvidia_ctk_version: "1.17.3"     triton: {binary: /path, backends: [python, tensorrtllm]}
    disk_free_bytes: 500000000000

The facts never carry environment variables or the credential: the checks read those from the real
environment.
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
from pathlib import Path
from typing import Any

import yaml

from .config import DemoConfig
from .errors import ConfigError, LlmDemoError
from .paths import Workspace
from .versions import cuda_runtime_version, cudnn_version, package_version

_PROBED_PACKAGES = ("torch", "transformers", "tritonclient", "nvidia-pytriton", "tensorrt", "tensorrt_llm")


def load_host_facts(path: Path) -> dict[str, Any]:
    """Read a host description (YAML or JSON); ConfigError if missing or not a mapping."""
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read host facts {path}: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"host facts {path} must be a mapping")
    data["described_by"] = str(path)
    return data


def _nvml_facts() -> dict[str, Any]:
    try:
        import pynvml

        pynvml.nvmlInit()
    except Exception as exc:  # noqa: BLE001 - no driver / no library: a CPU host
        return {"gpus": [], "driver_version": None, "cuda_driver_version": None, "nvml_error": str(exc)}
    try:
        gpus = []
        for i in range(pynvml.nvmlDeviceGetCount()):
            h = pynvml.nvmlDeviceGetHandleByIndex(i)
            name = pynvml.nvmlDeviceGetName(h)
            major, minor = pynvml.nvmlDeviceGetCudaComputeCapability(h)
            gpus.append(
                {
                    "index": i,
                    "name": name.decode() if isinstance(name, bytes) else name,
                    "compute_capability": f"{major}.{minor}",
                    "memory_total_bytes": int(pynvml.nvmlDeviceGetMemoryInfo(h).total),
                }
            )
        driver = pynvml.nvmlSystemGetDriverVersion()
        cuda = int(pynvml.nvmlSystemGetCudaDriverVersion_v2())
        return {
            "gpus": gpus,
            "driver_version": driver.decode() if isinstance(driver, bytes) else driver,
            "cuda_driver_version": f"{cuda // 1000}.{(cuda % 1000) // 10}",
        }
    finally:
        pynvml.nvmlShutdown()


def _resolve_program(name: str) -> str | None:
    path = Path(name).expanduser()
    if path.is_absolute() or os.sep in name:
        return str(path) if path.is_file() else None
    return shutil.which(name)


def _command_version(argv: list[str]) -> str | None:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    for token in (out.stdout + " " + out.stderr).replace(",", " ").split():
        if token[:1].isdigit() and "." in token:
            return token
    return None


def _triton_facts() -> dict[str, Any]:
    from .triton import locate_triton  # part 2's locator: wheel, LLM_DEMO_TRITON_HOME or /opt/tritonserver

    try:
        install = locate_triton()
    except LlmDemoError:
        return {"binary": None, "backends": []}
    backends_dir = install.python_backend.parent
    return {"binary": str(install.binary), "backends": sorted(p.name for p in backends_dir.iterdir() if p.is_dir())}


def probe_host(cfg: DemoConfig, workspace: Workspace) -> dict[str, Any]:
    """Describe the real host (see module docstring). Never raises for missing hardware/software."""
    facts: dict[str, Any] = {"python_version": platform.python_version()}
    facts.update(_nvml_facts())
    facts["packages"] = {name: v for name in _PROBED_PACKAGES if (v := package_version(name))}
    facts["cuda_runtime_version"] = cuda_runtime_version()
    facts["cudnn_version"] = cudnn_version()
    executables = {
        "trtllm-build": _resolve_program(cfg.build.trtllm_build),
        "convert_checkpoint": _resolve_program(cfg.build.convert_script),
        "docker": shutil.which("docker"),
        "nvidia-ctk": shutil.which("nvidia-ctk"),
    }
    facts["executables"] = executables
    facts["nvidia_ctk_version"] = (
        _command_version([executables["nvidia-ctk"], "--version"]) if executables["nvidia-ctk"] else None
    )
    facts["in_container"] = Path("/.dockerenv").exists() or Path("/run/.containerenv").exists()
    facts["triton"] = _triton_facts()
    workspace.root.mkdir(parents=True, exist_ok=True)
    facts["disk_free_bytes"] = shutil.disk_usage(workspace.root).free
    facts["cpu_count"] = os.cpu_count()
    facts["platform"] = platform.platform()
    return facts
