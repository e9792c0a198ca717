"""Helpers shared by test modules (imported by them and by conftest.py; test modules never import
each other): the command line in a subprocess or in-process, and backend trials run on this CPU."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]


def infer_orch(*args: Any, cwd: Path = REPO, timeout: float = 300) -> subprocess.CompletedProcess:
    """`infer-orch ARGS` as a user runs it: a new process (its own imports, its own Ray if it runs
    a plan). For tests of the command line itself; elsewhere use ``cli``, which is in-process."""
    env = {**os.environ, "COLUMNS": "200"}
    return subprocess.run([sys.executable, "-m", "orchestrator.cli", *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


def cli(*args: Any) -> subprocess.CompletedProcess:
    """`infer-orch ARGS` in this process (Typer's CliRunner): the same commands, exit code and
    output as ``infer_orch``, without a new interpreter's imports, and on the Ray this process
    already runs (the ``ray_gpus`` fixture) when the command runs a plan."""
    from typer.testing import CliRunner

    from orchestrator.cli import app

    argv = [str(a) for a in args]
    result = CliRunner().invoke(app, argv, env={"COLUMNS": "200"})
    # an exception other than the exit the command chose is a crash, not an outcome
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return subprocess.CompletedProcess(["infer-orch", *argv], result.exit_code, result.stdout, result.stderr)


#: One trial per kind of GPU runner (eager, CUDA graph, ORT with every buffer bound), for GPU tests
#: that check a measurement on each: ``pytest.mark.parametrize("backend", GPU_BACKENDS, ids=GPU_BACKEND_IDS)``.
GPU_BACKENDS = ({"backend": "torch-eager"}, {"backend": "torch-cudagraph"},
                {"backend": "ort", "options": {"io_binding": True}})
GPU_BACKEND_IDS = ("torch-eager", "torch-cudagraph", "ort-io_binding")


def trials_for(backends, models=("python:tinynet:make",), io=("host", "device"), dtypes=("fp32",), **plan):
    """The trials of a small CPU plan: ``backends`` over ``models`` (``python:`` factories get a
    16x16 input), batch size 2, a short bounded measurement."""
    from orchestrator.plan.expand import expand
    from orchestrator.plan.load import parse_plan

    model_list = [{"python": m.split(":", 1)[1], "input_shape": [3, 16, 16]} if m.startswith("python:") else m
                  for m in models]
    data = {"name": "b", "device": "cpu", "models": model_list,
            "matrix": {"batch_sizes": [2], "dtypes": list(dtypes), "io": list(io), "backends": backends},
            # the default stopping rule, bounded so a busy test machine can't stretch a trial
            "measure": {"warmup_iters": 2, "iters": 5, "warmup_max_s": 0.5, "max_time_s": 1}, **plan}
    return expand(parse_plan(data))


def run_all(trials) -> list[dict[str, Any]]:
    """Run ``trials`` one after the other in this process on the CPU, sharing one model store."""
    from workers.models.build import ModelStore
    from workers.trial import run_trial

    store = ModelStore()
    return [run_trial(t, "cpu", store, cpus=1) for t in trials]


def stored_rows(out: Path) -> int:
    """How many rows the part files in ``out`` hold now (a part holds the trials that ended together)."""
    import pyarrow.parquet as pq

    n = 0
    for part in out.glob("part-*.parquet"):
        try:
            n += pq.read_metadata(part).num_rows
        except FileNotFoundError:  # absorbed by a compaction meanwhile
            pass
    return n


def reseed(run: Path, medians: dict[str, float], seed: int, copy_to: Path | None = None) -> Path:
    """The run stored in ``run`` with the timed samples of its ok rows labelled in ``medians`` replaced
    by seeded ones (normal around that median in ms, a 1% spread, as many as were timed), their
    latency columns and validity verdict recomputed: a real run whose figures are fixed, whatever the
    machine's load did to its sleeps. Rewritten in place, or in a copy of the directory at ``copy_to``."""
    import shutil

    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    from workers.measure import stats, validity

    if copy_to is not None:
        run = Path(shutil.copytree(run, copy_to))
    path = run / "results.parquet"  # a run that ended: compacted
    table = pq.read_table(path)
    rng = np.random.default_rng(seed)
    rows = table.to_pylist()
    for r in rows:
        if r["label"] not in medians or r["status"] != "ok":
            continue
        samples = rng.normal(medians[r["label"]], 0.01 * medians[r["label"]], len(r["samples_ms"]))
        r.update(samples_ms=samples.tolist(), **stats.latency_stats(samples, r["batch_size"], seed=seed))
        r.update(validity.verdict(r, None))
        assert r["valid"], r["invalid_reasons"]  # tight samples: valid by every rule
    pq.write_table(pa.Table.from_pylist(rows, schema=table.schema), path)
    return run
