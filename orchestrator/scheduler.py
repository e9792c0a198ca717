"""Trials from a queue to whichever worker is free, collected in completion order; faults survived.

Three pieces of state, as in Ray's ``ActorPool``: the idle workers, the in-flight futures
(future -> worker, trial, deadline) and the pending trials. A worker takes, in this order of
preference, a pending trial of the model it last ran (no rebuild, a warm export cache), a trial of
a model no other worker is busy with, or the first pending one: a GPU never idles while trials remain.

Faults, and what becomes of the worker and the trial::

    the worker process dies (segfault, abort, OOM killer)  -> replaced; trial failed, or retried
    the trial runs past its timeout_s                       -> killed, replaced; trial timeout, or retried
    the trial runs out of device memory                     -> replaced (a clean GPU); trial oom
    a CUDA error (may poison the process's context)          -> replaced; trial failed
    the trial raises                                        -> worker kept; trial failed

A worker that died with its node (Ray no longer lists the node alive) is not replaced: its
trial goes back to the head of the queue for the surviving workers, once (it did not kill the
worker), and the run's ``Report`` names the lost workers and the re-queued trials. When Ray says
only that a worker is unavailable (the connection broke), the scheduler waits up to
``NODE_DEATH_GRACE_S`` for Ray to decide whether its node died before treating it as a crash.

``facts`` (worker name -> columns, from ``cluster.Seat.columns``) are added to each row on the
driver, with ``concurrent_trials``: how many other trials were running on the same node when this
one was dispatched. Free workers get their next trial before the finished rows are written, so no
GPU waits on the driver's disk.

"Replaced" is a fresh actor from ``respawn(name)`` in the old one's place (same node; the GPU the old
one freed); it takes trials once it answers. ``retries`` (per trial) re-queues a trial whose worker
died or timed out; its row then says which ``attempt`` it is and the ``earlier_errors``.
The scheduler never waits on a dead or hung actor: every wait is bounded by the nearest deadline.
The workers belong to the scheduler once given: it kills every one it still holds when it returns.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from workers.contract import Status, failure_row

#: How long a fresh worker may take to start (import torch, reach its GPU) before it counts as failed.
START_TIMEOUT_S = 300.0
#: A worker that fails to start this many times in a row is given up.
MAX_START_FAILURES = 3
#: The longest single wait, so that ``should_stop`` is polled.
POLL_S = 1.0
#: How long a worker that stopped answering may wait for Ray to say whether its node died (Ray's
#: own node health check takes ~15-30 s by default) before it is treated as a crash.
NODE_DEATH_GRACE_S = 60.0


@dataclass
class Slot:
    actor: Any
    name: str
    model: str | None = None  # key of the model it ran last
    node: str | None = None  # node id, for concurrent_trials and node loss
    concurrent: int = 0  # other trials running on its node when its current trial started


@dataclass
class Flight:
    slot: Slot
    trial: dict[str, Any] | None  # None: a readiness probe of a fresh worker
    deadline: float
    errors: list[str] = field(default_factory=list)


@dataclass
class Report:
    """What happened to the workers: filled in by :func:`schedule`, empty when all went well."""

    lost_workers: dict[str, str] = field(default_factory=dict)  # worker name -> why it was given up
    requeued: list[str] = field(default_factory=list)  # trial ids put back after their node died


def pick(pending: list[dict[str, Any]], slot: Slot, busy_models: set[str]) -> int:
    """Index of the pending trial ``slot`` should run next (pending is non-empty)."""
    if slot.model is not None:
        for i, t in enumerate(pending):
            if t.model.key == slot.model:
                return i
    for i, t in enumerate(pending):
        if t.model.key not in busy_models:
            return i
    return 0


def schedule(
    workers: list[tuple[Any, str]],
    trials: list[dict[str, Any]],
    on_row: Callable[[dict[str, Any]], None],
    should_stop: Callable[[], bool] = lambda: False,
    respawn: Callable[[str], Any] | None = None,
    facts: dict[str, dict[str, Any]] | None = None,
) -> Report:
    """Run every trial on the workers; ``on_row`` gets each row as soon as it is ready.

    ``respawn(name)`` starts a fresh actor in place of a dead or killed worker; without it such a
    worker is gone for the rest of the run. ``should_stop()`` true: no new trial starts.
    """
    s = _Scheduler(trials, on_row, respawn, facts or {})
    try:
        for actor, name in workers:
            s.probe(Slot(actor, name, node=s.facts.get(name, {}).get("node_id")))
        s.loop(should_stop)
    finally:
        s.kill_all()
    return Report(lost_workers=dict(s.lost), requeued=list(s.requeued))


class _Scheduler:
    def __init__(self, trials: list[dict[str, Any]], on_row: Callable[[dict[str, Any]], None],
                 respawn: Callable[[str], Any] | None, facts: dict[str, dict[str, Any]]) -> None:
        self.pending = list(trials)
        self.emit = on_row
        self.rows: list[dict[str, Any]] = []  # finished rows, written after the next dispatch
        self.facts = facts
        self.respawn = respawn
        self.idle: list[Slot] = []
        self.in_flight: dict[Any, Flight] = {}
        self.errors: dict[str, list[str]] = {}  # trial id -> errors of its earlier attempts
        self.start_failures: dict[str, int] = {}
        self.lost: dict[str, str] = {}  # worker name -> why it was given up
        self.requeued: list[str] = []
        # Workers Ray calls unavailable, until it decides whether their node died: (flight, cause, since).
        self.doubtful: list[tuple[Flight, str, float]] = []

    def on_row(self, row: dict[str, Any]) -> None:
        self.rows.append(row)

    def flush(self) -> None:
        rows, self.rows = self.rows, []
        for row in rows:
            self.emit(row)

    def probe(self, slot: Slot) -> None:
        """Wait for a (fresh) worker to answer before giving it a trial: its start-up is not
        counted against a trial's timeout."""
        self.in_flight[slot.actor.info.remote()] = Flight(slot, None, time.monotonic() + START_TIMEOUT_S)

    def loop(self, should_stop: Callable[[], bool]) -> None:
        import ray

        busy = lambda: any(f.trial for f in self.in_flight.values()) or self.doubtful  # noqa: E731
        while (self.pending and not should_stop()) or busy():
            self.dispatch_all(should_stop)
            self.flush()
            if not self.in_flight and not self.doubtful:
                break
            if self.in_flight:
                now = time.monotonic()
                wait = min(min(f.deadline for f in self.in_flight.values()) - now, POLL_S)
                done, _ = ray.wait(list(self.in_flight), num_returns=1, timeout=max(wait, 0))
            else:
                done = []
                time.sleep(0.5)
            for ref in done:
                self.collect(ref, self.in_flight.pop(ref))
            now = time.monotonic()
            for ref, f in list(self.in_flight.items()):
                if f.deadline <= now:
                    del self.in_flight[ref]
                    self.expire(f)
            self.settle()
            self.dispatch_all(should_stop)  # free workers first, then the disk
            self.flush()
        self.flush()
        if self.pending and not should_stop():
            why = "; ".join(f"{n}: {e}" for n, e in self.lost.items()) or "every worker was lost"
            for t in self.pending:
                self.record(t, Status.FAILED, f"no worker left to run this trial ({why})", None, replaced=False)
            self.pending.clear()

    def dispatch_all(self, should_stop: Callable[[], bool]) -> None:
        while self.idle and self.pending and not should_stop():
            self.dispatch(self.idle.pop(0))

    def dispatch(self, slot: Slot) -> None:
        busy = {f.slot.model for f in self.in_flight.values() if f.trial and f.slot.model}
        trial = self.pending.pop(pick(self.pending, slot, busy))
        slot.model = trial.model.key
        slot.concurrent = sum(1 for f in self.in_flight.values() if f.trial and f.slot.node == slot.node)
        limit = trial.timeout_s
        deadline = time.monotonic() + limit if limit else float("inf")
        self.in_flight[slot.actor.run.remote(trial)] = Flight(slot, trial, deadline)

    def collect(self, ref: Any, f: Flight) -> None:
        import ray
        from ray.exceptions import ActorUnavailableError, GetTimeoutError, RayActorError

        try:
            result = ray.get(ref, timeout=30)
        except (RayActorError, GetTimeoutError) as exc:
            cause = _death_cause(exc)
            if self.node_dead(f.slot):
                self.lose_with_node(f)
            elif f.trial is None:
                self.start_failed(f.slot, cause)
            elif isinstance(exc, ActorUnavailableError):  # Ray hasn't decided why yet: maybe its node
                self.doubtful.append((f, cause, time.monotonic()))
            else:
                self.crashed(f, cause)
            return
        except Exception as exc:  # the call itself failed (e.g. a trial that can't be serialised)
            if f.trial is None:
                self.start_failed(f.slot, _first_line(exc))
                return
            self.idle.append(f.slot)
            self.record(f.trial, Status.FAILED, f"{type(exc).__name__}: {_first_line(exc)}", f.slot, replaced=False)
            return
        if f.trial is None:  # a fresh worker answered
            self.start_failures.pop(f.slot.name, None)
            self.idle.append(f.slot)
            return
        row = result
        replace = row["status"] == Status.OOM or _poisons_context(row)
        if replace:
            self.replace(f.slot)
        else:
            self.idle.append(f.slot)
        self.on_row(self.annotate(row, f.trial, replaced=replace, slot=f.slot))

    def crashed(self, f: Flight, cause: str) -> None:
        """The worker died on a live node (the trial may have killed it): replace it; fail or retry."""
        assert f.trial is not None
        self.replace(f.slot)
        self.retry_or_record(f.trial, Status.FAILED, f"worker {f.slot.name} died while running this trial: {cause}",
                             f.slot)

    def node_dead(self, slot: Slot) -> bool:
        return slot.node is not None and slot.node not in _alive_nodes()

    def lose_with_node(self, f: Flight) -> None:
        """The worker died with its node: no replacement there; its trial goes back in the queue, once."""
        _kill(f.slot.actor)
        self.lost[f.slot.name] = f"its node {(f.slot.node or '?')[:8]} died"
        if f.trial is None:
            return
        if f.trial.trial_id in self.requeued:
            self.record(f.trial, Status.FAILED, f"worker {f.slot.name} died with its node while running this trial "
                        "(the second node lost under this trial)", f.slot, replaced=False)
            return
        self.requeued.append(f.trial.trial_id)
        self.pending.insert(0, f.trial)

    def settle(self) -> None:
        """Decide the doubtful workers: their node died, or the grace period is over (a crash)."""
        if not self.doubtful:
            return
        alive = _alive_nodes()
        now = time.monotonic()
        for entry in list(self.doubtful):
            f, cause, since = entry
            if f.slot.node is not None and f.slot.node not in alive:
                self.doubtful.remove(entry)
                self.lose_with_node(f)
            elif now - since >= NODE_DEATH_GRACE_S:
                self.doubtful.remove(entry)
                self.crashed(f, cause)

    def expire(self, f: Flight) -> None:
        if f.trial is None:
            self.start_failed(f.slot, f"did not start within {START_TIMEOUT_S:g} s")
            return
        self.replace(f.slot)
        limit = f.trial.timeout_s
        self.retry_or_record(f.trial, Status.TIMEOUT, f"ran past its timeout_s ({limit:g} s) on worker {f.slot.name}; "
                             "the worker was killed and replaced", f.slot)

    def retry_or_record(self, trial: dict[str, Any], status: Status, error: str, slot: Slot) -> None:
        earlier = self.errors.setdefault(trial.trial_id, [])
        if len(earlier) < trial.retries:
            earlier.append(error)
            self.pending.insert(0, trial)  # next free worker takes it
            return
        self.record(trial, status, error, slot, replaced=True)

    def record(self, trial: dict[str, Any], status: Status, error: str, slot: Slot | None, replaced: bool) -> None:
        row = failure_row(trial, status, error)
        if slot is not None:
            row["worker"] = slot.name
        self.on_row(self.annotate(row, trial, replaced, slot))

    def annotate(self, row: dict[str, Any], trial: dict[str, Any], replaced: bool,
                 slot: Slot | None = None) -> dict[str, Any]:
        earlier = self.errors.get(trial.trial_id, [])
        row.update(attempt=len(earlier) + 1, earlier_errors=list(earlier), timeout_s=trial.timeout_s,
                   worker_replaced=replaced)
        if slot is not None:
            row.update(self.facts.get(slot.name, {}), concurrent_trials=slot.concurrent)
        return row

    def replace(self, slot: Slot) -> None:
        """Kill ``slot``'s actor (it may be hung, or poisoned) and start a fresh one in its place."""
        _kill(slot.actor)
        if self.respawn is None:
            self.lost[slot.name] = "died, and no way to start it again"
            return
        if self.node_dead(slot):  # a fresh actor could never be placed there
            self.lost[slot.name] = f"its node {(slot.node or '?')[:8]} died"
            return
        self.probe(Slot(self.respawn(slot.name), slot.name, node=slot.node))

    def start_failed(self, slot: Slot, cause: str) -> None:
        _kill(slot.actor)
        n = self.start_failures[slot.name] = self.start_failures.get(slot.name, 0) + 1
        if self.respawn is None or n >= MAX_START_FAILURES:
            self.lost[slot.name] = f"failed to start {n} time(s): {cause}"
            return
        self.probe(Slot(self.respawn(slot.name), slot.name, node=slot.node))

    def kill_all(self) -> None:
        for slot in self.idle + [f.slot for f in self.in_flight.values()]:
            _kill(slot.actor)
        self.idle.clear()
        self.in_flight.clear()


