"""Nothing lost: a driver killed or interrupted mid-run, then ``--resume``; resume's refusals.

The drivers are real ``infer-orch`` subprocesses joined to the tests' Ray (4 logical GPUs), killed
with real signals.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import time

import pyarrow.parquet as pq
import pytest
from helpers import REPO, stored_rows
from typer.testing import CliRunner

from orchestrator.cli import app
from orchestrator.errors import InputError, Interrupted, OutputError
from orchestrator.plan.expand import expand
from orchestrator.plan.load import load_plan
from orchestrator.results.read import load_results
from orchestrator.run.api import run_plan

SLOW_PLAN = """\
name: slow
device: cuda
models: [torchvision:resnet18]
matrix:
  batch_sizes: [1, 2, 3, 4, 5, 6]
  dtypes: [fp32, fp16]
  backends:
    - backend: sleep
      options: {step_s: 0.15}  # 1.2 s a trial: the signal must land mid-run even on a busy machine
# exactly 8 timed iterations: no adaptive warm-up (it ran 20 more), no CI target (4.5 s a trial, not 1.2 s)
measure: {warmup_iters: 0, warmup_max_iters: 0, iters: 8, target_rel_ci: null, max_time_s: 5}
"""


def cli(*args):
    return [sys.executable, "-m", "orchestrator.cli", *map(str, args)]


def start_driver(plan, out, address):
    env = {**os.environ, "COLUMNS": "300"}
    return subprocess.Popen(cli("run", plan, "--out", out, "--address", address, "--workers", 2), cwd=REPO,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for_parts(out, n, proc, timeout=60):
    """Until the parts hold ``n`` trials."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if stored_rows(out) >= n:
            return
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.1)
    raise AssertionError(f"no {n} trials in part files in {timeout} s")


def assert_complete(out, plan):
    """Every trial exactly once, of one run continued, compacted into one file (no part left)."""
    ids = sorted(t.trial_id for t in expand(load_plan(plan)))
    assert not list(out.glob("part-*.parquet")) and not list(out.glob(".*"))
    rows = pq.read_table(out / "results.parquet").to_pylist()
    assert sorted(r["trial_id"] for r in rows) == ids  # every trial exactly once
    assert len({r["run_id"] for r in rows}) == 1  # one run, continued
    assert pq.read_table(out).num_rows == len(ids)
    return rows


def started(out):
    """trial id -> when its stored row's trial started (parts before compaction, or the compacted file)."""
    return {r["trial_id"]: r["started_at"] for r in load_results(out, columns=["trial_id", "started_at"]).to_pylist()}


@pytest.fixture
def address(ray_gpus):
    return ray_gpus.get_runtime_context().gcs_address


@pytest.mark.slow
def test_driver_killed_mid_run_then_resume_runs_only_the_missing_trials(address, write_plan, tmp_path):
    plan, out = write_plan(SLOW_PLAN), tmp_path / "out"
    proc = start_driver(plan, out, address)
    try:
        wait_for_parts(out, 2, proc)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.communicate()
    before = started(out)  # from the parts: the killed run never compacted
    assert 2 <= len(before) < 12 and stored_rows(out) == len(before)

    result = run_plan(plan, resume=out, workers=2)
    assert len(result.rows) == 12 - len(before) and set(result.counts) == {"ok"}
    assert sorted(result.kept.values()) == ["ok"] * len(before)
    assert_complete(out, plan)
    # the stored trials were not run again
    after = started(out)
    assert all(after[tid] == t for tid, t in before.items())


@pytest.mark.slow
def test_ctrl_c_keeps_results_and_prints_the_resume_command(address, write_plan, tmp_path):
    plan, out = write_plan(SLOW_PLAN), tmp_path / "out"
    proc = start_driver(plan, out, address)
    try:
        wait_for_parts(out, 1, proc)
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 130, stderr[-3000:]
    assert "Traceback" not in stderr
    stored = stored_rows(out)  # the rows waiting in the writer too: written as the run stopped
    assert f"interrupted: {stored} of 12 trials are stored in {out}" in stderr
    assert json.loads((out / "_run.json").read_text())["state"] == "interrupted"
    command = next(line for line in stderr.splitlines() if line.startswith("resume with: "))
    args = shlex.split(command.removeprefix("resume with: "))
    assert args[:5] == ["infer-orch", "run", str(plan), "--resume", str(out)]

    assert args[5:] == ["--address", address, "--workers", "2"]
    done = CliRunner().invoke(app, args[1:])  # that very command (in this process: Ray is already up)
    assert done.exit_code == 0, done.output
    assert f"{12 - stored} trials: {12 - stored} ok" in done.stdout
    assert f"{stored} trials already stored there were kept: {stored} ok" in done.stdout
    assert_complete(out, plan)


