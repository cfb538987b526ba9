"""What a meter can honestly say about what it measured (RES-08) and how far to trust it.

Every meter states, from what it knows of the devices it is bound to, its `accuracy` (one line,
recorded as `energy_meter_accuracy`) and its `reproducibility_notes` (recorded as the result's
`reproducibility_notes`). Nothing here claims more than these measured facts support:
- NVML's energy counter (`nvmlDeviceGetTotalEnergyConsumption`, mJ since driver load) exists from
  Volta (compute capability 7.0) on and updates about every 100 ms: windows under ~0.1 s can read 0 J.
- On GA100 (A100, 8.0) and GH100 (H100/H200, 9.0) each 100 ms NVML update averages only ~25 ms of
  activity (Yang et al., SC'24): about +/-5 % on short windows.
- On the other Ampere and newer GPUs `nvmlDeviceGetPowerUsage` is a 1 s moving average.
- For any other generation this project has no accuracy figure, and says so.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

Source = Literal["counter", "polled power"]
"""Where a GPU meter's joules come from: NVML's energy counter, or NVML power readings x time."""

PART_TIME_SAMPLING_CC = frozenset({(8, 0), (9, 0)})
"""Compute capabilities (GA100, GH100) whose NVML readings cover ~25 ms of every 100 ms (SC'24)."""

COMPARE_LIKE_WITH_LIKE = (
    "Compare configurations measured on the same GPU model, driver and power limit, repeated over cycles; "
    "windows under 10 s are flagged."
)

NO_METER_NOTES = (
    "Energy was not measured (no energy meter could run here, or energy.backend is 'none'; "
    "measurement_warnings says which): this result holds speed and latency figures only, and the GPU "
    "memory in use where it can be read."
)


@dataclass(frozen=True)
class DeviceFacts:
    """What NVML says about one GPU: its name and CUDA compute capability (None when unreadable)."""

    name: str
    compute_capability: tuple[int, int] | None = None


_GENERATIONS: tuple[tuple[tuple[int, int], str], ...] = (
    ((12, 0), "Blackwell"),
    ((10, 0), "Blackwell"),
    ((9, 0), "Hopper"),
    ((8, 9), "Ada Lovelace"),
    ((8, 0), "Ampere"),
    ((7, 5), "Turing"),
    ((7, 0), "Volta"),
    ((6, 0), "Pascal"),
)


def generation(cc: tuple[int, int] | None) -> str:
    """Architecture name of compute capability `cc` ('unknown generation' when None or older than Pascal)."""
    if cc is None:
        return "unknown generation"
    return next((name for lowest, name in _GENERATIONS if cc >= lowest), "unknown generation")


def _describe(devices: Sequence[DeviceFacts]) -> str:
    kinds = dict.fromkeys(
        f"{d.name} ({generation(d.compute_capability)}"
        + (", compute capability {}.{})".format(*d.compute_capability) if d.compute_capability else ")")
        for d in devices
    )
    return " + ".join(kinds) or "no GPU"


def _trust(cc: tuple[int, int] | None, source: Source) -> str:
    if cc in PART_TIME_SAMPLING_CC:
        return (
            "NVML readings on this generation average ~25 ms of every 100 ms (Yang et al., SC'24): "
            "about +/-5 % on short windows, less over long windows and repeated cycles"
        )
    if source == "polled power" and cc is not None and cc >= (8, 0):
        return (
            "NVML power on this generation is a 1 s moving average: windows of a few seconds are smeared, "
            "and the rise and fall of short bursts are lost"
        )
    return (
        "no accuracy figure is known for this generation: check it against an external meter "
        "before trusting absolute joules"
    )


def gpu_accuracy(devices: Sequence[DeviceFacts], source: Source) -> str:
    """One-line accuracy statement of a GPU meter reading `source` on `devices`."""
    what = (
        "NVML energy counter (mJ, ~100 ms updates; windows under ~0.1 s can read 0 J)"
        if source == "counter"
        else "NVML power readings x time"
    )
    trust = "; ".join(dict.fromkeys(_trust(d.compute_capability, source) for d in devices)) or _trust(None, source)
    return f"{what} on {_describe(devices)}: {trust}"


def gpu_notes(how: str, devices: Sequence[DeviceFacts], source: Source) -> str:
    """Reproducibility notes of a GPU meter: `how` it got the joules, its accuracy, how to compare results."""
    accuracy = gpu_accuracy(devices, source)
    return f"{how} Accuracy: {accuracy}. GPU energy only: CPU and DRAM are not included. {COMPARE_LIKE_WITH_LIKE}"
