"""Clean stops, whatever stops the run: nothing of an embedded Ray outlives its driver
(SIGKILL, Ctrl-C, SIGTERM, a normal ending), SIGTERM takes Ctrl-C's way out with exit 143, a full
disk or file-size limit stops the run with one line and whole part files, and Ray's own messages
go to the run's log, not the terminal.

Each test is one ``infer-orch run`` in a subprocess (its own embedded Ray), as a user runs it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from helpers import REPO, cli, stored_rows

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads the process tree from /proc")]

PLAN = """\
name: stops
device: cpu
models: [torchvision:resnet18]
matrix:
  batch_sizes: [1, 2, 3, 4, 5, 6]
  backends:
    - backend: sleep
      options: {step_s: 0.15}  # ~1.2 s a trial: the stop lands mid-run
# exactly 8 timed sleeps: no adaptive warm-up (its windows of 10 sleeps made a trial 4.5-11 s), no CI target
measure: {warmup_iters: 0, warmup_max_iters: 0, iters: 8, target_rel_ci: null, max_time_s: 5}
"""

FAULT_PLAN = """\
name: fault
device: cpu
models: [torchvision:resnet18]
matrix:
  batch_sizes: [1]
  backends:
    - {backend: sleep, label: s1, options: {step_s: 0.01}}
    - {backend: fault, label: abort, options: {mode: abort}}
measure: {warmup_iters: 0, warmup_max_iters: 0, iters: 3, target_rel_ci: null, max_time_s: 2}
"""


def descendants(pid: int) -> set[int]:
    """Every process below ``pid``, from /proc."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


def alive(pids: set[int]) -> set[int]:
    left = set()
    for p in pids:
        try:
            state = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z":
            left.add(p)
    return left


def gone_within(pids: set[int], limit: float) -> float:
    """Seconds until none of ``pids`` is alive; fails naming the ones left after ``limit``."""
    start = time.monotonic()
    while alive(pids) and time.monotonic() - start < limit:
        time.sleep(0.2)
    left = alive(pids)
    assert not left, [Path(f"/proc/{p}/cmdline").read_bytes()[:80] for p in left]
    return time.monotonic() - start


