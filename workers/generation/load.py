"""Generation under load: several generations in flight (offline, server, find-peak), static batching.

A request is one generation of ``batch_size`` sequences that start and finish together (static
batching; sequences joining a running batch is a serving engine's job). The load scenarios'
machinery (``workers.scenarios._lanes``) drives k lanes from k host threads as it does single-pass
requests; a lane here is a generation path's request slot::

    source, fp32 reference                       # as the generate scenario: workers.generation.trial
    a path that can't keep k > 1 in flight       -> skipped, with its reason (``one_at_a_time``)
    runners: one shared by every lane where ``generate`` may run on several threads at once
             (``shared_lanes``: torch eager, whose weights are only read and whose dynamic cache is
             made per generation), else one per lane (its own static cache, session, captured graph),
             each set up on its lane's CUDA stream
    lane.run(): on the lane's stream, one generation of the trial's prompt, its stream synchronized;
             returns the host clock at each token (the first, then one per decode step)
    warm-up, then the scenario's run (offline, server at a rate, find-peak's search)
    parity: one more generation on lane 0 keeping logits, against the fp32 eager reference;
            ``token_agreement``: the least of every lane's last tokens against the reference's;
            replaying paths: a second prompt on lane 0 must give other tokens (the stale check)

The run's figures (``workers.scenarios._lanes.token_columns``): TTFT counted from a request's start,
or from its scheduled arrival under server (queueing counts), its p50 and p99; TPOT over every decode
step of every request, p50 and p99; tokens/s = every request's tokens over the measured window.
``roofline_frac`` stays null: with k generations in flight, one decode step's time is not one
generation's share of the memory traffic.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import numpy as np

from workers.backends.base import Lane, SkipTrial
from workers.measure import energy, envinfo, memory
from workers.measure.parity import ParityFailure
from workers.row import Row
from workers.scenarios.base import Measured

if TYPE_CHECKING:
    from workers.contract import Trial
    from workers.generation.base import Generation, GenerationRunner
    from workers.generation.source import Source
    from workers.scenarios._session import Harness, LaneThreads


class GenerationLanes:
    """k lanes over a generation path's runners (see the module's doc); a context manager that tears
    the runners down on leaving."""

    def __init__(self, path: str, source: Source, dtype: str, device: str, batch: int, prompt_len: int,
                 new_tokens: int, k: int, prompt_ids: np.ndarray) -> None:
        from workers.generation.measure import RUNNERS

        self.cls = RUNNERS[path]
        if k > 1 and self.cls.one_at_a_time:
            raise SkipTrial(f"{path} can't keep {k} generations in flight: {self.cls.one_at_a_time}")
        self.args = (source, dtype, device, batch, prompt_len, new_tokens)
        self.device, self.k, self.ids = device, k, prompt_ids
        self.runners: list[GenerationRunner] = []
        self.streams: list[Any] = [None] * k
        self.last: list[Generation | None] = [None] * k

    def __enter__(self) -> GenerationLanes:
        try:
            if str(self.device).startswith("cuda"):
                import torch

                self.streams = [torch.cuda.Stream() for _ in range(self.k)]
            for i in range(1 if self.cls.shared_lanes else self.k):
                runner = self.cls()
                self.runners.append(runner)  # torn down on leaving, also when its setup fails
                with self.on_stream(i):
                    runner.setup(*self.args)
        except BaseException:
            self.close()
            raise
        return self

    def runner(self, i: int) -> GenerationRunner:
        return self.runners[0 if self.cls.shared_lanes else i]

    @contextlib.contextmanager
    def on_stream(self, i: int) -> Iterator[None]:
        """Lane ``i``'s CUDA stream as the current one on this thread (nothing off a GPU)."""
        if self.streams[i] is None:
            yield
            return
        import torch

        with torch.cuda.stream(self.streams[i]):
            yield

    def generate(self, i: int, ids: np.ndarray | None = None, keep_logits: int = 0) -> Generation:
        with self.on_stream(i):
            return self.runner(i).generate(self.ids if ids is None else ids, keep_logits)

    def lanes(self) -> list[Lane]:
        def lane(i: int) -> Lane:
            def run() -> list[float]:
                g = self.generate(i)
                self.last[i] = g
                return g.token_times()

            return Lane(run=run, output=lambda: self.last[i].tokens,  # type: ignore[union-attr]
                        serial_runs=1 if self.cls.replays else 0)  # captures and compiles never overlap

        return [lane(i) for i in range(self.k)]

    def close(self) -> None:
        for r in self.runners:
            with contextlib.suppress(Exception):
                r.teardown()
        self.runners = []
        if str(self.device).startswith("cuda"):
            import torch

            torch.cuda.empty_cache()

    def __exit__(self, *exc: object) -> None:
        self.close()


