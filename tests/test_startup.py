"""Start-up: light workers for model-less trials, warm ones (torch imported at start) for model trials."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path
from unittest import mock

import pyarrow.parquet as pq
import pytest
import ray

from orchestrator.plan.expand import expand
from orchestrator.plan.load import load_plan
from orchestrator.run import cluster, placement
from orchestrator.run.api import needs_torch, run_plan

REPO = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "torchvision", "onnxruntime", "onnx")

PLAN = """\
name: light
device: cuda
models: [torchvision:resnet18]
matrix:
  batch_sizes: [1, 2]
  dtypes: [fp32]
  backends:
    - {backend: sleep, options: {step_s: 0.001}}
    - {backend: fault, label: raises, options: {mode: raise}}
measure: {warmup_iters: 0, warmup_max_iters: 0, iters: 5, target_rel_ci: null}
"""


def _one_worker(warm: bool):
    seats = placement.layout(placement.nodes(), "cuda", max_workers=1)
    [(actor, _)] = placement.start_workers(seats, "cuda", seed=0, warm=warm)
    return actor


def _heavy(modules: list[str]) -> list[str]:
    return [m for m in modules if m.split(".")[0] in HEAVY]


def test_model_less_trials_run_on_a_worker_that_never_imports_torch(ray_gpus, write_plan):
    trials = expand(load_plan(write_plan(PLAN)), source="plan.yaml")
    assert not needs_torch(trials)
    actor = _one_worker(warm=False)
    try:
        rows = ray.get([actor.run.remote(t) for t in trials])
        env = ray.get(actor.environment.remote())
        modules = ray.get(actor.modules.remote())
    finally:
        ray.kill(actor)
    assert sorted(r["status"] for r in rows) == ["failed", "failed", "ok", "ok"], [r.get("error") for r in rows]
    assert _heavy(modules) == []
    # the versions still come, from the packages' metadata
    assert rows[0]["torch_version"] and env["torch_version"] == rows[0]["torch_version"]
    assert env["ort_version"] and rows[0]["cudnn_version"] is None


def test_a_worker_for_model_trials_imports_torch_as_it_starts(ray_gpus, write_plan):
    trials = expand(load_plan(write_plan(PLAN.replace("{backend: sleep, options: {step_s: 0.001}}", "torch-eager"))),
                    source="plan.yaml")
    assert needs_torch(trials)
    actor = _one_worker(warm=True)
    try:
        info = ray.get(actor.info.remote())  # no trial yet
        modules = ray.get(actor.modules.remote())
    finally:
        ray.kill(actor)
    assert "torch" in modules and info["light"] is False
    assert info["cuda_available"] is False  # a logical GPU: CUDA sees none, and the worker knows it


def test_a_run_of_model_less_trials_keeps_its_workers_light(ray_gpus, write_plan, tmp_path):
    # one worker runs all four: whether workers start light is decided once for the run, not per seat
    with mock.patch.object(placement, "start_workers", wraps=placement.start_workers) as start:
        result = run_plan(write_plan(PLAN), out=tmp_path / "out", workers=1)
    assert len(result.rows) == 4
    assert [c.kwargs["warm"] for c in start.call_args_list] == [False]  # started light: no torch at start
    # cuDNN's version is read from torch only: a light worker leaves it null
    assert {r["cudnn_version"] for r in result.rows} == {None}
    assert all(r["torch_version"] for r in result.rows)


@pytest.mark.slow
def test_a_cold_run_workers_import_python_models_from_the_drivers_pythonpath(tmp_path):
    """The embedded Ray gets no runtime_env: its workers must still see the driver's PYTHONPATH."""
    lib = tmp_path / "lib"
    lib.mkdir()
    (lib / "startup_factory.py").write_text(
        "import torch\n\ndef make():\n    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 2))\n")
    plan = tmp_path / "plan.yaml"
    plan.write_text(textwrap.dedent("""\
        name: cold
        device: cpu
        models: [{python: "startup_factory:make", input_shape: [3, 2, 2]}]
        matrix: {batch_sizes: [1], dtypes: [fp32], backends: [torch-eager]}
        measure: {warmup_iters: 1, warmup_max_iters: 1, iters: 3, target_rel_ci: null}
        """))
    work = tmp_path / "elsewhere"  # the worker can't find the factory through the current directory
    work.mkdir()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(lib)])}
    done = subprocess.run([sys.executable, "-m", "orchestrator.cli", "run", str(plan), "--out", str(tmp_path / "out")],
                          cwd=work, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    [row] = pq.read_table(tmp_path / "out").to_pylist()
    assert row["status"] == "ok" and row["model_source"] == "python:startup_factory:make", row.get("error")


@pytest.mark.parametrize("worker_logs", [False, True])
def test_the_embedded_node_leaves_out_what_a_local_run_never_uses(worker_logs):
    """What ``ray.init`` gets inside ``lean_node``: Ray's node parameters without the autoscaler's
    monitor, the log monitor only when worker logs are shown, the dashboard's agent minimal, no API
    server unless the dashboard is asked for; and Ray as it was once the block ends. (The started
    node itself: test_stops' Ctrl-C test.) A Ray whose internals moved fails here, not silently in
    every run."""
    from ray._private import node, parameter, utils

    started = []
    ray_api_server = node.Node.start_api_server
    with mock.patch.object(node.Node, "start_api_server", lambda self, **kw: started.append(kw)), \
            cluster.lean_node(worker_logs=worker_logs):
        params = parameter.RayParams(num_cpus=1)
        assert params.no_monitor is True and params.include_log_monitor is worker_logs
        assert isinstance(utils.get_dashboard_dependency_error(), ImportError)
        assert parameter.RayParams(no_monitor=False).no_monitor is False  # what a caller says, stays
        for asked in (False, None, True):  # None: ray.init's default
            node.Node.start_api_server(object(), include_dashboard=asked, raise_on_failure=False)
        assert started == [{"include_dashboard": True, "raise_on_failure": False}]
    assert node.Node.start_api_server is ray_api_server
    assert parameter.RayParams(num_cpus=1).no_monitor is False
    assert parameter.RayParams(num_cpus=1).include_log_monitor is None  # Ray's default: decided later
    assert utils.get_dashboard_dependency_error() is None  # ray[default] is installed


def test_a_ray_whose_internals_moved_starts_as_ray_init_would(monkeypatch):
    """lean_node changes nothing when a piece it sets is gone (renamed in some Ray release): the
    node then starts with Ray's own defaults instead of the run failing."""
    from ray._private import parameter, utils

    monkeypatch.delattr(utils, "get_dashboard_dependency_error")
    init = parameter.RayParams.__init__
    with cluster.lean_node():
        assert parameter.RayParams.__init__ is init
        assert parameter.RayParams(num_cpus=1).no_monitor is False
