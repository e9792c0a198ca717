"""A cold `infer-orch run` against Ray's floor (BENCHMARKS.md, "A cold run's start-up").

(a) floor: a fresh process starts Ray as the run does (``orchestrator.run.cluster.connect``) and one
    actor with the resources the run's worker would get (``num_gpus=1`` when Ray sees a GPU)
    that imports torch and initialises CUDA (creates its context; on the CPU: torch only).
    Timed from the process's launch: ``import ray``, ``ray.init``, the actor answering.
(b) run: ``python -m orchestrator.cli run bench/startup.yaml`` (one short torch-eager trial) as a
    subprocess: from its launch to the trial's ``started_at`` (read from the Parquet row) and
    the whole command's wall time.

Each child runs in its own session; after it exits, any process left in that session (a raylet,
an agent, a worker) is counted: a run must leave nothing behind. Runs alternate floor/run so a
load change on the machine hits both. Medians over ``--runs``; a table is printed last.

    PYTHONPATH=$PWD python3 bench/startup.py --runs 5
    PYTHONPATH=$PWD python3 bench/startup.py --runs 3 --repo /path/to/other/checkout  # before/after
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PLAN = Path(__file__).resolve().with_name("startup.yaml")


class Probe:
    """The floor's actor: torch and the CUDA context, nothing of infer-orch."""

    def __init__(self, cuda: bool) -> None:
        self.started = time.time()
        import torch

        self.torch_done = time.time()
        if cuda:
            torch.empty(1, device="cuda")
        self.cuda_done = time.time()

    def stamps(self) -> dict[str, float]:
        return {"actor_started": self.started, "torch_done": self.torch_done, "cuda_done": self.cuda_done}


def floor_child() -> None:
    """Runs in the child process; prints one RESULT line of absolute times."""
    t = {"launch": float(os.environ["STARTUP_LAUNCH"])}
    import ray

    t["ray_imported"] = time.time()
    from orchestrator.run import cluster, placement

    cluster.connect()
    t["ray_initialised"] = time.time()
    nodes = placement.nodes()
    device = "cuda" if sum(n.gpus for n in nodes) else "cpu"
    seat = placement.layout(nodes, device)[0]
    probe = ray.remote(Probe).options(num_cpus=seat.cpus, num_gpus=1 if device == "cuda" else 0)
    actor = probe.remote(device == "cuda")
    t.update(ray.get(actor.stamps.remote()))
    t["ready"] = time.time()
    ray.shutdown()
    print("RESULT " + json.dumps({"device": device, **t}), flush=True)


