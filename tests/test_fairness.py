"""Fair by construction: the same fp32 math on every backend (read back, not assumed), inputs that
change while timing (a pool, and the repeated-input check), ONNX files held to a reference, and what
report and compare say about rows that did not do the same work."""

from __future__ import annotations

import dataclasses

import numpy as np
import pyarrow as pa
import pytest
from helpers import run_all, trials_for

from orchestrator.answers.compare import compare
from orchestrator.answers.fairness import fairness_line, math_mismatch
from orchestrator.answers.tables import fairness_lines, summarize
from orchestrator.errors import PlanError
from orchestrator.plan.expand import expand
from orchestrator.plan.load import parse_plan
from workers.measure import mathmode
from workers.schema import SCHEMA

FAST = {"warmup_iters": 1, "warmup_max_iters": 2, "iters": 5, "target_rel_ci": None, "max_time_s": 1}


def _plan(**matrix) -> dict:
    return {"name": "f", "device": "cpu", "models": ["torchvision:resnet18"],
            "matrix": {"batch_sizes": [1], "backends": ["torch-eager", "ort"], **matrix}}


# --- math: ids, plan, read back ----------------------------------------------------------------


def test_math_is_an_axis_of_fp32_trials_only_and_changes_exactly_the_ids_it_must():
    before = {(t.backend, t.dtype): t.trial_id for t in expand(parse_plan(_plan(dtypes=["fp32", "fp16"])))}
    trials = expand(parse_plan(_plan(dtypes=["fp32", "fp16"], math=["tf32", "strict"])))
    got = {(t.backend, t.dtype, t.math): t.trial_id for t in trials}
    assert len(trials) == 6  # the axis multiplies fp32 trials, not fp16 ones
    assert got[("torch-eager", "fp16", "tf32")] == before[("torch-eager", "fp16")]  # fp16 ids never change
    assert got[("ort", "fp16", "tf32")] == before[("ort", "fp16")]
    assert got[("ort", "fp32", "tf32")] == before[("ort", "fp32")]  # what ORT always ran: its id stays
    assert got[("ort", "fp32", "strict")] != before[("ort", "fp32")]
    assert len({got[("torch-eager", "fp32", m)] for m in ("tf32", "strict")}) == 2


def test_a_bad_math_value_names_the_key_and_what_is_accepted():
    with pytest.raises(PlanError) as err:
        parse_plan(_plan(math=["tf16"]))
    msg = str(err.value)
    assert "matrix.math" in msg and "tf32" in msg and "strict" in msg
    with pytest.raises(PlanError, match="listed twice"):
        parse_plan(_plan(math=["tf32", "tf32"]))


def test_the_math_field_reaches_torch_and_is_read_back_from_it():
    import torch

    trials = trials_for([{"backend": "torch-eager", "math": ["strict", "tf32"]}], io=("device",),
                        measure=FAST)
    knobs = []
    for t in trials:
        (row,) = run_all([t])
        assert row["status"] == "ok", row.get("error")
        assert row["math"] == t.math and row["math_effective"] == "strict"  # a CPU has no TF32 (oneDNN: ieee)
        knobs.append((torch.backends.cuda.matmul.fp32_precision, mathmode.torch_effective("cuda")))
    # the trial left torch's CUDA knobs as it set them (parity's reference restores them): read back
    assert knobs == [("ieee", "strict"), ("tf32", "tf32")]


def test_the_math_field_reaches_ort_as_its_cuda_provider_option(tmp_path):
    """The CUDA provider's options the runner passes (a session on the CUDA provider needs a GPU: the
    GPU test reads them back from the session), and what each reported option reads as."""
    from workers.backends.ort import OrtRunner
    from workers.backends.ort_options import OrtOptions
    from workers.context import TrialContext
    from workers.models.build import ModelStore

    for mode, flag in (("tf32", "1"), ("strict", "0")):
        (t,) = trials_for([{"backend": "ort", "math": [mode]}], io=("host",))
        runner = OrtRunner(TrialContext(trial=t, device="cuda", store=ModelStore()), OrtOptions())
        assert runner._cuda_options(0)["use_tf32"] == flag
        reported = {"CUDAExecutionProvider": {"use_tf32": flag}, "CPUExecutionProvider": {}}
        assert mathmode.ort_effective(reported, list(reported)) == mode
    assert mathmode.ort_effective({}, ["CPUExecutionProvider"]) == "strict"
    both = {"CUDAExecutionProvider": {"use_tf32": "0"}}
    assert mathmode.ort_effective(both, ["TensorrtExecutionProvider", "CUDAExecutionProvider"]) == \
        "mixed (tensorrt tf32, cuda strict)"


