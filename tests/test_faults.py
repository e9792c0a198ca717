"""Faults survived: a crashed, hung or out-of-memory worker is replaced; every trial gets its row.

The faults are real (``os.abort()`` kills the worker process, ``hang`` really hangs), injected by
the ``fault`` backend on Ray's logical GPUs; OOM is simulated with torch's own exception.
"""

from __future__ import annotations

import pyarrow.parquet as pq
import pytest

from orchestrator.errors import PlanError
from orchestrator.plan.expand import expand
from orchestrator.plan.load import load_plan
from orchestrator.run.api import run_plan
from workers.faults import oom_message

FAULTS_PLAN = """\
name: faults
device: cuda
models: [torchvision:resnet18]
matrix:
  batch_sizes: [1, 2, 3, 4]
  backends:
    - {backend: sleep, label: s1, options: {step_s: 0.01}}
    - {backend: sleep, label: s2, options: {step_s: 0.011}}
    - {backend: sleep, label: s3, options: {step_s: 0.012}}
    - {backend: sleep, label: s4, options: {step_s: 0.013}}
    - {backend: fault, label: abort, retries: 1, options: {mode: abort}}
    - {backend: fault, label: hang, timeout_s: 4, options: {mode: hang}}
    - {backend: fault, label: raise, options: {mode: raise}}
    - {backend: fault, label: nan, options: {mode: nan}}
  exclude:
    - {label: [abort, hang, raise, nan], batch_size: [2, 3, 4]}
# exactly 1 + 5 iterations (no adaptive warm-up, no CI target): the sleeps are not what is tested
measure: {warmup_iters: 1, warmup_max_iters: 1, iters: 5, target_rel_ci: null, max_time_s: 2}
"""


@pytest.mark.slow
def test_twenty_trials_with_abort_hang_raise_nan_all_accounted_for(ray_gpus, write_plan, tmp_path):
    out = tmp_path / "out"
    result = run_plan(write_plan(FAULTS_PLAN), out=out, workers=2)  # replacing workers is the point, not spreading
    rows = {r["label"] if r["backend"] == "fault" else f"{r['label']}-{r['batch_size']}": r for r in result.rows}
    assert len(result.rows) == 20 and len(rows) == 20
    assert result.counts == {"ok": 16, "failed": 2, "timeout": 1, "parity_failed": 1}, result.counts

    abort, hang, raised, nan = rows["abort"], rows["hang"], rows["raise"], rows["nan"]
    # the aborted worker died twice (retries: 1); both attempts are in the row
    assert abort["status"] == "failed" and abort["attempt"] == 2 and len(abort["earlier_errors"]) == 1
    assert "died while running this trial" in abort["error"] and abort["worker_replaced"]
    assert hang["status"] == "timeout" and "timeout_s (4 s)" in hang["error"] and hang["worker_replaced"]
    assert hang["timeout_s"] == 4 and hang["attempt"] == 1
    assert raised["status"] == "failed" and "injected error" in raised["error"] and "Traceback" in raised["traceback"]
    assert not raised["worker_replaced"]
    assert nan["status"] == "parity_failed" and "NaN" in nan["error"]
    # every row is persisted, one part file each, and reads
    table = pq.read_table(out)
    assert table.num_rows == 20 and sorted(table.column("trial_id").to_pylist()) == sorted(rows[k]["trial_id"]
                                                                                           for k in rows)
    assert set(table.column("timeout_s").to_pylist()) == {4.0, 900.0}


def test_oom_is_its_own_status_and_the_worker_is_replaced_before_the_next_trial(ray_gpus, write_plan, tmp_path):
    plan = write_plan("""\
        name: oom
        device: cuda
        models: [torchvision:resnet18]
        matrix:
          batch_sizes: [1]
          backends:
            - {backend: fault, options: {mode: oom, where: setup}}
            - {backend: sleep, options: {step_s: 0.01}}
        measure: {warmup_iters: 1, warmup_max_iters: 1, iters: 3, max_time_s: 2}
        """)
    result = run_plan(plan, out=tmp_path / "out", workers=1)
    oom, ok = sorted(result.rows, key=lambda r: r["backend"])
    assert oom["status"] == "oom" and "Tried to allocate 20.00 GiB" in oom["error"] and oom["worker_replaced"]
    assert ok["status"] == "ok" and ok["worker"] == oom["worker"]


