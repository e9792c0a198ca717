"""The Ray side of scheduling: actors, futures and node liveness, fed to :class:`dispatch.Dispatcher`.

Which trial goes to which worker, and what a death, a timeout, an OOM or a lost node means for the
worker and the trial, is decided in ``orchestrator/run/dispatch.py`` (its docstring has the fault table).
This loop waits on the in-flight calls with ``ray.wait`` (bounded by the nearest deadline, so it never
waits on a dead or hung actor), tells the dispatcher how each ended, and carries out what it asks:
``actor.run.remote(trial)``, ``ray.kill``, and ``respawn(name)`` (a fresh actor in the old one's place,
same node, the GPU the old one freed; it takes trials once it answers). Node liveness comes from
``ray.nodes()``, asked only when a worker dies or stops answering. With build-ahead
(``orchestrator/run/ahead.py``), the same wait also collects the build tasks, and after each
dispatch the builders are fed the trials in the order the workers will take them.

Ray's errors, mapped: ``ActorUnavailableError`` (the connection broke) -> ``unavailable`` (the
dispatcher waits up to ``NODE_DEATH_GRACE_S`` for Ray to say whether the node died); any other
``RayActorError``, or no answer to ``ray.get`` -> ``died``; any other exception of the call -> ``raised``.

Each :class:`dispatch.Outcome` becomes a row here: the worker's own, or one built from the trial for
a trial that ended without one; ``facts`` (worker name -> columns, from ``placement.Seat.columns``)
are added, with ``concurrent_trials``: how many other trials were running on the same node when this
one was dispatched, and ``node_trials_busy_max``: the most running there at once while it ran. Free
workers get their next trial before the finished rows are written, so no GPU waits on the driver's
disk. The workers belong to the scheduler once given: it kills every one it still holds when it returns.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from orchestrator.run.ahead import RayAhead, Stats
from orchestrator.run.dispatch import Dispatcher, Outcome
from workers.contract import ARMS_KEY, Status, Trial
from workers.row import Row
from workers.rows import failure_row

#: The longest single wait, so that ``should_stop`` is polled.
POLL_S = 1.0


@dataclass
class Report:
    """What happened to the workers: filled in by :func:`schedule`, empty when all went well."""

    lost_workers: dict[str, str] = field(default_factory=dict)  # worker name -> why it was given up
    requeued: list[str] = field(default_factory=list)  # trial ids put back after their node died
    ahead: Stats | None = None  # what the build-ahead tasks did (None: none ran)


def schedule(
    workers: list[tuple[Any, str]],
    trials: list[Trial],
    on_row: Callable[[Row], None],
    should_stop: Callable[[], bool] = lambda: False,
    respawn: Callable[[str], Any] | None = None,
    facts: dict[str, Row] | None = None,
    run: Row | None = None,
    ahead: RayAhead | None = None,
) -> Report:
    """Run every trial on the workers; ``on_row`` gets each row as soon as it is ready.

    ``facts``: each worker's own columns (by worker name); ``run``: the run's columns, for rows that
    lack them (the device of a trial whose worker never reported).

    ``respawn(name)`` starts a fresh actor in place of a dead or killed worker; without it such a
    worker is gone for the rest of the run. ``should_stop()`` true: no new trial starts.
    ``ahead``: build-ahead tasks fed from the dispatcher's order (``orchestrator/run/ahead.py``).
    """
    import ray

    facts = facts or {}
    pool = _RayPool({name: actor for actor, name in workers}, respawn)
    core = Dispatcher(pool, trials, {name: facts.get(name, {}).get("node_id") for _, name in workers},
                      can_respawn=respawn is not None, alive_nodes=_alive_nodes)

    def flush() -> None:
        for outcome in core.take_outcomes():
            for row in _rows(outcome, facts, run or {}):
                on_row(row)

    try:
        for name in pool.actors:
            pool.probe(name)
        while True:
            stop = should_stop()
            core.dispatch(stop)
            if ahead is not None and not stop:
                ahead.feed(core.upcoming, core.running())  # past what was just dispatched
            flush()
            if not core.active(stop):
                break
            wait = max(min(core.next_deadline() - time.monotonic(), POLL_S), 0)
            if pool.calls:
                builds = ahead.refs if ahead is not None else []
                done, _ = ray.wait(list(pool.calls.values()) + builds, num_returns=1, timeout=wait)
                for ref in done:
                    if ahead is not None and ahead.owns(ref):
                        ahead.collect(ref)
                    else:
                        pool.collect(ref, core)
            else:  # only doubtful workers: nothing to wait on but time
                time.sleep(wait)
            core.tick()
            core.dispatch(should_stop())  # free workers first, then the disk
            flush()
        core.close(should_stop())
        flush()
    finally:
        pool.kill_all()
        if ahead is not None:
            ahead.cancel()
    return Report(lost_workers=dict(core.lost), requeued=list(core.requeued),
                  ahead=ahead.core.stats if ahead is not None else None)


class _RayPool:
    """The actors by worker name, and the one call each may have in flight (a readiness probe or a trial)."""

    def __init__(self, actors: dict[str, Any], respawn: Callable[[str], Any] | None) -> None:
        self.actors = actors
        self._respawn = respawn
        self.calls: dict[str, Any] = {}  # worker name -> its call in flight
        self._owner: dict[Any, tuple[str, bool]] = {}  # call -> (worker name, is a probe)

    def probe(self, name: str) -> None:
        """Ask a (fresh) worker to answer before it gets a trial: its start-up doesn't count against one."""
        self._submit(name, self.actors[name].info.remote(), probe=True)

    def run(self, name: str, trial: Any) -> None:
        self._submit(name, self.actors[name].run.remote(trial), probe=False)

    def kill(self, name: str) -> None:
        self._owner.pop(self.calls.pop(name, None), None)
        _kill(self.actors[name])

    def respawn(self, name: str) -> None:
        if self._respawn is None:
            raise RuntimeError(f"asked to respawn {name} without a way to (can_respawn was False)")
        self.actors[name] = self._respawn(name)
        self.probe(name)

    def _submit(self, name: str, ref: Any, probe: bool) -> None:
        self.calls[name] = ref
        self._owner[ref] = (name, probe)

    def collect(self, ref: Any, core: Dispatcher) -> None:
        """Tell the dispatcher how the call ``ref`` ended."""
        import ray
        from ray.exceptions import ActorUnavailableError, GetTimeoutError, RayActorError

        if ref not in self._owner:  # its worker was killed meanwhile
            return
        name, probe = self._owner.pop(ref)
        del self.calls[name]
        try:
            result = ray.get(ref, timeout=30)
        except ActorUnavailableError as exc:  # Ray hasn't decided why yet: maybe its node
            core.unavailable(name, _death_cause(exc))
        except (RayActorError, GetTimeoutError) as exc:
            core.died(name, _death_cause(exc))
        except Exception as exc:  # the call itself failed (e.g. a trial that can't be serialised)
            core.raised(name, f"{type(exc).__name__}: {_first_line(exc)}")
        else:
            if probe:
                core.started(name)
            else:
                core.finished(name, result)

    def kill_all(self) -> None:
        for actor in self.actors.values():
            _kill(actor)
        self.calls.clear()
        self._owner.clear()


