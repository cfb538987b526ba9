"""`SlotPool`: the placement-group slots a study holds, and their life cycle.

pending (placement group asked for) -> idle (placed) -> busy (an experiment actor runs) ->
draining (the actor is being ended) -> idle, ... -> released. A slot is created only while the
alive cluster has room for it (so the study never queues placement groups it cannot use), reused
by the next item of the same shape once that item's gap has passed on it (config gap in the same
cycle, cycle gap across cycles: gaps are per GPU), and released when no queued item needs its
shape, when its node is gone, or at the end. See placement.py for shapes and bundles.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

from llem_ray.cluster.placement import ClusterInventory, Slot, SlotShape, create_slot, release

INVENTORY_REFRESH_S = 2.0
"""How often the list of alive nodes is re-read, s."""


class SlotPool:
    """The study's slots. Times are `time.monotonic()` seconds; gaps in seconds."""

    def __init__(self, config_gap_s: float, cycle_gap_s: float):
        self.gaps = (config_gap_s, cycle_gap_s)
        self.slots: list[Slot] = []
        self.ready_refs: dict[Any, Slot] = {}
        self.drain_refs: dict[Any, tuple[Slot, float]] = {}
        self.inventory = ClusterInventory.from_ray()
        self._inventory_s = time.monotonic()

    # ---- Ray refs the scheduler waits on ----------------------------------------------------------
    def refs(self) -> list[Any]:
        """Placement groups becoming ready and ended actors being reported gone."""
        return [*self.ready_refs, *self.drain_refs]

    def handle(self, ready: set[Any]) -> None:
        """Placed slots and slots whose actor is gone become idle."""
        for ref in [r for r in self.ready_refs if r in ready]:
            self.ready_refs.pop(ref).state = "idle"
        for ref in [r for r in self.drain_refs if r in ready]:
            self.drain_refs.pop(ref)[0].state = "idle"

    def deadlines_s(self) -> list[float]:
        return [deadline_s for _, deadline_s in self.drain_refs.values()]

    # ---- the cluster ----------------------------------------------------------------------------------
    def refresh(self, now: float, force: bool = False) -> None:
        """Re-read the alive nodes every INVENTORY_REFRESH_S (or now, with `force`)."""
        if force or now - self._inventory_s >= INVENTORY_REFRESH_S:
            self.inventory = ClusterInventory.from_ray()
            self._inventory_s = now

    def _free(self) -> tuple[int, int]:
        """(GPUs, CPUs) of the alive cluster not reserved by this study's slots."""
        gpus = self.inventory.total_gpus - sum(s.reserved_gpus for s in self.slots)
        cpus = self.inventory.total_cpus - sum(s.reserved_cpus for s in self.slots)
        return gpus, cpus

    def _create(self, shape: SlotShape) -> bool:
        """Ask for a placement group of `shape` if the cluster has room for it; True if asked."""
        node = None
        if shape.whole_node:
            taken = {s.node_id for s in self.slots}
            nodes = [
                n
                for n in self.inventory.nodes
                if n.node_id not in taken
                and n.gpus >= shape.gpus
                and n.cpus >= shape.cpus
                and (shape.gpus or not n.gpus)
            ]
            if not nodes:
                return False
            node = nodes[0]
        else:
            gpus, cpus = self._free()
            if gpus < shape.gpus or cpus < shape.cpus:
                return False
        slot = create_slot(shape, node)
        self.slots.append(slot)
        self.ready_refs[slot.pg.ready()] = slot
        return True

    # ---- slots for items ------------------------------------------------------------------------------
    def ready_at_s(self, slot: Slot, cycle: int) -> float:
        return slot.ready_at_s(cycle, *self.gaps)

    def resting(self, shape: SlotShape) -> list[Slot]:
        """Idle slots of `shape` (rested or still in their gap)."""
        return [s for s in self.slots if s.state == "idle" and s.shape == shape]

    def take(self, shape: SlotShape, cycle: int, now: float) -> Slot | None:
        """The idle slot of `shape` rested longest past its gap for `cycle`, now busy; None if none."""
        eligible = [s for s in self.resting(shape) if self.ready_at_s(s, cycle) <= now]
        if not eligible:
            return None
        slot = min(eligible, key=lambda s: -1.0 if s.last_end_s is None else s.last_end_s)
        slot.state = "busy"
        return slot

    def provision(self, needs: Iterable[tuple[SlotShape, int]], now: float) -> None:
        """Create slots, in queue order, for needs (shape, cycle) no pending or rested slot will take.

        Stops at the first need the cluster has no room for (items never overtake each other)."""
        available = [s for s in self.slots if s.state in ("pending", "idle")]
        for shape, cycle in needs:
            match = next(
                (
                    s
                    for s in available
                    if s.shape == shape and (s.state == "pending" or self.ready_at_s(s, cycle) <= now)
                ),
                None,
            )
            if match is not None:
                available.remove(match)
            elif not self._create(shape):
                return

    def release_unneeded(self, wanted: set[SlotShape], head: SlotShape | None, now: float) -> None:
        """Drop slots on dead nodes; idle or pending slots once no queued item has their shape; and,
        when the head item can get no slot at all, idle slots of other shapes rested the longest gap."""
        longest_gap_s = max(self.gaps)
        head_blocked = head is not None and not any(s.shape == head for s in self.slots)
        for slot in list(self.slots):
            dead = slot.state != "busy" and not self.inventory.alive(slot.node_id)
            spare = slot.state in ("idle", "pending") and (slot.shape not in wanted or head_blocked)
            rested = slot.last_end_s is None or now >= slot.last_end_s + longest_gap_s
            if dead or (spare and (not wanted or rested)):
                self.drop(slot)

    # ---- after an experiment --------------------------------------------------------------------------
    def drain(self, slot: Slot, gone_ref: Any, cycle: int, grace_s: float) -> None:
        """The slot's actor is being ended; idle once `gone_ref` resolves, dropped after `grace_s`."""
        slot.state, slot.last_end_s, slot.last_cycle = "draining", time.monotonic(), cycle
        self.drain_refs[gone_ref] = (slot, time.monotonic() + grace_s)

    def settle(self, slot: Slot, cycle: int) -> None:
        """The slot's actor is already gone (crash, kill, lost node): idle now, or dropped if its node died."""
        slot.state, slot.last_end_s, slot.last_cycle = "idle", time.monotonic(), cycle
        self.refresh(time.monotonic(), force=True)
        if not self.inventory.alive(slot.node_id):
            self.drop(slot)

    def expire_drains(self, now: float) -> None:
        """Drop slots whose ended actor was never reported gone in time."""
        for slot, deadline_s in list(self.drain_refs.values()):
            if now > deadline_s:
                self.drop(slot)

    def drop(self, slot: Slot) -> None:
        """Release the slot's placement group (kills any actor left in it) and forget it."""
        release(slot)
        if slot in self.slots:
            self.slots.remove(slot)
        for ref in [r for r, s in self.ready_refs.items() if s is slot]:
            self.ready_refs.pop(ref)
        for ref in [r for r, (s, _) in self.drain_refs.items() if s is slot]:
            self.drain_refs.pop(ref)

    def release_all(self) -> None:
        for slot in list(self.slots):
            self.drop(slot)
