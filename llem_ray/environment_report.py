"""`llem config`: what this machine offers llem_ray, and what to install next (CLI-06).

Package presence is read from installed metadata, never by importing: importing `zeus` pulls in
`amdsmi`, which breaks Ray's accelerator probe on non-AMD hosts (energy/amd_guard.py).
"""

from __future__ import annotations

import importlib.metadata as md
import platform
from pathlib import Path

from llem_ray import device
from llem_ray.backends import registry as backend_registry
from llem_ray.config.user import load_user_config, runner_for, user_config_path
from llem_ray.device import DeviceError, DeviceUnavailable
from llem_ray.display import format_table
from llem_ray.errors import ConfigError

_METERS = {"nvml": "nvidia-ml-py", "zeus": "zeus", "codecarbon": "codecarbon"}
_METER_EXTRAS = {"zeus": "zeus", "codecarbon": "codecarbon"}


def _version(dist: str) -> str | None:
    try:
        return md.version(dist)
    except md.PackageNotFoundError:
        return None


def gpu_rows() -> tuple[list[list[str]], str | None]:
    """One row per GPU via the device layer (index, name, UUID, memory GB, power limit W), or why there are none."""
    try:
        gpus = device.current()
        rows = [
            [
                str(g.index),
                gpus.gpu_name(g.uuid),
                g.uuid,
                f"{gpus.memory_mib(g.uuid).total_mib * 2**20 / 1e9:.1f}",
                f"{gpus.power_limit_w(g.uuid):.0f}",
            ]
            for g in gpus.list_gpus()
        ]
    except DeviceUnavailable as exc:  # no nvidia-ml-py or no driver: the reason the meters give too
        return [], str(exc)
    except DeviceError as exc:
        return [], f"NVML could not list GPUs: {exc}"
    return rows, None if rows else "NVML found no GPU"


def render(verbose: bool = False) -> str:
    """The `llem config` report as text."""
    from llem_ray import __version__

    out = [f"llem {__version__} on Python {platform.python_version()} ({platform.platform()})", ""]
    gpus, why = gpu_rows()
    out += [
        "GPUs:",
        format_table(["index", "name", "uuid", "memory GB", "power limit W"], gpus)
        if gpus
        else f"  none: {why}. Experiments run on the CPU (energy fields are null).",
    ]
    out += ["", "Inference backends:"]
    backend_rows = []
    for spec in backend_registry.specs():
        versions = [_version(d) for d in spec.modules]
        ok = all(versions)
        hint = f"pip install -e '.[{spec.install_extra}]'" if spec.install_extra else f"needs {', '.join(spec.modules)}"
        found = ", ".join(f"{d} {v}" for d, v in zip(spec.modules, versions) if v) or "needs no other package"
        detail = found if ok else hint
        backend_rows.append([spec.name, "installed" if ok else "missing", detail])
    out.append(format_table(["backend", "status", "version / how to install"], backend_rows))
    out += ["", "Energy meters (auto order: zeus, nvml, codecarbon):"]
    meter_rows = [
        [m, "installed" if _version(d) else "missing", _version(d) or f"pip install -e '.[{_METER_EXTRAS.get(m, m)}]'"]
        for m, d in _METERS.items()
    ]
    out.append(format_table(["meter", "status", "version / how to install"], meter_rows))
    config_path = user_config_path()
    out += [
        "",
        f"Ray: {_version('ray') or 'missing'}",
        f"User config: {config_path} ({'present' if config_path.exists() else 'absent: defaults apply'})",
    ]
    try:
        user = load_user_config()
        runners = {b: runner_for(b, user) for b in backend_registry.names()}
    except ConfigError as exc:
        out.append(f"  runs will refuse this configuration: {exc}")
    else:
        out.append(f"  results are saved under {Path(user.output.results_dir).resolve()} (output.results_dir)")
        out += [
            f"  {b} study experiments run in the container image {r.removeprefix('docker:')} (runners.{b})"
            for b, r in runners.items()
            if r != "local"
        ]
    out += [
        "",
        "Next steps:",
        "  llem run                      # built-in default, no download",
        "  llem run configs/experiment-minimal.yaml --dry-run",
        "  llem run configs/study-grid.yaml            # a study on local Ray",
    ]
    if verbose:
        dists = sorted((d.metadata["Name"], d.version) for d in md.distributions() if d.metadata["Name"])
        out += ["", "Installed packages:", *(f"  {n}=={v}" for n, v in dists)]
    return "\n".join(out)
