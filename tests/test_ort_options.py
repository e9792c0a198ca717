"""ORT's speed options, fp16 by export, and the TensorRT provider's skip path on a machine without
TensorRT (this one: onnxruntime-gpu lists the provider, the libraries are absent)."""

from __future__ import annotations

import json

import onnx
import pytest
from helpers import run_all, trials_for

from orchestrator.errors import PlanError
from orchestrator.run.inspect import describe
from workers.backends.trt_libs import tensorrt_missing
from workers.contract import ModelSpec
from workers.models.build import ModelStore, onnx_artifact
from workers.trial import run_trial

TINY = ModelSpec(kind="python", ref="tinynet:make", name="make", input_shape=(3, 16, 16))
no_tensorrt = pytest.mark.skipif(tensorrt_missing() is None, reason="TensorRT is installed here")


def ort_trials(options, io=("host",), **kw):
    return trials_for([{"backend": "ort", "options": options}], io=io, **kw)


@pytest.mark.parametrize(("options", "message"), [
    ({"cudnn_conv_algo_search": "FASTEST"},
     "matrix.backends[0].options.cudnn_conv_algo_search: Input should be 'EXHAUSTIVE', 'HEURISTIC' or 'DEFAULT'"),
    ({"arena_extend_strategy": "next_power_of_two"},
     "matrix.backends[0].options.arena_extend_strategy: Input should be 'kNextPowerOfTwo' or 'kSameAsRequested'"),
    ({"prefer_nhwc": "yes please"}, "matrix.backends[0].options.prefer_nhwc: Input should be a valid boolean"),
    ({"providers": ["cpu"], "prefer_nhwc": True, "cudnn_conv_algo_search": "HEURISTIC"},
     "matrix.backends[0].options: cudnn_conv_algo_search, prefer_nhwc: CUDA provider options, but providers "
     "is ['cpu']"),
    ({"providers": ["cuda"], "trt_fp16": True},
     "matrix.backends[0].options: trt_fp16: true is a TensorRT provider option; set providers: [tensorrt, cuda]"),
    ({"providers": ["tensorrt", "cuda"], "trt_fp16": True, "trt_fp32": True}, "unknown key 'trt_fp32' (did you "
                                                                              "mean 'trt_fp16'?)"),
])
def test_bad_ort_options_are_located(options, message):
    with pytest.raises(PlanError) as exc:
        ort_trials(options)
    assert message in str(exc.value)


def test_cuda_options_on_a_cpu_trial_are_skipped_with_the_reason():
    (row,) = run_all(ort_trials({"cudnn_conv_algo_search": "HEURISTIC"}))
    assert row["status"] == "skipped"
    assert row["error"] == "cudnn_conv_algo_search: CUDA provider options; this trial's providers are ['cpu']"


def test_provider_options_the_session_used_are_in_the_row():
    (row,) = run_all(ort_trials({"intra_op_num_threads": 1}))
    assert row["status"] == "ok", row.get("error")
    assert json.loads(row["ort_provider_options"]) == {"CPUExecutionProvider": {}}
    assert row.get("engine_build_s") is None


def test_fp16_is_an_fp16_export_not_a_cast_of_the_input():
    path = onnx_artifact(ModelStore(), TINY, 2, "fp16").path
    graph = onnx.load(str(path)).graph
    elem = onnx.TensorProto.DataType.Name
    assert [elem(i.type.tensor_type.elem_type) for i in graph.input] == ["FLOAT16"]
    float_weights = [i.name for i in graph.initializer if i.data_type == onnx.TensorProto.FLOAT]
    assert not float_weights, f"fp32 weights in the fp16 export: {float_weights}"


@no_tensorrt
def test_tensorrt_without_its_libraries_is_skipped_naming_them():
    # A cuda worker (cuda_ok=False: CUDA can't see a GPU here): the skip check comes first.
    (trial,) = trials_for([{"backend": "ort", "options": {"providers": ["tensorrt", "cuda"], "trt_fp16": True,
                                                          "io_binding": True}}], io=("device",), device="cuda")
    row = run_trial(trial, "cuda", ModelStore(), cuda_ok=False)
    assert row["status"] == "skipped", row.get("error")
    assert row["error"].startswith("TensorRT provider: the TensorRT libraries are not installed")
    assert "libnvinfer.so" in row["error"] and "libnvonnxparser.so" in row["error"]


