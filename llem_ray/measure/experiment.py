"""The protocol of one experiment, in this process (STU-05; a Ray worker calls the same `run`).

This is the offline scenario; `scenario: serving` is dispatched to `scenarios/serving.py` (open-loop
load at an SLO), which reuses the baseline and phase helpers here.

pre-flight → load → environment snapshot (after load: no torch import of its own) → idle baseline →
warm-up (none for a cold start, measure/cold.py) → thermal floor → measured window (energy window +
sampler, devices synchronised before the stop, CM-15) → prefill-only loop (PREC-01) → metrics →
unload (always). The sampler runs from warm-up to the end of the prefill loop; every sample is tagged
with its phase in the timeseries, and only the measured window's samples enter the result's device
statistics.

Warm-up reaches the window's steady state: each warm-up batch holds as many requests as the
backend runs at once in the window (PyTorch `batch_size`; an engine's effective `max_num_seqs`),
and when the backend's compiled code is specialised to shapes (`ModelInfo.shape_specialised`:
static KV cache, `torch.compile`) it also generates the window's full output length, so no
compilation or CUDA-graph capture is left to the measured window.

Without any energy meter (a CPU host, no NVML) the experiment still runs: energy fields are None
and a warning says why.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

from llem_ray.backends import registry as backend_registry
from llem_ray.backends.protocol import GenerationOutput, InferenceBackend, Prompt
from llem_ray.config.experiment import ExperimentConfig, WarmupConfig
from llem_ray.datasets import load_prompts
from llem_ray.device.sync import synchronize
from llem_ray.energy.baseline import PROCESS_CACHE, BaselineCache, BaselineReading
from llem_ray.energy.devices import memory_used_mib, visible_gpus
from llem_ray.energy.protocol import EnergyMeter
from llem_ray.errors import PreFlightError, clean_up
from llem_ray.measure.assemble import Observations, build_result
from llem_ray.measure.cold import fresh_compilation_caches
from llem_ray.measure.environment import snapshot
from llem_ray.measure.inputs import output_dir_problem
from llem_ray.measure.preflight import preflight, resolve_device
from llem_ray.measure.warmup import run_warmup
from llem_ray.results.schema import ExperimentResult, Placement, WarmupResult
from llem_ray.results.timeseries_columns import Columns, Phase, samples_to_columns

if TYPE_CHECKING:
    import pyarrow as pa

PREFILL_COUNTER_UPDATES = 20
"""The prefill loop runs for at least this many updates of the meter's counter (NVML: 100 ms each)."""
DEFAULT_RESOLUTION_S = 0.1
"""Counter update period assumed for a meter without a `resolution_s` attribute (NVML's), s."""
PREFILL_MAX_PASSES = 1000

ProgressCallback = Callable[[str], None]
"""Called with each stage name as it starts: preflight, load, environment, baseline, warmup,
thermal_floor, measure, prefill, metrics, unload (the last also after a failure)."""


@dataclass
class Measured:
    """A result, its timeseries as plain columns (results.timeseries.Columns) and where it was saved (if it
    was). `timeseries` is the Arrow table (TIMESERIES_SCHEMA), built when first asked for."""

    result: ExperimentResult
    timeseries_columns: Columns
    result_dir: Path | None = None

    @property
    def timeseries(self) -> pa.Table:
        from llem_ray.results.timeseries import columns_to_table  # pyarrow: only where a table is wanted

        return columns_to_table(self.timeseries_columns)


@contextmanager
def timed_phase(phases: list[Phase], name: str) -> Iterator[None]:
    """Append (name, start, end) on `time.time()` to `phases` around the block, also when it raises."""
    start_s = time.time()
    try:
        yield
    finally:
        phases.append((name, start_s, time.time()))


