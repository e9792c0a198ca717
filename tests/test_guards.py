"""Inputs that would fail every trial on the workers, or read what they should not, are refused by
`validate` (exit 2, one located line): an ONNX file newer than the installed ONNX Runtime reads,
external data outside the model's folder. And a driver on the head's machine uses the token of a
`ray start` cluster that asks for one."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from helpers import cli

PLAN = """\
name: guard
device: cpu
models: [{{onnx: {model}}}]
matrix:
  batch_sizes: [1]
  dtypes: [fp32]
  backends: [{backend}]
measure: {{warmup_iters: 0, warmup_max_iters: 0, iters: 2}}
"""


def _model(ir_version: int | None = None, external: bool = False):
    """x + w, x of shape [1, 4]; w an initializer (in the file, or external data w.bin beside it)."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])
    w = numpy_helper.from_array(np.ones(4, dtype=np.float32), "w")
    graph = helper.make_graph([helper.make_node("Add", ["x", "w"], ["y"])], "g", [x], [y], [w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = ir_version or 8
    return model


def _validate(tmp_path: Path, model_name: str = "net.onnx", backend: str = "ort"):
    plan = tmp_path / "plan.yaml"
    plan.write_text(PLAN.format(model=model_name, backend=backend))
    done = cli("validate", plan)
    return done.returncode, " ".join((done.stdout + done.stderr).split())


def test_an_onnx_file_newer_than_the_installed_onnx_runtime_is_refused(tmp_path):
    pytest.importorskip("onnxruntime")
    import onnx

    from orchestrator.plan.onnxfile import ort_max_ir_version

    version, most = ort_max_ir_version()
    onnx.save(_model(ir_version=most + 1), str(tmp_path / "net.onnx"))
    code, out = _validate(tmp_path)
    assert code == 2, out
    assert f"{tmp_path / 'net.onnx'} has ONNX IR version {most + 1}" in out
    assert f"(onnxruntime {version}) reads up to IR version {most}" in out
    assert "models[0]" in out and "Traceback" not in out

    # the same file on a backend that doesn't run it on ORT: not this check's business
    code, out = _validate(tmp_path, backend="sleep")
    assert code == 0 and "valid, 1 trials" in out and "IR version" not in out, out

    # a file the runtime reads passes
    onnx.save(_model(ir_version=most), str(tmp_path / "net.onnx"))
    code, out = _validate(tmp_path)
    assert code == 0 and "valid, 1 trials" in out, out


def test_the_probe_matches_what_onnx_runtime_says_about_a_real_file(tmp_path):
    """The maximum comes from ORT itself, not a table: a file at that version loads, one above fails."""
    ort = pytest.importorskip("onnxruntime")

    from orchestrator.plan.onnxfile import ort_max_ir_version

    _, most = ort_max_ir_version()
    ort.InferenceSession(_model(ir_version=most).SerializeToString(), providers=["CPUExecutionProvider"])
    with pytest.raises(Exception, match=f"Unsupported model IR version: {most + 1}"):
        ort.InferenceSession(_model(ir_version=most + 1).SerializeToString(), providers=["CPUExecutionProvider"])


def test_without_onnx_runtime_on_the_driver_nothing_is_guessed(tmp_path, monkeypatch):
    import sys

    import onnx

    from orchestrator.plan import onnxfile

    onnxfile.ort_max_ir_version.cache_clear()
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import fails as if not installed
    try:
        onnx.save(_model(ir_version=99), str(tmp_path / "net.onnx"))
        code, out = _validate(tmp_path)
        assert code == 0 and "valid" in out, out
    finally:
        onnxfile.ort_max_ir_version.cache_clear()


def _external(folder: Path, location: str) -> Path:
    """net.onnx in ``folder`` whose tensor w is external data saved as w.bin, then pointed at ``location``."""
    import onnx

    folder.mkdir(parents=True, exist_ok=True)
    model = _model()
    onnx.save(model, str(folder / "net.onnx"), save_as_external_data=True, location="w.bin", size_threshold=0)
    model = onnx.load(str(folder / "net.onnx"), load_external_data=False)
    for t in model.graph.initializer:
        for e in t.external_data:
            if e.key == "location":
                e.value = location
    onnx.save(model, str(folder / "net.onnx"))
    return folder / "net.onnx"


def test_external_data_beside_the_model_is_accepted(tmp_path):
    _external(tmp_path, "w.bin")
    code, out = _validate(tmp_path)
    assert code == 0, out


@pytest.mark.parametrize("how", ["dotdot", "absolute", "symlink"])
def test_external_data_outside_the_model_folder_is_refused(tmp_path, how):
    models = tmp_path / "models"
    outside = tmp_path / "secret.bin"
    outside.write_bytes(b"\0" * 16)
    if how == "dotdot":
        path = _external(models, "../secret.bin")
    elif how == "absolute":
        path = _external(models, str(outside))
    else:
        path = _external(models, "w.bin")
        (models / "w.bin").unlink()
        os.symlink(outside, models / "w.bin")
    code, out = _validate(tmp_path, model_name="models/net.onnx")
    assert code == 2, out
    assert "models[0]" in out and str(path) in out and "tensor 'w'" in out, out
    assert f"external data must stay in the model file's folder {models}" in out
    assert str(outside) in out and "Traceback" not in out


# --- the token of a `ray start` cluster on this machine ------------------------------------------

CONNECT = """
import json, sys, ray
from orchestrator.run.cluster import connect
from orchestrator.errors import ClusterError
try:
    connect(sys.argv[1])
except ClusterError as exc:
    print(json.dumps({"error": str(exc)}))
    sys.exit(2)
print(json.dumps({"cpus": ray.cluster_resources().get("CPU")}))
"""


def _driver(address: str, home: Path, **env: str):
    import json
    import subprocess
    import sys

    from helpers import REPO

    base = {k: v for k, v in os.environ.items() if not k.startswith("RAY_AUTH_")}
    done = subprocess.run([sys.executable, "-c", CONNECT, address], cwd=REPO, capture_output=True, text=True,
                          timeout=120, env={**base, "HOME": str(home), "PYTHONPATH": str(REPO), **env})
    return done.returncode, json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_address_on_the_heads_machine_uses_its_token(tmp_path):
    """`ray start --head` with ~/.ray/auth_token (Ray turns token authentication on), then a driver
    with `--address IP:PORT` and no RAY_AUTH_MODE: connected with that token. Without a token file
    the message says how to give one. HOME points into tmp_path: the machine's ~/.ray is not read."""
    import secrets

    from raycluster import RayCluster

    home = tmp_path / "home"
    (home / ".ray").mkdir(parents=True)
    (home / ".ray" / "auth_token").write_text(secrets.token_hex(32))
    cluster = RayCluster()
    cluster.env = {k: v for k, v in cluster.env.items() if not k.startswith("RAY_AUTH_")}
    cluster.env["HOME"] = str(home)
    try:
        cluster.add_node("head", num_cpus=1, num_gpus=0, resources={})
        code, out = _driver(cluster.address, home)
        assert code == 0 and out == {"cpus": 1.0}, out

        other = tmp_path / "other-home"  # a user without the token, who says token mode is on
        other.mkdir()
        code, out = _driver(cluster.address, other, RAY_AUTH_MODE="token")
        assert code == 2 and "the cluster uses token authentication" in out["error"], out
    finally:
        cluster.stop()


def test_model_files_travel_with_the_run_and_workers_use_the_shipped_copy(tmp_path, ray_gpus, monkeypatch):
    """No shared filesystem needed: once the workers have started, the ONNX file (with its external
    data) and the python: factory's package are moved away from where the driver found them; every
    trial still runs, from the node's copy, and the rows still name the driver's paths."""
    pytest.importorskip("onnxruntime")
    import onnx

    from orchestrator.results.read import load_results
    from orchestrator.run.api import run_plan

    models, src = tmp_path / "models", tmp_path / "src"
    models.mkdir()
    onnx.save(_model(), str(models / "net.onnx"), save_as_external_data=True, location="w.bin", size_threshold=0)
    assert (models / "w.bin").is_file()
    (src / "mynets").mkdir(parents=True)
    (src / "mynets" / "__init__.py").write_text("")
    (src / "mynets" / "tiny.py").write_text(
        "import torch\n\ndef make():\n    return torch.nn.Sequential(torch.nn.Linear(4, 2))\n")
    monkeypatch.setenv("PYTHONPATH", str(src))  # the driver's; the workers' Ray was started without it
    plan = tmp_path / "plan.yaml"
    plan.write_text(PLAN.format(model="models/net.onnx", backend="ort").replace(
        "models: [{onnx: models/net.onnx}]",
        "models: [{onnx: models/net.onnx}, {python: 'mynets.tiny:make', input_shape: [4]}]").replace(
        "backends: [ort]", "backends: [ort, torch-eager]\n  exclude: [{backend: ort, model: make}]"))

    def move_away(*_):
        models.rename(tmp_path / "elsewhere")
        src.rename(tmp_path / "src-elsewhere")

    run_plan(plan, out=tmp_path / "out", workers=1, on_start=move_away)
    rows = load_results(tmp_path / "out").to_pylist()
    assert not models.exists() and not src.exists()
    by = {(r["model_source"].split(":")[0], r["backend"]): r for r in rows}
    assert by[("onnx", "ort")]["status"] == "ok", by[("onnx", "ort")].get("error")
    assert by[("python", "torch-eager")]["status"] == "ok", by[("python", "torch-eager")].get("error")
    assert by[("onnx", "ort")]["model_source"] == f"onnx:{models / 'net.onnx'}"


def test_a_model_folder_travels_with_the_run_and_a_worker_gets_its_nodes_copy(tmp_path, ray_gpus):
    """An hf-causal model given as a save_pretrained folder goes into the object store as the run
    starts, as the files of the other model kinds do; once the driver's folder is gone, a worker's
    trial names its node's copy, whose files are the folder's (their loading: tests/test_generation.py)."""
    import json

    from orchestrator.plan.expand import expand
    from orchestrator.plan.load import parse_plan
    from orchestrator.run.shipping import ship
    from workers.actor import localised
    from workers.generation.models import shape_of

    folder = tmp_path / "models" / "tiny-llama"
    (folder / "sub").mkdir(parents=True)
    config = {"model_type": "llama", "hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
              "vocab_size": 64, "max_position_embeddings": 16}
    files = {"config.json": json.dumps(config), "model.safetensors": "weights", "sub/tokenizer.json": "{}"}
    for name, text in files.items():
        (folder / name).write_text(text)
    (folder / "__pycache__").mkdir()
    (folder / "__pycache__" / "x.pyc").write_text("not shipped")
    plan = {"name": "ship", "device": "cpu", "models": [{"hf-causal": "models/tiny-llama"}],
            "matrix": {"batch_sizes": [1], "prompt_lens": [4], "new_tokens": [3], "backends": ["torch-eager"]}}
    (trial,) = expand(parse_plan(plan, base_dir=str(tmp_path)))
    shipped = ship([trial], [])
    folder.rename(tmp_path / "elsewhere")
    local = localised(trial, shipped).model.ref
    assert local != trial.model.ref and trial.model.ref == str(folder)
    copied = sorted(str(p.relative_to(local)) for p in Path(local).rglob("*") if p.is_file())
    assert copied == sorted(files) and all((Path(local) / n).read_text() == t for n, t in files.items())
    assert shape_of(local).layers == 1


# --- python: factories whose module the workers can't import -------------------------------------

FACTORY = """\
name: factory
device: cpu
models: [{{python: '{ref}', input_shape: [3, 8, 8]}}]
matrix:
  batch_sizes: [1]
  backends: [torch-eager]
measure: {{warmup_iters: 0, warmup_max_iters: 0, iters: 2, max_time_s: 1}}
"""


@pytest.mark.parametrize(("ref", "module"), [("nosuchpkg.models:make", "nosuchpkg"),
                                             ("tinynet.nosuch:make", "tinynet.nosuch")])
def test_a_factory_whose_module_is_nowhere_is_refused_at_validation(tmp_path, ref, module):
    plan = tmp_path / "plan.yaml"
    plan.write_text(FACTORY.format(ref=ref))
    done = cli("validate", plan)
    out = " ".join((done.stdout + done.stderr).split())
    assert done.returncode == 2, out
    assert f"models[0]: python: module '{module}' is not found on the workers' path" in out, out
    assert os.getcwd() in out and "Traceback" not in out
    # a plan for a cluster, whose nodes may have the module: one warning line
    done = cli("validate", plan, "--address", "auto")
    assert done.returncode == 0 and f"warning: {plan}: models[0]: python: module '{module}'" in done.stderr
    plan.write_text(FACTORY.format(ref="tinynet:make"))
    assert cli("validate", plan).returncode == 0


def test_with_an_address_a_missing_factory_module_is_a_warning_and_the_run_goes_on(tmp_path, ray_gpus):
    """On a cluster the module may exist on the nodes only: one line says where it was looked for."""
    plan = tmp_path / "plan.yaml"
    plan.write_text(FACTORY.format(ref="nosuchpkg.models:make"))
    done = cli("run", plan, "--out", tmp_path / "out", "--address", "auto")
    err = " ".join(done.stderr.split())
    assert err.count("models[0]: python: module 'nosuchpkg' is not found on the workers' path") == 1, err
    assert "warning: " in err and os.getcwd() in err
    assert done.returncode == 1 and "1 trials: 1 failed" in done.stdout, done.stdout + done.stderr


def test_an_alias_bomb_where_any_value_was_taken_is_refused_at_once(tmp_path):
    """Nine YAML aliases nine deep are 387 million values once written out: refused without that,
    in a model's overrides (which took any value for a torchvision model, and hung validate)."""
    from helpers import infer_orch

    levels = ["x0: &x0 [1, 1, 1, 1, 1, 1, 1, 1, 1]"] + [f"x{i}: &x{i} [{', '.join([f'*x{i - 1}'] * 9)}]"
                                                       for i in range(1, 9)]
    bomb = "    overrides:\n" + "".join(f"      {line}\n" for line in levels)
    matrix = "matrix: {batch_sizes: [1], backends: [torch-eager]}\n"
    for model, message in [
        ("  - torchvision: resnet18\n", "models[0]: overrides: config values of an hf: model's architecture; "
                                      "a torchvision model has none"),
        # the resolved form a run directory stores (a resume reads it back)
        ("  - kind: torchvision\n    ref: resnet18\n    name: r\n    input_shape: [3, 8, 8]\n",
         "models[0].overrides.x8: Input should be a valid boolean, integer, number or string (got [[[["),
    ]:
        plan = tmp_path / "plan.yaml"
        plan.write_text("name: bomb\ndevice: cpu\nmodels:\n" + model + bomb + matrix)
        done = infer_orch("validate", plan, timeout=60)  # it hung for good: a bound, not a timing
        assert done.returncode == 2 and message in " ".join(done.stderr.split()), done.stderr