def start_run(tmp_path: Path, plan_text: str, *argv: str) -> tuple[subprocess.Popen, Path, Path]:
    plan, out = tmp_path / "plan.yaml", tmp_path / "out"
    plan.write_text(plan_text)
    proc = subprocess.Popen([sys.executable, *argv, "run", str(plan), "--out", str(out), "--workers", "1"],
                            cwd=REPO, env={**os.environ, "COLUMNS": "300"}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    return proc, plan, out


def first_part(proc: subprocess.Popen, out: Path) -> set[int]:
    """Wait for the run's first stored trial; the driver's descendants then (the embedded node)."""
    deadline = time.monotonic() + 90
    while not list(out.glob("part-*.parquet")):
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "no trial stored in 90 s"
        time.sleep(0.1)
    found = descendants(proc.pid)
    assert found
    return found


def test_sigkill_of_the_driver_leaves_nothing_of_its_ray_after_30_s(tmp_path):
    # Before the watchdog: ray::DashboardAgent and ray::RuntimeEnvAgent lived on ~60-85 s.
    proc, _, out = start_run(tmp_path, PLAN, "-m", "orchestrator.cli")
    try:
        ray_processes = first_part(proc, out)
        proc.kill()
        proc.wait(timeout=10)
        gone_within(ray_processes, 30)
    finally:
        proc.kill()
        proc.communicate()


def start_moment(proc: subprocess.Popen, moment: str) -> set[int]:
    """Wait for a moment of Ray's start-up; the driver's descendants seen until then. ``gcs``: Ray's
    first process (the GCS) is up, the raylet not yet; ``agents``: the raylet's agents are up (the
    dashboard's and the runtime-env agent), no trial stored yet."""
    want = {"gcs": ("gcs_server",), "agents": ("dashboard/agent.py", "runtime_env/agent/main.py", "ray::")}[moment]
    deadline, seen = time.monotonic() + 90, set()
    while True:
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, f"no {moment} in 90 s"
        seen |= descendants(proc.pid)
        if any(w in c for c in cmdlines(seen) for w in want):
            return seen
        time.sleep(0.02)


@pytest.mark.parametrize("sig, moment", [(signal.SIGTERM, "gcs"), (signal.SIGTERM, "agents"),
                                         (signal.SIGINT, "gcs"), (signal.SIGINT, "agents"),
                                         (signal.SIGKILL, "gcs"), (signal.SIGKILL, "agents")],
                         ids=["term-gcs", "term-agents", "int-gcs", "int-agents", "kill-gcs", "kill-agents"])
def test_a_stop_while_ray_starts_says_one_line_and_leaves_nothing_of_it(tmp_path, sig, moment):
    """SIGTERM and Ctrl-C while Ray starts: exit 143 and 130 with one line, no traceback (Ray's own
    handler used to exit 15 with no word, and Ctrl-C said nothing); after those and SIGKILL nothing
    of the node started so far lives 30 s on (its agents used to, 50-65 s, parented to init)."""
    proc, _, out = start_run(tmp_path, PLAN, "-m", "orchestrator.cli")
    try:
        seen = start_moment(proc, moment)
        if sig == signal.SIGINT:
            os.killpg(proc.pid, sig)  # a terminal's Ctrl-C reaches the whole foreground group, Ray's node too
        else:
            proc.send_signal(sig)
        deadline = time.monotonic() + 20
        while proc.poll() is None and time.monotonic() < deadline:  # what starts meanwhile counts too
            seen |= descendants(proc.pid)
            time.sleep(0.05)
        _, stderr = proc.communicate(timeout=30)
    finally:
        proc.kill()
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    if sig == signal.SIGKILL:
        assert proc.returncode == -signal.SIGKILL
    else:
        code, said = (143, "terminated (SIGTERM)") if sig == signal.SIGTERM else (130, "interrupted")
        assert proc.returncode == code, stderr[-3000:]
        assert "Traceback" not in stderr and lines, stderr[-3000:]
        if not list(out.glob("part-*.parquet")) and "running" not in stderr:  # still starting: one line
            assert lines == [f"{said} while starting, before any trial ran: nothing was stored; the same command "
                             "starts the run again"], stderr[-3000:]
        else:  # the workers were up by the time the signal was handled: the run's own stop
            assert any(ln.startswith(said) for ln in lines), stderr[-3000:]
    gone_within(seen, 30)


def cmdlines(pids: set[int]) -> list[str]:
    found = []
    for p in pids:
        try:
            found.append(Path(f"/proc/{p}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"))
        except OSError:
            pass
    return found


def test_ctrl_c_in_the_terminal_leaves_nothing_of_its_ray(tmp_path):
    proc, _, out = start_run(tmp_path, PLAN, "-m", "orchestrator.cli")
    try:
        ray_processes = first_part(proc, out)
        # the embedded node is the lean one (orchestrator.run.cluster.lean_node): no autoscaler monitor,
        # no log monitor, no API server, the dashboard's agent in minimal mode
        running = cmdlines(ray_processes)
        assert any("gcs_server" in c for c in running) and any("default_worker" in c for c in running), running
        assert not [c for c in running if "log_monitor.py" in c or "autoscaler/_private/monitor.py" in c], running
        assert not [c for c in running if "dashboard/dashboard.py" in c], running
        assert [c for c in running if "dashboard/agent.py" in c and "--minimal" in c], running
        os.killpg(proc.pid, signal.SIGINT)  # a terminal's Ctrl-C: the whole foreground process group
        _, stderr = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 130, stderr[-3000:]
    assert "interrupted:" in stderr and "Traceback" not in stderr
    gone_within(ray_processes, 30)


def test_sigterm_keeps_results_prints_the_resume_command_exits_143_and_leaves_no_ray(tmp_path):
    # what schedulers and CI runners send; Ray's driver installs its own handler (kill the node, exit 1)
    proc, plan, out = start_run(tmp_path, PLAN, "-m", "orchestrator.cli")
    try:
        ray_processes = first_part(proc, out)
        sent = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=30)
        stopped_in = time.monotonic() - sent
    finally:
        proc.kill()
    assert proc.returncode == 143, stderr[-3000:]
    assert "Traceback" not in stderr
    stored = stored_rows(out)
    # it stopped, rather than finishing the run first: the trials still queued (1.2 s each) never ran
    assert stored < 6, f"all 6 trials stored: the run went on for {stopped_in:.1f} s after SIGTERM"
    assert f"terminated (SIGTERM): {stored} of 6 trials are stored in {out}" in stderr
    assert json.loads((out / "_run.json").read_text())["state"] == "interrupted"
    assert any(line.startswith(f"resume with: infer-orch run {plan} --resume {out}") for line in stderr.splitlines())
    gone_within(ray_processes, 30)


def test_ray_s_worker_died_paragraph_goes_to_the_run_log_and_a_normal_ending_leaves_no_ray(tmp_path):
    proc, _, out = start_run(tmp_path, FAULT_PLAN, "-m", "orchestrator.cli")
    try:
        ray_processes = descendants(proc.pid)
        while proc.poll() is None:  # the node's processes, including the worker that is aborted
            ray_processes |= descendants(proc.pid)
            time.sleep(0.2)
        stdout, stderr = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 1, stderr[-3000:]
    terminal = stdout + stderr
    assert "failed abort resnet18 bs=1" in stderr and "died while running this" in stderr
    assert "(raylet)" not in terminal and "A worker died or was killed" not in terminal
    assert "Token authentication" not in terminal
    log = (out / "_ray.log").read_text()
    assert "(raylet) A worker died or was killed while executing a task" in log
    assert len(ray_processes) > 3
    gone_within(ray_processes, 30)


