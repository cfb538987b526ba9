"""Energy meters by name (INF-10): tests inject a deterministic meter with `register`.

A factory takes the experiment's GPU UUIDs and its `EnergyConfig` and returns a bound meter, or
raises `MeterUnavailable` saying why it cannot run here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from llem_ray.energy.protocol import EnergyMeter, MeterUnavailable
from llem_ray.registry import Registry

if TYPE_CHECKING:
    from llem_ray.config.experiment import EnergyConfig

MeterFactory = Callable[[list[str], "EnergyConfig"], EnergyMeter]

METERS: Registry[MeterFactory] = Registry(
    {
        "nvml": "llem_ray.energy.nvml:NVMLMeter",
        "zeus": "llem_ray.energy.zeus:ZeusMeter",
        "codecarbon": "llem_ray.energy.codecarbon:CodeCarbonMeter",
    }
)


def register(name: str, factory: MeterFactory) -> None:
    """Make `factory` the meter called `name` (overrides a built-in of the same name)."""
    METERS.register(name, factory)


def unregister(name: str) -> None:
    """Forget a registered meter (built-ins come back)."""
    METERS.unregister(name)


def registered_names() -> list[str]:
    """Names of meters injected with `register` (plugins loaded first)."""
    return METERS.registered_names()


def create(name: str, device_uuids: list[str], config: EnergyConfig) -> EnergyMeter:
    """A meter `name` bound to `device_uuids`. Raises MeterUnavailable if it cannot run here."""
    try:
        factory = METERS.get(name)
    except KeyError:
        raise MeterUnavailable(f"unknown energy meter '{name}'") from None
    except ImportError as exc:
        raise MeterUnavailable(f"energy meter '{name}' is not installed: {exc}") from exc
    return factory(device_uuids, config)
