"""Models with several named inputs of any dtype, named axes, and axis values as matrix axes.

Tiny models only: ONNX graphs built here with onnx.helper, `python:` factories from tests/textnet.py,
run in this process on the CPU (ORT's CPU provider); bad input through `infer-orch validate`.
"""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from helpers import cli, run_all
from onnx import TensorProto, helper

from orchestrator.plan.expand import expand
from orchestrator.plan.load import parse_plan
from workers.backends import get
from workers.context import TrialContext
from workers.models.build import ModelStore

MEASURE = {"warmup_iters": 1, "iters": 3, "warmup_max_s": 0.2, "max_time_s": 0.5, "target_rel_ci": None}


def two_input_onnx(path, seq_dim="sequence", mask_type=TensorProto.FLOAT):
    """input_ids int64 [N, seq_dim] and attention_mask float [N, seq_dim] -> [N, 1]: sum(ids * mask)."""
    ids = helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["N", seq_dim])
    mask = helper.make_tensor_value_info("attention_mask", mask_type, ["N", seq_dim])
    out = helper.make_tensor_value_info("score", TensorProto.FLOAT, ["N", 1])
    axes = helper.make_tensor("axes", TensorProto.INT64, [1], [1])
    nodes = [helper.make_node("Cast", ["input_ids"], ["f"], to=TensorProto.FLOAT),
             helper.make_node("Mul", ["f", "attention_mask"], ["m"]),
             helper.make_node("ReduceSum", ["m", "axes"], ["score"], keepdims=1)]
    graph = helper.make_graph(nodes, "two", [ids, mask], [out], initializer=[axes])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def plan(models, backends, **matrix):
    return {"name": "inputs", "device": "cpu", "models": models, "measure": MEASURE,
            "matrix": {"batch_sizes": [2], "io": ["host"], "backends": backends, **matrix}}


TWO_INPUTS = {"python": "textnet:two_inputs", "inputs": [
    {"name": "input_ids", "dtype": "int64", "shape": ["batch", "seq"], "high": 50},
    {"name": "attention_mask", "shape": ["batch", "seq"]}]}


def test_onnx_file_with_two_inputs_runs_on_ort_cpu_at_two_sequence_lengths(tmp_path):
    path = two_input_onnx(tmp_path / "two.onnx")
    p = plan([{"onnx": str(path), "axes_map": {"sequence": "seq"},
               "inputs": [{"name": "input_ids", "high": 10}]}], ["ort"], seq_lens=[4, 8])
    trials = expand(parse_plan(p))
    assert [t.axes for t in trials] == [{"seq": 4}, {"seq": 8}]
    rows = run_all(trials)
    assert [r["status"] for r in rows] == ["ok", "ok"], [r.get("error") for r in rows]
    assert [json.loads(r["axes"]) for r in rows] == [{"seq": 4}, {"seq": 8}]
    assert rows[1]["inputs"] == [{"name": "input_ids", "dtype": "int64", "shape": [2, 8]},
                                 {"name": "attention_mask", "dtype": "float32", "shape": [2, 8]}]
    assert rows[0]["input_shape"] is None  # two inputs: the inputs column says it
    # an ONNX file has no torch reference: its own, on ORT's CPU provider, holds both inputs as fed
    assert rows[0]["parity_reference"] == "the ONNX file on ORT's CPU provider, optimisations off"
    assert all(r["parity_max_rel_err"] < 1e-6 for r in rows)
    # the mask is ones by default and the ids in [0, 10): the model's sum is a whole number in [0, 9 * seq]
    # (fractional where the mask is not ones, above where the ids pass `high`), and not all zero
    for trial, seq in zip(trials, (4, 8), strict=True):
        cls = get("ort")
        with cls(TrialContext(trial, "cpu", ModelStore()), cls.Options.model_validate(trial.options)) as runner:
            runner.step()
            score = runner.output()
        assert score.shape == (2, 1) and (score == np.round(score)).all(), score
        assert 0 <= score.min() and score.max() <= 9 * seq and score.max() > 0, score


def test_python_factory_with_two_named_inputs_on_torch_eager_and_ort_agree():
    p = plan([TWO_INPUTS], ["torch-eager", {"backend": "ort", "options": {"exporter": "torchscript"}},
                            {"backend": "ort", "label": "bound", "options": {"exporter": "torchscript",
                                                                             "io_binding": True}}],
             axes={"seq": [6]})
    rows = run_all(expand(parse_plan(p)))
    assert [r["status"] for r in rows] == ["ok"] * 3, [r.get("error") for r in rows]
    for r in rows:
        assert r["parity_max_rel_err"] < 1e-5 and r["parity_worst_output"] == "output"
        assert r["inputs"][0] == {"name": "input_ids", "dtype": "int64", "shape": [2, 6]}


