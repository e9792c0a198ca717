"""The dispatcher's own cost per trial, without Ray: the decisions alone, on fake workers.

Feeds ``orchestrator.dispatch.Dispatcher`` N zero-length trials over W workers (16 a node) and M
models, one event at a time as the Ray loop would (a row back, ``tick``, ``dispatch``, ``active``,
``next_deadline``), and prints microseconds per trial. What Ray adds (``ray.wait``, the row's
transfer, the actor call) is not in it: ``bench/sched_bench.py`` measures the whole loop.

    python bench/dispatch_cost.py [--trials 10000] [--workers 64 1000] [--models 1 50]
"""

from __future__ import annotations

import argparse
import time

from orchestrator.dispatch import Dispatcher
from workers.contract import ModelSpec, Trial


class Pool:
    def __init__(self) -> None:
        self.running: dict[str, Trial] = {}

    def run(self, name: str, trial: Trial) -> None:
        self.running[name] = trial

    def kill(self, name: str) -> None:
        self.running.pop(name, None)

    def respawn(self, name: str) -> None:
        pass


def cost(n: int, workers: int, models: int) -> float:
    """Seconds per trial for ``n`` trials over ``workers`` workers and ``models`` models."""
    specs = [ModelSpec(kind="torchvision", ref=f"m{i}", name=f"m{i}", input_shape=(3, 8, 8)) for i in range(models)]
    trials = [Trial(plan="bench", model=specs[i % models], backend="sleep", label="sleep", options={}, batch_size=1,
                    dtype="fp32", io="device", device="cuda", timeout_s=60.0, trial_id=f"t{i}") for i in range(n)]
    pool = Pool()
    t0 = time.perf_counter()
    core = Dispatcher(pool, trials, {f"w{i}": f"n{i // 16}" for i in range(workers)})
    for name in core.workers:
        core.started(name)
    core.dispatch()
    done = 0
    while pool.running:
        name, trial = next(iter(pool.running.items()))
        del pool.running[name]
        core.finished(name, {"trial_id": trial.trial_id, "status": "ok", "error": None})
        core.tick()
        core.dispatch()
        core.active(False)
        core.next_deadline()
        done += len(core.take_outcomes())
    seconds = time.perf_counter() - t0
    if done != n:
        raise SystemExit(f"{done} outcomes for {n} trials")
    return seconds / n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=10_000)
    ap.add_argument("--workers", type=int, nargs="+", default=[64, 1000])
    ap.add_argument("--models", type=int, nargs="+", default=[1, 50])
    args = ap.parse_args()
    for w in args.workers:
        for m in args.models:
            us = cost(args.trials, w, m) * 1e6
            print(f"{args.trials} trials, {w} workers, {m} models: {us:.0f} us a trial "
                  f"({1e6 / us:.0f} trials/s of dispatcher time)")


if __name__ == "__main__":
    main()
