"""The scheduling loop of a study: work items onto GPU slots, with deadlines, retries and gaps.

One loop on `ray.wait` (always with a finite timeout: `timeout=None` silently returns after 10^6 s,
Ray #44909) over placement groups becoming ready, actors reporting where they run, experiment
results, results stored by the results actor, and ended actors being gone. Each turn it:
1. dispatches queue items strictly in run order onto idle slots of their shape whose per-GPU gap
   has passed (`config_gap_seconds` after an experiment of the same cycle, `cycle_gap_seconds` across cycles);
2. has the slot pool (slots.py) create placement groups for items no slot can serve while the
   cluster has free GPUs, so the other GPUs keep working while one rests;
3. kills (`ray.kill`) attempts past their deadline (`ray.cancel` cannot interrupt an actor method);
4. on failure (exception, crash, deadline, lost node) re-queues the item at the head of the queue
   until it has had `1 + max_retries` attempts in this run, then marks it failed (at once when the
   cause is an LLEMError no retry can fix: a pre-flight or configuration problem); after
   `circuit_breaker` consecutive failed attempts it stops the study (StudyError).
A slot is reused only once its previous actor is gone (Ray #44821). On any exit, running actors
are killed, their entries go back to pending in the manifest, and every placement group is removed.
"""

from __future__ import annotations

import time
from collections import Counter, deque
from typing import Any

import ray
from ray.exceptions import RayActorError

from llem_ray.cluster.attempts import Attempt, Policy, Report, cause_of, describe
from llem_ray.cluster.placement import Slot, SlotShape, actor_options, shape_for
from llem_ray.cluster.plan import WorkItem
from llem_ray.cluster.progress import Progress, clock_text
from llem_ray.cluster.runtime_env import cold_start_runtime_env
from llem_ray.cluster.slots import SlotPool
from llem_ray.cluster.stages import elapsed_s, utc
from llem_ray.cluster.worker import BaselineKey, CachedBaseline, ExperimentActor
from llem_ray.errors import LLEMError, StudyError, clean_up
from llem_ray.results.manifest import AttemptRecord, utc_now

KILL_GRACE_S = 30.0
"""How long a killed or terminating actor may take to be reported gone before its slot is dropped, s."""
COLLECTOR_TIMEOUT_S = 120.0
"""Longest wait for the results actor to store one result, s."""
MAX_WAIT_S = 1.0
"""Longest single `ray.wait`, s (the countdown on stderr refreshes at least this often)."""
MAX_PENDING_CALLS = 256
"""Calls to the results actor kept before the resolved ones are checked and forgotten (a study of
100,000 entries would otherwise hold every reference it ever made)."""
ACTOR_START_TIMEOUT_S = 600.0
"""Longest wait for an experiment actor to start (process, runtime_env, placement), s. The
experiment's own deadline (`timeout_s`) counts from the moment it has started."""


