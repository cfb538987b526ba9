"""Choose the energy meter of an experiment (CM-14): Zeus, then NVML, then CodeCarbon.

`auto` first tries meters injected with `energy.registry.register` (test doubles, plugins), then the
built-ins in priority order; a meter that raises `MeterUnavailable` is skipped and its reason kept.
Exactly one meter measures an experiment (mutual exclusion): the first that can run here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from llem_ray.energy import registry
from llem_ray.energy.protocol import EnergyMeter, MeterUnavailable

if TYPE_CHECKING:
    from llem_ray.config.experiment import EnergyConfig

AUTO_ORDER: tuple[str, ...] = ("zeus", "nvml", "codecarbon")


class ExplicitMeterUnavailable(Exception):
    """The meter named explicitly in the config cannot run here (a pre-flight failure)."""


def select_meter(config: EnergyConfig, device_uuids: list[str]) -> tuple[EnergyMeter | None, list[str]]:
    """The meter to use and warnings about the choice.

    Returns `(None, [why])` when `energy.backend` is 'none' or, under 'auto', when no meter can run
    (no NVML on a CPU host): the experiment still runs and its energy fields are null. Raises
    ExplicitMeterUnavailable when a meter named explicitly cannot run.
    """
    if config.backend == "none":
        return None, ["energy not measured: energy.backend is 'none'"]
    if config.backend != "auto":
        try:
            return registry.create(config.backend, device_uuids, config), []
        except MeterUnavailable as exc:
            raise ExplicitMeterUnavailable(f"energy meter '{config.backend}' cannot run here: {exc}") from None
    reasons = []
    for name in dict.fromkeys([*registry.registered_names(), *AUTO_ORDER]):
        try:
            return registry.create(name, device_uuids, config), []
        except MeterUnavailable as exc:
            reasons.append(f"{name}: {exc}")
    return None, [f"energy not measured, no meter can run here ({'; '.join(reasons)})"]
