"""sleep: a model-less backend whose every step sleeps a fixed time.

A testing and benchmarking aid: it lets the scheduler be exercised and measured (trials spread
over GPUs, per-trial overhead) with no device work, on machines with no GPU. It runs every load
scenario: its lanes sleep side by side, a server whose service time is known (an M/D/k queue).

``build_s``: the trial needs an artifact whose build sleeps that long, one per shape (batch size,
dtype, axes), as an ONNX export is: a file of the node's cache built through the same path
(``Runner.ahead``, ``workers.models.artifacts.once``), so build-ahead can be tested and measured
anywhere.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Hashable
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import Field

from workers.backends.base import BackendOptions, Lane, Runner
from workers.contract import Trial

if TYPE_CHECKING:
    import numpy as np

    from workers.models.artifacts import Built
    from workers.models.build import ModelStore

ALL_DTYPES = frozenset({"fp32", "fp16", "bf16"})


class SleepOptions(BackendOptions):
    step_s: float = Field(0.01, ge=0)
    """Seconds each step sleeps."""
    repeat_discount: float = Field(1.0, gt=0, le=1)
    """A step on the same pool entry as the step before sleeps step_s times this: a backend faster
    on a repeated input, for the repeat check (measure.repeat_check). 1: an honest one."""
    build_s: float = Field(0.0, ge=0)
    """Seconds the build of the trial's artifact sleeps (0: no artifact); one artifact per shape."""


class SleepRunner(Runner):
    name = "sleep"
    Options = SleepOptions
    modelless = True
    dtypes = {"cuda": ALL_DTYPES, "cpu": ALL_DTYPES}
    concurrent = True  # k lanes are k sleepers: the load scenarios' timing, testable anywhere
    columns = frozenset({"artifact_wait_s", "artifact_build_s"})
    slows_itself = True  # a trial's slowdown lengthens the sleep itself

    @classmethod
    def ahead(cls, trial: Trial) -> Hashable | None:
        build_s = trial.options.get("build_s") or 0.0
        return ("sleep", build_s, trial.batch_size, trial.dtype, tuple(sorted(trial.axes.items()))) if build_s else None

    @classmethod
    def build_ahead(cls, trial: Trial, store: ModelStore | None = None) -> None:
        artifact(trial)

    def setup(self) -> None:
        self.entry, self.last = 0, -1
        if self.options.build_s:
            self.ctx.artifact(artifact(self.ctx.trial))

    def stage_pool(self, seeds: list[int]) -> str:
        return "inputs"

    def use(self, k: int) -> None:
        self.entry = k

    def step(self) -> None:
        same = self.entry == self.last
        self.last = self.entry
        slower = 1 + self.ctx.trial.slowdown  # a known slowdown (workers/measure/slowdown.py): a longer sleep
        time.sleep(self.options.step_s * (self.options.repeat_discount if same else 1.0) * slower)

    def output(self) -> np.ndarray:
        import numpy as np

        return np.zeros(1, dtype=np.float32)

    def lanes(self, k: int) -> list[Lane]:
        return [Lane(run=self.step, output=self.output) for _ in range(k)]


def artifact(trial: Trial) -> Built:
    """The trial's artifact in the node's cache, built (a sleep of ``build_s``) once per node."""
    from workers.models.artifacts import once
    from workers.models.build import cache_dir

    key = hashlib.sha256(json.dumps(SleepRunner.ahead(trial)).encode()).hexdigest()[:24]
    build_s = float(trial.options["build_s"])

    def build(tmp: str) -> None:  # what ran where: a build-ahead task runs with no GPU visible
        start = time.time()
        time.sleep(build_s)
        Path(tmp).write_text(json.dumps({"build_s": build_s, "start": start, "end": time.time(), "pid": os.getpid(),
                                         "builder": os.environ.get("CUDA_VISIBLE_DEVICES") == ""}))

    return once(cache_dir() / "sleep" / f"{key}.artifact", build)