def _rows(outcome: Outcome, facts: dict[str, Row], run: Row) -> list[Row]:
    """The rows of a trial that ended: its own (``_row``), and for an interleaved unit each of its arms'
    (``Trial.arms``: the worker's rows under ``ARMS_KEY``, or failure rows like the unit's own)."""
    unit = outcome.job.trial
    if not unit.arms:
        return [_row(outcome, facts, run)]
    arms = outcome.row.pop(ARMS_KEY, None) if outcome.row is not None else None
    first = _row(outcome, facts, run)
    if arms is None:  # the unit ended without measuring: each arm as the unit ended
        arms = [failure_row(a, Status(first["status"]), first.get("error") or "") for a in unit.arms]
    return [first, *(_row(replace(outcome, row=r), facts, run) for r in arms)]


def _row(outcome: Outcome, facts: dict[str, Row], run: Row) -> Row:
    """The row of a trial that ended: the worker's own, or one from the trial (the one place failure
    rows are built), with what only the driver knows."""
    row = outcome.row
    if row is None:
        row = failure_row(outcome.job.trial, Status(outcome.status), outcome.error or "")
        if outcome.worker is not None:
            row["worker"] = outcome.worker
    row.update(attempt=outcome.attempt, earlier_errors=list(outcome.earlier_errors),
               timeout_s=outcome.job.timeout_s, worker_replaced=outcome.replaced)
    if outcome.worker is not None:
        row.update(facts.get(outcome.worker, {}), concurrent_trials=outcome.concurrent,
                   node_trials_busy_max=outcome.busy_max or None)
    for key, value in run.items():
        row.setdefault(key, value)  # type: ignore[misc]
    return row


def _kill(actor: Any) -> None:
    import ray

    try:
        ray.kill(actor, no_restart=True)
    except Exception:  # already gone
        pass


def _alive_nodes() -> set[str]:
    import ray

    from orchestrator.run.headwatch import before_asking_the_head

    before_asking_the_head()  # a dead head: one clear line, not Ray's abort inside ray.nodes()
    return {n["NodeID"] for n in ray.nodes() if n.get("Alive")}


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
