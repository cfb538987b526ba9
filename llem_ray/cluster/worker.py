"""`ExperimentActor`: one fresh Ray actor process per experiment attempt, owning its GPUs.

The driver creates one actor per attempt inside the attempt's placement group (see placement.py),
calls `where()` then `run()`, and kills the actor afterwards. The actor:
- never retries on its own (`max_restarts=0, max_task_retries=0`): a silent retry would measure a
  second time and double-count energy; the driver decides retries and numbers attempts;
- runs `measure.experiment.run` (the same protocol as an in-process run), whose meter binds to the
  UUIDs of exactly the GPUs Ray gave this process (`energy.devices.visible_gpus`);
- records where it ran (`Placement`: node id, hostname, GPU UUIDs, PCI bus ids, cycle, attempt);
- watches the GPUs' compute processes during the measured window and warns if any is not its own;
- reuses the study's idle baseline of the same GPU while it is younger than `baseline.cache_ttl_s`
  (the cache lives in the driver; each actor gets the readings and returns the new ones);
- times its own stages (cluster/stages.py) and returns them with the outcome; when `run()` raises,
  the stages it reached travel on the exception as its `llem_stages_s` attribute.

`CUDA_DEVICE_ORDER=PCI_BUS_ID` is set in `__init__`, before anything can initialise CUDA, so Ray's
GPU indices, CUDA's and NVML's name the same devices.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone

import ray

from llem_ray import device
from llem_ray.cluster.stages import StageClock
from llem_ray.config.experiment import ExperimentConfig
from llem_ray.energy.baseline import BaselineCache, BaselineReading
from llem_ray.energy.protocol import EnergyMeter
from llem_ray.results.schema import ExperimentResult, Placement
from llem_ray.results.timeseries_columns import Columns

GPU_PROCESS_POLL_S = 0.25
"""How often the measured-window watcher lists the GPUs' compute processes, s."""


@dataclass(frozen=True)
class CachedBaseline:
    """One GPU's idle power as measured by a meter in this study: W, when (UTC), over how long (s)."""

    power_w: float
    measured_at: datetime
    duration_s: float


BaselineKey = tuple[str, str]
"""(meter name, GPU UUID)."""


class StudyBaselineCache(BaselineCache):
    """A `BaselineCache` seeded with the study's earlier readings (wall-clock TTL across processes).

    `get` returns the cached readings when every bound GPU has one younger than `ttl_s` seconds;
    otherwise it measures (blocking `duration_s`) and keeps the new readings in `new_readings`.
    """

    def __init__(self, known: dict[BaselineKey, CachedBaseline]):
        super().__init__()
        self.known = dict(known)
        self.new_readings: dict[BaselineKey, CachedBaseline] = {}

    def get(self, meter: EnergyMeter, duration_s: float, ttl_s: float) -> BaselineReading:
        now = datetime.now(timezone.utc)
        cached = [self.known.get((meter.name, uuid)) for uuid in meter.device_uuids]
        if ttl_s > 0 and all(c is not None and (now - c.measured_at).total_seconds() <= ttl_s for c in cached):
            hits = [c for c in cached if c is not None]
            return BaselineReading(
                power_w={u: c.power_w for u, c in zip(meter.device_uuids, hits)},
                measured_at=min(c.measured_at for c in hits),
                duration_s=min(c.duration_s for c in hits),
                source="cached",
            )
        reading = super().get(meter, duration_s, ttl_s=0)
        for uuid, power_w in reading.power_w.items():
            self.new_readings[(meter.name, uuid)] = CachedBaseline(power_w, reading.measured_at, reading.duration_s)
        return reading


