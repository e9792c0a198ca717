"""Build ahead: what the next trials need that needs no GPU, built on the nodes' spare CPUs meanwhile.

A trial's artifacts that need no GPU (an ONNX export, ORT GenAI's build of a decoder:
``Runner.ahead`` names them) are built by CPU tasks (``workers/ahead.py``) on the node whose workers
will reach the trial, in the order they will (``Dispatcher.upcoming``), into the node's
content-keyed cache, while the GPUs time other trials.
A worker that reaches a trial whose artifact is being built waits for that build (its row's
``artifact_wait_s``); one whose artifact nobody has started builds it itself, as without builders
(``artifact_build_s``): the lock on each artifact (``workers.models.artifacts``) makes it one
build either way, so building ahead changes when an artifact is built, never what is measured.

Bounds, per node:

    builders   tasks building at once: the plan's ``builders`` or ``--builders N``, else the CPUs
               the workers' timing threads and Ray don't hold: CPUs - workers - 1, at most two per
               worker and one per BUILDER_MEMORY of the node's memory (0 on a 2-CPU machine: no
               building ahead); each task runs torch on one thread (``OMP_NUM_THREADS=1``)
    window     distinct artifacts ahead of the workers, built or building: WINDOW_PER_BUILDER per
               builder (the disk an unused artifact holds); a builder builds nothing on a cache disk
               with less than 2 GiB free (``workers.models.artifacts.MIN_FREE_BYTES``)

The tasks ask Ray for no CPU (the workers hold the node's CPUs in Ray's books; the count above bounds
them) and run with ``CUDA_VISIBLE_DEVICES=""``: Ray no longer hides GPUs from tasks that ask for
none, and a CUDA call in a builder would create a context on a GPU being timed. The exception: a
task with a ``torch-compile`` trial on a GPU (``workers.backends.compile_ahead``) sees one GPU of its
node, the node's GPUs taken in turn (``workers.ahead.BUILD_GPU``): Inductor's CUDA code generation
needs the device's properties and loads its kernels, a CUDA context there, no weights, no kernel
launched. Every task compiles on one thread (``TORCHINDUCTOR_COMPILE_THREADS=1``, ``OMP_NUM_THREADS=1``).

:class:`Ahead` decides without Ray (a ``submit`` function is given), as ``dispatch.Dispatcher``
does; :func:`start` wires it to Ray for ``run_plan``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass, field
from typing import Any

from orchestrator.run.dispatch import Job
from workers.backends import compile_ahead
from workers.contract import Trial

#: Memory one builder may take (a model built in fp32 on the CPU, and its export's graph).
BUILDER_MEMORY = 4 << 30
#: Builders per worker at most, by default: a worker uses one artifact per trial, and an export
#: takes a fraction of a trial's time (11% of an H100 sweep's worker-time with cold caches).
BUILDERS_PER_WORKER = 2
#: Distinct artifacts a node's builders may be ahead of its workers, per builder.
WINDOW_PER_BUILDER = 8
#: Short builds go several to a task, one after the other: as many as last about this long...
TASK_S = 0.5
#: ...and at most this many.
MAX_PER_TASK = 8

Upcoming = Callable[[str | None], Iterable[tuple[Job, bool]]]


def default_builders(cpus: float, workers: int, memory: float | None = None) -> int:
    """Builders for a node of ``cpus`` CPUs (and ``memory`` bytes) running ``workers`` workers: a CPU
    for each worker's timing thread and one for Ray are not spare; at most BUILDERS_PER_WORKER per
    worker (more would only run further ahead of them) and one per BUILDER_MEMORY."""
    spare = min(math.floor(cpus) - workers - 1, BUILDERS_PER_WORKER * workers)
    if memory is not None:
        spare = min(spare, int(memory // BUILDER_MEMORY))
    return max(0, spare)


@dataclass
class Stats:
    """What the builders did (for ``bench/sweep_efficiency.py`` and the tests)."""

    tasks: int = 0  # tasks that ended (each built one artifact or a few)
    build_s: float = 0.0  # their seconds, summed
    errors: list[str] = field(default_factory=list)  # why a build was left to the worker
    most_at_once: int = 0  # the most tasks running at once on one node


class Ahead:
    """Which artifacts each node's builders build next; see the module docstring.

    ``builders``: node id -> builder count; ``submit(node, trials)`` starts a task there that builds
    the artifacts of ``trials`` one after the other and returns a handle; :meth:`finished` is told
    when it ends. ``key(trial)``: its artifact's key (``Runner.ahead``), or None.

    A task builds one artifact, or a few where builds are short: as many as last about
    ``TASK_S`` at the mean build time measured so far (at most ``MAX_PER_TASK``), so that Ray's
    round trip between two tasks (tens of ms on a loaded host) stays a small part of a builder's time.
    Builders freed at once are dealt the next artifacts in turn (the first to one, the second to the
    next...), so the artifact needed first is built first.
    """

    def __init__(self, builders: dict[str | None, int], submit: Callable[[str | None, list[Trial]], Hashable],
                 key: Callable[[Trial], Hashable | None]) -> None:
        self.builders = {node: n for node, n in builders.items() if n > 0}
        self.submit, self.key = submit, key
        self.stats = Stats()
        self.running: dict[Hashable, tuple[str | None, int]] = {}  # handle -> (node, artifacts it builds)
        self._started: set[tuple[str | None, Hashable]] = set()  # (node, artifact key): running or ended
        self._claimed: dict[Hashable, str | None] = {}  # artifact key -> the node that builds it first
        self._keys: dict[str, Hashable | None] = {}  # trial id -> artifact key
        self._exhausted: set[str | None] = set()  # nodes with nothing left to build
        self._built = 0  # artifacts of the tasks that ended

    @property
    def per_task(self) -> int:
        if not self._built or not self.stats.build_s:
            return 1
        return max(1, min(MAX_PER_TASK, round(TASK_S / (self.stats.build_s / self._built))))

    def feed(self, upcoming: Upcoming, running: Iterable[tuple[str | None, Job]] = ()) -> None:
        """Start a task for every free builder: each node's next artifacts within its window.
        ``running``: (node, trial) of the trials the workers run now: their artifacts are theirs."""
        for node, job in running:
            key = self._key_of(job)
            if key is not None and node in self.builders:
                self._started.add((node, key))
        for node, slots in self.builders.items():
            free = slots - sum(1 for n, _ in self.running.values() if n == node)
            if free > 0 and node not in self._exhausted:
                self._feed_node(node, slots, free, upcoming(node))

    def _feed_node(self, node: str | None, slots: int, free: int, upcoming: Iterable[tuple[Job, bool]]) -> None:
        window: set[Hashable] = set()
        todo: list[Trial] = []
        for job, held in upcoming:
            key = self._key_of(job)
            if key is None:
                continue
            window.add(key)
            if len(window) > WINDOW_PER_BUILDER * slots or len(todo) == free * self.per_task:
                break
            # another node's builders took it first: build it here too only where its model is held
            if (node, key) in self._started or (self._claimed.get(key, node) != node and not held):
                continue
            self._started.add((node, key))
            self._claimed.setdefault(key, node)
            todo.append(job.trial)
        else:  # every pending trial's artifact is started: the queue only shrinks from here
            self._exhausted.add(node)
        tasks = [todo[i::free] for i in range(min(free, len(todo)))]
        for trials in tasks:
            self.running[self.submit(node, trials)] = (node, len(trials))
        busy = sum(1 for n, _ in self.running.values() if n == node)
        self.stats.most_at_once = max(self.stats.most_at_once, busy)

    def finished(self, handle: Hashable, seconds: float, error: str | None) -> None:
        """A task ended (``error``: why it left an artifact to the worker)."""
        _, built = self.running.pop(handle, (None, 0))
        self._built += built
        self.stats.tasks += 1
        self.stats.build_s += seconds
        if error:
            self.stats.errors.append(error)

    def _key_of(self, job: Job) -> Hashable | None:
        if job.trial_id not in self._keys:
            self._keys[job.trial_id] = self.key(job.trial)
        return self._keys[job.trial_id]


def artifact_key(trial: Trial) -> Hashable | None:
    """The trial's artifact to build ahead, by its backend (None: none, or an unknown backend)."""
    from workers.backends import registry

    runner = registry().get(trial.backend)
    return runner.ahead(trial) if runner is not None else None


