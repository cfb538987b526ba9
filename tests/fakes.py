"""Deterministic test doubles: `FakeBackend` and `FakeMeter`, registered on import.

Use in any process with `LLEM_PLUGINS=tests.fakes` (Ray workers included): importing this module
registers `FakeBackend` as backend 'fake' (`backend: fake`, its section `fake:` holds `batch_size`;
it batches statically, like PyTorch) and `FakeMeter` as energy meter 'fake' (which
`energy.backend: auto` picks before the built-ins). `unregister_all()` removes both.
`backend_spec(name, factory)` is the fake's spec under another name, for one-off doubles.

FakeBackend reads `passthrough_kwargs`:
- `fake_duration_s` (default 0.05): seconds each `generate` call sleeps (prefill: a tenth of it);
- `fake_hang: true`: `generate` never returns;
- `fake_crash: true`: `generate` ends the process at once with `os._exit(1)`;
- `fake_shape_specialised: true`: `load` reports compiled, shape-specialised code (ModelInfo);
- `fake_report_process: true`: `load` adds a note `fake process: LLEM_COLD_START=<value the process
  was started with, from /proc/self/environ> TORCHINDUCTOR_CACHE_DIR=<value now>` (Linux).
Every `generate` call appends (number of prompts, max_new_tokens) to GENERATE_CALLS.
Token counts are fixed: each prompt counts its token ids (or FAKE_TEXT_TOKENS for a text prompt)
as input and exactly `max_new_tokens` as output.

FakeMeter draws a constant FAKE_POWER_W per bound device: a window's energy is exactly
FAKE_POWER_W x its wall time; samples are synthesised at the requested rate on `stop_sampling`, each
with an energy counter that runs at FAKE_POWER_W from the start of sampling (as NVML's, in J).
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable

from pydantic import Field

from llem_ray.backends import registry as backend_registry
from llem_ray.backends.protocol import GenerationOutput, InferenceBackend, ModelInfo, Prompt, RequestTiming
from llem_ray.backends.spec import BackendSpec, Section
from llem_ray.config.ssot import DECODING_MODES, PRECISIONS
from llem_ray.energy import registry as meter_registry
from llem_ray.energy.protocol import EnergyWindow, PowerSample, refuse_open

FAKE_N_PARAMETERS = 1_000_000
FAKE_VOCAB_SIZE = 1000
FAKE_TEXT_TOKENS = 16
FAKE_POWER_W = 100.0
FAKE_TEMPERATURE_C = 50.0
FAKE_DEVICE_UUID = "GPU-fake-0"
GENERATE_CALLS: list[tuple[int, int]] = []


def _process_report() -> str:
    """What this process was started with (its initial environment) and where inductor caches now."""
    with open("/proc/self/environ", "rb") as handle:
        initial = dict(pair.split(b"=", 1) for pair in handle.read().split(b"\0") if b"=" in pair)
    started_for = initial.get(b"LLEM_COLD_START", b"").decode()
    cache = os.environ.get("TORCHINDUCTOR_CACHE_DIR", "")
    return f"fake process: LLEM_COLD_START={started_for} TORCHINDUCTOR_CACHE_DIR={cache}"


class FakeBackend:
    """A backend that sleeps instead of computing (see module docstring)."""

    name = "fake"

    def __init__(self) -> None:
        self._kwargs: dict = {}
        self._batch_size = 1
        self.loaded = False

    def load(self, config, device: str) -> ModelInfo:
        self._kwargs = dict(config.passthrough_kwargs or {})
        self._batch_size = config.batch_size
        self.loaded = True
        notes = (_process_report(),) if self._kwargs.get("fake_report_process") else ()
        return ModelInfo(
            FAKE_N_PARAMETERS,
            "bfloat16",
            device,
            0.0,
            vocab_size=FAKE_VOCAB_SIZE,
            notes=notes,
            shape_specialised=bool(self._kwargs.get("fake_shape_specialised")),
        )

    def _input_tokens(self, prompts: list[Prompt]) -> int:
        return sum(len(p.token_ids) if p.token_ids is not None else FAKE_TEXT_TOKENS for p in prompts)

    def _n_batches(self, prompts: list[Prompt]) -> int:
        return max(1, -(-len(prompts) // self._batch_size))

    def generate(self, prompts: list[Prompt], max_new_tokens: int) -> GenerationOutput:
        GENERATE_CALLS.append((len(prompts), max_new_tokens))
        if self._kwargs.get("fake_crash"):
            os._exit(1)
        while self._kwargs.get("fake_hang"):
            time.sleep(3600)
        duration_s = float(self._kwargs.get("fake_duration_s", 0.05))
        time.sleep(duration_s)
        n_batches = self._n_batches(prompts)
        itl_s = duration_s / n_batches / max_new_tokens
        requests = [
            RequestTiming(duration_s / n_batches, max_new_tokens, itl_s, [itl_s] * (max_new_tokens - 1))
            for _ in prompts
        ]
        return GenerationOutput(
            input_tokens=self._input_tokens(prompts),
            output_tokens=max_new_tokens * len(prompts),
            batch_latencies_s=[duration_s / n_batches] * n_batches,
            requests=requests,
        )

    def prefill(self, prompts: list[Prompt]) -> GenerationOutput:
        duration_s = float(self._kwargs.get("fake_duration_s", 0.05)) / 10
        time.sleep(duration_s)
        n_batches = self._n_batches(prompts)
        return GenerationOutput(self._input_tokens(prompts), 0, [duration_s / n_batches] * n_batches)

    def unload(self) -> None:
        self.loaded = False


class FakeMeter:
    """A meter with constant power FAKE_POWER_W per device (see module docstring)."""

    name = "fake"
    resolution_s = 0.0
    accuracy = "fake meter: exactly FAKE_POWER_W per device"
    reproducibility_notes = "Energy is a test double's: FAKE_POWER_W x window time per device."

    def __init__(self, device_uuids: list[str], config=None):
        self.device_uuids = list(device_uuids) or [FAKE_DEVICE_UUID]
        self._windows: dict[str, float] = {}
        self._sampling: tuple[float, float] | None = None
        self.closed = False

    def begin_window(self, key: str) -> None:
        refuse_open(key, self._windows)
        self._windows[key] = time.perf_counter()

    def end_window(self, key: str) -> EnergyWindow:
        duration_s = time.perf_counter() - self._windows.pop(key)
        return EnergyWindow(key, duration_s, {u: FAKE_POWER_W * duration_s for u in self.device_uuids})

    def start_sampling(self, hz: float) -> None:
        self._sampling = (time.time(), hz)

    def stop_sampling(self) -> list[PowerSample]:
        if self._sampling is None:
            return []
        start_s, hz = self._sampling
        self._sampling = None
        n = int((time.time() - start_s) * hz) + 1
        return [
            PowerSample(
                start_s + i / hz, u, FAKE_POWER_W, FAKE_TEMPERATURE_C, 90.0, 1024.0, 1980.0, (), FAKE_POWER_W * i / hz
            )
            for i in range(n)
            for u in self.device_uuids
        ]

    def close(self) -> None:
        self.closed = True


class FakeConfig(Section):
    """The `fake:` section: requests per `generate` batch."""

    batch_size: int | None = Field(None, ge=1, description="Prompts per batch (default 1).")


FAKE_SPEC = BackendSpec(
    name="fake",
    section=FakeConfig,
    factory=FakeBackend,
    precisions=PRECISIONS,
    decoding_modes=DECODING_MODES,
    static_batching=True,
    batch_size_field="batch_size",
)


def backend_spec(name: str, factory: Callable[[], InferenceBackend]) -> BackendSpec:
    """The fake's spec as backend `name` built by `factory` (register it, then `backend: <name>`)."""
    return dataclasses.replace(FAKE_SPEC, name=name, factory=factory)


def register_all() -> None:
    """Register FakeBackend as backend 'fake' and FakeMeter as meter 'fake'."""
    backend_registry.register(FAKE_SPEC)
    meter_registry.register("fake", FakeMeter)


def unregister_all() -> None:
    """Remove both fakes (the built-in meters are picked by `auto` again)."""
    backend_registry.unregister("fake")
    meter_registry.unregister("fake")


register_all()