@dataclass(frozen=True)
class WhereInfo:
    """Where an actor runs: Ray node id, host, Ray GPU ids, NVML UUIDs / PCI ids, pid, start time (UTC);
    when its constructor ran (unix s) and its `actor_init` / `nvml_init` stages (s)."""

    node_id: str
    hostname: str
    gpu_ids: list[str]
    gpu_uuids: list[str]
    pci_bus_ids: list[str]
    pid: int
    started_at: datetime
    cuda_visible_devices: str | None
    constructed_unix_s: float = 0.0
    stages_s: dict[str, float] = field(default_factory=dict)


@dataclass
class Outcome:
    """What one successful attempt returns to the driver: the result and its timeseries (plain columns:
    the results actor builds the Arrow table, results/timeseries.py says why), the GPUs' compute pids
    seen in the window, new baseline readings, seconds per stage of `run()`, the measured window
    (unix s, or None) and the moment `run()` returned (unix s)."""

    result: ExperimentResult
    timeseries: Columns
    gpu_pids_seen: list[int] = field(default_factory=list)
    new_baselines: dict[BaselineKey, CachedBaseline] = field(default_factory=dict)
    stages_s: dict[str, float] = field(default_factory=dict)
    window_s: tuple[float, float] | None = None
    returned_unix_s: float = 0.0


def _own_pids() -> set[int]:
    """This process and its descendants (engine workers it started)."""
    own = {os.getpid()}
    try:
        import psutil

        own.update(p.pid for p in psutil.Process().children(recursive=True))
    except Exception:  # psutil missing or a child exited while listing: own pid still counts
        pass
    return own


class GPUProcessWatcher:
    """Lists the compute processes on `uuids` every GPU_PROCESS_POLL_S while `active` is set.

    Uses the device layer (`GPUDevices.compute_pids`; NVML's `nvmlDeviceGetComputeRunningProcesses`,
    which never creates a CUDA context). Does nothing when there is no device layer or no GPU.
    `own_pids` collects this process and its descendants at every poll: an engine's worker process
    (vLLM's EngineCore) has exited by the time the experiment returns, and is still this actor's.
    """

    def __init__(self, uuids: list[str]):
        self.pids: set[int] = set()
        self.own_pids: set[int] = set()
        self.active = threading.Event()
        self._stop = threading.Event()
        self._uuids: list[str] = []
        if uuids:
            try:
                gpus = device.current()
                for uuid in uuids:
                    gpus.index(uuid)
            except (device.DeviceUnavailable, device.DeviceError):  # no NVML (CPU host), logical GPUs
                pass
            else:
                self._gpus, self._uuids = gpus, list(uuids)
        self._thread = threading.Thread(target=self._loop, name="llem-gpu-processes", daemon=True)

    def _loop(self) -> None:
        while not self._stop.wait(GPU_PROCESS_POLL_S):
            if self.active.is_set():
                self.poll()

    def poll(self) -> None:
        """Add the pids computing on the watched GPUs now to `pids` (a GPU that cannot answer is skipped),
        and this process's own pids now to `own_pids`."""
        if not self._uuids:
            return
        self.own_pids.update(_own_pids())
        for uuid in self._uuids:
            try:
                self.pids.update(self._gpus.compute_pids(uuid))
            except Exception:  # a transient driver error loses one poll, not the experiment
                continue

    def __enter__(self) -> GPUProcessWatcher:
        if self._uuids:
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=2)


def foreign_process_warning(seen: set[int], own: set[int]) -> str | None:
    """A warning when processes other than `own` computed on the GPUs in the measured window."""
    if not seen:
        return None
    foreign = seen - own
    if not foreign:
        return None
    if not seen & own and len(seen) == 1:
        return (
            f"NVML listed pid {next(iter(seen))} on the GPU during the measured window, not this actor's pid "
            "(a container PID namespace?): could not confirm the GPU was used by this actor alone"
        )
    return (
        f"{len(foreign)} foreign process(es) computed on the experiment's GPUs during the measured window "
        f"(pids {', '.join(map(str, sorted(foreign)))}): energy includes their work"
    )


