"""infer-orch on a real two-node Ray cluster (``ray start`` processes), driven by the CLI with
``--address`` as users run it; and the pure parts of worker placement.

The cluster: a head node declaring 2 logical GPUs and ``accelerator_type:T4``, with its dashboard
(for ``ray job submit``), a second node declaring 2 logical GPUs and ``accelerator_type:A100``, each
with its own temp dir (no shared directory: rows reach the driver through Ray). Tests run the
``sleep`` backend (model-less); those that take nodes down come last.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest
import yaml
from helpers import REPO, cli, stored_rows
from raycluster import RAY_CLI, RayCluster, free_port
from typer.testing import CliRunner

from orchestrator.cli import app
from orchestrator.errors import ClusterError, PlanError
from orchestrator.plan.load import parse_plan
from orchestrator.run import cluster, placement

PLAN = """\
name: {name}
device: cuda
{extra}
models: [torchvision:resnet18]
matrix:
  batch_sizes: {batches}
  dtypes: [fp32, fp16]
  backends:
    - backend: sleep
      options: {{step_s: {step}}}
measure: {{warmup_iters: 0, warmup_max_iters: 0, iters: {iters}, target_rel_ci: null}}
"""


def plan_text(name: str, batches: list[int], step: float, extra: str = "", iters: int = 5) -> str:
    """A trial is exactly ``iters`` sleeps of ``step`` s: no adaptive warm-up, no CI target."""
    return PLAN.format(name=name, batches=batches, step=step, extra=extra, iters=iters)


@pytest.fixture(scope="module")
def two_nodes():
    """Started once for the module (~15 s); torn down by pid even when a test fails. The head runs its
    dashboard, the job server of ``ray job submit`` (at ``c.dashboard``)."""
    c = RayCluster()
    # `ray job stop`: SIGTERM, then SIGKILL after this long (Ray's default: 3 s); read on the head
    c.env["RAY_JOB_STOP_WAIT_TIME_S"] = "30"
    try:
        port = free_port()
        c.dashboard = f"http://127.0.0.1:{port}"
        c.add_node("h", num_cpus=2, num_gpus=2, resources={"accelerator_type:T4": 1}, dashboard_port=port)
        c.add_node("w", num_cpus=2, num_gpus=2, resources={"accelerator_type:A100": 1})
        c.node_of = {"T4": c.node_id("h"), "A100": c.node_id("w")}  # `ray start` returned: registered with the GCS
        yield c
    finally:
        c.stop()


def infer_orch(c: RayCluster, *args: str, wait: bool = True) -> subprocess.CompletedProcess | subprocess.Popen:
    cmd = [sys.executable, "-m", "orchestrator.cli", "run", *args, "--address", c.address]
    if wait:
        return subprocess.run(cmd, cwd=REPO, env={**c.env, "COLUMNS": "200"}, capture_output=True, text=True,
                              timeout=240)
    return subprocess.Popen(cmd, cwd=REPO, env={**c.env, "COLUMNS": "200"}, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


@pytest.mark.slow
def test_trials_spread_over_both_nodes_and_rows_come_back_to_the_driver(two_nodes, tmp_path):
    plan = tmp_path / "plan.yaml"
    plan.write_text(plan_text("spread", [1, 2, 3, 4, 5, 6], 0.05))
    out = tmp_path / "out"
    done = infer_orch(two_nodes, str(plan), "--out", str(out))
    assert done.returncode == 0, done.stdout + done.stderr
    df = pd.read_parquet(out)
    assert len(df) == 12 and set(df.status) == {"ok"}
    assert set(df.node_id) == set(two_nodes.node_of.values())  # both nodes ran trials
    assert df.worker.nunique() == 4  # one worker per logical GPU, names unique across the nodes
    # default CPU share: the node's 2 CPUs split over its 2 GPU workers
    assert set(df.cpus_per_worker) == {1.0}
    # two workers per node run side by side: a trial starts with at most its neighbour running
    assert df.concurrent_trials.between(0, 1).all() and df.concurrent_trials.max() == 1
    # the nodes wrote nothing into their own temp dirs: every part file is in the driver's --out
    assert not [p for p in two_nodes.root.rglob("*.parquet")]


@pytest.mark.slow
def test_accelerator_type_runs_only_on_that_gpu_model_with_cpus_per_worker(two_nodes, tmp_path):
    plan = tmp_path / "plan.yaml"
    plan.write_text(plan_text("t4", [1, 2, 3], 0.02, extra="accelerator_type: T4\ncpus_per_worker: 0.5"))
    out = tmp_path / "out"
    done = infer_orch(two_nodes, str(plan), "--out", str(out))
    assert done.returncode == 0, done.stdout + done.stderr
    df = pd.read_parquet(out)
    assert len(df) == 6 and set(df.status) == {"ok"}
    assert set(df.node_id) == {two_nodes.node_of["T4"]}
    assert set(df.cpus_per_worker) == {0.5}
    assert "running 6 trials on 2 cuda worker(s)" in done.stdout + done.stderr


JOB_PLAN = """\
name: job
device: cpu
models: [torchvision:resnet18]
matrix:
  batch_sizes: [1, 2, 3, 4, 5, 6]
  backends:
    - {backend: sleep, options: {step_s: 0.2}}