def _left_behind(sid: int) -> list[str]:
    """Processes still alive in session ``sid`` (the child's): what its run left running."""
    left = []
    for p in Path("/proc").iterdir():
        if not p.name.isdigit():
            continue
        try:
            stat = (p / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()  # after "pid (comm) "
        if int(fields[3]) == sid and fields[0] != "Z":
            left.append(stat[stat.index("(") + 1:stat.rindex(")")])
    return left


def _spawn(cmd: list[str], repo: Path) -> tuple[subprocess.CompletedProcess, float, float, list[str]]:
    """Run ``cmd`` in its own session with ``repo`` first on PYTHONPATH: (result, launch, end, left behind)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(repo), *[p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]])
    launch = time.time()
    env["STARTUP_LAUNCH"] = repr(launch)
    proc = subprocess.Popen(cmd, cwd=repo, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    out, err = proc.communicate()
    end = time.time()
    time.sleep(0.5)  # let a dying process finish
    left = _left_behind(proc.pid)
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err), launch, end, left


def run_floor(repo: Path) -> dict[str, float]:
    done, launch, end, left = _spawn([sys.executable, str(Path(__file__).resolve()), "--child"], repo)
    res = [json.loads(x[7:]) for x in done.stdout.splitlines() if x.startswith("RESULT ")]
    if done.returncode or not res:
        raise SystemExit(f"floor child failed (exit {done.returncode}): {done.stderr.strip()[-800:]}")
    t = res[0]
    return {"device": t["device"], "import_ray_s": t["ray_imported"] - launch,
            "ray_init_s": t["ray_initialised"] - t["ray_imported"],
            "actor_start_s": t["actor_started"] - t["ray_initialised"],
            "torch_s": t["torch_done"] - t["actor_started"], "cuda_init_s": t["cuda_done"] - t["torch_done"],
            "floor_s": t["cuda_done"] - launch, "wall_s": end - launch, "left_behind": len(left)}


def run_cli(repo: Path, plan: Path, out: Path) -> dict[str, float]:
    cmd = [sys.executable, "-m", "orchestrator.cli", "run", str(plan), "--out", str(out)]
    done, launch, end, left = _spawn(cmd, repo)
    if done.returncode != 0:
        raise SystemExit(f"`{' '.join(cmd)}` failed (exit {done.returncode}): {done.stderr.strip()[-800:]}")
    import pyarrow.parquet as pq

    files = sorted(out.rglob("*.parquet"))
    started = min(r["started_at"] for f in files for r in pq.read_table(f, columns=["started_at"]).to_pylist())
    return {"to_started_s": started.timestamp() - launch, "wall_s": end - launch, "left_behind": len(left)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--plan", type=Path, default=PLAN, help="A one-trial plan (default: bench/startup.yaml).")
    ap.add_argument("--repo", type=Path, default=REPO, help="The checkout whose code is measured.")
    ap.add_argument("--only", choices=("floor", "run"), help="Measure only one of the two.")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        floor_child()
        return 0
    repo, plan = args.repo.resolve(), args.plan.resolve()
    floors: list[dict] = []
    runs: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="startup-bench-") as tmp:
        for i in range(args.runs):
            if args.only != "run":
                floors.append(run_floor(repo))
                print(json.dumps({"floor": i, **{k: _r(v) for k, v in floors[-1].items()}}), flush=True)
            if args.only != "floor":
                runs.append(run_cli(repo, plan, Path(tmp) / f"run{i}"))
                print(json.dumps({"run": i, **{k: _r(v) for k, v in runs[-1].items()}}), flush=True)
    _table(floors, runs, repo, args.runs)
    return 0


def _r(v: object) -> object:
    return round(v, 2) if isinstance(v, float) else v


def _table(floors: list[dict], runs: list[dict], repo: Path, n: int) -> None:
    med = lambda rows, k: statistics.median(r[k] for r in rows)  # noqa: E731
    device = floors[0]["device"] if floors else "?"
    print(f"\nCold start, medians of {n} runs ({os.cpu_count()} CPUs, device {device}, code: {repo})")
    print("| what | median s | min s | max s |")
    print("| --- | ---: | ---: | ---: |")
    lines = []
    if floors:
        lines += [(label, floors, k) for label, k in (
            ("floor: python + import ray", "import_ray_s"), ("floor: ray.init", "ray_init_s"),
            ("floor: actor process up (after ray.init)", "actor_start_s"), ("floor: actor imports torch", "torch_s"),
            ("floor: actor inits CUDA", "cuda_init_s"), ("**floor: launch to actor ready**", "floor_s"))]
    if runs:
        lines += [("run: launch to first trial's started_at", runs, "to_started_s"), ("run: wall", runs, "wall_s")]
    for label, rows, k in lines:
        vals = [r[k] for r in rows]
        print(f"| {label} | {med(rows, k):.2f} | {min(vals):.2f} | {max(vals):.2f} |")
    if floors and runs:
        print(f"| run's start over its floor | {med(runs, 'to_started_s') - med(floors, 'floor_s'):+.2f} | | |")
    left = sum(r["left_behind"] for r in floors + runs)
    print(f"processes left running after a child exited: {left}")


if __name__ == "__main__":
    sys.exit(main())
