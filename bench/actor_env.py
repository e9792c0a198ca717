"""What a job runtime_env costs each actor: one embedded Ray, RUNS runs of WORKERS actors each.

An embedded Ray's workers inherit the driver's environment (``orchestrator.cluster.connect`` sets
PYTHONPATH for the length of ``ray.init``). Passing the same variables as a job ``runtime_env``
instead sends every worker through Ray's runtime-env agent and keeps actors off the workers Ray
prestarts. This starts Ray one way or the other (``--runtime-env`` / ``--inherit``), creates and
kills WORKERS actors RUNS times (each imports ``workers.actor``, as a run's workers do), shuts
Ray down, and prints the wall times and the CPU time of the whole machine (``/proc/stat``: Ray's
daemons and workers count too). Run it on an otherwise idle machine, each way a few times.

    python bench/actor_env.py --inherit --runs 10 --workers 2
    python bench/actor_env.py --runtime-env --runs 10 --workers 2
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script: make the repository's packages importable
    sys.path.insert(0, str(REPO))

from bench.suite import machine_ticks  # noqa: E402


def machine_cpu_s() -> float:
    """CPU seconds every process of the machine has used since boot (not the hypervisor's steal)."""
    return machine_ticks()[0]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    how = ap.add_mutually_exclusive_group(required=True)
    how.add_argument("--inherit", action="store_true", help="workers inherit PYTHONPATH (what infer-orch does)")
    how.add_argument("--runtime-env", action="store_true", help="PYTHONPATH as a job runtime_env")
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()

    cpu0, t0 = machine_cpu_s(), time.monotonic()
    import ray

    path = os.pathsep.join([str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])])
    kwargs = {"num_cpus": 4, "num_gpus": 4, "include_dashboard": False, "log_to_driver": False}
    if args.runtime_env:
        kwargs["runtime_env"] = {"env_vars": {"PYTHONPATH": path}}
    else:
        os.environ["PYTHONPATH"] = path
    ray.init(**kwargs)
    t1 = time.monotonic()

    @ray.remote(num_gpus=1, num_cpus=0.5)
    class Actor:
        def ready(self) -> int:
            import workers.actor  # noqa: F401  what a run's worker imports first

            return os.getpid()

    for _ in range(args.runs):
        actors = [Actor.remote() for _ in range(args.workers)]
        ray.get([a.ready.remote() for a in actors])
        for a in actors:
            ray.kill(a)
    t2 = time.monotonic()
    ray.shutdown()
    time.sleep(3)  # Ray's processes end after shutdown returns
    way = "runtime_env" if args.runtime_env else "inherit"
    print(f"{way}: ray.init {t1 - t0:.1f} s, {args.runs} runs of {args.workers} actors {t2 - t1:.1f} s, "
          f"machine CPU {machine_cpu_s() - cpu0:.1f} s", file=sys.stdout)


if __name__ == "__main__":
    main()
