"""Placement groups that give each experiment whole GPUs, never shared.

A `Slot` is one placement group the driver holds: a STRICT_PACK group whose first bundle holds the
whole GPUs and the CPUs of one experiment actor. The driver keeps a slot after its experiment ends
and reuses it for the next experiment of the same `SlotShape` once the gap has passed, so:
- a GPU rests for `config_gap_seconds` / `cycle_gap_seconds` *per GPU* while the other GPUs keep working;
- no other job's work lands on a GPU between two of the study's experiments;
- placement-group creation is paid once per GPU, not once per experiment.

Shapes:
- `isolation: gpu` (default): one bundle `{"GPU": k, "CPU": c}`, k = `resources.gpus` (the TP size).
  One actor owns all k GPUs (Ray cannot give one actor resources from several bundles, and vLLM /
  TRT-LLM run their own tensor-parallel workers from that actor).
- `isolation: node`: the bundle holds every GPU of one node (pinned with the `ray.io/node-id`
  label); the actor takes k of them, the others stay reserved and idle while it measures.
- A cluster with no GPU at all (a laptop, CI): CPU bundles `{"CPU": c}`, so the built-in default
  study runs everywhere. Fractional GPUs are never requested (two 0.5-GPU actors share a device).

Example:
    >>> inventory = ClusterInventory.from_ray()
    >>> shape = shape_for(config, "gpu", inventory)
    >>> slot = create_slot(shape)
    >>> ray.get(slot.pg.ready(), timeout=60)
    >>> ExperimentActor.options(**actor_options(slot)).remote()
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Literal

import ray
from ray.util.placement_group import PlacementGroup, placement_group, placement_group_table, remove_placement_group
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

from llem_ray.config.experiment import ExperimentConfig

NODE_ID_LABEL = "ray.io/node-id"


@dataclass(frozen=True)
class NodeInfo:
    """One alive Ray node: its id, address, and whole GPUs and CPUs."""

    node_id: str
    address: str
    gpus: int
    cpus: int


@dataclass(frozen=True)
class ClusterInventory:
    """The alive nodes of the cluster, read from the GCS (`ray.nodes()`)."""

    nodes: tuple[NodeInfo, ...]

    @classmethod
    def from_ray(cls) -> ClusterInventory:
        """The current alive nodes. Requires `ray.init` to have been called."""
        nodes = []
        for node in ray.nodes():
            if not node.get("Alive"):
                continue
            resources = node.get("Resources", {})
            nodes.append(
                NodeInfo(
                    node_id=node["NodeID"],
                    address=node.get("NodeManagerAddress", ""),
                    gpus=int(resources.get("GPU", 0)),
                    cpus=int(resources.get("CPU", 0)),
                )
            )
        return cls(tuple(nodes))

    @property
    def has_gpus(self) -> bool:
        """True if any alive node has a GPU (then every experiment gets whole GPUs)."""
        return any(n.gpus > 0 for n in self.nodes)

    @property
    def total_gpus(self) -> int:
        return sum(n.gpus for n in self.nodes)

    @property
    def total_cpus(self) -> int:
        return sum(n.cpus for n in self.nodes)

    def alive(self, node_id: str | None) -> bool:
        """True if `node_id` is an alive node (None, an unplaced slot, counts as alive)."""
        return node_id is None or any(n.node_id == node_id for n in self.nodes)


@dataclass(frozen=True)
class SlotShape:
    """What one experiment's placement group reserves.

    `gpus`/`cpus` are what the actor takes; `whole_node` reserves every GPU (or, on a CPU-only
    cluster, every CPU) of one node besides.
    """

    gpus: int
    cpus: int
    whole_node: bool = False

    def label(self) -> str:
        return f"{self.gpus}gpu-{self.cpus}cpu" + ("-node" if self.whole_node else "")


def shape_for(config: ExperimentConfig, isolation: Literal["gpu", "node"], inventory: ClusterInventory) -> SlotShape:
    """The slot shape `config` needs: its whole GPUs (none on a GPU-less cluster or for device 'cpu')."""
    gpus = config.resources.gpus if inventory.has_gpus and config.device != "cpu" else 0
    return SlotShape(gpus=gpus, cpus=config.resources.cpus, whole_node=isolation == "node")


def feasibility_problems(shapes: dict[str, SlotShape], inventory: ClusterInventory) -> list[str]:
    """Why some experiments can never be placed (empty if all can). `shapes`: experiment name -> shape."""
    problems = []
    if not inventory.nodes:
        return ["the Ray cluster has no alive node"]
    for name, shape in shapes.items():
        fits = [n for n in inventory.nodes if n.gpus >= shape.gpus and n.cpus >= shape.cpus]
        if not fits:
            biggest_gpus = max(n.gpus for n in inventory.nodes)
            biggest_cpus = max(n.cpus for n in inventory.nodes)
            problems.append(
                f"{name}: needs {shape.gpus} GPU(s) and {shape.cpus} CPU(s) on one node; the largest node "
                f"has {biggest_gpus} GPU(s) and {biggest_cpus} CPU(s)"
            )
    return problems


def bundles_for(shape: SlotShape, node: NodeInfo | None = None) -> list[dict[str, float]]:
    """The bundles of a slot: one bundle holding the actor's whole GPUs and CPUs (whole node: all GPUs)."""
    if shape.whole_node:
        if node is None:
            raise ValueError("a whole-node slot needs its node")
        if shape.gpus > 0:
            return [{"GPU": float(node.gpus), "CPU": float(shape.cpus)}]
        return [{"CPU": float(max(node.cpus, shape.cpus))}]
    bundle = {"CPU": float(shape.cpus)}
    if shape.gpus > 0:
        bundle["GPU"] = float(shape.gpus)
    return [bundle]


