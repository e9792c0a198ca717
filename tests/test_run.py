"""The run path through a real embedded Ray: scheduling over logical GPUs, Parquet written."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest

from orchestrator.errors import ClusterError, OutputError
from orchestrator.run.api import run_plan
from workers.schema import SCHEMA, SCHEMA_VERSION

SLEEP_PLAN = """\
name: spread
device: cuda
models: [torchvision:resnet18]
matrix:
  batch_sizes: [1, 2, 3, 4]
  dtypes: [fp32, fp16]
  backends:
    - backend: sleep
      options: {step_s: 0.02}
measure: {warmup_iters: 1, warmup_max_iters: 1, iters: 10}
"""


@pytest.fixture(scope="module")
def spread_run(ray_gpus, tmp_path_factory):
    """One run of SLEEP_PLAN, read by the two tests below (each ran its own before)."""
    d = tmp_path_factory.mktemp("spread")
    (d / "plan.yaml").write_text(SLEEP_PLAN)
    return run_plan(d / "plan.yaml", out=d / "out"), d / "out"


def test_trials_spread_over_every_gpu_worker_concurrently(spread_run):
    result, _ = spread_run
    rows = result.rows
    assert len(rows) == 8 and all(r["status"] == "ok" for r in rows), [r.get("error") for r in rows]
    assert result.device == "cuda" and len(result.workers) == 4
    # one worker per GPU, each pinned by Ray to a different CUDA_VISIBLE_DEVICES
    per_worker = {r["worker"]: r["cuda_visible_devices"] for r in rows}
    assert len(per_worker) == 4 and len(set(per_worker.values())) == 4
    # the workers ran at the same time: some two trials on different workers overlap
    spans = sorted((r["started_at"].timestamp(), r["started_at"].timestamp() + r["duration_s"], r["worker"])
                   for r in rows)
    assert any(a[1] > b[0] and a[2] != b[2] for a, b in zip(spans, spans[1:]))


def test_run_writes_one_compacted_parquet_file_with_one_schema(spread_run):
    result, out = spread_run
    # the parts were compacted into one file when the run ended: no part, no temporary file left
    assert sorted(p.name for p in out.iterdir() if p.suffix == ".parquet") == ["results.parquet"]
    assert not list(out.glob(".*"))
    schema = pq.read_schema(out / "results.parquet")
    assert schema.remove_metadata().equals(SCHEMA.remove_metadata())
    assert schema.metadata[b"infer_orch.schema_version"] == SCHEMA_VERSION.encode()
    assert schema.metadata[b"infer_orch.run_id"] == result.run_id.encode()
    assert json.loads(schema.metadata[b"infer_orch.plan"])["name"] == "spread"
    env = json.loads(schema.metadata[b"infer_orch.environment"])
    # the driver's environment once, and each worker's once
    assert env["driver"]["torch_version"] and env["driver"]["cpu_model"]
    table = pq.read_table(out)
    assert table.num_rows == 8 and set(table.column("run_id").to_pylist()) == {result.run_id}
    assert len(set(table.column("trial_id").to_pylist())) == 8
    for row in table.select(["worker", "torch_version"]).to_pylist():
        assert env["workers"][row["worker"]]["worker"] == row["worker"]
        assert env["workers"][row["worker"]]["torch_version"] == row["torch_version"]
    run = json.loads((out / "_run.json").read_text())
    assert (out / "_plan.yaml").is_file() and run["counts"] == {"ok": 8} and run["compacted"]
    assert sorted(run["environment"]["workers"]) == sorted(result.workers)  # every worker's, once
    assert all(e["worker"] == name for name, e in run["environment"]["workers"].items())
    assert "samples_ms" not in result.rows[0]  # the driver keeps no samples; they are on disk
    assert len(table.column("samples_ms")[0]) == result.rows[0]["iters"]


def test_accelerator_type_missing_stops_before_anything_runs(ray_gpus, write_plan, tmp_path):
    plan = write_plan(SLEEP_PLAN.replace("device: cuda", "device: cuda\naccelerator_type: T4"))
    with pytest.raises(ClusterError, match="accelerator_type: T4 but the cluster's GPUs are"):
        run_plan(plan, out=tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_output_dir_that_is_a_file_is_refused(ray_gpus, write_plan, tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(OutputError, match="is a file"):
        run_plan(write_plan(SLEEP_PLAN), out=tmp_path / "f" / "out")


# test_cpu_plan_runs_real_models_on_cpu_workers is in test_report.py: it reads that module's run.


VERDICT_PLAN = """\
name: verdicts
device: cuda
models: [torchvision:resnet18]
matrix:
  batch_sizes: [1]
  backends:
    - {backend: sleep, label: within, options: {step_s: 0.001}, budgets: {max_latency_ms: 1000}}
    - {backend: sleep, label: over, options: {step_s: 0.002}, budgets: {max_latency_ms: 0.000001}}
measure: {warmup_iters: 1, warmup_max_iters: 1, iters: 3}
"""


def test_run_plan_gives_the_verdicts_the_command_line_exits_with(ray_gpus, write_plan, tmp_path):
    plan, out = write_plan(VERDICT_PLAN), tmp_path / "out"
    result = run_plan(plan, out=out, workers=1)  # two instant trials: one worker process, not two
    assert result.counts == {"ok": 2} and result.failed_trials == []
    (row, messages), = result.budget_misses
    assert row["label"] == "over" and len(messages) == 1 and "is above max_latency_ms 1e-06" in messages[0]
    assert result.exit_code == 1
    # resumed with everything stored: nothing runs, the kept rows are judged the same
    again = run_plan(plan, resume=out)
    assert again.rows == [] and len(again.kept) == 2
    assert [r["label"] for r, _ in again.budget_misses] == ["over"] and again.exit_code == 1
