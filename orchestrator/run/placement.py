"""Where the workers go: the cluster's nodes as Ray reports them, the device a plan runs on, one
seat per worker (a pure function of the nodes), and the worker actors started on their seats.

On a cluster each worker is pinned to its node (``NodeAffinitySchedulingStrategy``), so the driver
knows where every row came from without asking the worker.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from orchestrator.errors import ClusterError

ACCEL_PREFIX = "accelerator_type:"


@dataclass
class Node:
    node_id: str
    host: str
    cpus: float
    gpus: int
    accelerators: list[str] = field(default_factory=list)
    ip: str = ""


@dataclass(frozen=True)
class Seat:
    """Where one worker actor goes: its node, its index there, its CPU share and its name."""

    node: Node
    index: int
    cpus: float
    name: str

    def columns(self) -> dict[str, Any]:
        """The row columns that say where a trial ran (the ``_CLUSTER`` group)."""
        return {"node_id": self.node.node_id, "node_ip": self.node.ip, "cpus_per_worker": self.cpus}


def nodes() -> list[Node]:
    """The alive nodes of the cluster with their CPUs, GPUs and accelerator types."""
    import ray

    out = []
    for n in ray.nodes():
        if not n.get("Alive"):
            continue
        res = n.get("Resources", {})
        out.append(
            Node(
                node_id=n["NodeID"],
                host=n.get("NodeManagerHostname") or n.get("NodeManagerAddress", "?"),
                cpus=float(res.get("CPU", 0)),
                gpus=int(res.get("GPU", 0)),
                accelerators=sorted(k[len(ACCEL_PREFIX):] for k in res if k.startswith(ACCEL_PREFIX)),
                ip=n.get("NodeManagerAddress", ""),
            )
        )
    return out


def resolve_device(declared: str, cluster: list[Node]) -> str:
    """``auto`` -> cuda where the cluster has GPUs, else cpu; a cuda plan needs GPUs."""
    gpus = sum(n.gpus for n in cluster)
    if declared == "auto":
        return "cuda" if gpus else "cpu"
    if declared == "cuda" and not gpus:
        raise ClusterError("the plan asks for device: cuda but the cluster has no GPUs; use device: cpu or auto")
    return declared


def select_nodes(cluster: list[Node], device: str, accelerator_type: str | None) -> list[Node]:
    """The nodes the run may use; stops with the GPU models found when none match."""
    if device != "cuda" or not accelerator_type:
        return cluster
    chosen = [n for n in cluster if n.gpus and accelerator_type in n.accelerators]
    if not chosen:
        found = sorted({a for n in cluster for a in n.accelerators}) or ["none reported"]
        raise ClusterError(
            f"the plan asks for accelerator_type: {accelerator_type} but the cluster's GPUs are: "
            f"{', '.join(found)}; nothing was run"
        )
    return chosen


def layout(
    cluster: list[Node], device: str, max_workers: int | None = None, cpus_per_worker: float | None = None
) -> list[Seat]:
    """Decide where the workers go, before starting any (a pure function of the cluster).

    cuda: one seat per GPU, node by node, at most ``max_workers``. cpu: ``max_workers`` seats
    (default 1) spread over the nodes in turn. Each seat's CPU share is ``cpus_per_worker``, or
    by default an even split of its node's CPUs over the node's seats (GPUs for cuda). A share the
    node can't give is a ClusterError: Ray would wait forever to place such an actor.
    """
    places: list[tuple[Node, int]] = []
    if device == "cuda":
        for n in cluster:
            places += [(n, i) for i in range(n.gpus)]
        if max_workers:
            places = places[:max_workers]
    else:
        total = max_workers or 1
        seen: dict[str, int] = {}
        for k in range(total):
            n = cluster[k % len(cluster)]
            seen[n.node_id] = seen.get(n.node_id, 0) + 1
            places.append((n, seen[n.node_id] - 1))
    per_node: dict[str, int] = {}
    for n, _ in places:
        per_node[n.node_id] = per_node.get(n.node_id, 0) + 1
    hosts = [n.host for n in cluster]
    seats = []
    for n, i in places:
        even = _share(n.cpus, n.gpus if device == "cuda" else per_node[n.node_id])
        share = even if cpus_per_worker is None else float(cpus_per_worker)
        if share * per_node[n.node_id] > n.cpus + 1e-9:
            raise ClusterError(
                f"cpus_per_worker: {share:g} CPUs for each of {per_node[n.node_id]} workers on node {n.host} "
                f"({n.node_id[:8]}) needs {share * per_node[n.node_id]:g} CPUs; it has {n.cpus:g}. "
                f"Lower cpus_per_worker or leave it out for an even split"
            )
        # Several nodes on one host (containers, tests) would give workers the same name.
        where = n.host if hosts.count(n.host) == 1 else f"{n.host}-{n.node_id[:6]}"
        seats.append(Seat(node=n, index=i, cpus=share, name=f"{where}/{device}{i}"))
    return seats


def start_workers(seats: list[Seat], device: str, seed: int, warm: bool = False,
                  shipped: dict[str, Any] | None = None) -> list[tuple[Any, str]]:
    """Start one worker actor per seat, pinned to its node; returns [(actor handle, worker name)].

    cuda: ``num_gpus=1`` each, so Ray gives each its own GPU (``CUDA_VISIBLE_DEVICES``).
    ``warm``: the workers import torch and initialise CUDA as they start (the plan has model
    trials), while the driver goes on; else they stay light (see ``workers.actor``).
    Returns at once: Ray starts the actors in the background.
    """
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    from workers.actor import Worker

    remote = ray.remote(Worker)
    workers = []
    for seat in seats:
        opts: dict[str, Any] = {
            "num_cpus": seat.cpus,
            "num_gpus": 1 if device == "cuda" else 0,
            "scheduling_strategy": NodeAffinitySchedulingStrategy(seat.node.node_id, soft=False),
            "max_restarts": 0,
        }
        spawn = functools.partial(remote.options(**opts).remote, seat.name, device, seat.cpus, seed, warm,
                                  shipped)
        _SPAWN[seat.name] = spawn
        workers.append((spawn(), seat.name))
    return workers


#: worker name -> how to start it again (same node, same CPU share, a GPU of that node).
_SPAWN: dict[str, Callable[[], Any]] = {}


def respawn(name: str) -> Any:
    """A fresh actor in place of the worker ``name`` (crashed, hung, or out of memory).

    Its GPU comes back to Ray once the old actor is gone, so the new one lands on that node and,
    with one worker per GPU, on the GPU the old one freed.
    """
    return _SPAWN[name]()


def _share(cpus: float, parts: int) -> float:
    """An even share of ``cpus`` over ``parts`` workers, rounded down to 1/100 of a CPU."""
    if parts <= 0 or cpus <= 0:
        return 0.0
    return max(0.01, math.floor(cpus / parts * 100) / 100)