def test_a_strict_tensorrt_trial_is_skipped_without_the_override(monkeypatch):
    from workers.backends import trt_libs
    from workers.backends.ort import OrtRunner

    monkeypatch.setattr("workers.backends.ort.tensorrt_missing", lambda: None)  # libraries present
    assert trt_libs is not None
    (t,) = trials_for([{"backend": "ort", "math": ["strict"], "options": {"providers": ["tensorrt", "cuda"],
                                                                         "io_binding": True}}], io=("device",))
    monkeypatch.delenv(mathmode.OVERRIDE_ENV, raising=False)
    assert OrtRunner.skip_reason(t, "cuda") == mathmode.TENSORRT_STRICT
    monkeypatch.setenv(mathmode.OVERRIDE_ENV, "0")
    assert OrtRunner.skip_reason(t, "cuda") is None


def test_an_ort_row_records_the_math_its_session_reports():
    (row,) = run_all(trials_for([{"backend": "ort", "options": {"exporter": "torchscript"}}], io=("host",),
                                measure=FAST))
    assert row["status"] == "ok" and row["math"] == "tf32" and row["math_effective"] == "strict"  # the CPU EP


# --- the pool and the repeated-input check -------------------------------------------------------


@pytest.mark.parametrize("entry, feed", [
    ({"backend": "torch-eager"}, {"device": "inputs", "host": "host"}),
    ({"backend": "ort", "options": {"exporter": "torchscript"}}, {"host": "inputs"}),
    ({"backend": "ort", "options": {"exporter": "torchscript", "io_binding": True}}, {"device": "copy",
                                                                                      "host": "host"}),
], ids=["torch-eager", "ort-run", "ort-bound"])
def test_a_pool_of_n_cycles_through_n_distinct_inputs(entry, feed):
    from workers.backends import get
    from workers.context import TrialContext
    from workers.measure import pool
    from workers.models.build import ModelStore

    for t in trials_for([entry], io=tuple(feed), measure={**FAST, "input_pool": 3}):
        cls = get(t.backend)
        runner = cls(TrialContext(trial=t, device="cpu", store=ModelStore()), cls.Options(**t.options))
        with runner:
            runner.step()
            own = runner.output()
            assert runner.stage_pool(pool.seeds(t)) == feed[t.io]
            step, outs = pool.cycling(runner, 3), []
            for _ in range(6):  # twice round the pool
                step()
                outs.append(np.asarray(runner.output()).copy())
        assert all(not np.allclose(outs[i], outs[j]) for i in range(3) for j in range(i + 1, 3))
        assert all(np.array_equal(outs[i], outs[i + 3]) for i in range(3))
        np.testing.assert_allclose(outs[0], own, rtol=1e-6)  # entry 0 is the trial's own input


def test_a_pooled_trial_is_timed_on_the_pool_and_parity_checked_on_its_own_input():
    (row,) = run_all(trials_for([{"backend": "torch-eager"}], io=("device",), measure={**FAST, "input_pool": 4}))
    assert row["status"] == "ok", row.get("error")
    assert row["input_pool"] == 4 and row["pool_feed"] == "inputs" and row["parity_max_rel_err"] < 1e-5


def _sleeper(discount: float) -> list:
    measure = {"warmup_iters": 2, "warmup_max_iters": 2, "iters": 40, "target_rel_ci": None, "max_time_s": 5,
               "input_pool": 4, "repeat_check": True}
    return trials_for([{"backend": "sleep", "options": {"step_s": 0.004, "repeat_discount": discount}}],
                      io=("device",), measure=measure)