class RayAhead:
    """:class:`Ahead` on Ray: its builds are tasks on their nodes; the scheduler waits on :attr:`refs`."""

    def __init__(self, builders: dict[str | None, int], seed: int, shipped: Any = None,
                 gpus: dict[str | None, int] | None = None, threads: dict[str | None, int] | None = None) -> None:
        self.core = Ahead(builders, self._submit, artifact_key)
        self.seed, self.shipped = seed, shipped
        self.gpus = gpus or {}  # node -> its GPUs: a GPU compile's task takes them in turn
        self.threads = threads or {}  # node -> its workers' torch threads: a CPU compile's code has the count
        self._turn: dict[str | None, int] = {}
        self._task: Any = None
        # Their processes start now, with the workers': a task's first process starts through Ray's
        # runtime-env agent (the empty CUDA_VISIBLE_DEVICES), about a second, more on a loaded host.
        for node, n in self.core.builders.items():
            for _ in range(n):
                self._submit(node, [])

    @property
    def refs(self) -> list[Any]:
        return list(self.core.running)

    def owns(self, ref: Any) -> bool:
        return ref in self.core.running

    def feed(self, upcoming: Upcoming, running: Iterable[tuple[str | None, Job]] = ()) -> None:
        self.core.feed(upcoming, running)

    def collect(self, ref: Any) -> None:
        import ray

        try:
            seconds, error = ray.get(ref, timeout=30)
        except Exception as exc:  # the task's process died: the worker builds it
            seconds, error = 0.0, f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc) else ''}"
        self.core.finished(ref, seconds, error)

    def cancel(self) -> None:
        """The run is over: the builds still running are of no use."""
        import ray

        for ref in self.refs:
            try:
                ray.cancel(ref, force=True)
            except Exception:  # already done
                pass
        self.core.running.clear()

    def _submit(self, node: str | None, trials: list[Trial]) -> Any:
        import ray

        if self._task is None:
            from workers.ahead import build

            self._task = ray.remote(build)
        env = {"CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1", "TORCHINDUCTOR_COMPILE_THREADS": "1"}
        if node in self.threads and any(compile_ahead.key(t) is not None and t.device == "cpu" for t in trials):
            env[compile_ahead.WORKER_THREADS] = str(self.threads[node])  # only there: the env picks the task's process
        if self.gpus.get(node) and any(compile_ahead.needs_gpu(t) for t in trials):
            from workers.ahead import BUILD_GPU

            turn = self._turn.get(node, 0)
            self._turn[node] = turn + 1
            del env["CUDA_VISIBLE_DEVICES"]
            env[BUILD_GPU] = str(turn % self.gpus[node])
        opts: dict[str, Any] = {"num_cpus": 0, "max_retries": 0, "runtime_env": {"env_vars": env}}
        if node is not None:
            from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

            opts["scheduling_strategy"] = NodeAffinitySchedulingStrategy(node, soft=False)
        return self._task.options(**opts).remote(trials, self.seed, self.shipped)


