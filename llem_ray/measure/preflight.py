"""Pre-flight checks (CM-29..31): everything that would fail the run, reported at once.

Failures (raise one `PreFlightError` listing all): a CUDA device asked for but none visible, the
backend not installed, the dataset unreadable, a local model or adapter path that holds none
(measure/inputs.py), an unknown built-in model, an explicitly named
energy meter that cannot run, the VRAM estimate above the free memory of the experiment's GPUs.
Warnings (returned): persistence mode off, other processes computing on the experiment's GPUs.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from llem_ray import device
from llem_ray.backends import registry as backend_registry
from llem_ray.backends import shapes
from llem_ray.backends.protocol import InferenceBackend
from llem_ray.device import DeviceError, DeviceUnavailable
from llem_ray.energy.devices import VisibleGPUs
from llem_ray.energy.protocol import EnergyMeter
from llem_ray.energy.select import ExplicitMeterUnavailable, select_meter
from llem_ray.errors import BackendError, PreFlightError
from llem_ray.measure.inputs import experiment_problems
from llem_ray.measure.vram import estimate_vram_gb

if TYPE_CHECKING:
    from llem_ray.config.experiment import ExperimentConfig


@dataclass
class Cleared:
    """What pre-flight set up for the run: a backend instance, the meter (or None) and warnings."""

    backend: InferenceBackend
    meter: EnergyMeter | None
    warnings: list[str] = field(default_factory=list)


def resolve_device(requested: str, gpus: VisibleGPUs) -> str:
    """'cuda' or 'cpu': `auto` means CUDA when NVML sees a GPU for this process."""
    if requested == "auto":
        return "cuda" if gpus.uuids else "cpu"
    return requested


def _gpu_checks(config: ExperimentConfig, gpus: VisibleGPUs, failures: list[str], warnings: list[str]) -> None:
    try:
        layer = device.current()
    except DeviceUnavailable:
        return
    free_mib = 0.0
    for uuid in gpus.uuids:
        try:
            free_mib += layer.memory_mib(uuid).free_mib
            if not layer.persistence_mode(uuid):
                warnings.append(f"persistence mode is off on {uuid} (nvidia-smi -pm 1): idle power varies")
            others = [pid for pid in layer.compute_pids(uuid) if pid != os.getpid()]
        except DeviceError:
            continue
        if others:
            warnings.append(
                f"{len(others)} other process(es) compute on {uuid} (pids {', '.join(map(str, others))}): "
                "they draw power inside the measured window"
            )
    need_gb = estimate_vram_gb(config)
    if need_gb is not None and free_mib and need_gb * 1e9 / 2**20 > free_mib:
        failures.append(
            f"estimated VRAM {need_gb * 1e9 / 2**20:,.0f} MiB exceeds the free {free_mib:,.0f} MiB "
            "of the experiment's GPUs"
        )


def preflight(config: ExperimentConfig, device: str, gpus: VisibleGPUs) -> Cleared:
    """Run every check; return the backend and meter to use, or raise PreFlightError with all failures."""
    failures: list[str] = []
    warnings: list[str] = list(gpus.warnings)
    if device == "cuda" and not gpus.uuids:
        failures.append(f"device 'cuda' requested but no GPU is visible ({gpus.unavailable_reason})")
    if config.model.startswith(shapes.PREFIX) and config.model not in shapes.builtin_names():
        failures.append(f"unknown built-in model '{config.model}' (built-in: {', '.join(shapes.builtin_names())})")
    backend: InferenceBackend | None = None
    try:
        backend = backend_registry.create(config.backend)
        missing = backend_registry.missing_modules_problem(config.backend, "this environment")
        failures += [missing] if missing else []
    except BackendError as exc:
        failures.append(str(exc))
    failures += experiment_problems(config, fetch=True)
    meter: EnergyMeter | None = None
    try:
        meter, meter_warnings = select_meter(config.energy, gpus.uuids if device == "cuda" else [])
        warnings.extend(meter_warnings)
    except ExplicitMeterUnavailable as exc:
        failures.append(str(exc))
    if device == "cuda":
        _gpu_checks(config, gpus, failures, warnings)
    if failures or backend is None:
        if meter is not None:
            meter.close()
        raise PreFlightError(failures)
    return Cleared(backend, meter, warnings)