def measure(h: Harness, run: Callable[[LaneThreads, Trial, energy.Meter | None], Row]) -> Measured:
    """A generation trial under a load scenario (``run``: ``_lanes.offline_run``, ``server_run`` or
    find-peak's search): the row's columns; raises SkipTrial, ParityFailure or the path's error."""
    from workers.generation import measure as gm
    from workers.generation.trial import PARITY_REFERENCE, _reference, path_for, source_for
    from workers.scenarios._session import LaneThreads

    trial = h.trial
    device = "cuda" if h.on_gpu else "cpu"
    path = path_for(trial, device, h.runner_cls)
    source = source_for(trial, device)
    ref = _reference(source, trial)
    ids = gm.prompt(source.shape.vocab, trial.batch_size, trial.prompt_len, trial.seed)
    host_mem, peak = memory.HostPeak(), gm._PeakMemory(device)
    gpu_uuid = envinfo.device_facts("cuda")["gpu_uuid"] if h.on_gpu else None
    source.last_built = None
    try:
        t0 = time.perf_counter()
        with GenerationLanes(path, source, trial.dtype, device, trial.batch_size, trial.prompt_len,
                             trial.new_tokens, trial.concurrency, ids) as gl:
            threads = LaneThreads(gl.lanes())
            try:
                setup_s, t_warm = time.perf_counter() - t0, time.perf_counter()
                warm = threads.warm_up(trial.measure.warmup_generations)
                warmup_s = time.perf_counter() - t_warm
                watch = envinfo.GpuWatch(gpu_uuid) if h.on_gpu else None
                cols = run(threads, trial, energy.NvmlMeter(gpu_uuid) if h.on_gpu else None)
                gpu = watch.finish() if watch else dict.fromkeys(envinfo.GPU_COLUMNS)
                outputs = [lane.output() for lane in threads.lanes]
                checked: dict[str, Any] = {}  # on lane 0's own thread, where its graphs were captured
                threads.run(lambda i, _: checked.update(_checked(gl, trial, outputs)) if i == 0 else None)
            finally:
                threads.close()
            peak.mark()
            kv = gl.runner(0).kv_cache_bytes()
    finally:
        host_peak = host_mem.finish()
    tol = getattr(trial.parity.tolerance, trial.dtype) if trial.parity.check else math.inf
    out: Row = {"warmup_iters": warm, "setup_s": setup_s, "warmup_s": warmup_s, "repeats": 1, **host_peak, **gpu,
                **cols, "generation_clock": checked["clock"], "kv_cache_bytes": kv,
                "decode_bytes": gm.decode_bytes(source, trial.dtype, trial.batch_size, trial.prompt_len,
                                                trial.new_tokens),
                "gpu_mem_peak_bytes": peak.finish()["peak_mem_bytes"], "parity_reference": PARITY_REFERENCE}
    out.update(source.build_columns())  # an ONNX path's build from the node's cache: waited for, or made
    try:
        out.update(gm.parity(checked["gen"], ref, trial.dtype, tol))
    except gm.ParityError as exc:
        raise ParityFailure(str(exc), {"kv_cache_bytes": kv, "generation_clock": checked["clock"]}) from None
    out["token_agreement"] = min(float(np.mean(o == ref.tokens)) for o in outputs)
    if not trial.parity.check:
        out.pop("parity_tolerance", None)
    if checked["stale"]:
        raise ParityFailure("a second prompt gave the first prompt's tokens (stale output)",
                            {"stale_reference": "a second prompt must give other tokens than the first"})
    return Measured(columns={k: v for k, v in out.items() if v is not None}, outputs=[])


def _checked(gl: GenerationLanes, trial: Trial, outputs: list[np.ndarray]) -> dict[str, Any]:
    """After the run, on lane 0: a generation keeping logits (parity) and, for a replaying path, one
    on a second prompt (stale: the same tokens as the first prompt's)."""
    from workers.generation import measure as gm

    gen = gl.generate(0, keep_logits=gm.PARITY_STEPS)
    stale = False
    if gl.cls.replays:
        other = gm.prompt(gl.args[0].shape.vocab, trial.batch_size, trial.prompt_len, trial.seed + 1)
        stale = bool(np.array_equal(gl.generate(0, other).tokens, outputs[0]))
    return {"gen": gen, "stale": stale, "clock": gen.clock}
