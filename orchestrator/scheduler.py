"""Trials from a queue to whichever worker is free, collected in completion order.

Three pieces of state, as in Ray's ``ActorPool``: the idle workers, the in-flight futures
(future -> worker, trial) and the pending trials. A worker takes, in this order of preference,
a pending trial of the model it last ran (no rebuild, a warm export cache), a trial of a model
no other worker is busy with, or the first pending one: a GPU never idles while trials remain.
A worker that dies is not reused. When it died with its node (the node is no longer alive) its
trial is put back at the head of the queue for the surviving workers, once; otherwise (the trial
may have killed it) the trial becomes a failed row with the cause.

``facts`` (worker name -> columns, from ``cluster.Seat.columns``) are added to each row on the
driver, with ``concurrent_trials``: how many other trials were running on the same node at the
moment this one was dispatched.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from workers.models import model_key
from workers.trial import base_row

#: How long a worker that stopped answering may wait for Ray to say whether its node died (Ray's
#: own node health check takes ~15-30 s by default) before its trial is recorded as failed.
NODE_DEATH_GRACE_S = 60.0


@dataclass
class Slot:
    actor: Any
    name: str
    model: str | None = None  # key of the model it ran last
    node: str | None = None  # node id, for concurrent_trials and node loss
    concurrent: int = 0  # other trials running on its node when its current trial started


@dataclass
class Report:
    """What happened to the workers: filled in by :func:`schedule`, empty when all went well."""

    lost_workers: dict[str, str] = field(default_factory=dict)  # worker name -> cause
    requeued: list[str] = field(default_factory=list)  # trial ids put back after their node died
    failed_on_lost: list[str] = field(default_factory=list)  # trial ids failed with their worker


def pick(pending: list[dict[str, Any]], slot: Slot, busy_models: set[str]) -> int:
    """Index of the pending trial ``slot`` should run next (pending is non-empty)."""
    if slot.model is not None:
        for i, t in enumerate(pending):
            if model_key(t["model"]) == slot.model:
                return i
    for i, t in enumerate(pending):
        if model_key(t["model"]) not in busy_models:
            return i
    return 0


def schedule(
    workers: list[tuple[Any, str]],
    trials: list[dict[str, Any]],
    on_row: Callable[[dict[str, Any]], None],
    should_stop: Callable[[], bool] = lambda: False,
    facts: dict[str, dict[str, Any]] | None = None,
) -> Report:
    """Run every trial on the workers; ``on_row`` gets each row as soon as it is ready."""
    import ray
    from ray.exceptions import ActorUnavailableError, RayActorError

    facts = facts or {}
    report = Report()
    idle = [Slot(actor, name, node=facts.get(name, {}).get("node_id")) for actor, name in workers]
    pending = list(trials)
    in_flight: dict[Any, tuple[Slot, dict[str, Any]]] = {}
    # Workers that died while Ray can't yet tell whether their node did: (slot, trial, cause, since).
    doubtful: list[tuple[Slot, dict[str, Any], str, float]] = []

    def settle(final: bool) -> None:
        """Re-queue the trials of workers whose node died; fail those whose node is alive."""
        alive = _alive_nodes() if doubtful else set()
        for entry in list(doubtful):
            slot, trial, cause, since = entry
            lost = slot.node is not None and slot.node not in alive
            if not (lost or final or time.monotonic() - since >= NODE_DEATH_GRACE_S):
                continue
            doubtful.remove(entry)
            if lost:
                cause = f"its node {slot.node[:8]} died"  # type: ignore[index]
            report.lost_workers[slot.name] = cause
            if lost and trial["trial_id"] not in report.requeued:
                report.requeued.append(trial["trial_id"])
                pending.insert(0, trial)
                continue
            report.failed_on_lost.append(trial["trial_id"])
            on_row({**base_row(trial), **facts.get(slot.name, {}), "concurrent_trials": slot.concurrent,
                    "status": "failed", "worker": slot.name,
                    "error": f"worker {slot.name} died while running this trial: {cause}"})

    def dispatch() -> None:
        while idle and pending and not should_stop():
            slot = idle.pop(0)
            busy = {s.model for s, _ in in_flight.values() if s.model}
            trial = pending.pop(pick(pending, slot, busy))
            slot.model = model_key(trial["model"])
            slot.concurrent = sum(1 for s, _ in in_flight.values() if s.node == slot.node)
            in_flight[slot.actor.run.remote(trial)] = (slot, trial)

    while (pending and not should_stop()) or in_flight or doubtful:
        dispatch()
        if not in_flight and not doubtful:
            if pending and not idle:
                for t in pending:
                    on_row({**base_row(t), "status": "failed", "error": "no worker left to run this trial"})
                pending.clear()
            break
        if in_flight:
            done, _ = ray.wait(list(in_flight), num_returns=1, timeout=1.0 if doubtful else None)
        else:
            done = []
            time.sleep(0.5)
        rows = []
        for ref in done:
            slot, trial = in_flight.pop(ref)
            try:
                row = ray.get(ref)
            except RayActorError as exc:  # a dead worker never returns to the idle set
                # Unavailable: the connection broke, Ray has not decided why yet; died: it has.
                wait = 0.0 if isinstance(exc, ActorUnavailableError) else NODE_DEATH_GRACE_S
                doubtful.append((slot, trial, _cause(exc), time.monotonic() - wait))
                continue
            idle.append(slot)
            rows.append({**row, **facts.get(slot.name, {}), "concurrent_trials": slot.concurrent})
        # Hand the free workers their next trials before writing the rows (a Parquet file each),
        # so no GPU waits on the driver's disk.
        dispatch()
        for row in rows:
            on_row(row)
        settle(final=should_stop())
    return report


def _alive_nodes() -> set[str]:
    import ray

    return {n["NodeID"] for n in ray.nodes() if n.get("Alive")}


def _cause(exc: BaseException) -> str:
    """The informative part of a Ray actor error, on one line."""
    lines = [ln.strip() for ln in str(exc).strip().splitlines() if ln.strip()]
    keep = [ln for ln in lines if not ln.startswith(("class_name:", "actor_id:", "namespace:"))]
    return " ".join(keep)[:300] or type(exc).__name__