def test_a_backend_faster_on_a_repeated_input_is_flagged_and_an_honest_one_is_not():
    (cheat,) = run_all(_sleeper(0.4))
    assert cheat["status"] == "ok" and cheat["valid"] is False, cheat
    (reason,) = [r for r in cheat["invalid_reasons"] if r.startswith("faster on a repeated input")]
    assert cheat["repeat_speedup"] > 1.5 and cheat["repeat_median_ms"] < cheat["latency_ms_median"]
    assert "pool of 4" in reason
    (honest,) = run_all(_sleeper(1.0))
    assert not any(r.startswith("faster on a repeated") for r in honest["invalid_reasons"] or []), honest
    assert honest["repeat_median_ms"] is not None and honest["repeat_speedup"] < 1.1


def test_repeat_check_needs_a_pool():
    with pytest.raises(PlanError, match="repeat_check.*input_pool"):
        parse_plan({**_plan(), "measure": {"repeat_check": True}})


# --- ONNX files against their CPU reference ------------------------------------------------------


def _three_outputs(path):
    """x [N, 8] -> (2x + 1, x * x, tanh x): an ONNX file of several outputs with no torch form."""
    import onnx
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 8])
    outs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["N", 8]) for n in ("a", "b", "c")]
    two, one = (helper.make_tensor(n, TensorProto.FLOAT, [], [v]) for n, v in (("two", 2.0), ("one", 1.0)))
    nodes = [helper.make_node("Mul", ["x", "two"], ["m"]), helper.make_node("Add", ["m", "one"], ["a"]),
             helper.make_node("Mul", ["x", "x"], ["b"]), helper.make_node("Tanh", ["x"], ["c"])]
    model = helper.make_model(helper.make_graph(nodes, "three", [x], outs, initializer=[two, one]),
                              opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return str(path)


def test_an_onnx_file_is_held_to_its_cpu_reference_on_every_output(tmp_path, monkeypatch):
    from workers.backends.ort import OrtRunner
    from workers.measure.onnxref import WHAT

    trials = trials_for([{"backend": "ort"}], models=(f"onnx:{_three_outputs(tmp_path / 'three.onnx')}",),
                        io=("host",), measure=FAST)
    (honest,) = run_all(trials)
    assert honest["status"] == "ok" and honest["parity_reference"] == WHAT, honest.get("error")
    assert honest["parity_max_rel_err"] < 1e-6

    real = OrtRunner.output

    def corrupt(self):  # an injected wrong answer in one output of three
        out = dict(real(self))
        out["c"] = out["c"] * 1.5
        return out

    monkeypatch.setattr(OrtRunner, "output", corrupt)
    (wrong,) = run_all(trials)
    assert wrong["status"] == "parity_failed" and "output 'c'" in wrong["error"], wrong.get("error")
    assert "ORT CPU reference" in wrong["error"] and wrong["parity_worst_output"] == "c"


def test_a_file_the_cpu_provider_cannot_run_has_no_reference_and_says_why(tmp_path):
    import onnx
    from onnx import TensorProto, helper

    from workers.measure import parity
    from workers.models.build import ModelStore

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT16, ["N", 8])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT16, ["N", 8])
    node = helper.make_node("GpuOnlyOp", ["x"], ["y"], domain="example.gpu")
    model = helper.make_model(helper.make_graph([node], "g", [x], [y]),
                              opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("example.gpu", 1)])
    model.ir_version = 8
    onnx.save(model, str(tmp_path / "gpu.onnx"))
    (t,) = trials_for([{"backend": "ort"}], models=(f"onnx:{_three_outputs(tmp_path / 'three.onnx')}",),
                      io=("host",))
    t = dataclasses.replace(t, dtype="fp16", model=t.model.model_copy(update={"ref": str(tmp_path / "gpu.onnx")}))
    cols = parity.check(t, "cuda", ModelStore(), [np.zeros((2, 8), np.float32)], modelless=False)
    assert cols["parity_reference"] is None and cols["parity_max_rel_err"] is None
    assert cols["parity_unchecked"].startswith("no reference: ORT's CPU provider can't run this file")


