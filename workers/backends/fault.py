"""fault: a model-less backend that fails on purpose. A testing aid, not a benchmark.

It lets the fault handling be exercised on any machine, GPU or not::

    matrix:
      backends:
        - backend: fault
          label: crash
          options: {mode: abort}

``mode`` says how the trial goes wrong, in ``setup`` (``where: setup``) or in the first timed
``step`` (``where: step``, the default):

- ``raise``: raises a RuntimeError (its text: ``message``) -> the row is ``failed`` with the error
  and traceback;
- ``abort``: ``os.abort()`` kills the worker process, as a segfault would -> ``failed``, the
  worker is replaced, the trial is retried ``retries`` times;
- ``hang``: sleeps forever -> ``timeout`` after the trial's ``timeout_s``, the worker is replaced;
- ``nan``: runs, but its output is NaN -> ``parity_failed``;
- ``oom``: raises ``torch.cuda.OutOfMemoryError`` (a same-named RuntimeError where torch is not
  loaded) with the message CUDA's caching allocator gives (simulated: nothing is allocated) ->
  ``oom``, the worker is replaced;
- ``stale``: runs, and its "model" is a known function of its input (``2 x + 1`` on 8 seeded
  values), but like a CUDA graph replaying old buffers it returns its first output whatever the
  input is now -> ``parity_failed`` ("stale output") in every trial, from the check that feeds a
  second input after timing (``workers.measure.stale``). ``where`` does not apply;
- ``noisy``: runs, each step sleeping 20 ms or 40 ms in turn -> ``ok``, but not ``valid`` (its
  IQR is most of its median: workers/measure/validity.py). ``where`` does not apply.
"""

from __future__ import annotations

import os
import sys
import time
from typing import TYPE_CHECKING, Literal

from workers.backends.base import BackendOptions, Runner

if TYPE_CHECKING:
    import numpy as np

ALL_DTYPES = frozenset({"fp32", "fp16", "bf16"})
NOISY_STEPS_S = (0.02, 0.04)


class FaultOptions(BackendOptions):
    mode: Literal["raise", "abort", "hang", "nan", "oom", "stale", "noisy"] = "raise"
    """How the trial fails."""
    where: Literal["setup", "step"] = "step"
    """In which phase it fails."""
    message: str = "fault backend: injected error (mode: raise)"
    """The error's text in mode ``raise`` (a library's message as it comes, escape codes and all)."""


def known_input(seed: int) -> np.ndarray:
    """The ``stale`` mode's input: 8 seeded standard-normal values (numpy: a light worker has no torch)."""
    import numpy as np

    return np.random.default_rng(seed).standard_normal(8).astype(np.float32)


def known_function(x: np.ndarray) -> np.ndarray:
    """The ``stale`` mode's "model"."""
    return 2 * x + 1


class FaultRunner(Runner):
    name = "fault"
    Options = FaultOptions
    modelless = True
    dtypes = {"cuda": ALL_DTYPES, "cpu": ALL_DTYPES}

    def setup(self) -> None:
        self.y: np.ndarray | None = None
        self.steps = 0
        if self.options.mode == "stale":
            self.x = known_input(self.ctx.seed)
        elif self.options.mode != "noisy" and self.options.where == "setup":
            self._fail()

    def step(self) -> None:
        mode = self.options.mode
        if mode == "stale":
            if self.y is None:  # computed once, then returned whatever the input is now
                self.y = known_function(self.x)
        elif mode == "noisy":
            self.steps += 1
            time.sleep(NOISY_STEPS_S[self.steps % 2])
        elif self.options.where == "step":
            self._fail()

    def output(self) -> np.ndarray:
        import numpy as np

        if self.y is not None:
            return self.y
        value = np.nan if self.options.mode == "nan" else 0.0
        return np.full(4, value, dtype=np.float32)

    def checks_stale(self) -> bool:
        return self.options.mode == "stale"

    def feed(self, seed: int) -> None:
        self.x = known_input(seed)

    def stale_reference(self, seed: int) -> tuple[str, np.ndarray]:
        return "the fault backend's known function 2 x + 1", known_function(known_input(seed))

    def _fail(self) -> None:
        mode = self.options.mode
        if mode == "raise":
            raise RuntimeError(self.options.message)
        if mode == "abort":
            os.abort()
        if mode == "hang":
            while True:
                time.sleep(3600)
        if mode == "oom":
            # The text of a real one, so the row reads as it would on a GPU; torch's own type where
            # torch is loaded, else one of the same name: a light worker (model-less trials) must
            # not import torch (10-15 s on a busy 2-core machine) to simulate an OOM.
            torch = sys.modules.get("torch")
            error = torch.cuda.OutOfMemoryError if torch is not None else OutOfMemoryError
            raise error(
                "CUDA out of memory. Tried to allocate 20.00 GiB. GPU 0 has a total capacity of 79.10 GiB "
                "of which 2.95 GiB is free. Of the allocated memory 74.02 GiB is allocated by PyTorch "
                "(simulated by the fault backend, mode: oom)"
            )


class OutOfMemoryError(RuntimeError):
    """Stands for ``torch.cuda.OutOfMemoryError`` in a worker that has not imported torch."""