def test_positional_inputs_and_model_level_axes():
    model = {**TWO_INPUTS, "pass_inputs": "positional", "axes": {"seq": 5}}
    (t,) = expand(parse_plan(plan([model], ["torch-eager"])))
    assert t.axes == {"seq": 5}
    (row,) = run_all([t])
    assert row["status"] == "ok", row.get("error")


def test_parity_over_every_output_names_the_worst():
    model = {**TWO_INPUTS, "python": "textnet:two_outputs"}
    p = plan([model], ["torch-eager"], axes={"seq": [4]}, dtypes=["bf16"])
    (row,) = run_all(expand(parse_plan(p)))
    assert row["status"] == "parity_failed"
    assert row["parity_worst_output"] == "pooled" and "output 'pooled'" in row["error"]


def test_a_forward_that_rejects_the_inputs_fails_its_trial_and_the_run_goes_on():
    bad = {**TWO_INPUTS, "python": "textnet:one_arg"}
    rows = run_all(expand(parse_plan(plan([bad, TWO_INPUTS], ["torch-eager"], seq_lens=[4]))))
    assert [r["status"] for r in rows] == ["failed", "ok"]
    assert rows[0]["error"].startswith("TypeError") and "input_ids" in rows[0]["error"]


def test_axes_are_trial_fields_out_of_the_id_when_unset_and_usable_in_exclude():
    legacy = expand(parse_plan(plan(["torchvision:resnet18"], ["torch-eager"])))
    assert legacy[0].axes == {}
    p = plan([TWO_INPUTS, "torchvision:resnet18"], ["torch-eager"], seq_lens=[4, 8],
             exclude=[{"axes": {"seq": 8}, "backend": "torch-eager"}])
    trials = expand(parse_plan(p))
    # resnet18 has no seq axis: one trial, with the id it has in a plan without axes
    assert [(t.model.name, t.axes) for t in trials] == [("two_inputs", {"seq": 4}), ("resnet18", {})]
    assert trials[1].trial_id == legacy[0].trial_id
    assert len({t.trial_id for t in expand(parse_plan(plan([TWO_INPUTS], ["torch-eager"], seq_lens=[4, 8])))}) == 2


def test_inputs_fill_as_declared():
    from workers.models.build import make_inputs

    p = plan([{"python": "textnet:two_inputs", "inputs": [
        {"name": "input_ids", "dtype": "int64", "shape": ["batch", 3], "fill": "randint", "low": 5, "high": 7},
        {"name": "attention_mask", "shape": ["batch", 3]},
        {"name": "flag", "dtype": "bool", "shape": [1]},
        {"name": "c", "shape": [2], "fill": "constant", "value": 2.5}]}], ["torch-eager"])
    (t,) = expand(parse_plan(p))
    xs = make_inputs(t.model, 2, "fp16", "cpu", 0, {})
    assert set(np.unique(xs["input_ids"].numpy())) <= {5, 6} and str(xs["input_ids"].dtype) == "torch.int64"
    assert (xs["attention_mask"].float().numpy() == 1).all() and str(xs["attention_mask"].dtype) == "torch.float16"
    assert xs["flag"].numpy().all() and xs["c"].float().numpy().tolist() == [2.5, 2.5]


def _bad(tmp_path, model, **matrix):
    import yaml

    f = tmp_path / "bad.yaml"
    f.write_text(yaml.safe_dump(plan([model], ["ort"], **matrix)))
    return cli("validate", f)


@pytest.mark.parametrize("case, expected", [
    ("missing_name", "inputs[0]: the ONNX model"),
    ("dtype", "dtype int32 contradicts the ONNX model, whose input is int64"),
    ("no_value", "input 'input_ids' dim 1 'sequence' has no value"),
    ("unnamed", "dim 1 has no size and no name in the file; declare it"),
    ("bounds", "empty integer bounds: low 5 >= high 5"),
    ("no_high", "needs high"),
    ("unused_axis", "matrix.width_lens: no model has an axis named 'width'"),
])
def test_bad_inputs_are_located_exit_2(tmp_path, case, expected):
    path = str(two_input_onnx(tmp_path / "two.onnx", seq_dim="" if case == "unnamed" else "sequence"))
    model: dict = {"onnx": path, "inputs": [{"name": "input_ids", "high": 10}], "axes_map": {"sequence": "seq"}}
    matrix: dict = {"seq_lens": [4]}
    if case == "missing_name":
        model["inputs"] = [{"name": "input_idz", "high": 3}]
    elif case == "dtype":
        model["inputs"] = [{"name": "input_ids", "dtype": "int32", "high": 3}]
    elif case == "no_value":
        model.pop("axes_map")
    elif case == "bounds":
        model["inputs"] = [{"name": "input_ids", "low": 5, "high": 5}]
    elif case == "no_high":
        model["inputs"] = [{"name": "input_ids"}]
    elif case == "unused_axis":
        matrix["width_lens"] = [3]
    result = _bad(tmp_path, model, **matrix)
    out = result.stdout + result.stderr
    assert result.returncode == 2, out
    assert expected in out and "bad.yaml" in out and "models[0]" in out or case == "unused_axis" and expected in out
    assert "Traceback" not in out


