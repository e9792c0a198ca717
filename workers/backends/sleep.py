"""sleep: a model-less backend whose every step sleeps a fixed time.

A testing and benchmarking aid: it lets the scheduler be exercised and measured (trials spread
over GPUs, per-trial overhead) with no device work, on machines with no GPU. It runs every load
scenario: its lanes sleep side by side, a server whose service time is known (an M/D/k queue).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from pydantic import Field

from workers.backends.base import BackendOptions, Lane, Runner

if TYPE_CHECKING:
    import numpy as np

ALL_DTYPES = frozenset({"fp32", "fp16", "bf16"})


class SleepOptions(BackendOptions):
    step_s: float = Field(0.01, ge=0)
    """Seconds each step sleeps."""
    repeat_discount: float = Field(1.0, gt=0, le=1)
    """A step on the same pool entry as the step before sleeps step_s times this: a backend faster
    on a repeated input, for the repeat check (measure.repeat_check). 1: an honest one."""


class SleepRunner(Runner):
    name = "sleep"
    Options = SleepOptions
    modelless = True
    dtypes = {"cuda": ALL_DTYPES, "cpu": ALL_DTYPES}
    concurrent = True  # k lanes are k sleepers: the load scenarios' timing, testable anywhere

    def setup(self) -> None:
        self.entry, self.last = 0, -1

    def stage_pool(self, seeds: list[int]) -> str:
        return "inputs"

    def use(self, k: int) -> None:
        self.entry = k

    def step(self) -> None:
        same = self.entry == self.last
        self.last = self.entry
        time.sleep(self.options.step_s * (self.options.repeat_discount if same else 1.0))

    def output(self) -> np.ndarray:
        import numpy as np

        return np.zeros(1, dtype=np.float32)

    def lanes(self, k: int) -> list[Lane]:
        return [Lane(run=self.step, output=self.output) for _ in range(k)]