# --- report and compare --------------------------------------------------------------------------


def _row(label: str, math: str | None, median: float, **more) -> dict:
    samples = list(np.random.default_rng(len(label)).normal(median, 0.001 * median, 30))
    return {"trial_id": label, "model": "m", "batch_size": 1, "dtype": "fp32", "io": "device", "label": label,
            "backend": label, "options": "{}", "status": "ok", "valid": True, "math_effective": math,
            "parity_reference": "torch-eager fp32 on cuda",
            "latency_ms_median": median, "samples_ms": samples, "device": "cuda", **more}


def test_report_marks_rows_of_different_math_and_says_what_was_equal():
    rows = [_row("torch-eager", "strict", 3.0), _row("ort", "tf32", 1.2, export_route="torch.onnx dynamo export")]
    summary = summarize(rows, "torch-eager")
    assert {r["label"]: r["math_note"] for r in summary} == {"torch-eager": "math: strict", "ort": "math: tf32"}
    lines = fairness_lines(rows)
    assert lines[0].startswith("Rows marked 'math: ...'")
    assert "not equal: math (strict / tf32), exporter route" in lines[1]
    assert "equal: io device, inputs one input, graph capture not replayed;" in lines[1]
    assert lines[1].startswith("fairness, m batch 1 fp32 io device: ")
    same = [_row("torch-eager", "tf32", 1.0), _row("ort", "tf32", 1.2)]
    assert all(r["math_note"] is None for r in summarize(same, "torch-eager"))
    assert fairness_line(same).startswith("equal: math tf32, io device")


def test_compare_gives_no_verdict_across_different_math_and_old_rows_read_as_library_default():
    old = {k: v for k, v in _row("torch-eager", None, 3.0).items() if k != "math_effective"}
    base = pa.Table.from_pylist([old])  # a run older than the column: it has none
    cand = pa.Table.from_pylist([_row("torch-eager", "tf32", 1.0, trial_id="new-id")])
    (item,) = compare(base, cand)
    assert item["verdict"] == "incomparable"
    assert item["invalid_reasons"][0] == "different fp32 math: base library default, candidate tf32"
    # the same trial id on both sides asked for the same math: an old row's missing record is no mismatch
    assert math_mismatch({**old, "trial_id": "x"}, {**_row("a", "tf32", 1.0), "trial_id": "x"}) is None
    (same,) = compare(pa.Table.from_pylist([_row("torch-eager", "tf32", 1.0)]), cand)
    assert same["verdict"] in ("unchanged", "improved", "regressed")
    assert "math_effective" in SCHEMA.names


def test_rows_of_a_run_older_than_the_math_column_load_and_read_as_library_default(tmp_path):
    import pyarrow.parquet as pq

    from orchestrator.results.read import load_results

    old = [{k: v for k, v in _row(label, None, ms).items() if k in SCHEMA.names and k != "math_effective"}
           for label, ms in (("torch-eager", 3.0), ("ort", 1.2))]
    older = pa.schema([f for f in SCHEMA if f.name not in ("math", "math_effective", "input_pool", "pool_feed")])
    run = tmp_path / "old-run"
    run.mkdir()
    pq.write_table(pa.Table.from_pylist(old, schema=older), run / "results.parquet")
    rows = load_results(run).to_pylist()
    assert "math_effective" not in rows[0] and len(rows) == 2  # a run's own columns: readers .get() it
    assert [mathmode.read(r) for r in rows] == ["library default"] * 2
    assert fairness_line(rows).startswith("equal: math library default, io device")


def test_an_exclude_rule_can_leave_out_a_math_mode_of_fp32_trials():
    plan = _plan(dtypes=["fp32", "fp16"], math=["tf32", "strict"], exclude=[{"backend": "ort", "math": "strict"}])
    got = sorted((t.backend, t.dtype, t.math) for t in expand(parse_plan(plan)))
    assert ("ort", "fp32", "strict") not in got and ("ort", "fp16", "tf32") in got and len(got) == 5
