"""Inputs that change while timing (``measure.input_pool``) and the repeated-input check
(``measure.repeat_check``, after MLPerf's compliance TEST04).

A trial times one seeded input by default. With ``input_pool: N`` the runner stages N distinct seeded
inputs before timing (``Runner.stage_pool``, not timed: entry 0 is the trial's own input, entry k
is drawn with seed + k * SEED_STRIDE) and every timed step first makes the next entry the one its
step reads (``Runner.use``, timed as part of the step)::

    pool_feed   what use(k) does                                       backends
    inputs      the step is called on entry k (a pointer swap)         torch-eager, torch-compile (its
                                                                       CUDA graphs copy inputs in
                                                                       themselves), ORT session.run
    copy        a device-to-device copy of entry k into the buffers    torch-cudagraph, ORT with IO
                a graph (or the bound session) reads at fixed          binding (its CUDA graph or not)
                addresses: one graph for every entry, the copy timed
    host        io: host: entry k is the host input the step copies    every backend with io: host
                in, as it always does

A graph per pool entry was the other way: N times the graph's memory, and the replayed graph
would not be the one a server runs. After timing, entry 0 is fed again and stepped once (not
timed), so parity checks the trial's own input.

``repeat_check``: the same runner is timed again with every step on entry 0 (the same work,
``use(0)`` included, on one repeated input). A row faster on the repeated input by more than
``MAX_REPEAT_SPEEDUP`` with the two medians' 95% intervals apart is flagged (a validity reason):
a cache, a short-circuiting graph or a data-dependent kernel made the repeated input cheaper than
a stream of new ones would be.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from workers.contract import Trial

#: entry k of a pool is drawn with the trial's seed + k * SEED_STRIDE (the stale check uses seed + 1)
SEED_STRIDE = 1000
#: MLPerf TEST04's bound: the repeated input may be at most 10% faster
MAX_REPEAT_SPEEDUP = 1.10


def seeds(trial: Trial) -> list[int]:
    """The seeds of the trial's pool entries, the trial's own first."""
    return [trial.seed + k * SEED_STRIDE for k in range(trial.measure.input_pool)]


def cycling(runner: Any, n: int) -> Callable[[], None]:
    """A step that makes the next of ``n`` pool entries the runner's input, then steps it."""
    state = [0]

    def step() -> None:
        runner.use(state[0])
        state[0] = (state[0] + 1) % n
        runner.step()

    return step


def repeat_columns(pool_samples: list[float], repeat_samples: list[float]) -> dict[str, Any]:
    """The row's repeat-check columns from both runs' samples."""
    from workers.measure import stats

    pool_med, rep_med = stats.median(pool_samples), stats.median(repeat_samples)
    return {"repeat_median_ms": rep_med, "repeat_speedup": pool_med / rep_med if rep_med > 0 else None,
            "repeat_samples_ms": list(repeat_samples)}


def faster_repeated(row: dict[str, Any]) -> str | None:
    """The validity reason of a row faster on one repeated input than on the pool, or None."""
    import numpy as np

    from workers.measure import stats

    speedup, pool, rep = row.get("repeat_speedup"), row.get("samples_ms"), row.get("repeat_samples_ms")
    if speedup is None or not pool or not rep or speedup <= MAX_REPEAT_SPEEDUP:
        return None
    pool_ci = stats.median_ci_distribution_free(np.sort(np.asarray(pool, dtype=float)))
    rep_ci = stats.median_ci_distribution_free(np.sort(np.asarray(rep, dtype=float)))
    if pool_ci is None or rep_ci is None or rep_ci[1] >= pool_ci[0]:
        return None  # too few samples for intervals, or the intervals overlap: within the noise
    return (f"faster on a repeated input: median {row['repeat_median_ms']:.4g} ms on one input against "
            f"{row.get('latency_ms_median'):.4g} ms on the pool of {row.get('input_pool')}, "
            f"{(speedup - 1) * 100:.0f}% > {(MAX_REPEAT_SPEEDUP - 1) * 100:.0f}% (MLPerf TEST04)")
