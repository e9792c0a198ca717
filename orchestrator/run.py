"""The run path as a Python API: plan -> trials -> Ray workers -> Parquet part files.

The CLI's ``run`` is a thin shell over :func:`run_plan`; tests call it directly with a Ray
they initialised themselves (``ray.init(num_gpus=4)``), which it then uses as it is.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from orchestrator import cluster
from orchestrator.expand import expand
from orchestrator.plan import Plan, load_plan
from orchestrator.scheduler import schedule
from orchestrator.sink import ResultSink, check_writable


@dataclass
class RunResult:
    out: Path
    run_id: str
    device: str
    workers: list[str]
    rows: list[dict[str, Any]] = field(default_factory=list)
    #: workers that died during the run (name -> cause) and what became of their trials
    lost_workers: dict[str, str] = field(default_factory=dict)
    requeued: list[str] = field(default_factory=list)

    @property
    def counts(self) -> dict[str, int]:
        return dict(Counter(r["status"] for r in self.rows))

    @property
    def failed(self) -> list[dict[str, Any]]:
        return [r for r in self.rows if r["status"] not in ("ok", "skipped")]


def default_out(plan: Plan, now: dt.datetime) -> Path:
    return Path("results") / f"{plan.name}-{now:%Y%m%d-%H%M%S}"


def resolved_yaml(plan: Plan) -> str:
    return yaml.safe_dump(plan.model_dump(mode="json"), sort_keys=False)


def run_plan(
    plan_path: str | Path,
    *,
    out: str | Path | None = None,
    address: str | None = None,
    workers: int | None = None,
    cpus_per_worker: float | None = None,
    on_start: Callable[[int, list[str], str], None] | None = None,
    on_row: Callable[[dict[str, Any]], None] | None = None,
) -> RunResult:
    """Run every trial of the plan at ``plan_path``; every trial becomes a row in ``out``.

    Raises an ``InputError`` (and writes nothing) for a bad plan, an unusable output
    directory, or a cluster that can't run the plan. ``cpus_per_worker`` overrides the plan's.
    """
    import ray

    plan = load_plan(plan_path)
    trials = expand(plan, source=str(plan_path))
    now = dt.datetime.now(dt.timezone.utc)
    out_dir = Path(out) if out else default_out(plan, now)
    check_writable(out_dir)
    started_ray = cluster.connect(address)
    try:
        nodes = cluster.nodes()
        device = cluster.resolve_device(plan.device, nodes)
        nodes = cluster.select_nodes(nodes, device, plan.accelerator_type)
        seats = cluster.layout(nodes, device, workers, cpus_per_worker or plan.cpus_per_worker)
        pool = cluster.start_workers(seats, device, plan.seed)
        run_id = f"{plan.name}-{now:%Y%m%d-%H%M%S}-{uuid.uuid4().hex[:6]}"
        result = RunResult(out=out_dir, run_id=run_id, device=device, workers=[name for _, name in pool])
        sink = ResultSink(out_dir, run_id, resolved_yaml(plan),
                          metadata={"plan": plan.model_dump(mode="json"), "device": device})
        if on_start:
            on_start(len(trials), result.workers, device)

        def take(row: dict[str, Any]) -> None:
            row.setdefault("device", device)
            sink.write(row)
            result.rows.append(row)
            if on_row:
                on_row(row)

        report = schedule(pool, trials, take, facts={s.name: s.columns() for s in seats})
        result.lost_workers, result.requeued = report.lost_workers, report.requeued
        sink.finish({"plan": plan.name, "device": device, "workers": result.workers,
                     "started_at": now.isoformat(), "counts": result.counts,
                     "lost_workers": result.lost_workers, "requeued": result.requeued})
        for actor, name in pool:
            if name not in result.lost_workers:
                ray.kill(actor)
        return result
    finally:
        if started_ray:
            ray.shutdown()