@no_tensorrt
def test_backends_lists_ort_tensorrt_unavailable_with_the_reason():
    rows = {b["name"]: b for b in describe()["backends"]}
    assert rows["ort"]["available"] and not rows["ort + tensorrt"]["available"]
    assert "libnvinfer.so" in rows["ort + tensorrt"]["note"]


@pytest.mark.gpu
def test_cuda_provider_options_reach_the_session():
    from orchestrator.plan.expand import expand
    from orchestrator.plan.load import parse_plan

    data = {"name": "g", "device": "cuda", "models": ["torchvision:resnet18"],
            "matrix": {"batch_sizes": [8], "dtypes": ["fp32", "fp16"], "io": ["device"], "backends": [
                {"backend": "ort", "label": "tuned", "options": {
                    "io_binding": True, "cudnn_conv_algo_search": "HEURISTIC",
                    "arena_extend_strategy": "kSameAsRequested"}},
                {"backend": "ort", "label": "nhwc", "options": {"io_binding": True, "prefer_nhwc": True}},
                {"backend": "ort", "label": "trt", "options": {
                    "providers": ["tensorrt", "cuda"], "io_binding": True, "trt_fp16": True}}]},
            "measure": {"warmup_iters": 5, "iters": 20, "max_time_s": 3}}
    store = ModelStore()
    trials = expand(parse_plan(data))
    rows = [run_trial(t, "cuda", store) for t in trials]
    again = [run_trial(t, "cuda", store) for t in trials if t.label == "trt"]
    for r in rows + again:
        if r["label"] == "trt" and tensorrt_missing():
            assert r["status"] == "skipped" and "libnvinfer" in r["error"]
            continue
        if r["label"] == "nhwc" and r["status"] == "skipped":
            assert "prefer_nhwc" in r["error"]
            continue
        assert r["status"] == "ok", (r["label"], r["dtype"], r.get("error"))
        cuda = json.loads(r["ort_provider_options"])["CUDAExecutionProvider"]
        if r["label"] == "tuned":
            assert cuda["cudnn_conv_algo_search"] == "HEURISTIC"
        if r["label"] == "nhwc":
            assert cuda["prefer_nhwc"] == "1"
        if r["label"] == "trt":
            assert r["providers_used"][0] == "TensorrtExecutionProvider" and r["engine_build_s"] > 0
    if not tensorrt_missing():
        assert all(r["compile_cache_warm"] for r in again), "the second TensorRT session didn't reuse the engine"


def test_graph_sessions_learn_output_shapes_without_a_plain_run(tmp_path):
    """ORT captures its CUDA graph on a session's first run, so a cuda_graph session must not begin
    with a plain session.run: the output shapes come from the model, or, where its output dims are
    dynamic, from a throwaway session. Both give what a real run returns."""
    import numpy as np
    import onnxruntime as ort
    from onnx import TensorProto, helper

    from workers.backends.ort_session import probe_outputs, static_outputs

    def model(dims, path):
        x = helper.make_tensor_value_info("x", TensorProto.FLOAT, dims)
        y = helper.make_tensor_value_info("y", TensorProto.FLOAT, dims)
        g = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g", [x], [y])
        onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), str(path))
        return str(path)

    feeds = {"x": np.ones((3, 4), np.float32)}
    fixed = ort.InferenceSession(model([3, 4], tmp_path / "fixed.onnx"), providers=["CPUExecutionProvider"])
    assert static_outputs(fixed) == [("y", (3, 4), np.dtype(np.float32))]

    path = model(["n", 4], tmp_path / "dynamic.onnx")
    dynamic = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    assert static_outputs(dynamic) is None
    assert probe_outputs(path, ort.SessionOptions(), ["CPUExecutionProvider"], feeds) == [
        ("y", (3, 4), np.dtype(np.float32))]