measure: {warmup_iters: 0, warmup_max_iters: 0, iters: 5, target_rel_ci: null}
"""


@pytest.mark.slow
def test_a_run_submitted_as_a_ray_job_stopped_and_resumed_with_the_command_it_printed(two_nodes, tmp_path):
    """docs/cluster.md's Ray job: `ray job submit --address http://HEAD:8265 -- infer-orch run ...`
    on a `ray start` head with its dashboard; the run joins the cluster through RAY_ADDRESS. `ray job
    stop` mid-run: the job's log says what is stored where (absolute) and the resume command, with
    the cluster's address; that command, run as printed, completes the run on the cluster."""
    import shlex

    c = two_nodes
    plan, out = tmp_path / "plan.yaml", tmp_path / "out"
    plan.write_text(JOB_PLAN)
    job = [*RAY_CLI, "job"]
    dashboard = ["--address", c.dashboard]
    ray = dict(env=c.env, capture_output=True, text=True, timeout=120)
    submitted = subprocess.run([*job, "submit", *dashboard, "--submission-id", "io-job", "--no-wait", "--",
                                sys.executable, "-m", "orchestrator.cli", "run", str(plan), "--out", str(out),
                                "--workers", "1"], **ray)
    assert submitted.returncode == 0, submitted.stdout + submitted.stderr
    deadline = time.monotonic() + 90
    while stored_rows(out) < 1:
        assert time.monotonic() < deadline, subprocess.run([*job, "logs", *dashboard, "io-job"], **ray).stdout
        time.sleep(0.1)
    stopped = subprocess.run([*job, "stop", *dashboard, "io-job"], **ray)
    assert stopped.returncode == 0, stopped.stdout + stopped.stderr
    log = subprocess.run([*job, "logs", *dashboard, "io-job"], **ray).stdout
    stored = stored_rows(out)
    assert f"terminated (SIGTERM): {stored} of 6 trials are stored in {out}" in log, log
    [line] = [ln for ln in log.splitlines() if ln.startswith("resume with: ")]
    args = shlex.split(line.removeprefix("resume with: "))
    assert args == ["infer-orch", "run", str(plan), "--resume", str(out), "--address", c.address,
                    "--workers", "1"]
    resumed = subprocess.run([sys.executable, "-m", "orchestrator.cli", *args[1:]], cwd=REPO, **ray)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert len(pd.read_parquet(out)) == 6


