"""GPU energy per sample (docs/measuring.md#energy says what the columns mean).

Two sources, from NVML:

- the cumulative energy counter, ``nvmlDeviceGetTotalEnergyConsumption`` (millijoules since the
  driver loaded; Volta and later): read at the start and the end of a window, no thread needed;
- instantaneous power, ``NVML_FI_DEV_POWER_INSTANT`` where the GPU has it (else
  ``nvmlDeviceGetPowerUsage``, which on recent GPUs is a one-second average), sampled every
  ``SAMPLE_S`` by the trial's one sampler thread (``workers.measure.sampler``, which also watches the GPU's
  processes during timing) and integrated (trapezoids): the fallback where there is no counter,
  and the cross-check where there is.

Load scenarios (offline, server, find-peak) read the counter as their measured run starts and
ends (``LoadWindow``): the energy at the load the run served, every lane's requests in it; a
find-peak row's is its last passing probe's (the run its other figures come from). A run shorter
than ``MIN_WINDOW_S`` gets null columns and a note: no extra iterations, since those would not be at
the run's load.

The window of one request at a time is the timed loop itself when it lasts at least ``MIN_WINDOW_S``
(the counter is read as the loop starts and ends; nothing runs beside it, so timing is untouched). A shorter timed loop
is too short for the counter's resolution: the energy is then measured over more iterations run
after the timed ones, for at least ``MIN_WINDOW_S``, with the sampler beside them (they are not
timed, so the thread costs the measurement nothing). Where neither source answers, the columns
are null and ``energy_note`` says why: never a number that only looks precise.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Protocol

from workers.measure import nvml
from workers.row import Row

MIN_WINDOW_S = 1.0
SAMPLE_S = 0.01

COLUMNS = ("energy_j_per_sample", "energy_j_per_request", "gpu_power_w_avg", "energy_method", "energy_window_s",
           "energy_iters",
           "energy_j_per_sample_integral", "energy_note")


class Meter(Protocol):
    def energy_mj(self) -> float | None:
        """The cumulative energy counter, mJ, or None where there is none."""

    def power_w(self) -> float | None:
        """Power now, W, or None."""

    power_source: str | None  # what power_w reads: "instant" or "average"


class NvmlMeter:
    """The GPU ``uuid`` through NVML; every read None where NVML or the GPU can't answer."""

    def __init__(self, uuid: str | None) -> None:
        self.nv, self.h = nvml.load(), nvml.handle(uuid)
        self.power_source: str | None = None
        if self.h is None:
            return
        if self._instant() is not None:
            self.power_source = "instant"
        elif self._average() is not None:
            self.power_source = "average"

    def energy_mj(self) -> float | None:
        if self.h is None:
            return None
        try:
            return float(self.nv.nvmlDeviceGetTotalEnergyConsumption(self.h))
        except Exception:
            return None

    def _instant(self) -> float | None:
        try:
            (v,) = self.nv.nvmlDeviceGetFieldValues(self.h, [self.nv.NVML_FI_DEV_POWER_INSTANT])
            return v.value.uiVal / 1000.0 if v.nvmlReturn == 0 else None
        except Exception:
            return None

    def _average(self) -> float | None:
        try:
            return self.nv.nvmlDeviceGetPowerUsage(self.h) / 1000.0
        except Exception:
            return None

    def power_w(self) -> float | None:
        if self.power_source == "instant":
            return self._instant()
        if self.power_source == "average":
            return self._average()
        return None


class PowerSampler:
    """``meter.power_w`` every ``period_s`` on the trial's one sampler thread (``workers.measure.sampler``);
    ``stop`` gives the integral (J)."""

    def __init__(self, meter: Meter, period_s: float = SAMPLE_S, clock: Callable[[], float] = time.perf_counter):
        from workers.measure.sampler import Sampler

        self._sampler = Sampler({"power": (meter.power_w, period_s)}, clock=clock, name="power-sampler")

    @property
    def samples(self) -> list[tuple[float, float]]:
        return self._sampler.readings["power"]

    def stop(self) -> float | None:
        return integrate(self._sampler.stop()["power"])


def integrate(samples: list[tuple[float, float]]) -> float | None:
    """Trapezoidal integral of (time s, power W) samples, J; None with fewer than two."""
    if len(samples) < 2:
        return None
    return sum((t1 - t0) * (p0 + p1) / 2 for (t0, p0), (t1, p1) in zip(samples, samples[1:]))


