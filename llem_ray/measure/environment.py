"""Environment snapshot of an experiment (CM-32..34, MEAS-01): software, driver, GPUs, host.

Every probe degrades to None (or an empty list) on failure: a snapshot never fails an experiment.
CUDA version sources, in order (CM-33): torch (`torch.version.cuda`, only if torch is imported
or `import_torch`), the toolkit's `version.txt` / `version.json`, `nvcc --version`.
"""

from __future__ import annotations

import functools
import importlib.metadata
import json
import os
import platform
import re
import shutil
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from llem_ray import device
from llem_ray.device import DeviceError, DeviceUnavailable
from llem_ray.results.schema import EnvironmentSnapshot, GPUInfo

CUDA_HOMES = ("/usr/local/cuda",)
T = TypeVar("T")


def _tool_version() -> str:
    from llem_ray import __version__

    return __version__


def cuda_version(import_torch: bool) -> tuple[str | None, str | None]:
    """(CUDA version, source): torch, then $CUDA_HOME or /usr/local/cuda version files, then nvcc."""
    if import_torch or "torch" in sys.modules:
        try:
            import torch

            if torch.version.cuda:
                return torch.version.cuda, "torch"
        except ImportError:
            pass
    for home in [os.environ.get("CUDA_HOME"), *CUDA_HOMES]:
        if not home:
            continue
        txt, js = Path(home, "version.txt"), Path(home, "version.json")
        if txt.is_file() and (m := re.search(r"(\d+\.\d+(?:\.\d+)?)", txt.read_text(errors="replace"))):
            return m.group(1), "version.txt"
        if js.is_file():
            try:
                return json.loads(js.read_text())["cuda"]["version"], "version.txt"
            except (KeyError, ValueError):
                pass
    nvcc = shutil.which("nvcc")
    if nvcc:
        try:
            out = subprocess.run([nvcc, "--version"], capture_output=True, text=True, timeout=10).stdout
        except (OSError, subprocess.SubprocessError):
            out = ""
        if m := re.search(r"release (\d+\.\d+)", out):
            return m.group(1), "nvcc"
    return None, None


def gpu_infos(uuids: list[str]) -> list[GPUInfo]:
    """Name, VRAM (MiB), enforced power limit (W) and persistence mode of each GPU `uuid`.

    [] without a device layer; a GPU the layer does not know is left out, a quantity it cannot
    report is None.
    """
    try:
        gpus = device.current()
    except DeviceUnavailable:
        return []
    out = []
    for uuid in uuids:
        try:
            index, name, bus = gpus.index(uuid), gpus.gpu_name(uuid), gpus.pci_bus_id(uuid)
        except DeviceError:
            continue

        mem = _gpu_reading(gpus.memory_mib, uuid)
        persistence = _gpu_reading(gpus.persistence_mode, uuid)
        out.append(
            GPUInfo(
                index=index,
                name=name,
                uuid=uuid,
                pci_bus_id=bus,
                vram_total_mib=None if mem is None else mem.total_mib,
                power_limit_w=_gpu_reading(gpus.enforced_power_limit_w, uuid),
                persistence_mode=persistence,
            )
        )
    return out


def _gpu_reading(getter: Callable[[str], T], uuid: str) -> T | None:
    """`getter(uuid)`, or None where the GPU cannot report it (DeviceError)."""
    try:
        return getter(uuid)
    except DeviceError:
        return None


def _driver_version() -> str | None:
    try:
        return device.current().driver_version()
    except (DeviceUnavailable, DeviceError):
        return None


def _read(path: str) -> str | None:
    try:
        return Path(path).read_text(errors="replace")
    except OSError:
        return None


def _cpu_model() -> str | None:
    text = _read("/proc/cpuinfo") or ""
    m = re.search(r"^model name\s*:\s*(.+)$", text, re.MULTILINE)
    return m.group(1).strip() if m else (platform.processor() or None)


def _cpu_governor() -> str | None:
    text = _read("/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor")
    return text.strip() if text else None


def detect_container() -> str | None:
    """'kubernetes', 'docker', 'podman', 'container' (other) or None on bare metal / a VM."""
    if os.environ.get("KUBERNETES_SERVICE_HOST"):
        return "kubernetes"
    if Path("/.dockerenv").exists():
        return "docker"
    if Path("/run/.containerenv").exists():
        return "podman"
    cgroup = _read("/proc/1/cgroup") or ""
    for marker, kind in (("kubepods", "kubernetes"), ("docker", "docker"), ("libpod", "podman")):
        if marker in cgroup:
            return kind
    return "container" if os.environ.get("container") else None


def _name_version(dist: importlib.metadata.Distribution) -> tuple[str, str] | None:
    """(Name, Version) from the head of a distribution's METADATA (or PKG-INFO); None if absent.

    Reads only the header lines it needs: `dist.metadata` parses the whole file with the email parser,
    which for ~300 installed distributions costs ~0.3 s in every experiment's fresh process.
    """
    text = dist.read_text("METADATA") or dist.read_text("PKG-INFO") or ""
    name = version = None
    for line in text.splitlines():
        if not line.strip():
            break  # the headers end at the first blank line
        if line.startswith("Name:"):
            name = line[5:].strip()
        elif line.startswith("Version:"):
            version = line[8:].strip()
        if name and version:
            return name, version
    return None


@functools.lru_cache(maxsize=1)
def pip_freeze() -> tuple[str, ...]:
    """Installed distributions as sorted 'name==version' (importlib.metadata: no pip subprocess)."""
    seen = {}
    for dist in importlib.metadata.distributions():
        found = _name_version(dist)
        if found:
            seen[found[0].lower()] = f"{found[0]}=={found[1]}"
    return tuple(sorted(seen.values(), key=str.lower))


def snapshot(gpu_uuids: list[str], import_torch: bool = False) -> EnvironmentSnapshot:
    """Snapshot of this process's environment and of the GPUs `gpu_uuids` it measures."""
    try:
        torch_version = importlib.metadata.version("torch")
    except importlib.metadata.PackageNotFoundError:
        torch_version = None
    cuda, cuda_source = cuda_version(import_torch)
    return EnvironmentSnapshot(
        tool_version=_tool_version(),
        python_version=platform.python_version(),
        platform=platform.platform(),
        hostname=socket.gethostname(),
        torch_version=torch_version,
        cuda_version=cuda,
        cuda_version_source=cuda_source,
        driver_version=_driver_version(),
        gpus=gpu_infos(gpu_uuids),
        cpu_model=_cpu_model(),
        cpu_governor=_cpu_governor(),
        container=detect_container(),
        pip_freeze=list(pip_freeze()),
    )
