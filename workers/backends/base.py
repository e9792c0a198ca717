"""The one interface every backend runner implements.

A runner owns one trial on one device: ``setup`` builds whatever the backend needs (a session,
a captured graph, static buffers), ``step`` runs one inference, ``output`` gives the last result
as a host array, ``teardown`` frees what setup took. The timing loop (``workers.measure.timing``) calls
``step`` and nothing else while it measures, so setup cost never leaks into the numbers.

Heavy libraries (torch, onnxruntime) are imported inside methods, not at module level: the
driver imports every backend module to validate plans and must stay light.

What a backend can do is said on its class, never by testing its name elsewhere:

- ``Options``, ``dtypes``, ``model_kinds``, ``modelless``, ``concurrent``: what a plan may ask of it;
- ``lanes(k)``: for the load scenarios with several requests in flight (``workers.scenarios``), k independent
  lanes, each serving one request at a time to completion on its own stream and buffers, so k host
  threads keep k requests in flight;
- ``requires``: the libraries it needs, checked by ``unavailable`` without importing them;
- ``times_copies``: whether, with ``io: host``, it does the host<->device copies itself, so the
  worker can time them alone;
- ``columns`` and ``kept_on_parity_failure``: the row columns ``extra_columns`` (or the trial
  context, e.g. the export cache) adds, and which of them a ``parity_failed`` row keeps;
- ``generation`` / ``generation_path``: the generation path it drives in generation trials, if any;
- ``offers``: its rows in ``infer-orch backends`` (one, or more where a configuration needs
  libraries of its own, as ORT with TensorRT);
- ``math_before`` and ``math_effective``: the fp32 math mode its trials ran before the ``math`` field
  (ids), and the mode its libraries report (``workers.measure.mathmode``);
- ``stage_pool`` and ``use``: a pool of inputs staged before timing, the next one fed in each timed
  step (``workers.measure.pool``);
- ``checks_stale``, ``feed`` and ``stale_reference``: whether it replays something captured (a CUDA
  graph, an engine) that could keep returning an old result, and how a second input reaches it
  (``workers.measure.stale`` feeds one after timing and checks the output).
"""

from __future__ import annotations

import importlib.util
from abc import ABC, abstractmethod
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from workers.config import StrictModel
from workers.row import Row

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np

    from workers.context import TrialContext
    from workers.contract import Trial
    from workers.models.build import ModelStore


class BackendOptions(StrictModel):
    """Options of one backend. Unknown keys are rejected; every field has a default."""


class SkipTrial(Exception):
    """Raised by a runner when a trial can't run here, with the reason; the row says ``skipped``."""


class InvalidMeasurement(Exception):
    """Raised by a runner when timing ran but did not measure what the trial claims (for example
    torch.compile recompiled while being timed). The row is ``failed`` with this message, no latency
    is published, and ``columns`` (the facts that show why) still go into the row."""

    def __init__(self, message: str, columns: Row | None = None) -> None:
        super().__init__(message)
        self.columns = dict(columns or {})


@dataclass(frozen=True)
class Offer:
    """One row of ``infer-orch backends``: a backend, or a configuration of it, and whether it runs here."""

    name: str
    dtypes: dict[str, frozenset[str]]
    #: why it can't run here, or None when it can
    unavailable: str | None = None
    note: str = ""


NEEDS_GPU = "needs a CUDA GPU; none is visible here"


@dataclass
class Lane:
    """One of a runner's independent request slots (``Runner.lanes``).

    ``run`` serves ONE request and returns when it is complete (on a GPU: its work queued on the
    lane's own stream, then that stream synchronized), so the host time around it is the request's
    service time. It returns None, or the request's own timings where one request has several (a
    generated sequence's first token and each later one, as ``time.perf_counter`` times): the load
    scenarios keep them per request (``workers.scenarios._lanes.Run.marks``) for a scenario's figures.
    ``output`` reads the lane's last result as host arrays, for the parity check.
    Lanes share nothing mutable: k host threads may call k lanes' ``run`` at once.
    """

    run: Callable[[], Any]
    output: Callable[[], Any]
    #: the lane's first runs that must not overlap another lane's (a CUDA graph captured on the first
    #: runs, as ORT's is): the warm-up runs them one lane at a time, on the lane's own thread
    serial_runs: int = 0