@ray.remote(max_restarts=0, max_task_retries=0)
class ExperimentActor:
    """Runs one experiment attempt in a fresh process (see module docstring). Created by the driver."""

    def __init__(self) -> None:
        self._constructed_unix_s = time.time()
        os.environ["CUDA_DEVICE_ORDER"] = "PCI_BUS_ID"
        if not ray.get_runtime_context().get_accelerator_ids().get("GPU"):
            os.environ["CUDA_VISIBLE_DEVICES"] = ""  # a CPU experiment must not touch any GPU
        self._where: WhereInfo | None = None
        self._where_done_unix_s: float | None = None

    def where(self) -> WhereInfo:
        """Node, GPUs and pid of this actor (NVML query only: creates no CUDA context)."""
        if self._where is None:
            begun_s = time.time()
            from llem_ray.energy.devices import visible_gpus

            ctx = ray.get_runtime_context()
            gpus = visible_gpus() if os.environ.get("CUDA_VISIBLE_DEVICES") else None
            stages_s = {"actor_init": max(0.0, begun_s - self._constructed_unix_s), "nvml_init": time.time() - begun_s}
            self._where = WhereInfo(
                node_id=ctx.get_node_id(),
                hostname=socket.gethostname(),
                gpu_ids=[str(i) for i in ctx.get_accelerator_ids().get("GPU", [])],
                gpu_uuids=list(gpus.uuids) if gpus else [],
                pci_bus_ids=list(gpus.pci_bus_ids) if gpus else [],
                pid=os.getpid(),
                started_at=datetime.now(timezone.utc),
                cuda_visible_devices=os.environ.get("CUDA_VISIBLE_DEVICES"),
                constructed_unix_s=self._constructed_unix_s,
                stages_s=stages_s,
            )
            self._where_done_unix_s = time.time()
        return self._where

    def run(
        self, config: ExperimentConfig, cycle: int, attempt: int, baselines: dict[BaselineKey, CachedBaseline]
    ) -> Outcome:
        """Measure `config` (cycle and attempt numbered from 1). Raises whatever the protocol raises
        (PreFlightError, BackendError, ...), with the stages it reached as `llem_stages_s`; a crash of
        the process surfaces as ActorDiedError.
        """
        clock = StageClock()
        clock.mark("imports", self._where_done_unix_s)
        try:
            return self._run(config, cycle, attempt, baselines, clock)
        except BaseException as exc:
            exc.llem_stages_s = clock.durations_s(time.time())  # type: ignore[attr-defined]
            raise

    def _run(
        self,
        config: ExperimentConfig,
        cycle: int,
        attempt: int,
        baselines: dict[BaselineKey, CachedBaseline],
        clock: StageClock,
    ) -> Outcome:
        from llem_ray.measure.experiment import run as run_experiment

        where = self.where()
        placement = Placement(
            node_id=where.node_id,
            hostname=where.hostname,
            gpu_uuids=where.gpu_uuids,
            pci_bus_ids=where.pci_bus_ids,
            cycle=cycle,
            attempt=attempt,
        )
        cache = StudyBaselineCache(baselines)
        with GPUProcessWatcher(where.gpu_uuids) as watcher:

            def on_progress(stage: str) -> None:
                clock.mark(stage)
                if stage == "measure":
                    watcher.poll()
                    watcher.active.set()
                elif watcher.active.is_set():
                    watcher.poll()
                    watcher.active.clear()

            measured = run_experiment(config, baseline_cache=cache, placement=placement, on_progress=on_progress)
        result = measured.result
        warning = foreign_process_warning(watcher.pids, watcher.own_pids)  # both filled by the same polls
        if warning:
            result = result.model_copy(update={"measurement_warnings": [*result.measurement_warnings, warning]})
        end_s = time.time()
        return Outcome(
            result,
            measured.timeseries_columns,
            sorted(watcher.pids),
            cache.new_readings,
            stages_s=clock.durations_s(end_s),
            window_s=clock.window_s(end_s),
            returned_unix_s=end_s,
        )
