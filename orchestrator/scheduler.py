"""Trials from a queue to whichever worker is free, collected in completion order.

Three pieces of state, as in Ray's ``ActorPool``: the idle workers, the in-flight futures
(future -> worker, trial) and the pending trials. A worker takes, in this order of preference,
a pending trial of the model it last ran (no rebuild, a warm export cache), a trial of a model
no other worker is busy with, or the first pending one: a GPU never idles while trials remain.
A worker that dies is not reused; its trial becomes a failed row.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from workers.models import model_key
from workers.trial import base_row


@dataclass
class Slot:
    actor: Any
    name: str
    model: str | None = None  # key of the model it ran last


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
) -> None:
    """Run every trial on the workers; ``on_row`` gets each row as soon as it is ready."""
    import ray
    from ray.exceptions import RayActorError

    idle = [Slot(actor, name) for actor, name in workers]
    pending = list(trials)
    in_flight: dict[Any, tuple[Slot, dict[str, Any]]] = {}
    while (pending and not should_stop()) or in_flight:
        while idle and pending and not should_stop():
            slot = idle.pop(0)
            busy = {s.model for s, _ in in_flight.values() if s.model}
            trial = pending.pop(pick(pending, slot, busy))
            slot.model = model_key(trial["model"])
            in_flight[slot.actor.run.remote(trial)] = (slot, trial)
        if not in_flight:
            if pending and not idle:
                for t in pending:
                    on_row({**base_row(t), "status": "failed", "error": "no worker left to run this trial"})
                pending.clear()
            break
        done, _ = ray.wait(list(in_flight), num_returns=1)
        for ref in done:
            slot, trial = in_flight.pop(ref)
            try:
                row = ray.get(ref)
            except RayActorError as exc:
                row = {**base_row(trial), "status": "failed", "worker": slot.name,
                       "error": f"worker {slot.name} died while running this trial: {_first_line(exc)}"}
                on_row(row)
                continue  # a dead worker never returns to the idle set
            idle.append(slot)
            on_row(row)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