@pytest.mark.slow
def test_through_ray_rows_carry_inputs_and_axes_and_a_run_of_schema_1_still_loads_and_matches(
        ray_gpus, tmp_path):
    """End to end (plan -> Ray workers -> Parquet): a two-input model swept over seq next to a
    one-input model; a run written before the inputs/axes columns (schema 1) loads beside it and its
    rows still match this run's in compare."""
    import pyarrow.parquet as pq

    from orchestrator.answers.compare import match
    from orchestrator.results.read import load_results
    from orchestrator.run.api import run_plan

    data = plan([TWO_INPUTS, {"python": "tinynet:make", "input_shape": [3, 8, 8]}],
                ["torch-eager", {"backend": "ort", "options": {"exporter": "torchscript"}}], seq_lens=[4, 8])
    (tmp_path / "p.yaml").write_text(json.dumps(data))
    result = run_plan(tmp_path / "p.yaml", out=tmp_path / "new", workers=2)
    assert sorted(result.counts.items()) == [("ok", 6)], [r.get("error") for r in result.rows]
    rows = load_results(tmp_path / "new").to_pylist()
    two = sorted((r["backend"], json.loads(r["axes"])["seq"], r["inputs"][1]["shape"][1])
                 for r in rows if r["axes"])
    assert two == [("ort", 4, 4), ("ort", 8, 8), ("torch-eager", 4, 4), ("torch-eager", 8, 8)]
    one = [r for r in rows if not r["axes"]]
    assert len(one) == 2 and all(r["input_shape"] == [3, 8, 8] for r in one)

    # the one-input rows as a schema-1 run wrote them: without the columns schema 2 added
    old = tmp_path / "old"
    old.mkdir()
    new = pq.read_table(tmp_path / "new" / "results.parquet")  # the run, compacted
    for i in range(new.num_rows):
        t = new.slice(i, 1)
        if t.column("axes")[0].as_py() is None:  # a part file per trial, as schema 1's runs were
            t = t.drop_columns(["inputs", "axes", "parity_worst_output"])
            pq.write_table(t.replace_schema_metadata({b"infer_orch.schema_version": b"1"}),
                           old / f"part-{t.column('trial_id')[0].as_py()}.parquet")
    both = load_results([old, tmp_path / "new"]).to_pylist()
    assert len(both) == 8 and sum(r["inputs"] is None for r in both) == 2
    pairs = match(load_results(old).to_pylist(), rows)
    assert sum(1 for b, c in pairs if b and c) == 2  # the one-input trials, matched across schemas


@pytest.mark.gpu
def test_two_inputs_on_every_cuda_backend_with_a_graph_per_shape():
    """On the GPU: one static buffer per input for the CUDA graph, every input and output bound for
    ORT (and ORT's CUDA graph), at two sequence lengths and two dtypes; parity holds everywhere."""
    data = {**plan([TWO_INPUTS], ["torch-eager", "torch-cudagraph",
                                  {"backend": "ort", "label": "ort-bind",
                                   "options": {"exporter": "torchscript", "io_binding": True}},
                                  {"backend": "ort", "label": "ort-graph",
                                   "options": {"exporter": "torchscript", "io_binding": True, "cuda_graph": True}}],
                   seq_lens=[6, 12]), "device": "cuda"}
    data["matrix"].update(io=["device"], dtypes=["fp32", "fp16"])
    from workers.models.build import ModelStore
    from workers.trial import run_trial

    store = ModelStore()
    rows = [run_trial(t, "cuda", store) for t in expand(parse_plan(data))]
    assert len(rows) == 16
    for r in rows:
        assert r["status"] == "ok", (r["label"], r["dtype"], r["axes"], r.get("error"))
        assert r["parity_worst_output"] == "output" and r["gpu_uuid"].startswith("GPU-")
    assert all(r["providers_used"][0] == "CUDAExecutionProvider" for r in rows if r["backend"] == "ort")