@dataclass
class Slot:
    """A placement group the driver holds, and what last ran in it (for per-GPU gaps).

    `state`: `pending` (group not placed yet), `idle` (placed, no actor), `busy` (an experiment
    runs), `draining` (its actor is being killed; the GPU is reused only once the actor is gone,
    Ray issue #44821). Times are `time.monotonic()` seconds.
    """

    pg: PlacementGroup
    shape: SlotShape
    reserved_gpus: int
    reserved_cpus: int
    node_id: str | None = None
    state: Literal["pending", "idle", "busy", "draining"] = "pending"
    created_s: float = field(default_factory=time.monotonic)
    last_end_s: float | None = None
    last_cycle: int | None = None

    def ready_at_s(self, cycle: int, config_gap_s: float, cycle_gap_s: float) -> float:
        """Earliest monotonic time an experiment of `cycle` may start here: after the right gap."""
        if self.last_end_s is None:
            return 0.0
        gap_s = cycle_gap_s if cycle != self.last_cycle else config_gap_s
        return self.last_end_s + gap_s


def create_slot(shape: SlotShape, node: NodeInfo | None = None) -> Slot:
    """Ask Ray for a STRICT_PACK placement group of `shape` (asynchronous: wait on `slot.pg.ready()`).

    A whole-node shape is pinned to `node` with a hard label selector. The group stays pending while
    the cluster lacks the resources; creation is all-or-nothing.
    """
    bundles = bundles_for(shape, node)
    selector = [{NODE_ID_LABEL: node.node_id}] * len(bundles) if shape.whole_node and node else None
    pg = placement_group(bundles, strategy="STRICT_PACK", bundle_label_selector=selector)
    return Slot(
        pg=pg,
        shape=shape,
        reserved_gpus=int(sum(b.get("GPU", 0) for b in bundles)),
        reserved_cpus=int(sum(b.get("CPU", 0) for b in bundles)),
        node_id=node.node_id if node else None,
    )


def placed_node_id(slot: Slot) -> str | None:
    """The node a placed slot's bundles are on (one GCS query), or None if not placed."""
    table = placement_group_table(slot.pg)
    nodes = set((table.get("bundles_to_node_id") or {}).values())
    return nodes.pop() if len(nodes) == 1 else None


def release(slot: Slot) -> None:
    """Remove the slot's placement group (kills any actor still in it); safe to call twice."""
    try:
        remove_placement_group(slot.pg)
    except Exception:  # already removed, or the cluster is shutting down: nothing left to free
        pass


def actor_options(slot: Slot) -> dict:
    """`.options(...)` that put an experiment actor into `slot`'s bundle with exactly its resources.

    `num_cpus` is set deliberately: Ray sets OMP_NUM_THREADS to it. Child tasks are not captured:
    the actor holds the whole bundle, and engines run their own workers in processes it starts.
    """
    return {
        "num_gpus": slot.shape.gpus,
        "num_cpus": slot.shape.cpus,
        "scheduling_strategy": PlacementGroupSchedulingStrategy(
            placement_group=slot.pg, placement_group_bundle_index=0
        ),
    }
