"""Where the start-up of an embedded run goes: Ray itself, its worker processes, torch, infer-orch.

Each case runs in a fresh process that starts an embedded Ray (``ray.init`` with N logical GPUs,
as ``bench/sched_bench.py`` does) and then N actors, one per GPU:

    bare     an actor that does nothing (Ray's own cost of a worker process)
    torch    an actor that imports torch (what every GPU worker must do before its first trial)
    worker   infer-orch's ``workers.actor.Worker`` made warm (torch, thread settings, CUDA where there is one)

and prints the seconds to ``ray.init`` and to all N actors answering. A table is printed last.

    python bench/startup_breakdown.py [--gpus 8] [--cpus N]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

CHILD = """\
import json, sys, time
t0 = time.time()
import ray
ray.init(num_cpus={cpus}, num_gpus={gpus}, include_dashboard=False, log_to_driver=False,
         runtime_env={{"env_vars": {{"PYTHONPATH": {path!r}}}}})
t_init = time.time() - t0
case = {case!r}
if case == "worker":
    from workers.actor import Worker
    cls = ray.remote(Worker)
    opts = cls.options(num_cpus={share}, num_gpus=1)
    actors = [opts.remote(f"w{{i}}", "cuda", {share}, 0, True) for i in range({gpus})]
    ray.get([a.info.remote() for a in actors])
else:
    @ray.remote
    class Bare:
        def __init__(self, imp):
            if imp:
                import torch  # noqa: F401
        def ping(self):
            return 1
    actors = [Bare.options(num_cpus={share}, num_gpus=1).remote(case == "torch") for _ in range({gpus})]
    ray.get([a.ping.remote() for a in actors])
print("RESULT " + json.dumps({{"case": case, "ray_init_s": t_init, "ready_s": time.time() - t0}}))
"""


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gpus", type=int, default=8)
    ap.add_argument("--cpus", type=int, default=os.cpu_count() or 1)
    args = ap.parse_args()
    share = round(args.cpus / args.gpus, 2)
    rows = []
    for case in ("bare", "torch", "worker"):
        code = CHILD.format(cpus=args.cpus, gpus=args.gpus, path=str(REPO), case=case, share=share)
        t = time.time()
        proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                              env={**os.environ, "PYTHONPATH": str(REPO)})
        res = [json.loads(x[7:]) for x in proc.stdout.splitlines() if x.startswith("RESULT ")]
        if not res:
            print(f"{case}: failed (exit {proc.returncode}): {proc.stderr.strip()[-300:]}")
            continue
        rows.append({**res[0], "process_s": time.time() - t})
        print(json.dumps(rows[-1]), flush=True)
    print(f"\n{args.gpus} actors on an embedded Ray with {args.cpus} CPUs")
    print("| actors | ray.init s | all actors ready s (from start) | actors alone s |")
    print("| --- | ---: | ---: | ---: |")
    for r in rows:
        print(f"| {r['case']} | {r['ray_init_s']:.1f} | {r['ready_s']:.1f} | {r['ready_s'] - r['ray_init_s']:.1f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