def start(seats: list[Any], trials: list[Trial], builders: int | None, seed: int,
          shipped: Any = None) -> RayAhead | None:
    """Build-ahead for a run on ``seats`` (``placement.Seat``), or None: no trial has an artifact to
    build, or no node has a builder. ``builders``: per node (None: :func:`default_builders`)."""
    if builders == 0 or not any(artifact_key(t) is not None for t in trials):
        return None
    per_node: dict[str | None, int] = {}
    nodes: dict[str | None, Any] = {}
    for seat in seats:
        per_node[seat.node.node_id] = per_node.get(seat.node.node_id, 0) + 1
        nodes[seat.node.node_id] = seat.node
    memory = _node_memory() if builders is None else {}
    counts = {node: builders if builders is not None else
              default_builders(nodes[node].cpus, per_node[node], memory.get(node)) for node in per_node}
    gpus = {node: nodes[node].gpus for node in per_node}
    threads = {seat.node.node_id: max(1, int(seat.cpus)) for seat in seats}  # as a worker sets torch's
    return RayAhead(counts, seed, shipped, gpus, threads) if any(counts.values()) else None


def _node_memory() -> dict[str, float]:
    """Each alive node's memory in Ray's books, bytes."""
    import ray

    return {n["NodeID"]: float(n.get("Resources", {}).get("memory", 0)) for n in ray.nodes() if n.get("Alive")}
