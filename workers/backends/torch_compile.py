"""torch-compile: the model through ``torch.compile`` (TorchDynamo + Inductor by default).

Compilation happens in ``setup``: the compiled model is called ``COMPILE_CALLS`` times there
(the first call compiles; with ``mode: reduce-overhead`` the second records the CUDA graph and
the third replays it), so no compilation is inside the timed part. ``compile_time_s`` is the
wall time of those calls.

Inductor's cache directory is per node, ``<node cache>/inductor`` (``$INFER_ORCH_CACHE`` or
``~/.cache/infer-orch``), shared by the trials and runs on that node. ``compile_cache_warm``
says whether every FX graph Inductor compiled came from that on-disk cache (Dynamo tracing,
Triton autotuning and CUDA graph recording still happen each time, so a warm compile is faster,
not free).

Dynamo's state is reset before each trial (so trials don't pile up in one code object's
recompile limit and fall back to eager) and its counters give:

- ``graph_breaks``: graph breaks while compiling (the model runs as several graphs with Python
  between them); recorded, not an error, unless ``fullgraph: true`` makes it one.
- ``recompiles_during_timing``: frames Dynamo compiled after setup, during warm-up or timed
  iterations. Any makes the trial ``failed``: its samples would include compile time and a
  different graph than the one set up, so the latency is not published.

Load scenarios: the compiled model is called from k lane threads, each on its own stream and
inputs (a recompile on a lane's thread fails the trial, as above). Modes with CUDA graphs
(``reduce-overhead``, ``max-autotune`` on a GPU) are skipped there: their CUDA-graph trees are
kept per thread and share one memory pool, so k threads replaying at once is not a supported use.
"""

from __future__ import annotations

import os
import time
from collections.abc import Hashable
from typing import TYPE_CHECKING, Any, Literal

from pydantic import model_validator

from workers import torch_threads
from workers.backends import compile_ahead
from workers.backends.base import InvalidMeasurement, Lane
from workers.backends.torch_eager import (
    TorchOptions,
    TorchRunner,
    eager_lane,
    pool_inputs,
    prepare_torch,
)
from workers.contract import Trial
from workers.models.build import ModelStore, cache_dir
from workers.row import Row

if TYPE_CHECKING:  # numpy: not imported by the driver, which only validates options
    import numpy as np

COMPILE_CALLS = 3
#: torch.compile modes that record CUDA graphs on a GPU (cudagraph trees)
CUDA_GRAPH_MODES = frozenset({"reduce-overhead", "max-autotune"})


class CompileOptions(TorchOptions):
    mode: Literal["default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"] = "default"
    """torch.compile mode; reduce-overhead adds CUDA graphs (cudagraph trees) on the GPU."""
    dynamic: bool = False
    """False: shapes are specialised (one batch size per trial, as infer-orch runs them)."""
    fullgraph: bool = False
    """True: a graph break is a compile error (the trial fails) instead of a split graph."""
    backend: Literal["inductor", "cudagraphs", "aot_eager", "eager"] = "inductor"
    """torch.compile backend; the others are for debugging (no code generation)."""

    @model_validator(mode="after")
    def _mode_is_inductors(self) -> CompileOptions:
        if self.mode != "default" and self.backend != "inductor":
            raise ValueError(f"mode '{self.mode}' is an inductor mode; backend is '{self.backend}'")
        return self


def use_node_cache() -> str:
    """Point Inductor (and the Triton kernels it writes) at this node's cache directory."""
    path = str(cache_dir() / "inductor")
    if os.environ.get("TORCHINDUCTOR_CACHE_DIR") != path:
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = path
        try:  # Inductor memoises paths under the old directory
            from torch._inductor.utils import clear_caches

            clear_caches()
        except ImportError:  # pragma: no cover - older torch
            pass
    os.makedirs(path, exist_ok=True)
    return path


def _first_line(reason: str) -> str:
    return reason.strip().splitlines()[0][:200] if reason.strip() else ""


