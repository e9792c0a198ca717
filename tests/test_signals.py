"""SIGTERM (what schedulers and CI runners send) stops a run the way Ctrl-C does, and an embedded
Ray goes with the driver."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers import REPO

PLAN = """\
name: term
device: cpu
models: [torchvision:resnet18]
matrix:
  batch_sizes: [1, 2, 3, 4, 5, 6]
  backends:
    - backend: sleep
      options: {step_s: 0.15}  # ~1.2 s a trial: the signal lands mid-run
measure: {warmup_iters: 0, iters: 8, max_time_s: 5}
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


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads the process tree from /proc")
def test_sigterm_keeps_results_prints_the_resume_command_exits_143_and_leaves_no_ray_behind(tmp_path):
    plan, out = tmp_path / "term.yaml", tmp_path / "out"
    plan.write_text(PLAN)
    env = {**os.environ, "COLUMNS": "300"}
    # an embedded Ray (no --address): the driver starts the node, and Ray installs its SIGTERM handler
    proc = subprocess.Popen([sys.executable, "-m", "orchestrator.cli", "run", str(plan), "--out", str(out),
                             "--workers", "1"], cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        deadline = time.monotonic() + 90
        while not list(out.glob("part-*.parquet")):
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "no trial stored in 90 s"
            time.sleep(0.1)
        ray_processes = descendants(proc.pid)
        assert ray_processes  # the embedded node's processes
        sent = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=30)
        stopped_in = time.monotonic() - sent
    finally:
        proc.kill()
    assert proc.returncode == 143, stderr[-3000:]
    assert stopped_in < 10, f"took {stopped_in:.1f} s to stop"
    assert "Traceback" not in stderr
    stored = len(list(out.glob("part-*.parquet")))
    assert f"terminated (SIGTERM): {stored} of 6 trials are stored in {out}" in stderr
    assert json.loads((out / "_run.json").read_text())["state"] == "interrupted"
    assert any(line.startswith(f"resume with: infer-orch run {plan} --resume {out}") for line in stderr.splitlines())
    deadline = time.monotonic() + 30
    while alive(ray_processes) and time.monotonic() < deadline:
        time.sleep(0.5)
    left = alive(ray_processes)
    assert not left, [Path(f"/proc/{p}/cmdline").read_bytes()[:80] for p in left]