class Runner(ABC):
    """Base class of backend runners.

    A subclass that sets ``name``, in any module of ``workers.backends``, is a backend: the
    registry finds it there (``workers.backends.registry``); nothing else names it.
    """

    name: ClassVar[str]
    Options: ClassVar[type[BackendOptions]] = BackendOptions
    #: dtypes this backend can run, per device type ("cuda", "cpu").
    dtypes: ClassVar[dict[str, frozenset[str]]] = {
        "cuda": frozenset({"fp32", "fp16", "bf16"}),
        "cpu": frozenset({"fp32", "bf16"}),
    }
    #: model kinds this backend accepts ("torchvision", "python", "hf", "onnx").
    model_kinds: ClassVar[frozenset[str]] = frozenset({"torchvision", "python", "hf"})
    #: True when the backend needs no model at all (fault injection, scheduling benchmarks).
    modelless: ClassVar[bool] = False
    #: True when it implements ``lanes``: it runs every load scenario (``workers.scenarios``), those with
    #: several requests in flight too (``scenario_skip_reason`` may still refuse a configuration of its
    #: options); False: only the scenarios that send one request at a time.
    concurrent: ClassVar[bool] = False
    #: importable modules it needs in the worker (checked by ``unavailable`` without importing them).
    requires: ClassVar[tuple[str, ...]] = ()
    #: the row columns this backend adds (``extra_columns`` and the facts its trials' context records).
    columns: ClassVar[frozenset[str]] = frozenset()
    #: those of ``columns`` a ``parity_failed`` row keeps: what ran, not how fast.
    kept_on_parity_failure: ClassVar[frozenset[str]] = frozenset()
    #: the generation path (``workers.generation``) it drives in generation trials (``hf-causal`` models,
    #: the generate scenario), or None: it runs none
    generation: ClassVar[str | None] = None
    #: what ``profile`` records with (a plan's ``profile: true``), or None: this backend has no profile.
    profiler: ClassVar[str | None] = None
    #: the math mode (``workers.measure.mathmode``) its fp32 trials ran before trials had one: trials at
    #: that mode keep their ids; None: neither mode (every fp32 trial's id changes)
    math_before: ClassVar[str | None] = "tf32"
    #: its ``step`` lengthens itself by the trial's ``slowdown`` (the sleep backend: a longer sleep);
    #: False: the worker injects it (``workers.measure.slowdown``)
    slows_itself: ClassVar[bool] = False

    @classmethod
    def generation_path(cls, options: dict[str, Any]) -> str | None:
        """The generation path a trial with these (resolved) options runs, or None."""
        return cls.generation

    def __init__(self, ctx: TrialContext, options: BackendOptions) -> None:
        self.ctx = ctx
        self.options = options

    @classmethod
    def unavailable(cls) -> str | None:
        """Why this backend can't run on this machine at all (a missing library), or None.

        Looks the libraries up without importing them, so the driver can ask cheaply.
        """
        missing = [m for m in cls.requires if importlib.util.find_spec(m) is None]
        return f"{', '.join(missing)} not installed" if missing else None

    @classmethod
    def times_copies(cls, options: BackendOptions) -> bool:
        """True when, with ``io: host``, this runner does the host<->device copies itself (its own
        tensors, not inside a library), so the worker can time the copies alone."""
        return False

    @classmethod
    def offers(cls, gpus: int) -> list[Offer]:
        """This backend's rows in ``infer-orch backends`` on a machine with ``gpus`` visible GPUs."""
        reason = cls.unavailable()
        if reason is None and not gpus and not cls.dtypes.get("cpu"):
            reason = NEEDS_GPU
        return [Offer(cls.name, cls.dtypes, reason)]

    @classmethod
    def skip_reason(cls, trial: Trial, device_type: str) -> str | None:
        """Why this trial can't run on ``device_type`` ("cuda"/"cpu"), or None when it can."""
        kind = trial.model.kind
        if not cls.modelless and kind not in cls.model_kinds:
            return f"backend {cls.name} can't run a model of kind '{kind}'"
        allowed = cls.dtypes.get(device_type, frozenset())
        if trial.dtype not in allowed:
            return (
                f"backend {cls.name} does not support dtype {trial.dtype} on {device_type} "
                f"(supported there: {', '.join(sorted(allowed)) or 'none'})"
            )
        return None

    @classmethod
    def scenarios(cls) -> tuple[str, ...]:
        """The load scenarios it can run (``workers.scenarios``' names): a scenario with its own runners
        (generation) where it has a generation path; the others where it runs single-pass models."""
        from workers import scenarios

        def runs(s: type[scenarios.Scenario]) -> bool:
            if s.own_runners:
                return cls.generation is not None
            return cls.model_kinds != {"hf-causal"} and (cls.concurrent or not s.uses_lanes)

        return tuple(n for n in scenarios.names() if runs(scenarios.get(n)))

    @classmethod
    def scenario_skip_reason(cls, trial: Trial, device_type: str) -> str | None:
        """Why this backend can't run the trial's load scenario, or None (one request at a time: always can).
        Backends whose options decide it (a CUDA graph per thread) override this and say why."""
        if trial.scenario in cls.scenarios():
            return None
        return (f"backend {cls.name} can't run the {trial.scenario} scenario (several requests in flight); "
                f"it runs: {', '.join(sorted(cls.scenarios()))}")

    @classmethod
    def ahead(cls, trial: Trial) -> Hashable | None:
        """What this trial needs built that needs no GPU (an ONNX export), as a key: trials with the
        same key share the artifact, which a build-ahead task on a spare CPU of the trial's node
        (``workers/ahead.py``) builds before a worker reaches the trial; None: nothing to build ahead.
        Cheap and pure: the driver asks it of every trial."""
        return None

    @classmethod
    def build_ahead(cls, trial: Trial, store: ModelStore) -> None:
        """Build the artifact :meth:`ahead` names into the node's cache, through
        ``workers.models.artifacts.once`` as ``setup`` gets it (so it is built once). Runs in a CPU
        task with no GPU visible; ``store`` is that task's process's model store. Backends whose
        ``ahead`` names an artifact implement it."""
        raise NotImplementedError(f"backend {cls.name} builds nothing ahead")

    def lanes(self, k: int) -> list[Lane]:
        """``k`` independent lanes for the load scenarios, built after ``setup`` (not timed): each
        with its own stream, input and output buffers (and captured graph, for graph backends).
        Every lane's output is parity-checked. Runners that set ``concurrent`` implement it."""
        raise NotImplementedError(f"backend {self.name} has no lanes")

    @abstractmethod
    def setup(self) -> None:
        """Build everything one ``step`` needs. Not timed."""

    @abstractmethod
    def step(self) -> None:
        """Run one inference. Timed; must do nothing but the work being measured."""

    @abstractmethod
    def output(self) -> np.ndarray:
        """The last step's output as a float32 host array (for parity checks)."""

    def teardown(self) -> None:  # noqa: B027 - optional hook
        """Free what ``setup`` took. Called even when setup or timing failed."""

    def checks_stale(self) -> bool:
        """True when this runner, as configured, replays something captured at setup (a CUDA graph,
        a TensorRT engine) reading its input from buffers bound once: it could return an earlier
        result for a new input, and parity on the timed input would not see it. After timing the
        worker then ``feed``s it a second input, runs one ``step`` and checks that output against a
        reference for the second input (``workers.measure.stale``)."""
        return False

    def feed(self, seed: int) -> None:
        """Write the trial's inputs drawn with ``seed`` (instead of the trial's own) where the next
        ``step`` reads them: into the bound or static buffers, in place, as a user of this backend
        would. Runners whose ``checks_stale`` can be True implement it."""
        raise NotImplementedError(f"backend {self.name} can't be fed another input")

    def stale_reference(self, seed: int) -> tuple[str, Any] | None:
        """(what it is, the output expected) for the inputs of ``seed``, where the runner has its own
        reference (an ONNX file run without a graph; a model-less backend's known function); None:
        the worker's torch eager fp32 reference (``workers.measure.parity``) is the one."""
        return None

    def stage_pool(self, seeds: list[int]) -> str:
        """Stage the trial's inputs drawn with each of ``seeds`` where ``use`` can reach them (on the
        device, or on the host with ``io: host``), before timing; returns how ``use`` feeds them, the
        row's ``pool_feed`` (``workers.measure.pool``). Entry 0 is the trial's own input."""
        raise SkipTrial(f"backend {self.name} can't cycle through a pool of inputs (measure.input_pool)")

    def use(self, k: int) -> None:
        """Make pool entry ``k`` what the next ``step`` reads. Timed with the step: it is part of
        serving a new input (a pointer swap, or a copy into the buffers a graph reads)."""
        raise NotImplementedError(f"backend {self.name} has no pool")

    def math_effective(self) -> str | None:
        """The fp32 math this runner's libraries report they use (``workers.measure.mathmode``), read
        after timing; None where no library does arithmetic (model-less backends)."""
        return None

    def extra_columns(self) -> Row:
        """Backend-specific facts for the row (e.g. the providers ORT really used).

        Called after timing; raises ``InvalidMeasurement`` when those facts show the timed
        iterations did not measure what the trial claims.
        """
        return {}

    def profile(self, iters: int) -> bytes:
        """Run ``iters`` more steps under a profiler, after timing; the Chrome trace (JSON) as bytes.

        This default is for runners whose step is torch code: torch.profiler, CPU activity and, on
        a GPU, CUDA kernels too. Backends that profile otherwise override it and say so in ``profiler``.
        """
        return torch_profile(self.step, iters, self.ctx.device == "cuda")

    def __enter__(self) -> Runner:
        self.setup()
        return self

    def __exit__(self, *exc: object) -> None:
        self.teardown()


def torch_profile(step: Any, iters: int, on_gpu: bool) -> bytes:
    """``iters`` calls of ``step`` under torch.profiler, exported as a Chrome trace."""
    import tempfile
    from pathlib import Path

    import torch
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if on_gpu else [])
    with profile(activities=activities) as prof:
        for _ in range(iters):
            step()
        if on_gpu:
            torch.cuda.synchronize()
    with tempfile.TemporaryDirectory(prefix="infer-orch-profile-") as d:
        path = Path(d) / "trace.json"
        prof.export_chrome_trace(str(path))
        return path.read_bytes()
