"""Bad input through the command line: one located line, exit code 2, no traceback, nothing written.

The messages themselves are checked in depth in test_plan.py (through ``load_plan``); here each kind
of bad input goes the user's way, ``infer-orch run PLAN --out DIR``, and must leave DIR absent.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from helpers import REPO
from typer.testing import CliRunner

from orchestrator.cli import app

BASE = """\
name: bad
device: cpu
models: [torchvision:resnet18]
matrix:
  batch_sizes: [1]
  dtypes: [fp32]
  backends: [torch-eager]
measure: {warmup_iters: 0, iters: 2, warmup_max_s: 0.5, max_time_s: 1}  # bounded: a busy machine can't stretch it
"""


def run_cli(*args):
    result = CliRunner().invoke(app, ["run", *map(str, args)])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result


def refused(write_plan, tmp_path, text, out=None):
    out = out or tmp_path / "out"
    result = run_cli(write_plan(text), "--out", out)
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output and not out.exists()
    return " ".join(result.stderr.split())  # rich wraps long lines


def onnx_file(path: Path, shape: list[int]) -> Path:
    import onnx
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, shape)
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g", [x], [y])
    onnx.save(helper.make_model(graph), str(path))
    return path


@pytest.mark.parametrize(("old", "new", "message"), [
    ("batch_sizes: [1]", "batch_sizes: [1", "plan.yaml:6:9: YAML syntax error: did not find expected ',' or ']'"),
    ("iters: 2", "itres: 2", "measure: unknown key 'itres' (did you mean 'iters'?)"),
    ("batch_sizes: [1]", "batch_sizes: [one]", "matrix.batch_sizes[0]: Input should be a valid integer (got 'one')"),
    ("batch_sizes: [1]", "batch_sizes: [1000000000000000000000000000000]",
     "matrix.batch_sizes[0]: Input should be less than or equal to 16777216"),
    ("measure: {", "measure: {iters: 3}\nmeasure: {", "plan.yaml:9: duplicate key 'measure' (first at line 8)"),
    ("backends: [torch-eager]", "backends: [torch-eager]\n  exclude: [{batch_size: 1}]",
     "matrix: no trials left after `exclude`"),
    # a rule with a misspelt name would match nothing and leave in the trials it was meant to take out
    ("backends: [torch-eager]", "backends: [torch-eager]\n  exclude: [{model: resnet81}]",
     "matrix.exclude[0].model: no trial has 'resnet81' (did you mean 'resnet18'?); the plan's models: resnet18"),
    ("torchvision:resnet18", "torchvision:resnet81", "unknown torchvision model 'resnet81'; did you mean resnet18"),
    ("torchvision:resnet18", "missing.onnx", "ONNX file not found:"),
    # a factory no worker of an embedded Ray could import: refused before Ray starts, not four failed rows
    ("torchvision:resnet18", "{python: 'nosuchpkg.models:make', input_shape: [3, 8, 8]}",
     "models[0]: python: module 'nosuchpkg' is not found on the workers' path"),
    ("name: bad", "name: ../bad", "name: String should match pattern"),
    ("iters: 2", "iters: 2, process_repeats: two",
     "measure.process_repeats: Input should be a valid integer (got 'two')"),
])
def test_bad_plan_is_refused_with_a_located_message(write_plan, tmp_path, old, new, message):
    assert message in refused(write_plan, tmp_path, BASE.replace(old, new))


def test_onnx_input_shape_mismatch_is_refused(write_plan, tmp_path):
    onnx_file(tmp_path / "net.onnx", [1, 3, 8, 8])
    text = BASE.replace("[torchvision:resnet18]", "[{onnx: net.onnx, input_shape: [3, 16, 16]}]")
    msg = refused(write_plan, tmp_path, text.replace("[torch-eager]", "[ort]"))
    assert "models[0]: input_shape [3, 16, 16] does not match the ONNX model's input [3, 8, 8]" in msg


def test_unwritable_output_directory_is_refused(write_plan, tmp_path):
    if not os.path.isdir("/proc/sys") or os.access("/proc/sys", os.W_OK):
        pytest.skip("needs a directory this user can't write")
    msg = refused(write_plan, tmp_path, BASE, out=Path("/proc/sys/infer-orch-out"))
    assert "output directory /proc/sys/infer-orch-out: /proc/sys is not writable" in msg


def test_an_output_directory_that_cannot_be_created_is_refused_before_ray_starts(write_plan, tmp_path):
    # /proc takes no new directories, whoever asks (root too): refused like an unwritable one, at once
    msg = refused(write_plan, tmp_path, BASE, out=Path("/proc/infer-orch-out"))
    assert "output directory /proc/infer-orch-out: can't create a directory in /proc" in msg, msg
    assert "Ray" not in msg


def test_accelerator_type_the_cluster_lacks_is_refused(ray_gpus, write_plan, tmp_path):
    text = BASE.replace("device: cpu", "device: cuda\naccelerator_type: H100").replace("[torch-eager]", "[sleep]")
    msg = refused(write_plan, tmp_path, text)
    assert "accelerator_type: H100 but the cluster's GPUs are: none reported; nothing was run" in msg


def test_ray_address_that_does_not_answer_fails_fast_with_a_message(write_plan, tmp_path):
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "INFER_ORCH_CONNECT_WAIT_S": "1", "COLUMNS": "300"}
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "orchestrator.cli", "run", str(write_plan(BASE)), "--out",
                           str(tmp_path / "out"), "--address", f"127.0.0.1:{port}"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and time.monotonic() - t0 < 30
    assert f"error: no Ray cluster answers at '127.0.0.1:{port}' (waited 1 s" in proc.stderr
    assert "Traceback" not in proc.stderr and not (tmp_path / "out").exists()


def test_dtype_a_backend_cannot_do_skips_that_trial_and_runs_the_rest(ray_gpus, write_plan, tmp_path):
    text = BASE.replace("[torchvision:resnet18]", "[{python: 'tinynet:make', input_shape: [3, 16, 16]}]")
    result = run_cli(write_plan(text.replace("dtypes: [fp32]", "dtypes: [fp32, fp16]")), "--out", tmp_path / "out")
    assert result.exit_code == 0, result.output
    rows = {r["dtype"]: r for r in pq.read_table(tmp_path / "out").to_pylist()}
    assert rows["fp32"]["status"] == "ok"
    assert rows["fp16"]["status"] == "skipped"
    assert rows["fp16"]["error"] == ("backend torch-eager does not support dtype fp16 on cpu "
                                     "(supported there: bf16, fp32)")


def test_hostile_labels_and_model_names_write_only_under_the_output_dir(ray_gpus, write_plan, tmp_path):
    text = """\
        name: hostile
        device: cuda
        models:
          - {python: "tinynet:make", input_shape: [3, 8, 8], name: "../../../escaped-model"}
        matrix:
          batch_sizes: [1]
          backends:
            - {backend: sleep, label: "../../escaped-label/x", options: {step_s: 0}}
            - {backend: sleep, label: "/tmp/escaped-abs", options: {step_s: 0.001}}
        measure: {warmup_iters: 0, iters: 1}
        """
    plan, out = write_plan(text), tmp_path / "a" / "out"
    assert run_cli(plan, "--out", out, "--workers", 1).exit_code == 0
    written = {p for p in tmp_path.rglob("*") if p.is_file()} - {plan}
    assert written and all(p.is_relative_to(out) for p in written), written
    assert {p.name for p in written} - {"_plan.yaml", "_run.json", "_ray.log"} == {"results.parquet"}
    assert pq.read_table(out).num_rows == 2
    assert {r["model"] for r in pq.read_table(out).to_pylist()} == {"../../../escaped-model"}
    assert not Path("/tmp/escaped-abs").exists()