FLAKY_PLAN = """\
name: flaky
device: cuda
models: [torchvision:resnet18]
matrix:
  batch_sizes: [1]
  backends:
    - {backend: sleep, options: {step_s: 0.01}}
    - {backend: fault, options: {mode: raise}}
measure: {warmup_iters: 0, warmup_max_iters: 0, iters: 2, max_time_s: 1}
"""


def test_resume_keeps_failed_rows_unless_retry_failed(ray_gpus, write_plan, tmp_path):
    plan, out = write_plan(FLAKY_PLAN), tmp_path / "out"
    first = run_plan(plan, out=out, workers=1)
    assert sorted(first.counts.items()) == [("failed", 1), ("ok", 1)]
    before = started(out)

    again = run_plan(plan, resume=out, workers=1)
    assert again.rows == [] and sorted(again.kept.values()) == ["failed", "ok"]

    # renaming the plan and raising timeouts keep the trial ids: still the same run
    renamed = write_plan(FLAKY_PLAN.replace("name: flaky", "name: flaky2\ntimeout_s: 60"), "renamed.yaml")
    retried = run_plan(renamed, resume=out, retry_failed=True, workers=1)
    assert [r["backend"] for r in retried.rows] == ["fault"] and retried.kept == {
        r["trial_id"]: "ok" for r in first.rows if r["status"] == "ok"}
    now = started(out)
    assert now.keys() == before.keys() and sum(now[k] != before[k] for k in now) == 1  # the failed row replaced
    assert pq.read_table(out).num_rows == 2 and "name: flaky\n" in (out / "_plan.yaml").read_text()
    # the newest attempt wins; the one it replaced stays as history, out of the readers' way
    (failed_id,) = [r["trial_id"] for r in first.rows if r["status"] == "failed"]
    history = pq.read_table(out / "_history/history.parquet").to_pylist()
    assert [(h["trial_id"], h["status"], h["started_at"]) for h in history] == [
        (failed_id, "failed", before[failed_id])]


def test_resume_refuses_a_plan_that_changes_trial_ids_and_writes_nothing(ray_gpus, write_plan, tmp_path):
    plan, out = write_plan(FLAKY_PLAN), tmp_path / "out"
    run_plan(plan, out=out, workers=1)
    snapshot = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    changed = write_plan(FLAKY_PLAN.replace("batch_sizes: [1]", "batch_sizes: [1, 2]"), "changed.yaml")
    with pytest.raises(InputError, match=r"does not describe the run stored there: 2 of its trials are not in "
                                         r"that run and 0 of the run's are not in the plan \(changed: matrix"
                                         r"\.batch_sizes\)"):
        run_plan(changed, resume=out)
    with pytest.raises(OutputError, match=f"already holds results: continue that run with `--resume {out}`"):
        run_plan(plan, out=out)
    with pytest.raises(OutputError, match="not a run directory"):
        run_plan(plan, resume=tmp_path)
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == snapshot


def test_resumed_run_junit_covers_the_kept_trials_too(ray_gpus, write_plan, tmp_path):
    import xml.etree.ElementTree as ET

    plan, out = write_plan(FLAKY_PLAN), tmp_path / "out"
    run_plan(plan, out=out, workers=1)
    junit = tmp_path / "resumed.xml"
    res = CliRunner().invoke(app, ["run", str(plan), "--resume", str(out), "--junit", str(junit)])
    assert res.exit_code == 1, res.output  # the kept failed trial still fails the run
    suite = ET.parse(junit).getroot()
    suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
    assert (suite.get("tests"), suite.get("failures"), suite.get("errors")) == ("2", "1", "0")


