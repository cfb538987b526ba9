"""Energy meters by name (INF-10): tests inject a deterministic meter with `register`.

A factory takes the experiment's GPU UUIDs and its `EnergyConfig` and returns a bound meter, or
raises `MeterUnavailable` saying why it cannot run here.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import TYPE_CHECKING

from llem_ray.energy.protocol import EnergyMeter, MeterUnavailable
from llem_ray.plugins import load_plugins

if TYPE_CHECKING:
    from llem_ray.config.experiment import EnergyConfig

MeterFactory = Callable[[list[str], "EnergyConfig"], EnergyMeter]

_BUILTIN: dict[str, str] = {
    "nvml": "llem_ray.energy.nvml:NVMLMeter",
    "zeus": "llem_ray.energy.zeus:ZeusMeter",
    "codecarbon": "llem_ray.energy.codecarbon:CodeCarbonMeter",
}
_REGISTERED: dict[str, MeterFactory] = {}


def register(name: str, factory: MeterFactory) -> None:
    """Make `factory` the meter called `name` (overrides a built-in of the same name)."""
    _REGISTERED[name] = factory


def unregister(name: str) -> None:
    """Forget a registered meter (built-ins come back)."""
    _REGISTERED.pop(name, None)


def registered_names() -> list[str]:
    """Names of meters injected with `register` (plugins loaded first)."""
    load_plugins()
    return list(_REGISTERED)


def create(name: str, device_uuids: list[str], config: EnergyConfig) -> EnergyMeter:
    """A meter `name` bound to `device_uuids`. Raises MeterUnavailable if it cannot run here."""
    load_plugins()
    if name in _REGISTERED:
        return _REGISTERED[name](device_uuids, config)
    target = _BUILTIN.get(name)
    if target is None:
        raise MeterUnavailable(f"unknown energy meter '{name}'")
    module_name, attr = target.split(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise MeterUnavailable(f"energy meter '{name}' is not installed: {exc}") from exc
    return getattr(module, attr)(device_uuids, config)