class TorchCompile(TorchRunner):
    name = "torch-compile"
    generation = "torch-compile"  # its generation path (workers.generation) in generation trials
    Options = CompileOptions
    columns = frozenset({"compile_time_s", "compile_cache_warm", "graph_breaks", "graph_break_reasons",
                         "recompiles_during_timing", "artifact_wait_s", "artifact_build_s"})

    @classmethod
    def scenario_skip_reason(cls, trial: Trial, device_type: str) -> str | None:
        mode = trial.options.get("mode", "default")
        from workers import scenarios

        if scenarios.get(trial.scenario).uses_lanes and device_type == "cuda" and mode in CUDA_GRAPH_MODES:
            return (f"torch-compile mode {mode} uses CUDA-graph trees, kept per thread with one memory pool: "
                    f"several requests in flight from several threads ({trial.scenario}) is not supported there; "
                    "use torch-cudagraph (one graph per lane) or mode default")
        return super().scenario_skip_reason(trial, device_type)

    @classmethod
    def ahead(cls, trial: Trial) -> Hashable | None:
        """The trial's compile: Inductor's code for its graphs, built on fake tensors ahead
        (``workers.backends.compile_ahead.key``: None where the worker must compile it all)."""
        return compile_ahead.key(trial)

    @classmethod
    def build_ahead(cls, trial: Trial, store: ModelStore) -> None:
        compile_ahead.build(trial, store)

    def lanes(self, k: int) -> list[Lane]:
        lanes = [eager_lane(self.ctx, self.model, self.x, self._to_host) for _ in range(k)]
        if self.ctx.device == "cuda":
            self._torch.cuda.synchronize()
        return lanes

    def setup(self) -> None:
        import torch
        import torch._dynamo
        from torch._dynamo.utils import counters

        self._torch, self._counters = torch, counters
        o = self.options
        use_node_cache()
        if o.mode in CUDA_GRAPH_MODES and self.ctx.device == "cuda":
            torch_threads.prepare()  # this thread may not be the one that first used CUDA-graph trees
        torch._dynamo.reset()
        counters.clear()
        from workers.models.build import map_outputs

        self._to_host = lambda y: map_outputs(lambda t: t.cpu(), y)
        model, self.x = prepare_torch(self.ctx, o.channels_last)
        self.model = torch.compile(model, mode=None if o.mode == "default" else o.mode, dynamic=o.dynamic,
                                   fullgraph=o.fullgraph, backend=o.backend)
        self.y: Any = None

        def compile_calls() -> None:
            t0 = time.perf_counter()
            for _ in range(COMPILE_CALLS):
                self.step()
            if self.ctx.device == "cuda":
                torch.cuda.synchronize()
            self.compile_time_s = time.perf_counter() - t0

        if compile_ahead.key(self.ctx.trial) is not None:  # a build ahead's marker: wait for it, or mark it
            self.ctx.artifact(compile_ahead.compile_once(self.ctx.trial, compile_calls))
        else:
            compile_calls()
        breaks = counters["graph_break"]
        self.graph_breaks = int(sum(breaks.values()))
        self.break_reasons = list(dict.fromkeys(_first_line(r) for r in breaks))
        ind = counters["inductor"]
        hits, misses = ind.get("fxgraph_cache_hit", 0), ind.get("fxgraph_cache_miss", 0)
        # None: nothing went through the FX graph cache (another backend, or caches disabled).
        self.cache_warm = None if hits + misses == 0 else misses == 0
        self.frames_after_setup = counters["frames"]["total"]

    def step(self) -> None:
        with self._torch.inference_mode():
            if self.ctx.io == "host":
                dev = self.ctx.device
                self.y = self._to_host(self.ctx.call(self.model, {k: v.to(dev) for k, v in self.x.items()}))
            else:
                self.y = self.ctx.call(self.model, self.x)

    def stage_pool(self, seeds: list[int]) -> str:
        """Entries of the trial's shape, dtype and strides: calling on them fails no guard (nothing
        recompiles); with CUDA graphs, cudagraph trees copy each into the graph's inputs (timed)."""
        self.pool = pool_inputs(self.ctx, seeds, self.options.channels_last)
        return "host" if self.ctx.io == "host" else "inputs"

    def use(self, k: int) -> None:
        self.x = self.pool[k]

    def checks_stale(self) -> bool:
        """CUDA graphs: the modes that use them (cudagraph trees) and the ``cudagraphs`` backend, on a GPU."""
        o = self.options
        graphs = o.mode in ("reduce-overhead", "max-autotune") or o.backend == "cudagraphs"
        return self.ctx.device == "cuda" and graphs

    def feed(self, seed: int) -> None:
        """Into the tensors the compiled model is called with, in place (same shape, dtype and strides:
        no guard fails, so nothing recompiles); cudagraph trees copy them into the graph's own inputs."""
        xs = self.ctx.inputs(device="cpu", seed=seed)
        with self._torch.no_grad():
            for k, x in xs.items():
                self.x[k].copy_(x)

    def output(self) -> np.ndarray | dict[str, np.ndarray]:
        from workers.models.build import host_outputs

        return host_outputs(self.y)

    def extra_columns(self) -> Row:
        recompiles = int(self._counters["frames"]["total"] - self.frames_after_setup)
        cols = {
            "compile_time_s": self.compile_time_s,
            "compile_cache_warm": self.cache_warm,
            "graph_breaks": self.graph_breaks,
            "graph_break_reasons": self.break_reasons,
            "recompiles_during_timing": recompiles,
        }
        if recompiles:
            raise InvalidMeasurement(
                f"torch.compile compiled {recompiles} more frame(s) after setup, during warm-up or timing "
                "(a guard failed: the model's Python state or input properties changed between calls); "
                "the samples include compile time, latency not published. Try dynamic: true, or make the "
                "model's forward independent of Python state that changes.", cols)
        return cols

    def teardown(self) -> None:
        self.model = self.x = self.y = self.pool = None
        torch = getattr(self, "_torch", None)
        if torch is not None:
            torch._dynamo.reset()  # frees the compiled code and, with reduce-overhead, the CUDA graph pool
