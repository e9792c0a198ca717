"""Plan parsing, validation messages and expansion into trials."""

from __future__ import annotations

import pytest

from orchestrator.errors import PlanError
from orchestrator.expand import expand
from orchestrator.plan import load_plan

BASE = """\
name: t
device: cpu
models: [torchvision:resnet18]
matrix:
  batch_sizes: [1, 2]
  dtypes: [fp32, bf16]
  io: [device, host]
  backends:
    - torch-eager
    - backend: ort
      label: ort-bound
      options: {io_binding: true}
"""


def error_of(write_plan, text: str) -> str:
    with pytest.raises(PlanError) as exc:
        expand(load_plan(write_plan(text)))
    return str(exc.value)


def test_plan_expands_to_cross_product_with_defaults(write_plan):
    trials = expand(load_plan(write_plan(BASE)))
    assert len(trials) == 2 * 2 * 2 * 2
    t = trials[0]
    assert t.model.model_dump(mode="json") == {"kind": "torchvision", "ref": "resnet18", "name": "resnet18",
                                               "input_shape": [3, 224, 224]}
    ort = next(t for t in trials if t.label == "ort-bound")
    assert ort.options["io_binding"] is True and ort.options["cuda_graph"] is False
    assert ort.measure.model_dump() == {"warmup_iters": 10, "warmup_window": 10, "warmup_rel_tol": 0.02,
                                        "warmup_max_iters": 1000, "warmup_max_s": 10.0, "iters": 50, "min_time_s": 0.0,
                                        "target_rel_ci": 0.01,
                                        "max_time_s": 60.0, "max_iters": 20000, "repeats": 1}


def test_trial_ids_are_stable_unique_and_ignore_names(write_plan):
    a = [t.trial_id for t in expand(load_plan(write_plan(BASE)))]
    b = [t.trial_id for t in expand(load_plan(write_plan(BASE.replace("name: t", "name: other"), "b.yaml")))]
    assert a == b and len(set(a)) == len(a)
    changed = BASE.replace("batch_sizes: [1, 2]", "batch_sizes: [1, 3]")
    c = {t.trial_id for t in expand(load_plan(write_plan(changed, "c.yaml")))}
    assert len(c & set(a)) == len(a) // 2  # the batch-1 half is the same trials


def test_exclude_rules_remove_matching_trials(write_plan):
    text = BASE + "  exclude:\n    - {backend: ort, dtype: bf16}\n    - {label: torch-eager, io: host, batch_size: 2}\n"
    trials = expand(load_plan(write_plan(text)))
    assert not [t for t in trials if t.backend == "ort" and t.dtype == "bf16"]
    assert not [t for t in trials if t.backend == "torch-eager" and t.io == "host" and t.batch_size == 2]
    assert len(trials) == 16 - 4 - 2


@pytest.mark.parametrize(("rule", "message"), [
    ("{label: ort_bound}", "matrix.exclude[1].label: no trial has 'ort_bound' (did you mean 'ort-bound'?); "
                           "the plan's labels: ort-bound, torch-eager"),
    ("{backend: ort, batch_size: [2, 4]}",
     "matrix.exclude[1].batch_size: no trial has 4; the plan's batch sizes: 1, 2"),
    ("{axes: {seq: 128}}", "matrix.exclude[1].axes: no trial has an axis 'seq'; the plan has none"),
])
def test_an_exclude_value_no_trial_has_is_an_error(write_plan, rule, message):
    # the second rule is the bad one: the message names it by its place
    assert message in error_of(write_plan, BASE + f"  exclude:\n    - {{dtype: bf16}}\n    - {rule}\n")


def test_empty_matrix_after_exclude_is_an_error(write_plan):
    msg = error_of(write_plan, BASE + "  exclude:\n    - {dtype: [fp32, bf16]}\n")
    assert "no trials left after `exclude`" in msg


def test_unknown_option_names_path_and_suggests(write_plan):
    msg = error_of(write_plan, BASE.replace("io_binding: true", "io_bindng: true"))
    assert "plan.yaml: matrix.backends[1].options: unknown key 'io_bindng' (did you mean 'io_binding'?)" in msg


def test_wrong_type_names_path_and_value(write_plan):
    msg = error_of(write_plan, BASE.replace("io_binding: true", "io_binding: maybe"))
    assert "matrix.backends[1].options.io_binding:" in msg and "'maybe'" in msg


def test_unknown_top_level_key_and_backend(write_plan):
    assert "unknown key 'matrx' (did you mean 'matrix'?)" in error_of(write_plan, BASE + "matrx: {}\n")
    msg = error_of(write_plan, BASE.replace("- torch-eager", "- torch-eagr"))
    assert "matrix.backends[0]: unknown backend 'torch-eagr' (did you mean 'torch-eager'?)" in msg


def test_unknown_torchvision_model_lists_close_names(write_plan):
    msg = error_of(write_plan, BASE.replace("torchvision:resnet18", "torchvision:resnet19"))
    assert "models[0]: unknown torchvision model 'resnet19'; did you mean" in msg and "resnet18" in msg


def test_cuda_graph_requires_io_binding(write_plan):
    msg = error_of(write_plan, BASE.replace("io_binding: true", "cuda_graph: true"))
    assert "matrix.backends[1].options: cuda_graph: true requires io_binding: true" in msg


def test_yaml_syntax_error_has_line_and_column(write_plan):
    msg = error_of(write_plan, BASE.replace("batch_sizes: [1, 2]", "batch_sizes: [1, 2"))
    assert "plan.yaml:" in msg and "YAML syntax error" in msg
    line = msg.split("plan.yaml:")[1].split(":")[0]
    assert line.isdigit()


def test_missing_and_empty_files(tmp_path):
    with pytest.raises(PlanError, match="plan file not found"):
        load_plan(tmp_path / "nope.yaml")
    (tmp_path / "e.yaml").write_text("")
    with pytest.raises(PlanError, match="the plan is empty"):
        load_plan(tmp_path / "e.yaml")


def test_duplicate_labels_rejected(write_plan):
    msg = error_of(write_plan, BASE.replace("label: ort-bound", "label: torch-eager"))
    assert "label 'torch-eager' is already used" in msg


def test_python_model_needs_shape_and_form(write_plan):
    msg = error_of(write_plan, BASE.replace("[torchvision:resnet18]", "[{python: 'tinynet'}]"))
    assert "must be written package.module:factory" in msg
    msg = error_of(write_plan, BASE.replace("[torchvision:resnet18]", "[{python: 'tinynet:make'}]"))
    assert "needs an input_shape" in msg


def test_onnx_model_shape_checked_against_file(write_plan, tmp_path):
    import torch
    from tinynet import make

    torch.onnx.export(make(), (torch.randn(1, 3, 16, 16),), str(tmp_path / "net.onnx"), dynamo=False)
    text = BASE.replace("[torchvision:resnet18]", "[{onnx: net.onnx, input_shape: [3, 32, 32]}]")
    assert "does not match the ONNX model's input [3, 16, 16]" in error_of(write_plan, text)
    text = BASE.replace("[torchvision:resnet18]", "[net.onnx]")
    trials = expand(load_plan(write_plan(text, "ok.yaml")))
    assert trials[0].model.input_shape == (3, 16, 16) and trials[0].model.name == "net"
    assert "ONNX file not found" in error_of(write_plan, BASE.replace("[torchvision:resnet18]", "[missing.onnx]"))
