"""The protocol of one serving experiment (`scenario: serving`), in this process.

environment snapshot → pre-flight → start the streaming engine (a server on an event loop of its
own, `backends.streaming`) → idle baseline → warm-up batches (`warmup:`, as offline) → thermal
floor → prefix cache cleared → garbage collected and the heap frozen until the run ends
(`loadgen.frozen_gc_heap`) → **serving run**: the energy window and the load generator
(`scenarios.loadgen`) from the first request sent to the end of the drain → metrics → unload
(always). The sampler runs from warm-up to the end of the run; the run is the timeseries'
`measured` phase, and `duration_s` is its wall time.

Prompts come from the dataset (`datasets.PromptStream`): warm-up batches take the first ones, the
run the following ones, one distinct prompt per request where the dataset has enough, so no
request's prefill is cheapened by an earlier one's cached prefix. Rate mode encodes all of them
before the run; fixed concurrency draws and encodes each when it is sent.

The result is an ordinary `ExperimentResult` over the whole run (energy, tokens, device
statistics, host-bound flag), with `scenario: serving` and `serving` holding the steady window's
figures (`scenarios.serving_metrics`). Its `energy_per_output_token_j` is the window's when the
window is accepted (`measurement_methodology: steady_state`), else the whole run's (`total`).
Raises what `measure.experiment.run` raises; a run in which every request failed raises BackendError.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Sequence
from datetime import datetime, timezone

from llem_ray.backends.protocol import GenerationOutput, ModelInfo, RequestTiming
from llem_ray.backends.streaming import StreamingEngine, streaming_engine_of
from llem_ray.config.experiment import ExperimentConfig
from llem_ray.datasets import PromptStream
from llem_ray.energy.baseline import PROCESS_CACHE, BaselineCache
from llem_ray.energy.devices import memory_used_mib, visible_gpus
from llem_ray.errors import BackendError, clean_up
from llem_ray.measure.assemble import Observations, build_result
from llem_ray.measure.environment import snapshot
from llem_ray.measure.experiment import Measured, ProgressCallback, idle_baseline, timed_phase, warm_up
from llem_ray.measure.preflight import preflight, resolve_device
from llem_ray.measure.steady_state import WindowEnergy, validity_warnings, window_energy_j
from llem_ray.results.schema import Placement
from llem_ray.results.timeseries_columns import Phase, samples_to_columns
from llem_ray.scenarios.arrivals import arrival_schedule
from llem_ray.scenarios.loadgen import ConcurrencyPlan, LoadTrace, RatePlan, frozen_gc_heap, run_batch, run_load
from llem_ray.scenarios.serving_metrics import Window, serving_result, steady_window


def _plan(config: ExperimentConfig, engine: StreamingEngine, prompts: PromptStream) -> RatePlan | ConcurrencyPlan:
    serving = config.serving
    assert serving is not None  # validated: scenario serving has a serving section
    if serving.concurrency is not None:
        return ConcurrencyPlan(
            serving.concurrency,
            lambda: engine.encode(prompts.take(1))[0],
            config.max_output_tokens,
            serving.warmup_requests,
            serving.duration_s,
        )
    arrivals = arrival_schedule(
        serving.request_rate_req_s or 0.0, serving.duration_s, serving.burstiness, config.random_seed
    )
    return RatePlan(
        arrivals,
        engine.encode(prompts.take(len(arrivals))),
        config.max_output_tokens,
        serving.warmup_requests,
        serving.duration_s,
    )


def _warm_batch_size(config: ExperimentConfig, info: ModelInfo) -> int:
    """Requests per warm-up batch: the engine's concurrency limit, capped by `serving.concurrency` when set."""
    limit = info.max_concurrent_requests or 1
    concurrency = config.serving.concurrency if config.serving is not None else None
    return min(limit, concurrency) if concurrency else limit


def _output(trace: LoadTrace) -> GenerationOutput:
    """The run as the offline result sees a workload: token counts and one timing per request sent."""
    requests = [
        RequestTiming(
            latency_s=(r.end_s or r.sent_s) - r.sent_s, output_tokens=r.output_tokens, ttft_s=r.ttft_s, itl_s=r.itl_s
        )
        for r in trace.records
    ]
    return GenerationOutput(
        input_tokens=sum(r.input_tokens for r in trace.records),
        output_tokens=sum(r.output_tokens for r in trace.records),
        batch_latencies_s=[],
        requests=requests,
    )


def _steady(
    window: Window | None,
    energy_j: float | None,
    tokens: int | None,
    total_j: float | None,
    output_tokens: int,
    notes: list[str],
) -> WindowEnergy:
    if window is not None and window.accepted and energy_j is not None and tokens:
        return WindowEnergy(
            "steady_state", (window.start_s, window.end_s), energy_j, float(tokens), energy_j / tokens, tuple(notes)
        )
    per_token = total_j / output_tokens if total_j is not None and output_tokens > 0 else None
    return WindowEnergy("total", None, total_j, float(output_tokens), per_token, tuple(notes))