def test_the_resume_command_is_complete_and_runs_from_any_directory(tmp_path, monkeypatch):
    """Relative paths made absolute, the cluster, the workers and every option the run used; the
    full path of infer-orch where it was started by one that PATH doesn't give (a Ray job)."""
    from orchestrator.results.resume import resume_command

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["infer-orch", "run"])
    line = resume_command("p.yaml", "out", "ray://head:10001", 4, 1.5, ("ort",), retry_failed=True,
                          retry_invalid=True, extra=["--junit", "/ci/j.xml", "--table", "full"])
    assert shlex.split(line) == ["infer-orch", "run", str(tmp_path / "p.yaml"), "--resume", str(tmp_path / "out"),
                                 "--address", "ray://head:10001", "--workers", "4", "--cpus-per-worker", "1.5",
                                 "--profile", "ort", "--retry-failed", "--retry-invalid", "--junit", "/ci/j.xml",
                                 "--table", "full"]
    script = tmp_path / "venv" / "bin" / "infer-orch"
    script.parent.mkdir(parents=True)
    script.write_text("#!/bin/sh\n")
    script.chmod(0o755)
    monkeypatch.setattr(sys, "argv", [str(script), "run"])
    monkeypatch.setenv("PATH", "/usr/bin:/bin")  # not on PATH: as on a cluster's nodes
    assert shlex.split(resume_command("p.yaml", "out", None, None))[0] == str(script)
    monkeypatch.setenv("PATH", f"{script.parent}:/usr/bin")
    assert shlex.split(resume_command("p.yaml", "out", None, None))[0] == "infer-orch"


def test_a_run_prints_absolute_paths_and_a_stopped_one_resumes_on_the_cluster_it_joined(
        ray_gpus, write_plan, tmp_path, monkeypatch):
    """A relative --out (a Ray job's directory is the one `ray start` ran in): the paths printed and
    returned are absolute. Stopped, the run prints the command with RAY_ADDRESS (how a Ray job joins
    its cluster) as --address and the CLI's own options."""
    plan = write_plan(SLOW_PLAN.replace("[1, 2, 3, 4, 5, 6]", "[1]").replace("[fp32, fp16]", "[fp32]")
                      .replace("step_s: 0.15", "step_s: 0.001"))
    monkeypatch.chdir(tmp_path)
    res = CliRunner().invoke(app, ["run", str(plan), "--out", "rel", "--workers", "1", "--junit", "j.xml"],
                             env={"COLUMNS": "300"})
    assert res.exit_code == 0, res.output
    assert f"Results: {tmp_path / 'rel'}" in " ".join(res.stdout.split())
    assert f"JUnit: {tmp_path / 'j.xml'}" in res.stdout

    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.1:6379")

    def stop(row):
        raise KeyboardInterrupt

    with pytest.raises(Interrupted) as stopped:
        run_plan(plan, out="rel2", workers=1, on_row=stop, command_options=["--junit", str(tmp_path / "j.xml")])
    message = str(stopped.value)
    assert f"stored in {tmp_path / 'rel2'}" in message
    command = shlex.split(message.split("resume with: ", 1)[1])
    assert command == ["infer-orch", "run", str(plan), "--resume", str(tmp_path / "rel2"), "--address",
                       "10.0.0.1:6379", "--workers", "1", "--junit", str(tmp_path / "j.xml")]


def test_a_stop_after_the_run_says_where_the_rows_are_with_the_signal_s_exit_code(
        ray_gpus, write_plan, tmp_path, monkeypatch):
    """SIGTERM while the results table prints (injected there: every trial is stored by then): one
    line that says so, exit 143, not Typer's silent 130."""
    from orchestrator.cli import run as run_command
    from orchestrator.errors import Terminated

    def terminated(*args, **kwargs):
        raise Terminated()

    plan = write_plan(SLOW_PLAN.replace("[1, 2, 3, 4, 5, 6]", "[1]").replace("[fp32, fp16]", "[fp32]")
                      .replace("step_s: 0.15", "step_s: 0.001"))
    monkeypatch.setattr(run_command, "print_results", terminated)
    res = CliRunner().invoke(app, ["run", str(plan), "--out", str(tmp_path / "out"), "--workers", "1"])
    assert res.exit_code == 143, res.output
    assert res.stderr.strip().splitlines()[-1] == ("terminated (SIGTERM) after the run: its trials are stored in "
                                                   f"{tmp_path / 'out'}")  # after the progress lines
    assert len(load_results(tmp_path / "out")) == 1