def _kill(actor: Any) -> None:
    import ray

    try:
        ray.kill(actor, no_restart=True)
    except Exception:  # already gone
        pass


def _alive_nodes() -> set[str]:
    import ray

    return {n["NodeID"] for n in ray.nodes() if n.get("Alive")}


def _poisons_context(row: dict[str, Any]) -> bool:
    """A CUDA error (illegal address, launch failure) leaves the process's context unusable."""
    text = row.get("error") or ""
    return row["status"] == Status.FAILED and ("CUDA error" in text or "cudaError" in text)


def _death_cause(exc: BaseException) -> str:
    """Ray's long story of an actor's death, cut to what a row needs: pid, exit type, the first detail."""
    text = str(exc)
    pid = re.search(r"\bpid: (\d+)", text)
    kind = re.search(r"Worker exit type: (\w+)", text)
    detail = re.search(r"Worker exit detail: (.+?\.)(?:\s|$)", text)
    if not (pid or kind or detail):
        return _first_line(exc)
    parts = [f"its process (pid {pid.group(1) if pid else '?'}) exited"]
    if kind:
        parts.append(f"({kind.group(1)}{': ' + detail.group(1) if detail else ''})")
    return " ".join(parts) + "; a crash (segfault, abort), the OOM killer, or a kill"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
