"""The scheduler's decisions, without Ray: which trial a worker runs next, and what a fault means.

:class:`Dispatcher` holds the pending trials and a state per worker; the Ray loop in
``orchestrator/run/scheduler.py`` tells it what happened (a worker answered, returned a row, died,
became unreachable; time passed) and it answers through a :class:`Pool` (run this trial on that
worker, kill it, start a fresh one in its place) and with :class:`Outcome`\\ s, one per trial that
ended. Time comes from ``clock`` and node liveness from ``alive_nodes``, so tests drive it with
plain objects and a fake clock.

A worker's life::

    starting --answers--> idle --takes a trial--> busy --returns a row--> idle
    starting --fails or times out--> starting (a fresh actor) ... MAX_START_FAILURES in a row -> lost
    busy --dies, times out, OOM, CUDA error--> starting (a fresh actor in its place: "replaced")
    busy --Ray says only "unavailable"--> doubtful --its node died--> lost
                                                    --NODE_DEATH_GRACE_S passed--> a crash (as above)
    starting, busy --dies, and its node is gone--> lost (no fresh actor there; its trial requeued)

A worker takes, in this order of preference, a pending trial of the model it last ran (no rebuild,
a warm export cache), a trial of a model no other worker is busy with, or the first pending one:
a GPU never idles while trials remain. A model's trials are queued grouped by shape (batch size,
dtype, axes; the plan's order otherwise), so a worker's consecutive trials share its built model
and parity references; every trial still gets a runner of its own. :meth:`Dispatcher.upcoming`
says in which order a node's workers will take the pending trials: what build-ahead tasks
(``orchestrator/run/ahead.py``) build for.

Faults, and what becomes of the worker and the trial::

    the worker process dies (segfault, abort, OOM killer)  -> replaced; trial failed, or retried
    the trial runs past its timeout_s                       -> killed, replaced; trial timeout, or retried
    the trial runs out of device memory                     -> replaced (a clean GPU); trial oom
    a CUDA error (may poison the process's context)          -> replaced; trial failed
    the trial raises                                        -> worker kept; trial failed
    the worker's node dies                                  -> lost; trial requeued once, then failed

``retries`` (per trial) requeues a trial whose worker died or timed out; its outcome then says which
``attempt`` it is and the ``earlier_errors``. A trial whose node died goes back to the head of the
queue for the surviving workers once (it did not kill the worker; this is not an attempt); the
second time it fails. Without ``can_respawn``, or on a dead node, a worker that would be replaced
is lost instead. When no worker is left, the trials still pending end ``failed`` with the reasons
the workers were lost.

The dispatcher never builds rows: an :class:`Outcome` carries the worker's own row, or the status
and error of a trial that has none; the caller turns it into a row.
"""

from __future__ import annotations

import enum
import heapq
import itertools
import os
import time
from collections import Counter, deque
from collections.abc import Callable, Hashable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

from workers.contract import Status, Trial

INF = float("inf")

#: How long a fresh worker may take to start (import torch, reach its GPU) before it counts as failed.
START_TIMEOUT_S = 300.0
#: A worker that fails to start this many times in a row is given up.
MAX_START_FAILURES = 3
def node_death_grace_s(env: dict[str, str] | None = None) -> float:
    """How long a worker that stopped answering may wait for Ray to say whether its node died before
    it is treated as a crash: the time Ray's health checks take to declare a frozen node dead (a
    check every ``period``, each failing after ``timeout``, ``failure_threshold`` failures in a row:
    with Ray's defaults 5 x (3 s + 10 s) = 65 s; a killed raylet is noticed sooner, ~15 s), plus
    15 s. The settings are read from the driver's ``RAY_health_check_*`` variables, the ones a
    cluster is started with, and Ray's defaults where unset (docs/cluster.md)."""
    env = os.environ if env is None else env
    try:
        period = float(env.get("RAY_health_check_period_ms", 3000)) / 1000
        timeout = float(env.get("RAY_health_check_timeout_ms", 10000)) / 1000
        failures = int(env.get("RAY_health_check_failure_threshold", 5))
    except ValueError:
        period, timeout, failures = 3.0, 10.0, 5
    return failures * (period + timeout) + 15.0