def warm_up(
    run_batch: Callable[[], object], config: WarmupConfig, phases: list[Phase], progress: ProgressCallback
) -> WarmupResult:
    """Warm-up batches (`run_batch` runs one; timed here) until `config` says the engine is warm, then
    the thermal floor (`config.thermal_floor_s` of sleep), each recorded in `phases`. Whatever
    `run_batch` raises propagates."""

    def timed_batch_s() -> float:
        t0 = time.perf_counter()
        run_batch()
        return time.perf_counter() - t0

    with timed_phase(phases, "warmup"):
        warmup = run_warmup(timed_batch_s, config)
    progress("thermal_floor")
    with timed_phase(phases, "thermal_floor"):
        time.sleep(config.thermal_floor_s)
    return warmup


def idle_baseline(config: ExperimentConfig, meter: EnergyMeter | None, cache: BaselineCache) -> BaselineReading | None:
    """The idle baseline of `config` from `cache` (measured with `meter` if not cached); None when off or unmetered."""
    if meter is None or not config.baseline.enabled:
        return None
    return cache.get(meter, config.baseline.duration_s, config.baseline.cache_ttl_s)


def _prefill_loop(
    backend: InferenceBackend, prompts: list[Prompt], meter: EnergyMeter | None, device: str
) -> tuple[float, float | None, GenerationOutput]:
    """(seconds per pass, joules per pass or None, last pass's output) of repeated prefill passes.

    Repeats the pass for PREFILL_COUNTER_UPDATES periods of the meter's counter when energy is
    measured (once otherwise), so the counter resolves it.
    """
    min_s = PREFILL_COUNTER_UPDATES * getattr(meter, "resolution_s", DEFAULT_RESOLUTION_S) if meter else 0.0
    if meter is not None:
        meter.begin_window("llem-prefill")
    start_s = time.perf_counter()
    passes = 0
    while True:
        output = backend.prefill(prompts)
        passes += 1
        if passes >= PREFILL_MAX_PASSES or time.perf_counter() - start_s >= min_s:
            break
    synchronize(device)
    elapsed_s = time.perf_counter() - start_s
    energy_j = meter.end_window("llem-prefill").total_j / passes if meter is not None else None
    return elapsed_s / passes, energy_j, output


def run(
    config: ExperimentConfig,
    *,
    baseline_cache: BaselineCache | None = None,
    placement: Placement | None = None,
    on_progress: ProgressCallback | None = None,
) -> Measured:
    """Measure `config` once in this process and return its result and timeseries (writes nothing).

    `baseline_cache` defaults to the process-wide cache; `placement` (from a Ray worker) is copied
    into the result. With `config.cold_start` the compilation caches are empty ones of this run's
    own (measure/cold.py). `scenario: serving` runs `scenarios.serving.run_serving` instead (same
    result type). Raises PreFlightError (all failures at once), BackendError, or
    DatasetUnavailable/ValueError from the dataset; the backend is unloaded whatever happens.
    """
    with fresh_compilation_caches(config.cold_start) as cold_notes:
        if config.scenario == "serving":
            from llem_ray.scenarios.serving import run_serving

            return run_serving(
                config,
                baseline_cache=baseline_cache,
                placement=placement,
                on_progress=on_progress,
                cold_notes=cold_notes,
            )
        return _measure(config, baseline_cache, placement, on_progress, cold_notes)