def run_serving(
    config: ExperimentConfig,
    *,
    baseline_cache: BaselineCache | None = None,
    placement: Placement | None = None,
    on_progress: ProgressCallback | None = None,
    cold_notes: Sequence[str] = (),
) -> Measured:
    """Measure the serving experiment `config` once in this process (see module docstring); writes nothing.

    `measure.experiment.run` calls it inside `fresh_compilation_caches` (cold start) and passes that
    context's notes as `cold_notes`; they go into the result's warnings.
    """
    progress = on_progress or (lambda stage: None)
    serving = config.serving
    if serving is None:
        raise ValueError("run_serving needs a config with scenario 'serving' and a 'serving' section")
    os.environ.setdefault("CUDA_DEVICE_ORDER", "PCI_BUS_ID")
    started_at = datetime.now(timezone.utc)
    progress("environment")
    gpus = visible_gpus()
    device = resolve_device(config.device, gpus)
    env = snapshot(gpus.uuids if device == "cuda" else [], import_torch=device == "cuda")
    progress("preflight")
    cleared = preflight(config, device, gpus)
    meter = cleared.meter
    phases: list[Phase] = []
    engine: StreamingEngine | None = None
    first: BaseException | None = None
    try:
        engine = streaming_engine_of(cleared.backend)
        progress("load")
        info = engine.load(config, device)
        progress("baseline")
        baseline = idle_baseline(config, meter, baseline_cache or PROCESS_CACHE)
        prompts = PromptStream(config, info.vocab_size)
        warm_inputs = engine.encode(prompts.take(_warm_batch_size(config, info)))
        plan = _plan(config, engine, prompts)
        if meter is not None:
            meter.start_sampling(config.energy.sample_hz)
        progress("warmup")
        warm_tokens = min(config.warmup.max_output_tokens, config.max_output_tokens)
        batches = itertools.count()

        def warm_batch() -> None:
            engine.call(run_batch(engine, warm_inputs, warm_tokens, f"warmup{next(batches)}"))

        warmup = warm_up(warm_batch, config.warmup, phases, progress)
        engine.call(engine.clear_cache())
        progress("measure")
        with frozen_gc_heap(), timed_phase(phases, "measured"):  # the collection before the phase and window
            if meter is not None:
                meter.begin_window("llem-serving")
            trace = engine.call(run_load(engine, plan))
            energy = meter.end_window("llem-serving") if meter is not None else None
            memory_at_end_mib = memory_used_mib(gpus.uuids) if device == "cuda" else None
        samples = meter.stop_sampling() if meter is not None else []
        progress("metrics")
        if trace.records and all(r.error is not None for r in trace.records):
            raise BackendError(f"every request of the serving run failed (first: {trace.records[0].error})")
        total_j = energy.total_j if energy is not None else None
        window, notes = steady_window(trace.records, serving.duration_s)
        window_j = None
        if window is not None and window.accepted and total_j is not None:
            window_j = window_energy_j(
                samples, trace.origin_wall_s, trace.end_s, (window.start_s, window.end_s), total_j
            )
            if window_j is None:
                notes.append("the steady window holds too few power samples: its energy is not reported")
            notes += validity_warnings(
                (window.start_s, window.end_s),
                samples,
                trace.origin_wall_s,
                {gpu.uuid: gpu.power_limit_w for gpu in env.gpus},
                steady=False,
            )
        figures, more_notes = serving_result(
            serving, trace, window, window_j, baseline.total_power_w if baseline is not None else None
        )
        output = _output(trace)
        observations = Observations(
            config=config,
            device=device,
            started_at=started_at,
            env=env,
            info=info,
            output=output,
            duration_s=trace.end_s,
            window=energy,
            meter=meter,
            baseline=baseline,
            prefill=None,
            warmup=warmup,
            samples=samples,
            phases=phases,
            memory_at_end_mib=memory_at_end_mib,
            notes=[*cold_notes, *cleared.warnings, *info.notes, *prompts.notes],
            placement=placement,
            steady=_steady(
                window, window_j, figures.output_tokens_in_window, total_j, output.output_tokens, [*notes, *more_notes]
            ),
        )
        result = build_result(observations).model_copy(update={"scenario": "serving", "serving": figures})
        measured_start_s = next(start for name, start, _ in phases if name == "measured")
        return Measured(result, samples_to_columns(samples, phases, measured_start_s))
    except BaseException as exc:
        first = exc
        raise
    finally:
        steps = [engine.unload] if engine is not None else []
        clean_up(steps + ([meter.stop_sampling, meter.close] if meter is not None else []), first=first)