#: The grace of this driver (see :func:`node_death_grace_s`): a frozen node's worker is not taken
#: for a crash (a failed trial, a fresh actor on the frozen node) before Ray can tell.
NODE_DEATH_GRACE_S = node_death_grace_s()


@dataclass(frozen=True, slots=True)
class Job:
    """What the dispatcher reads of a trial; the trial itself travels untouched."""

    trial: Trial
    trial_id: str
    model: Hashable  # trials of one model share a worker's built model and export cache
    timeout_s: float | None
    retries: int
    shape: Hashable = None  # trials of one model and shape share its parity reference


def job_of(trial: Trial) -> Job:
    """The one place that reads a trial (a ``workers.contract.Trial``)."""
    shape = (trial.batch_size, trial.dtype, tuple(sorted(trial.axes.items())))
    timeout_s = trial.timeout_s and trial.timeout_s * trial.measure.process_repeats  # each process its own
    return Job(trial, trial.trial_id, trial.model.key, timeout_s, trial.retries, shape)


def grouped(jobs: list[Job]) -> list[Job]:
    """``jobs`` with each model's trials of one shape together, where that shape first came; each model's
    trials keep the places the plan gave that model's trials (only a model's own trials trade places)."""
    first: dict[tuple[Hashable, Hashable], int] = {}
    places: dict[Hashable, list[int]] = {}
    for n, job in enumerate(jobs):
        first.setdefault((job.model, job.shape), n)
        places.setdefault(job.model, []).append(n)
    out: list[Job] = list(jobs)
    for model, where in places.items():
        mine = sorted((jobs[n] for n in where), key=lambda job: first[(model, job.shape)])
        for n, job in zip(where, mine, strict=True):
            out[n] = job
    return out


class State(enum.Enum):
    STARTING = "starting"  # a fresh actor; no trial until it answers
    IDLE = "idle"
    BUSY = "busy"
    DOUBTFUL = "doubtful"  # Ray can't reach it; waiting to hear whether its node died
    LOST = "lost"  # given up for the rest of the run


@dataclass(eq=False, slots=True)
class Worker:
    name: str
    node: str | None  # node id: node loss, and concurrent trials on a node
    state: State = State.STARTING
    model: Hashable | None = None  # model of the trial it ran last
    job: Job | None = None  # while busy or doubtful
    deadline: float = INF  # starting: to answer; busy: timeout_s; doubtful: end of the grace
    concurrent: int = 0  # other trials busy on its node when its trial was dispatched
    busy_max: int = 0  # the most trials busy on its node at once while its trial ran (itself included)
    start_failures: int = 0  # in a row
    cause: str = ""  # while doubtful: Ray's account


@dataclass(frozen=True, slots=True)
class Outcome:
    """A trial that ended: with the worker's own ``row``, or with ``status`` and ``error`` (row None)."""

    job: Job  # its trial: ``job.trial``
    status: str  # a Status value
    error: str | None
    row: dict[str, Any] | None
    worker: str | None  # None: no worker ran it (none was left)
    replaced: bool  # its worker was killed and replaced (or lost) because of this trial
    attempt: int
    earlier_errors: tuple[str, ...]
    concurrent: int  # other trials running on the worker's node when it was dispatched
    busy_max: int = 0  # the most trials running on its node at once while it ran, itself included


class Pool(Protocol):
    """The workers, as the dispatcher drives them; answers come back as its events."""

    def run(self, name: str, trial: Trial) -> None: ...  # -> finished / raised / died / unavailable

    def kill(self, name: str) -> None: ...  # drop whatever it was doing; no event follows

    def respawn(self, name: str) -> None: ...  # a fresh actor in its place -> started, or a failed start