def _measure(
    config: ExperimentConfig,
    baseline_cache: BaselineCache | None,
    placement: Placement | None,
    on_progress: ProgressCallback | None,
    cold_notes: list[str],
) -> Measured:
    progress = on_progress or (lambda stage: None)
    os.environ.setdefault("CUDA_DEVICE_ORDER", "PCI_BUS_ID")
    started_at = datetime.now(timezone.utc)
    progress("preflight")
    gpus = visible_gpus()
    device = resolve_device(config.device, gpus)
    cleared = preflight(config, device, gpus)
    backend, meter = cleared.backend, cleared.meter
    phases: list[Phase] = []
    first: BaseException | None = None
    try:
        progress("load")
        info = backend.load(config, device)
        synchronize(device)
        progress("environment")  # after load: the CUDA version comes from the engine's torch if it imported one
        env = snapshot(gpus.uuids if device == "cuda" else [])
        progress("baseline")
        baseline = idle_baseline(config, meter, baseline_cache or PROCESS_CACHE)
        prompt_set = load_prompts(config, config.n, info.vocab_size)
        prompts = prompt_set.prompts
        if meter is not None:
            meter.start_sampling(config.energy.sample_hz)
        progress("warmup")
        concurrency = min(config.n, info.max_concurrent_requests or config.batch_size)
        warm_batch = [prompts[i % len(prompts)] for i in range(concurrency)]
        reduced = min(config.warmup.max_output_tokens, config.max_output_tokens)
        warm_tokens = config.max_output_tokens if info.shape_specialised else reduced
        shape_notes = _shape_notes(config, info.shape_specialised)

        warmup = warm_up(lambda: backend.generate(warm_batch, warm_tokens), config.warmup, phases, progress)
        progress("measure")
        synchronize(device)
        with timed_phase(phases, "measured"):
            if meter is not None:
                meter.begin_window("llem-measured")
            t0 = time.perf_counter()
            output = backend.generate(prompts, config.max_output_tokens)
            synchronize(device)
            duration_s = time.perf_counter() - t0
            window = meter.end_window("llem-measured") if meter is not None else None
            memory_at_end_mib = memory_used_mib(gpus.uuids) if device == "cuda" else None
        prefill = None
        if config.prefill_split:
            progress("prefill")
            with timed_phase(phases, "prefill"):
                prefill = _prefill_loop(backend, prompts, meter, device)
        samples = meter.stop_sampling() if meter is not None else []
        progress("metrics")
        measured_start_s = next(start for name, start, _ in phases if name == "measured")
        observations = Observations(
            config=config,
            device=device,
            started_at=started_at,
            env=env,
            info=info,
            output=output,
            duration_s=duration_s,
            window=window,
            meter=meter,
            baseline=baseline,
            prefill=prefill,
            warmup=warmup,
            samples=samples,
            phases=phases,
            memory_at_end_mib=memory_at_end_mib,
            notes=[*cold_notes, *cleared.warnings, *info.notes, *prompt_set.notes, *shape_notes],
            placement=placement,
        )
        return Measured(build_result(observations), samples_to_columns(samples, phases, measured_start_s))
    except BaseException as exc:
        first = exc
        raise
    finally:
        progress("unload")
        clean_up([backend.unload] + ([meter.stop_sampling, meter.close] if meter is not None else []), first=first)


def _shape_notes(config: ExperimentConfig, shape_specialised: bool) -> list[str]:
    """Warnings about shapes the warm-up cannot cover for code compiled per shape by a static-batching
    backend (empty otherwise)."""
    static = backend_registry.spec(config.backend).static_batching
    if not shape_specialised or not static or config.n % config.batch_size == 0:
        return []
    return [
        f"n={config.n} is not a multiple of batch size {config.batch_size}: the window's last, smaller batch "
        "has a shape the warm-up did not compile (compilation inside the measured window)"
    ]


def _print_stage(stage: str) -> None:
    print(f"[llem] {stage}", file=sys.stderr, flush=True)


def run_and_save(config: ExperimentConfig, *, export_csv: bool = False, quiet: bool = True) -> Measured:
    """`run(config)`, then save it under `config.output_dir` when that is set (LA-04: else no writes).

    `export_csv` also writes CSV copies of the result and timeseries (RES-18); `quiet=False` prints
    each stage to stderr as it starts. The saved directory is `Measured.result_dir`. An output
    directory that cannot be written is a PreFlightError before anything is measured.
    """
    if config.output_dir is not None:
        problem = output_dir_problem(config.output_dir)
        if problem:  # before measuring: a result that cannot be saved would be lost
            raise PreFlightError([problem])
    measured = run(config, on_progress=None if quiet else _print_stage)
    if config.output_dir is not None:
        from llem_ray.results.persistence import save_experiment

        measured.result_dir = save_experiment(
            measured.result, measured.timeseries, config.output_dir, export_csv=export_csv
        )
    return measured