DRIVER = """\
import resource, signal, sys, time
from pathlib import Path

signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writes past the limit fail with EFBIG, not a kill

import orchestrator.run.api

real_run_plan = orchestrator.run.api.run_plan


def run_plan(*args, on_row=None, **kwargs):
    def first_row_then_limit(row):
        on_row(row)
        while not list(Path(kwargs["out"]).glob("part-*.parquet")):  # the first row's part, written
            time.sleep(0.01)
        # the driver only, once Ray runs (its processes would inherit the limit and die of SIGXFSZ)
        resource.setrlimit(resource.RLIMIT_FSIZE, (2048, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))

    return real_run_plan(*args, on_row=first_row_then_limit, **kwargs)


orchestrator.run.api.run_plan = run_plan  # the CLI imports it as it runs a plan
from orchestrator.cli import main

sys.argv[0] = "infer-orch"
main()
"""


def test_a_file_size_limit_stops_the_run_with_one_line_whole_parts_and_resume_completes(tmp_path, ray_gpus):
    driver = tmp_path / "driver.py"
    driver.write_text(textwrap.dedent(DRIVER))
    proc, plan, out = start_run(tmp_path, PLAN, str(driver))
    stdout, stderr = proc.communicate(timeout=180)
    assert proc.returncode == 1, stderr[-3000:]
    assert "Traceback" not in stdout + stderr
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, stderr
    assert f"could not write results in {out}: a file reached the file-size limit" in errors[0]
    assert f"--resume {out}" in errors[0]
    assert not [p.name for p in out.iterdir() if p.name.endswith(".tmp")]  # no stray temp file
    parts = sorted(out.glob("part-*.parquet"))
    assert len(parts) == 1  # the one written before the limit, whole
    assert pq.read_table(parts[0]).num_rows == 1

    # the resume as the printed command runs it, on this process's Ray (a second cold start proves nothing)
    resumed = cli("run", plan, "--resume", out, "--workers", "1")
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    ids = pq.read_table(out).column("trial_id").to_pylist()
    assert len(ids) == 6 and len(set(ids)) == 6


GPU_PLAN = """\
name: gpu-stops
device: cuda
models: [torchvision:resnet18]
matrix:
  batch_sizes: [1, 2, 3, 4, 5, 6, 7, 8]
  backends: [torch-eager]
measure: {warmup_iters: 5, warmup_max_iters: 5, iters: 50, min_time_s: 1, target_rel_ci: null}
"""


def gpu_compute_pids() -> set[int]:
    """The processes with a compute context on any GPU, as NVML reports them (host PIDs inside a
    container: compared with a set taken before the run, never with this namespace's PIDs)."""
    import pynvml

    pynvml.nvmlInit()
    try:
        return {int(p.pid) for i in range(pynvml.nvmlDeviceGetCount())
                for p in pynvml.nvmlDeviceGetComputeRunningProcesses(pynvml.nvmlDeviceGetHandleByIndex(i))}
    finally:
        pynvml.nvmlShutdown()


@pytest.mark.gpu
@pytest.mark.parametrize("ending", ["sigkill", "normal"])
def test_no_compute_process_of_the_run_is_left_on_the_gpu_30_s_after_it_ends(tmp_path, ending):
    before = gpu_compute_pids()
    proc, _, out = start_run(tmp_path, GPU_PLAN, "-m", "orchestrator.cli")
    try:
        first_part(proc, out)
        during = gpu_compute_pids() - before
        assert during, "the run's worker had no compute context on the GPU"
        if ending == "sigkill":
            proc.kill()
        proc.wait(timeout=180)
        start = time.monotonic()
        while gpu_compute_pids() - before and time.monotonic() - start < 30:
            time.sleep(0.5)
    finally:
        proc.kill()
        proc.communicate()
    assert not gpu_compute_pids() - before, f"still on the GPU 30 s after a {ending} ending"


def test_the_watchdog_started_before_ray_leaves_the_driver_s_earlier_children_alone(tmp_path):
    """Started before ray.init, the watchdog watches every process below the driver: those started
    after it (Ray's) go when the driver lets it go; a child the driver had before (a caller's own)
    stays."""
    from orchestrator.run import reaper

    earlier = subprocess.Popen(["sleep", "60"])
    try:
        watchdog = reaper.start("", [os.getpid()])
        assert watchdog is not None
        time.sleep(0.5)  # its first look at the process tree
        later = subprocess.Popen(["sleep", "60"])
        time.sleep(0.5)
        watchdog.stop()
        assert later.wait(timeout=10) == -signal.SIGTERM
        assert earlier.poll() is None
    finally:
        earlier.kill()
        earlier.wait()