def test_oom_messages_of_torch_and_ort_are_recognised():
    import torch

    assert oom_message(torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"))
    ort = RuntimeError("[ONNXRuntimeError] : 6 : RUNTIME_EXCEPTION : Non-zero status code returned while running "
                       "Conv node. BFCArena::AllocateRawInternal Failed to allocate memory for requested buffer "
                       "of size 1073741824")
    assert "requested buffer of size 1073741824" in oom_message(ort)
    assert oom_message(ValueError("shape mismatch")) is None


@pytest.mark.parametrize(("snippet", "message"), [
    ("timeout_s: 0", "timeout_s: Input should be greater than 0"),
    ("timeout_s: 1", "timeout_s: 1 s leaves no time to measure"),
    ("retries: -1", "retries: Input should be greater than or equal to 0"),
    ("retries: many", "retries: Input should be a valid integer"),
])
def test_bad_timeout_and_retries_are_located(write_plan, snippet, message):
    with pytest.raises(PlanError, match=message):
        expand(load_plan(write_plan(FAULTS_PLAN + snippet + "\n")))
    entry = "{backend: fault, label: hang, timeout_s: 4,"
    with pytest.raises(PlanError, match=r"matrix\.backends\[5\]\.timeout_s: 0\.5 s leaves no time"):
        load_plan(write_plan(FAULTS_PLAN.replace(entry, "{backend: fault, label: hang, timeout_s: 0.5,"), "b.yaml"))


@pytest.mark.gpu
def test_real_cuda_oom_is_status_oom_and_the_next_trial_runs():
    import torch

    from orchestrator.plan.load import parse_plan
    from workers.models.build import ModelStore
    from workers.trial import run_trial

    data = {"name": "g", "device": "cuda", "models": [{"python": "hognet:make", "input_shape": [8]},
                                                      "torchvision:resnet18"],
            "matrix": {"batch_sizes": [2], "backends": ["torch-eager"]},
            "measure": {"warmup_iters": 1, "iters": 3}}
    store = ModelStore()
    before = torch.cuda.memory_allocated()
    hog, ok = [run_trial(t, "cuda", store) for t in expand(parse_plan(data))]
    assert hog["status"] == "oom" and "Tried to allocate 1024.00 GiB" in hog["error"], hog["error"]
    assert ok["status"] == "ok", ok.get("error")
    torch.cuda.empty_cache()
    assert torch.cuda.memory_allocated() - before < 64 << 20  # the failed trial's tensors were freed


COLOURED = """\
name: coloured
device: cpu
models: [torchvision:resnet18]
matrix:
  batch_sizes: [1]
  backends:
    - backend: fault
      label: coloured
      options: {mode: raise, message: "\\e[96mTorchRuntimeError\\e[0m: \\e[1mbad\\e[0m"}
measure: {warmup_iters: 0, warmup_max_iters: 0, iters: 2, target_rel_ci: null}
"""


def test_an_error_with_terminal_colours_is_stored_and_shown_as_plain_text(ray_gpus, write_plan, tmp_path):
    """A library's coloured message (torch.export colours its errors): no escape code in the row,
    the stored Parquet, the table's note or the line printed as the trial fails."""
    from helpers import cli

    from orchestrator.results.read import load_results

    res = cli("run", write_plan(COLOURED), "--out", tmp_path / "out", "--table", "full")
    assert res.returncode == 1, res.stdout + res.stderr
    [row] = load_results(tmp_path / "out").to_pylist()
    assert row["status"] == "failed" and row["error"] == "RuntimeError: TorchRuntimeError: bad"
    assert "\x1b" not in row["traceback"] and "[96m" not in row["traceback"]
    assert "TorchRuntimeError: bad" in res.stdout and "TorchRuntimeError: bad" in res.stderr
    assert "\x1b" not in res.stdout + res.stderr and "[96m" not in res.stdout + res.stderr