class Dispatcher:
    """Pending trials and worker states; see the module docstring for the rules.

    ``workers`` (name -> node id) have each been asked to answer: they start ``starting``. Events:
    :meth:`started`, :meth:`finished`, :meth:`raised`, :meth:`died`, :meth:`unavailable`,
    :meth:`tick` (deadlines and doubtful workers); :meth:`dispatch` gives idle workers trials;
    :meth:`take_outcomes` hands over the trials that ended since it was last called.
    ``alive_nodes()``: the ids of the nodes alive now, asked only when a worker dies, is to be
    replaced, or is doubtful (None: every node lives).

    A trial costs O(log W) for W workers (O(M) for M models when a worker changes model): workers
    are kept by state, busy ones counted by node and model, deadlines in a heap.
    """

    def __init__(self, pool: Pool, trials: Iterable[Trial], workers: dict[str, str | None], *,
                 can_respawn: bool = True, clock: Callable[[], float] = time.monotonic,
                 alive_nodes: Callable[[], set[str]] | None = None) -> None:
        self.pool = pool
        self.can_respawn = can_respawn
        self.clock = clock
        self.alive_nodes = alive_nodes
        self.lost: dict[str, str] = {}  # worker name -> why it was given up
        self.requeued: dict[str, None] = {}  # trial ids put back after their node died, in order
        # pending jobs by model, each a deque of (order, job) in queue order; requeued ones get lower orders
        self._pending: dict[Hashable, deque[tuple[int, Job]]] = {}
        self._first = 0
        self._errors: dict[str, list[str]] = {}  # trial id -> errors of its earlier attempts
        self._outcomes: list[Outcome] = []
        for order, job in enumerate(grouped([job_of(trial) for trial in trials])):
            self._pending.setdefault(job.model, deque()).append((order, job))
        self.workers = {name: Worker(name, node) for name, node in workers.items()}
        self._on_node: dict[str | None, list[Worker]] = {}
        for w in self.workers.values():
            self._on_node.setdefault(w.node, []).append(w)
        self._by_state: dict[State, dict[str, Worker]] = {s: {} for s in State}  # idle: in the order they freed
        self._busy_nodes: Counter[str | None] = Counter()
        self._busy_models: Counter[Hashable] = Counter()
        self._deadlines: list[tuple[float, str]] = []  # heap; an entry is stale unless it is its worker's deadline
        start = clock() + START_TIMEOUT_S
        for w in self.workers.values():
            self._move(w, State.STARTING, start)

    # --- what the caller asks ------------------------------------------------------------------------

    @property
    def pending(self) -> int:
        return sum(len(q) for q in self._pending.values())

    def active(self, stop: bool) -> bool:
        """Whether to keep waiting: a trial is running or undecided, or one is pending and a worker
        that could take it is still starting."""
        by = self._by_state
        if by[State.BUSY] or by[State.DOUBTFUL]:
            return True
        return bool(self._pending) and not stop and bool(by[State.STARTING] or by[State.IDLE])

    def next_deadline(self) -> float:
        """The nearest time :meth:`tick` has something to decide (inf: none)."""
        heap = self._deadlines
        while heap and self.workers[heap[0][1]].deadline != heap[0][0]:
            heapq.heappop(heap)
        return heap[0][0] if heap else INF

    def upcoming(self, node: str | None) -> Iterator[tuple[Job, bool]]:
        """The pending trials in the order the workers of ``node`` would take them, each with whether
        it is of a model one of them holds: first those (the models' queues in turn, one trial of each,
        as its workers take them), then the other models' trials in queue order. Lazy: read what you need."""
        held = dict.fromkeys(w.model for w in self._on_node.get(node, ())
                             if w.state is not State.LOST and w.model in self._pending)
        for entries in itertools.zip_longest(*(self._pending[m] for m in held)):
            yield from ((entry[1], True) for entry in entries if entry is not None)
        rest = sorted((q for m, q in self._pending.items() if m not in held), key=lambda q: q[0][0])
        for queue in rest:
            yield from ((job, False) for _, job in queue)

    def running(self) -> Iterator[tuple[str | None, Job]]:
        """(node, trial) of every trial a worker is running now."""
        for w in self._by_state[State.BUSY].values():
            if w.job is not None:
                yield w.node, w.job

    def take_outcomes(self) -> list[Outcome]:
        out, self._outcomes = self._outcomes, []
        return out

    def dispatch(self, stop: bool = False) -> None:
        """Give every idle worker a trial, unless ``stop``."""
        idle = self._by_state[State.IDLE]
        while idle and self._pending and not stop:
            w = next(iter(idle.values()))
            self._run(w, self._pick(w))

    def close(self, stop: bool) -> None:
        """The run is over: unless stopped, the trials still pending end failed (no worker left)."""
        if stop or not self._pending:
            return
        why = "; ".join(f"{n}: {e}" for n, e in self.lost.items()) or "every worker was lost"
        for _, job in sorted((entry for queue in self._pending.values() for entry in queue), key=lambda e: e[0]):
            self._end(job, Status.FAILED, f"no worker left to run this trial ({why})", None, replaced=False)
        self._pending.clear()

    # --- events --------------------------------------------------------------------------------------

    def started(self, name: str) -> None:
        """A (fresh) worker answered: it takes trials from now on."""
        w = self.workers[name]
        w.start_failures = 0
        self._move(w, State.IDLE)

    def finished(self, name: str, row: dict[str, Any]) -> None:
        """A trial returned its row. OOM and CUDA errors replace the worker (a clean GPU, a sane context)."""
        w = self.workers[name]
        job = self._release(w)
        replace = row["status"] == Status.OOM or poisons_context(row)
        if replace:
            self._replace(w)
        self._outcomes.append(self._outcome(job, row["status"], row.get("error"), row, w, replace))

    def raised(self, name: str, error: str) -> None:
        """The call failed on its way (e.g. a trial that can't be serialised); the worker is fine."""
        w = self.workers[name]
        if w.state is State.STARTING:
            self._start_failed(w, error)
            return
        job = self._release(w)
        self._end(job, Status.FAILED, error, w, replaced=False)

    def died(self, name: str, cause: str) -> None:
        """Ray says the worker's process is gone."""
        w = self.workers[name]
        if self._node_dead(w):
            self._lose_with_node(w)
        elif w.state is State.STARTING:
            self._start_failed(w, cause)
        else:
            self._crashed(w, cause)

    def unavailable(self, name: str, cause: str) -> None:
        """Ray can't reach the worker and hasn't decided why: maybe its node; decided in :meth:`tick`."""
        w = self.workers[name]
        if self._node_dead(w) or w.state is State.STARTING:
            self.died(name, cause)  # nothing to wait for: decided as a death is
            return
        w.cause = cause
        self._move(w, State.DOUBTFUL, self.clock() + NODE_DEATH_GRACE_S)

    def tick(self) -> None:
        """Past deadlines: a worker that didn't start, a trial past its timeout_s, a doubtful worker
        whose grace is over; and a doubtful worker whose node died meanwhile."""
        doubtful = list(self._by_state[State.DOUBTFUL].values())
        if doubtful and self.alive_nodes is not None:
            alive = self.alive_nodes()
            for w in doubtful:
                if w.node is not None and w.node not in alive:
                    self._lose_with_node(w)
        now = self.clock()
        while self.next_deadline() <= now:
            w = self.workers[heapq.heappop(self._deadlines)[1]]
            if w.state is State.STARTING:
                self._start_failed(w, f"did not start within {START_TIMEOUT_S:g} s")
            elif w.state is State.DOUBTFUL:
                self._crashed(w, w.cause)
            else:
                job = self._release(w)
                self._replace(w)
                self._retry_or_end(job, Status.TIMEOUT, f"ran past its timeout_s ({job.timeout_s:g} s) on worker "
                                   f"{w.name}; the worker was killed and replaced", w)

    # --- rules ---------------------------------------------------------------------------------------

    def _move(self, w: Worker, state: State, deadline: float = INF) -> None:
        """The one place a worker changes state (and the counts by state, node and model follow)."""
        if w.state is State.BUSY:
            self._busy_nodes[w.node] -= 1
            self._busy_models[w.model] -= 1
            if not self._busy_models[w.model]:
                del self._busy_models[w.model]
        if state is State.BUSY:
            self._busy_nodes[w.node] += 1
            self._busy_models[w.model] += 1
            busy = self._busy_nodes[w.node]
            w.busy_max = busy
            for other in self._by_state[State.BUSY].values():  # its neighbours now run beside one more
                if other.node == w.node and other.busy_max < busy:
                    other.busy_max = busy
        self._by_state[w.state].pop(w.name, None)
        self._by_state[state][w.name] = w
        w.state, w.deadline = state, deadline
        if deadline != INF:
            heapq.heappush(self._deadlines, (deadline, w.name))

    def _pick(self, w: Worker) -> Job:
        """The next trial for ``w``: its own model's, else one of a model nobody is busy with, else the first."""
        queue = self._pending.get(w.model) if w.model is not None else None
        if queue is None:
            free = [q for m, q in self._pending.items() if m not in self._busy_models]
            queue = min(free or self._pending.values(), key=lambda q: q[0][0])
        _, job = queue.popleft()
        if not queue:
            del self._pending[job.model]
        return job

    def _run(self, w: Worker, job: Job) -> None:
        w.concurrent = self._busy_nodes[w.node]
        w.job, w.model = job, job.model
        self._move(w, State.BUSY, self.clock() + job.timeout_s if job.timeout_s else INF)
        self.pool.run(w.name, job.trial)

    def _release(self, w: Worker) -> Job:
        """The worker's trial is over; the worker is idle until told otherwise."""
        job, w.job = w.job, None
        if job is None:
            raise RuntimeError(f"worker {w.name} ({w.state.value}) reported a trial it wasn't running")
        self._move(w, State.IDLE)
        return job

    def _requeue(self, job: Job) -> None:
        """Back to the head of the queue: the next free worker takes it."""
        self._first -= 1
        self._pending.setdefault(job.model, deque()).appendleft((self._first, job))

    def _crashed(self, w: Worker, cause: str) -> None:
        """The worker died on a live node (the trial may have killed it): replace it; fail or retry."""
        job = self._release(w)
        self._replace(w)
        self._retry_or_end(job, Status.FAILED, f"worker {w.name} died while running this trial: {cause}", w)

    def _retry_or_end(self, job: Job, status: str, error: str, w: Worker) -> None:
        earlier = self._errors.setdefault(job.trial_id, [])
        if len(earlier) < job.retries:
            earlier.append(error)
            self._requeue(job)
            return
        self._end(job, status, error, w, replaced=True)

    def _node_dead(self, w: Worker) -> bool:
        return w.node is not None and self.alive_nodes is not None and w.node not in self.alive_nodes()

    def _lose_with_node(self, w: Worker) -> None:
        """The worker died with its node: no replacement there; its trial goes back in the queue, once."""
        job, w.job = w.job, None
        self.pool.kill(w.name)
        self._lose(w, f"its node {(w.node or '?')[:8]} died")
        if job is None:
            return
        if job.trial_id in self.requeued:
            self._end(job, Status.FAILED, f"worker {w.name} died with its node while running this trial "
                      "(the second node lost under this trial)", w, replaced=False)
            return
        self.requeued[job.trial_id] = None
        self._requeue(job)

    def _replace(self, w: Worker) -> None:
        """Kill the worker (it may be hung, or poisoned) and start a fresh one in its place."""
        self.pool.kill(w.name)
        if not self.can_respawn:
            self._lose(w, "died, and no way to start it again")
        elif self._node_dead(w):  # a fresh actor could never be placed there
            self._lose(w, f"its node {(w.node or '?')[:8]} died")
        else:
            self._respawn(w)

    def _start_failed(self, w: Worker, cause: str) -> None:
        self.pool.kill(w.name)
        w.start_failures += 1
        if not self.can_respawn or w.start_failures >= MAX_START_FAILURES:
            self._lose(w, f"failed to start {w.start_failures} time(s): {cause}")
        else:
            self._respawn(w)

    def _respawn(self, w: Worker) -> None:
        self._move(w, State.STARTING, self.clock() + START_TIMEOUT_S)
        self.pool.respawn(w.name)

    def _lose(self, w: Worker, why: str) -> None:
        self._move(w, State.LOST)
        self.lost[w.name] = why

    def _end(self, job: Job, status: str, error: str, w: Worker | None, replaced: bool) -> None:
        self._outcomes.append(self._outcome(job, status, error, None, w, replaced))

    def _outcome(self, job: Job, status: str, error: str | None, row: dict[str, Any] | None,
                 w: Worker | None, replaced: bool) -> Outcome:
        earlier = tuple(self._errors.get(job.trial_id, ()))
        return Outcome(job, status, error, row, w.name if w else None, replaced, len(earlier) + 1, earlier,
                       w.concurrent if w else 0, w.busy_max if w else 0)


def poisons_context(row: dict[str, Any]) -> bool:
    """A CUDA error (illegal address, launch failure) leaves the process's context unusable."""
    text = row.get("error") or ""
    return row["status"] == Status.FAILED and ("CUDA error" in text or "cudaError" in text)
