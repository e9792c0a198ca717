"""One thread that reads things about the device while a trial runs: every probe at its own period.

Everything sampled beside a trial's work goes through this one class, so that there is one thread,
one place its cost is accounted for (``bench/fidelity.py``'s harness overhead, docs/measuring.md):

- during timing: the GPU's process list, every ``envinfo.CONTENTION_PERIOD_S`` (another process
  on the GPU makes the row ``contended``, hence not valid);
- during energy's extra window, after timing: power, every ``energy.SAMPLE_S`` (integrated).

A probe returns a value, or None where it can't answer now (kept out of the readings). The thread
sleeps until the next probe is due; ``stop`` takes one last reading of each probe and joins it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

Probe = tuple[Callable[[], Any], float]  # (read, period_s)


class Sampler:
    """Reads each probe once now, then every its period on a daemon thread, until ``stop``."""

    def __init__(self, probes: dict[str, Probe], clock: Callable[[], float] = time.perf_counter,
                 name: str = "infer-orch-sampler") -> None:
        self.probes, self.clock = probes, clock
        self.readings: dict[str, list[tuple[float, Any]]] = {k: [] for k in probes}
        self._stop = threading.Event()
        self._lock = threading.Lock()
        now = time.monotonic()
        self._due = {k: now + period for k, (_, period) in probes.items()}
        for k in probes:
            self._take(k)
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _take(self, key: str) -> None:
        try:
            value = self.probes[key][0]()
        except Exception:  # a probe that fails is a missing reading, never the trial's failure
            value = None
        if value is not None:
            with self._lock:
                self.readings[key].append((self.clock(), value))

    def _run(self) -> None:
        from workers.measure import affinity

        affinity.away_from_timing()
        while not self._stop.wait(max(0.0, min(self._due.values()) - time.monotonic())):
            now = time.monotonic()
            for k, (_, period) in self.probes.items():
                if now >= self._due[k]:
                    self._take(k)
                    self._due[k] = max(self._due[k] + period, now)

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def stop(self) -> dict[str, list[tuple[float, Any]]]:
        """Stop the thread, read every probe once more; every reading (time, value) by probe."""
        if self._thread.is_alive():
            self._stop.set()
            self._thread.join()
            for k in self.probes:
                self._take(k)
        return self.readings