class TimedWindow:
    """The counter read as the timed loop starts and ends (``workers.measure.timing.measure``'s ``on_timed``)."""

    def __init__(self, meter: Meter, clock: Callable[[], float] = time.perf_counter) -> None:
        self.meter, self.clock = meter, clock
        self.start: tuple[float, float | None] | None = None
        self.end: tuple[float, float | None] | None = None

    def __call__(self, starting: bool) -> None:
        mark = (self.clock(), self.meter.energy_mj())
        if starting:
            self.start = mark
        else:
            self.end = mark

    def joules(self) -> tuple[float, float] | None:
        """(J, seconds) of the timed loop from the counter, or None (no counter, or the loop too short)."""
        if self.start is None or self.end is None or self.start[1] is None or self.end[1] is None:
            return None
        seconds = self.end[0] - self.start[0]
        if seconds < MIN_WINDOW_S:
            return None
        return (self.end[1] - self.start[1]) / 1000.0, seconds


def columns(meter: Meter, timed: TimedWindow, iters: int, batch_size: int, step: Callable[[], None],
            synchronize: Callable[[], None], min_s: float = MIN_WINDOW_S,
            clock: Callable[[], float] = time.perf_counter) -> Row:
    """The energy columns of one trial: from the timed loop (``timed``, ``iters`` iterations) when the
    counter covers it, else from iterations of ``step`` run now, after timing, for at least ``min_s``."""
    out: Row = dict.fromkeys(COLUMNS)
    got = timed.joules()
    if got is not None:
        joules, seconds = got
        out.update(energy_method="nvml_energy_counter: timed loop", energy_window_s=seconds, energy_iters=iters,
                   energy_j_per_sample=joules / (iters * batch_size), energy_j_per_request=joules / iters,
                   gpu_power_w_avg=joules / seconds)
        return out
    if meter.energy_mj() is None and meter.power_source is None:
        return {**out, "energy_note": "NVML reports neither an energy counter nor power for this GPU"}
    synchronize()
    sampler = PowerSampler(meter, clock=clock) if meter.power_source else None
    e0, t0 = meter.energy_mj(), clock()
    n = 0
    while clock() - t0 < min_s:  # one inference at a time, each waited for, as the timed loop runs them
        step()
        synchronize()
        n += 1
    e1, t1 = meter.energy_mj(), clock()
    integral = sampler.stop() if sampler else None
    seconds, samples = t1 - t0, n * batch_size
    out.update(energy_window_s=seconds, energy_iters=n)
    if integral is not None:
        out["energy_j_per_sample_integral"] = integral / samples
    if e0 is not None and e1 is not None:
        joules = (e1 - e0) / 1000.0
        out.update(energy_method="nvml_energy_counter: iterations after timing", energy_j_per_sample=joules / samples,
                   energy_j_per_request=joules / n, gpu_power_w_avg=joules / seconds)
    elif integral is not None:
        out.update(energy_method=f"{meter.power_source} power sampled every {SAMPLE_S * 1e3:g} ms: iterations "
                                 "after timing", energy_j_per_sample=integral / samples,
                   energy_j_per_request=integral / n, gpu_power_w_avg=integral / seconds)
    else:
        out["energy_note"] = "NVML's counter and power reads failed during the energy window"
    return out


class LoadWindow:
    """The counter read as a load run starts and ends (``with window:`` around it); ``columns`` gives
    the energy columns for the requests it served (each of ``batch_size`` samples)."""

    def __init__(self, meter: Meter | None, clock: Callable[[], float] = time.perf_counter) -> None:
        self.meter, self.clock = meter, clock
        self.marks: list[tuple[float, float | None]] = []

    def __enter__(self) -> LoadWindow:
        if self.meter is not None:
            self.marks = [(self.clock(), self.meter.energy_mj())]
        return self

    def __exit__(self, *exc: object) -> None:
        if self.meter is not None:
            self.marks.append((self.clock(), self.meter.energy_mj()))

    def columns(self, requests: int, batch_size: int) -> Row:
        out: Row = dict.fromkeys(COLUMNS)
        if self.meter is None:
            return {**out, "energy_note": "not a GPU trial"}
        if len(self.marks) != 2 or self.marks[0][1] is None or self.marks[1][1] is None:
            return {**out, "energy_note": "NVML reports no energy counter for this GPU (load scenarios read "
                                          "the counter alone)"}
        (t0, e0), (t1, e1) = self.marks
        seconds = t1 - t0
        if seconds < MIN_WINDOW_S or requests < 1:
            return {**out, "energy_window_s": seconds,
                    "energy_note": f"the measured run lasted {seconds:.3g} s, under the counter's {MIN_WINDOW_S:g} s"}
        joules = (e1 - e0) / 1000.0  # type: ignore[operator]
        out.update(energy_method="nvml_energy_counter: the measured run", energy_window_s=seconds,
                   energy_iters=requests, energy_j_per_request=joules / requests,
                   energy_j_per_sample=joules / (requests * batch_size), gpu_power_w_avg=joules / seconds)
        return out