@pytest.mark.slow
def test_a_frozen_node_is_waited_for_not_taken_for_crashes(two_nodes, tmp_path):
    """Every process of a third node stopped (SIGSTOP) mid-run, as a hung host or a partition looks:
    its trials are re-run elsewhere once Ray declares the node dead, none is recorded failed or
    timeout, no fresh worker is placed on it, and the run ends within 120 s of the freeze. The
    driver's grace comes from the same RAY_health_check_* settings the cluster runs with."""
    two_nodes.add_node("f", num_cpus=2, num_gpus=2, resources={})
    frozen = two_nodes.node_id("f")
    plan = tmp_path / "plan.yaml"
    plan.write_text(plan_text("freeze", list(range(1, 10)), 0.1, iters=10))  # 18 trials of 1 s on 6 workers
    out = tmp_path / "out"
    proc = infer_orch(two_nodes, str(plan), "--out", str(out), wait=False)
    stopped = two_nodes.pids("f")
    try:
        deadline = time.monotonic() + 120
        while stored_rows(out) < 3:  # every worker busy by now
            assert proc.poll() is None and time.monotonic() < deadline, proc.stdout.read() if proc.stdout else ""
            time.sleep(0.1)
        stopped = two_nodes.pids("f")
        froze_at, froze = dt.datetime.now(dt.timezone.utc), time.monotonic()
        for pid in stopped:
            os.kill(pid, signal.SIGSTOP)
        text, _ = proc.communicate(timeout=180)
        took = time.monotonic() - froze
    finally:
        if proc.poll() is None:
            proc.kill()
        two_nodes.kill(stopped)  # SIGKILL ends stopped processes too
    df = pd.read_parquet(out)
    assert len(df) == 18 and set(df.status) == {"ok"}, text  # nothing failed or timed out for the freeze
    assert proc.returncode == 0 and took < 120, (took, text)
    on_frozen = df[df.node_id == frozen]
    assert (on_frozen.started_at < froze_at).all()  # no trial (and so no fresh worker) started there after
    run = json.loads((out / "_run.json").read_text())
    assert len(run["lost_workers"]) == 2 and run["requeued"], run


@pytest.mark.slow
def test_losing_a_node_mid_run_requeues_its_trials_on_the_other(two_nodes, tmp_path):
    plan = tmp_path / "plan.yaml"
    # 24 trials of 1 s on 4 workers: the node dies with 4-5 s of the run left (the rows that show every
    # worker busy reach the disk up to 0.5 s after they end: the part writer gathers them)
    plan.write_text(plan_text("loss", list(range(1, 13)), 0.1, iters=10))
    out = tmp_path / "out"
    proc = infer_orch(two_nodes, str(plan), "--out", str(out), wait=False)
    try:
        deadline = time.monotonic() + 120
        while stored_rows(out) < 2:  # running on every worker by now
            assert proc.poll() is None and time.monotonic() < deadline, proc.stdout.read() if proc.stdout else ""
            time.sleep(0.1)
        os.kill(two_nodes.raylet_pid("w"), signal.SIGKILL)  # the A100 node's raylet dies
        text, _ = proc.communicate(timeout=180)
    finally:
        if proc.poll() is None:
            proc.kill()
    df = pd.read_parquet(out)
    assert len(df) == 24 and set(df.status) == {"ok"}, text  # every trial ran, none lost
    assert proc.returncode == 0, text
    run = json.loads((out / "_run.json").read_text())
    assert len(run["lost_workers"]) == 2 and all("died" in cause for cause in run["lost_workers"].values())
    # the re-queued trials ran on the surviving (T4) node
    requeued = df[df.trial_id.isin(run["requeued"])]
    assert set(requeued.node_id) == {two_nodes.node_of["T4"]}
    assert "lost 2 worker(s)" in text and f"{len(run['requeued'])} in-flight trial(s) re-run" in text