class Scheduler:
    """Runs `items` on the connected Ray cluster, reporting to `collector` (see module docstring)."""

    def __init__(
        self,
        items: list[WorkItem],
        policy: Policy,
        collector: Any,
        runtime_envs: dict[str, dict | None],
        progress: Progress,
        first_attempt: dict[str, int],
    ):
        self.queue: deque[WorkItem] = deque(items)
        self.queued_shapes: Counter[SlotShape] = Counter()
        self.policy = policy
        self.collector = collector
        self.runtime_envs = runtime_envs
        self.progress = progress
        self.next_attempt = {i.key: first_attempt.get(i.key, 1) for i in items}
        self.tries = {i.key: 0 for i in items}
        self.pool = SlotPool(policy.config_gap_seconds, policy.cycle_gap_seconds)
        configs = {i.config_hash: i.config for i in items}  # one per configuration, not per cycle
        by_config = {h: shape_for(c, policy.isolation, self.pool.inventory) for h, c in configs.items()}
        self.shapes = {i.key: by_config[i.config_hash] for i in items}
        self.queued_shapes.update(self.shapes[i.key] for i in items)
        self.running: dict[Any, Attempt] = {}
        self.where_refs: dict[Any, Attempt] = {}
        self.record_refs: dict[Any, tuple[str, float]] = {}
        self.releasing: dict[Any, tuple[str, int, float]] = {}
        self.baselines: dict[BaselineKey, CachedBaseline] = {}
        self.calls: list[Any] = []
        self.report = Report()
        self.consecutive_failures = 0
        self._stalled_since: float | None = None

    # ---- the loop -------------------------------------------------------------------------
    def run(self) -> Report:
        """Run until every item completed or failed for good. Raises StudyError (circuit breaker,
        unplaceable work, results actor unresponsive); KeyboardInterrupt passes through. Either way
        running actors are killed and their entries set back to pending first."""
        try:
            while self.queue or self.running or self.record_refs or self.releasing:
                now = time.monotonic()
                self.pool.refresh(now)
                self._dispatch(now)
                self.pool.provision(((self.shapes[i.key], i.cycle) for i in self.queue), now)
                head = self.shapes[self.queue[0].key] if self.queue else None
                self.pool.release_unneeded({s for s, n in self.queued_shapes.items() if n}, head, now)
                self._enforce_deadlines(now)
                self._check_stall(now)
                self._wait_and_handle(now)
                self.progress.status(len(self.running), len(self.report.failed), self._waiting_for(time.monotonic()))
                self._prune_calls()
            ray.get(self.calls, timeout=COLLECTOR_TIMEOUT_S)
        except BaseException as exc:
            self._stop(f"stopped: {describe(exc) if not isinstance(exc, KeyboardInterrupt) else 'interrupted'}")
            clean_up([self.pool.release_all], first=exc)
            raise
        self.pool.release_all()
        return self.report

    def _wait_and_handle(self, now: float) -> None:
        refs = [*self.pool.refs(), *self.where_refs, *self.running, *self.record_refs]
        timeout_s = min(max(self._next_wakeup(now) - now, 0.01), MAX_WAIT_S)
        if not refs:
            time.sleep(timeout_s)
            return
        ready, _ = ray.wait(refs, num_returns=1, timeout=timeout_s)
        if ready:
            ready, _ = ray.wait(refs, num_returns=len(refs), timeout=0)
        ready_set = set(ready)
        self.pool.handle(ready_set)
        for ref in [r for r in self.releasing if r not in self.pool.drain_refs]:  # gone, or given up on
            key, number, killed_unix_s = self.releasing.pop(ref)
            if ref in ready_set:
                stages = {"slot_release": elapsed_s(killed_unix_s, time.time())}
                self.calls.append(self.collector.add_stages.remote(key, number, stages))
        for ref in [r for r in self.where_refs if r in ready_set]:
            self._on_where(self.where_refs.pop(ref), ref)
        for ref in [r for r in self.running if r in ready_set]:
            self._on_run(self.running.pop(ref), ref)
        for ref in [r for r in self.record_refs if r in ready_set]:
            self._on_recorded(self.record_refs.pop(ref)[0], ref)

    def _prune_calls(self) -> None:
        """Forget calls to the results actor that returned (raising now if one failed, as at the end)."""
        if len(self.calls) >= MAX_PENDING_CALLS:
            done, self.calls = ray.wait(self.calls, num_returns=len(self.calls), timeout=0)
            ray.get(done, timeout=COLLECTOR_TIMEOUT_S)

    def _next_wakeup(self, now: float) -> float:
        times = [now + MAX_WAIT_S]
        times += [a.deadline_s if not a.killed else a.killed_s + KILL_GRACE_S for a in self.running.values()]
        times += [*self.pool.deadlines_s(), *(deadline for _, deadline in self.record_refs.values())]
        if self.queue:
            head = self.queue[0]
            times += [self.pool.ready_at_s(s, head.cycle) for s in self.pool.resting(self.shapes[head.key])]
        return min(times)

    # ---- dispatch and provisioning ------------------------------------------------------------
    def _cycle_wait_s(self, item: WorkItem) -> float:
        start = self.policy.cycle_starts.get(item.cycle)
        return max(0.0, (start - utc_now()).total_seconds()) if start else 0.0

    def _dispatch(self, now: float) -> None:
        while self.queue:
            item = self.queue[0]
            if self._cycle_wait_s(item) > 0:
                return
            slot = self.pool.take(self.shapes[item.key], item.cycle, now)
            if slot is None:
                return
            self.queue.popleft()
            self.queued_shapes[self.shapes[item.key]] -= 1
            self._start(item, slot, now)

    def _start(self, item: WorkItem, slot: Slot, now: float) -> None:
        number = self.next_attempt[item.key]
        self.next_attempt[item.key] += 1
        self.tries[item.key] += 1
        self.report.attempts += 1
        if self.report.first_dispatch_s is None:
            self.report.first_dispatch_s = now
        record = AttemptRecord(attempt=number, dispatched_at=utc_now())
        options = actor_options(slot)
        env = self.runtime_envs.get(item.config.backend)
        if item.config.cold_start:
            env = cold_start_runtime_env(env, f"{item.key}-a{number}")
        if env:
            options["runtime_env"] = env
        actor = ExperimentActor.options(**options).remote()
        where_ref = actor.where.remote()
        run_ref = actor.run.remote(item.config, item.cycle, number, dict(self.baselines))
        attempt = Attempt(item, slot, actor, where_ref, run_ref, now, now + ACTOR_START_TIMEOUT_S, record, time.time())
        self.running[run_ref] = attempt
        self.where_refs[where_ref] = attempt
        self.calls.append(self.collector.mark_running.remote(item.key, record))

    def _check_stall(self, now: float) -> None:
        """StudyError when nothing runs and the head item has had no way to start for `timeout_s`."""
        waiting = self.queue and not self.running and not self.pool.drain_refs
        head = self.queue[0] if self.queue else None
        legit = head is not None and (self._cycle_wait_s(head) > 0 or bool(self.pool.resting(self.shapes[head.key])))
        if not waiting or legit:
            self._stalled_since = None
            return
        self._stalled_since = self._stalled_since or now
        if now - self._stalled_since > self.policy.timeout_s:
            assert head is not None
            inventory = self.pool.inventory
            raise StudyError(
                f"cannot place {head.name} (needs {self.shapes[head.key].label()}): no placement group became "
                f"ready in {self.policy.timeout_s:.0f} s; the cluster has {inventory.total_gpus} GPU(s) "
                f"and {inventory.total_cpus} CPU(s) on {len(inventory.nodes)} alive node(s)"
            )

    # ---- outcomes ---------------------------------------------------------------------------------
    def _on_where(self, attempt: Attempt, ref: Any) -> None:
        try:
            info = ray.get(ref)
        except Exception:  # the actor died before answering: its run ref reports the failure
            return
        now = time.monotonic()
        self.report.start_overheads_s.append(now - attempt.dispatched_s)
        attempt.deadline_s = now + self.policy.timeout_s
        attempt.started = True
        attempt.slot.node_id = info.node_id
        attempt.record = attempt.record.model_copy(
            update={
                "started_at": info.started_at,
                "node_id": info.node_id,
                "hostname": info.hostname,
                "gpu_ids": info.gpu_ids,
                "gpu_uuids": info.gpu_uuids,
                "actor_pid": info.pid,
                "stages_s": {
                    "actor_start": elapsed_s(attempt.dispatched_unix_s, info.constructed_unix_s),
                    **info.stages_s,
                },
            }
        )
        self.calls.append(self.collector.mark_running.remote(attempt.item.key, attempt.record))

    def _on_run(self, attempt: Attempt, ref: Any) -> None:
        self.where_refs.pop(attempt.where_ref, None)
        try:
            outcome = ray.get(ref)
        except Exception as exc:
            cause = cause_of(exc)
            final = isinstance(cause, LLEMError) and not cause.retryable
            stages = {**attempt.record.stages_s, **getattr(cause, "llem_stages_s", {})}
            attempt.record = attempt.record.model_copy(update={"stages_s": stages})
            self._on_failure(attempt, attempt.killed or describe(exc), isinstance(exc, RayActorError), final)
            return
        stages = {
            **attempt.record.stages_s,
            **outcome.stages_s,
            "result_transfer": elapsed_s(outcome.returned_unix_s, time.time()),
        }
        window = outcome.window_s
        record = attempt.record.model_copy(
            update={
                "ended_at": utc_now(),
                "gpu_pids_seen": outcome.gpu_pids_seen,
                "stages_s": stages,
                "window_started_at": utc(window[0]) if window else None,
                "window_ended_at": utc(window[1]) if window else None,
            }
        )
        self.baselines.update(outcome.new_baselines)
        self.consecutive_failures = 0
        self._drain(attempt)
        store = self.collector.record.remote(attempt.item.key, outcome.result, outcome.timeseries, record)
        self.record_refs[store] = (attempt.item.key, time.monotonic() + COLLECTOR_TIMEOUT_S)

    def _on_recorded(self, key: str, ref: Any) -> None:
        """The results actor stored `key` (result directory, part file, manifest): it is completed."""
        try:
            ray.get(ref)
        except Exception as exc:
            raise StudyError(f"the results actor could not store {key}: {describe(exc)}") from exc
        self.report.completed.append(key)
        self.progress.advance()

    def _drain(self, attempt: Attempt) -> None:
        """End the attempt's actor; its slot becomes idle once Ray reports it gone (Ray #44821).

        The experiment has unloaded its backend and closed its meter already; engine child
        processes die with the actor (raylet sub-reaper). `__ray_terminate__` after `ray.kill`
        resolves, with ActorDiedError, only once the actor is dead, whichever of the two lands first.
        """
        ray.kill(attempt.actor, no_restart=True)
        gone = attempt.actor.__ray_terminate__.remote()
        self.pool.drain(attempt.slot, gone, attempt.item.cycle, KILL_GRACE_S)
        self.releasing[gone] = (attempt.item.key, attempt.record.attempt, time.time())

    def _on_failure(self, attempt: Attempt, error: str, actor_gone: bool, final: bool = False) -> None:
        """Record a failed attempt; retry it unless it had all its attempts or `final` (no retry can fix it)."""
        item = attempt.item
        record = attempt.record.model_copy(update={"ended_at": utc_now(), "status": "failed", "error": error})
        self.calls.append(self.collector.mark_failed.remote(item.key, error, record))
        if actor_gone:
            self.pool.settle(attempt.slot, item.cycle)
        else:
            self._drain(attempt)
        self.consecutive_failures += 1
        if not final and self.tries[item.key] <= self.policy.max_retries:
            self.queue.appendleft(item)
            self.queued_shapes[self.shapes[item.key]] += 1
        else:
            self.report.failed.append(item.key)
            self.progress.failed(item.name, item.cycle, error)
            self.progress.advance()
        if self.consecutive_failures >= self.policy.circuit_breaker:
            raise StudyError(
                f"circuit breaker: {self.consecutive_failures} consecutive failed attempts "
                f"(last: {item.name} cycle {item.cycle}: {error})"
            )

    def _enforce_deadlines(self, now: float) -> None:
        for ref, attempt in list(self.running.items()):
            if attempt.killed is None and now > attempt.deadline_s:
                ray.kill(attempt.actor, no_restart=True)
                attempt.killed_s = now
                attempt.killed = (
                    f"timed out after {self.policy.timeout_s:g} s (actor killed)"
                    if attempt.started
                    else f"actor did not start within {ACTOR_START_TIMEOUT_S:g} s (killed)"
                )
            elif attempt.killed and now > attempt.killed_s + KILL_GRACE_S:
                self.running.pop(ref)
                self.where_refs.pop(attempt.where_ref, None)
                self.pool.drop(attempt.slot)
                self._on_failure(attempt, attempt.killed, actor_gone=True)
        self.pool.expire_drains(now)
        for key, deadline_s in self.record_refs.values():
            if now > deadline_s:
                raise StudyError(f"the results actor did not store {key} within {COLLECTOR_TIMEOUT_S:.0f} s")

    # ---- stopping and display ---------------------------------------------------------------------
    def _stop(self, reason: str) -> None:
        """Store the results that arrived, kill running attempts, then set every entry the manifest
        still holds `running` back to pending with `reason`.

        The manifest, not this scheduler's bookkeeping, says what is left running: an interrupt can
        land between an attempt leaving `self.running` and its result reaching the results actor
        (while the result is fetched, say), and that entry must not stay `running` either. The
        release is sent after every earlier call to the results actor, which runs them in order."""
        for ref in list(self.record_refs):
            try:
                ray.get(ref, timeout=COLLECTOR_TIMEOUT_S)
            except Exception:  # not stored: the release below sets it back to pending
                pass
        for attempt in self.running.values():
            ray.kill(attempt.actor, no_restart=True)
        self.running.clear()
        try:
            ray.get(self.collector.release_running.remote(reason), timeout=COLLECTOR_TIMEOUT_S)
        except Exception:  # the manifest still says running: a resume releases those entries anyway
            pass

    def _waiting_for(self, now: float) -> str:
        """What the head of the queue waits for, as a countdown ('' when nothing)."""
        if not self.queue or self.running and len(self.running) >= len(self.pool.slots):
            return ""
        head = self.queue[0]
        cycle_wait_s = self._cycle_wait_s(head)
        if cycle_wait_s > 0:
            return f"cycle {head.cycle} starts in {clock_text(cycle_wait_s)}"
        resting = self.pool.resting(self.shapes[head.key])
        if not resting:
            return ""
        soonest = min(resting, key=lambda s: self.pool.ready_at_s(s, head.cycle))
        wait_s = self.pool.ready_at_s(soonest, head.cycle) - now
        if wait_s <= 0:
            return ""
        kind = "cycle gap" if soonest.last_cycle != head.cycle else "gap"
        return f"{kind}: next in {clock_text(wait_s)}"