@pytest.mark.slow
def test_a_dead_head_stops_the_run_with_one_line_and_resume_completes_elsewhere(two_nodes, tmp_path, ray_gpus):
    """The head's processes killed mid-run (the module's last use of the cluster: its other nodes are
    gone by now): the driver says so in one line, with the resume command, well before Ray's own
    60 s; the parts written are whole; --resume on another Ray (this process's) completes the run."""
    plan = tmp_path / "plan.yaml"
    plan.write_text(plan_text("head", list(range(1, 9)), 0.1, iters=10))  # 16 trials of 1 s
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "orchestrator.cli", "run", str(plan), "--out", str(out), "--address",
           two_nodes.address]
    proc = subprocess.Popen(cmd, cwd=REPO, env={**two_nodes.env, "COLUMNS": "300", "INFER_ORCH_HEAD_TIMEOUT_S": "6"},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while stored_rows(out) < 2:
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
            time.sleep(0.1)
        two_nodes.kill(two_nodes.pids("h"))
        killed = time.monotonic()
        stdout, stderr = proc.communicate(timeout=120)
        took = time.monotonic() - killed
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 1 and took < 30, (took, stderr[-2000:])
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "stopped answering mid-run" in errors[0] and f"--resume {out}" in errors[0], stderr
    assert "Traceback" not in stdout + stderr and "Failed to connect to GCS" not in stderr
    parts = sorted(out.glob("part-*.parquet"))
    assert parts and all(pd.read_parquet(p).shape[0] >= 1 for p in parts)  # whole
    resumed = cli("run", plan, "--resume", out)  # on this process's Ray: a fresh cluster
    assert resumed.returncode == 0, resumed.stdout[-2000:] + resumed.stderr[-2000:]
    df = pd.read_parquet(out)
    assert len(df) == 16 and df.trial_id.nunique() == 16 and set(df.status) == {"ok"}


# ---- placement, without a cluster ----

def _node(name: str, cpus: float, gpus: int, host: str = "h") -> placement.Node:
    return placement.Node(node_id=name * 8, host=host, cpus=cpus, gpus=gpus, ip="10.0.0.1")


def test_layout_splits_each_nodes_cpus_evenly_by_default():
    seats = placement.layout([_node("a", 16, 4, "a"), _node("b", 6, 2, "b")], "cuda")
    assert [(s.name, s.cpus) for s in seats] == [("a/cuda0", 4.0), ("a/cuda1", 4.0), ("a/cuda2", 4.0),
                                                  ("a/cuda3", 4.0), ("b/cuda0", 3.0), ("b/cuda1", 3.0)]
    assert seats[0].columns() == {"node_id": "a" * 8, "node_ip": "10.0.0.1", "cpus_per_worker": 4.0}


def test_layout_names_workers_apart_when_nodes_share_a_host():
    seats = placement.layout([_node("a", 2, 1), _node("b", 2, 1)], "cuda")
    assert [s.name for s in seats] == ["h-aaaaaa/cuda0", "h-bbbbbb/cuda0"]


def test_layout_refuses_a_cpu_share_the_node_cannot_give():
    with pytest.raises(ClusterError, match=r"cpus_per_worker: 3 CPUs for each of 4 workers .* needs 12 CPUs; it has 8"):
        placement.layout([_node("a", 8, 4)], "cuda", cpus_per_worker=3)
    assert [s.cpus for s in placement.layout([_node("a", 8, 4)], "cuda", cpus_per_worker=2)] == [2.0] * 4


def test_plan_cpus_per_worker_must_be_positive():
    base = {"name": "p", "models": ["torchvision:resnet18"],
            "matrix": {"batch_sizes": [1], "backends": ["sleep"]}}
    assert parse_plan({**base, "cpus_per_worker": 2}).cpus_per_worker == 2.0
    with pytest.raises(PlanError, match=r"plan.yaml: cpus_per_worker: Input should be greater than 0"):
        parse_plan({**base, "cpus_per_worker": 0}, source="plan.yaml")
    with pytest.raises(PlanError, match=r"plan.yaml: cpus_per_worker: Input should be a valid number"):
        parse_plan({**base, "cpus_per_worker": "many"}, source="plan.yaml")


def test_cli_cpus_per_worker_option_is_checked(tmp_path):
    plan = tmp_path / "p.yaml"
    plan.write_text(plan_text("p", [1], 0.01))
    res = CliRunner().invoke(app, ["run", str(plan), "--cpus-per-worker", "0", "--out", str(tmp_path / "o")])
    said = " ".join(res.output.replace("│", " ").split())  # Typer's box, unwrapped
    assert res.exit_code == 2 and "Invalid value for '--cpus-per-worker'" in said, said
    assert "greater than or equal to 0.01" in said and not (tmp_path / "o").exists()


def test_cli_cpus_per_worker_sets_each_workers_share_over_the_plans(ray_gpus, tmp_path):
    plan = tmp_path / "p.yaml"
    plan.write_text(plan_text("p", [1], 0.01, extra="cpus_per_worker: 2"))
    out = tmp_path / "o"
    res = CliRunner().invoke(app, ["run", str(plan), "--out", str(out), "--workers", "1", "--cpus-per-worker", "0.5"])
    assert res.exit_code == 0, res.output
    df = pd.read_parquet(out)
    assert set(df.status) == {"ok"} and set(df.cpus_per_worker) == {0.5}  # not the plan's 2


def test_connect_error_names_the_token_settings():
    class AuthenticationError(Exception):
        pass

    try:
        try:
            raise AuthenticationError("RPC error: InvalidAuthToken: Authentication token is missing")
        except AuthenticationError as inner:
            raise ConnectionError("Failed to connect to Ray cluster at 10.0.0.1:6379") from inner
    except ConnectionError as exc:
        msg = cluster.connect_error("10.0.0.1:6379", exc)
    assert "token authentication" in msg and "RAY_AUTH_MODE=token" in msg and "RAY_AUTH_TOKEN_PATH" in msg


def test_a_worker_that_dies_on_a_live_node_fails_its_trial_with_the_cause(ray_gpus, tmp_path):
    from orchestrator.plan.expand import expand
    from orchestrator.run.scheduler import schedule

    text = plan_text("die", [1, 2], 0.01).replace(
        "    - backend: sleep\n", "    - {backend: fault, options: {mode: abort}}\n    - backend: sleep\n")
    trials = expand(parse_plan(yaml.safe_load(text)))
    trials = [t for t in trials if t.backend == "sleep"] + [
        next(t for t in trials if t.backend == "fault")]  # 4 sleeps and one abort
    seats = placement.layout(placement.nodes(), "cuda", max_workers=2)
    pool = placement.start_workers(seats, "cuda", seed=0)
    rows: list[dict] = []
    t0 = time.monotonic()
    # no respawn: the dead worker stays lost; its node lives on, so the trial (which may have
    # killed it) is not re-queued
    report = schedule(pool, trials, rows.append, facts={s.name: s.columns() for s in seats})
    assert time.monotonic() - t0 < 30  # decided at once, not after the node-death grace period
    failed = [r for r in rows if r["status"] == "failed"]
    assert len(rows) == 5 and len(failed) == 1 and report.requeued == []
    assert failed[0]["backend"] == "fault" and "died while running this trial" in failed[0]["error"]
    assert failed[0]["node_id"] == next(s for s in seats if s.name == failed[0]["worker"]).node.node_id
    assert list(report.lost_workers) == [failed[0]["worker"]]


@pytest.mark.parametrize("name", ["INFER_ORCH_HEAD_TIMEOUT_S", "INFER_ORCH_CONNECT_WAIT_S"])
def test_a_bad_wait_setting_is_refused_before_anything_runs(tmp_path, monkeypatch, name):
    plan = tmp_path / "p.yaml"
    plan.write_text(plan_text("p", [1], 0.01))
    monkeypatch.setenv(name, "soon")
    res = CliRunner().invoke(app, ["run", str(plan), "--out", str(tmp_path / "o"), "--address", "127.0.0.1:1"])
    assert res.exit_code == 2
    assert f"{name}='soon': expected a positive number of seconds" in res.output
    assert not (tmp_path / "o").exists() and "Traceback" not in res.output
