"""Plan parsing, validation messages and expansion into trials."""

from __future__ import annotations

import pytest

from orchestrator.errors import PlanError
from orchestrator.plan.expand import expand
from orchestrator.plan.load import load_plan

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
                                        "max_time_s": 60.0, "max_iters": 20000, "repeats": 1, "process_repeats": 1,
                                        "generations": 3, "warmup_generations": 1,
                                        "input_pool": 1, "repeat_check": False}


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


# --- bad values: every one refused at validation, located where the user wrote it -------------------

@pytest.mark.parametrize(("old", "new", "message"), [
    # a number no result column can hold passed validation, then crashed the driver's Parquet writer
    ("batch_sizes: [1, 2]", "batch_sizes: [1, 1000000000000000000000000000000]",
     "matrix.batch_sizes[1]: Input should be less than or equal to 16777216 (got 1000000000000000000000000000000)"),
    ("name: t", "name: t\nseed: -1", "seed: Input should be greater than or equal to 0 (got -1)"),
    ("name: t", "name: t\nseed: 100000000000000000000", "seed: Input should be less than or equal to 4294967295"),
    ("name: t", "name: t\nretries: 100000000000000000000", "retries: Input should be less than or equal to 100"),
    ("name: t", "name: t\nbuilders: -1", "builders: Input should be greater than or equal to 0 (got -1)"),
    ("name: t", "name: t\nbuilders: 5000", "builders: Input should be less than or equal to 1024"),
    ("name: t", "name: t\nmeasure: {iters: 100000000000000000000}",
     "measure.iters: Input should be less than or equal to 10000000"),
    ("name: t", "name: t\nmeasure: {warmup_iters: 100000000000000000000}",
     "measure.warmup_iters: Input should be less than or equal to"),
    ("name: t", "name: t\nmeasure: {process_repeats: 0}",
     "measure.process_repeats: Input should be greater than or equal to 1 (got 0)"),
    ("io_binding: true", "intra_op_num_threads: 100000000000000000000",
     "matrix.backends[1].options.intra_op_num_threads: Input should be less than or equal to 1024"),
    ("[torchvision:resnet18]", "[{torchvision: resnet18, input_shape: [3, 224, 100000000000000000000]}]",
     "models[0].input_shape[2]: Input should be less than or equal to 16777216"),
    ("name: t", "name: t\nscenario: {name: offline, concurrency: [100000000000000000000]}",
     "scenario.concurrency[0]: Input should be less than or equal to 4096"),
    ("name: t", "name: t\nscenario: {name: offline, min_requests: 100000000000000000000}",
     "scenario.min_requests: Input should be less than or equal to 10000000"),
    # any integer at all: at most 64 bits, wherever it is
    ("{io_binding: true}\n", "{io_binding: true}\n  exclude: [{batch_size: 100000000000000000000}]\n",
     "matrix.exclude[0].batch_size: 100000000000000000000 is out of range: a plan's integers are 64-bit"),
])
def test_integers_have_ranges(write_plan, old, new, message):
    assert message in error_of(write_plan, BASE.replace(old, new))


def test_a_plan_of_too_many_trials_is_refused_before_expanding(write_plan):
    # 1,000 batch sizes x 101 concurrencies x 2 dtypes x 2 io x 2 backends: 808,000 trials, counted, not built
    text = BASE.replace("batch_sizes: [1, 2]", f"batch_sizes: [{', '.join(map(str, range(1, 1001)))}]")
    text += "scenario: {name: offline, concurrency: [" + ", ".join(map(str, range(1, 102))) + "]}\n"
    msg = error_of(write_plan, text)
    assert ("matrix: the plan expands to 808,000 trials (before exclude), more than max_trials (100,000)"
            in msg), msg
    # the limit is the plan's to raise or lower; exclude rules don't count
    small = "max_trials: 15\n" + BASE + "  exclude: [{dtype: bf16}]\n"
    msg = error_of(write_plan, small)
    assert "matrix: the plan expands to 16 trials (before exclude), more than max_trials (15)" in msg
    assert len(expand(load_plan(write_plan(small.replace("max_trials: 15", "max_trials: 16"), "ok.yaml")))) == 8


@pytest.mark.parametrize(("text", "message"), [
    (BASE + "measure: {iters: 5}\nmeasure: {iters: 6}\n", "plan.yaml:14: duplicate key 'measure' (first at line 13)"),
    (BASE.replace("{io_binding: true}", "{io_binding: true, io_binding: false}"),
     "plan.yaml:12: duplicate key 'io_binding' (first at line 12)"),
    (BASE.replace("      label: ort-bound\n", "      label: ort-bound\n      label: x\n"),
     "plan.yaml:12: duplicate key 'label' (first at line 11)"),
])
def test_duplicate_keys_are_refused_with_both_lines(write_plan, text, message):
    assert message in error_of(write_plan, text)


def test_a_merge_key_is_not_a_duplicate(write_plan):
    text = BASE + "measure: &m {iters: 5}\nparity: {check: true}\nbudgets: [{<<: {max_p99_ms: 3}, max_p99_ms: 4}]\n"
    assert len(expand(load_plan(write_plan(text)))) == 16


@pytest.mark.parametrize(("old", "new", "message"), [
    ("batch_sizes: [1, 2]", "batch_sizes: [1, 4, 1]",
     "matrix.batch_sizes[2]: 1 is listed twice (also at matrix.batch_sizes[0]); give each value once"),
    ("dtypes: [fp32, bf16]", "dtypes: [fp32, fp32]",
     "matrix.dtypes[1]: 'fp32' is listed twice (also at matrix.dtypes[0]); give each value once"),
    ("[torchvision:resnet18]", "[torchvision:resnet18, {torchvision: resnet18}]",
     "models[1]: model 'resnet18' is listed twice (also at models[0])"),
    ("- torch-eager", "- {label: eager}",
     "matrix.backends[0]: an entry needs `backend:`, one of: "),
    ("- torch-eager", "- 0", "matrix.backends[0]: expected a backend name or a mapping {backend: NAME, ...} (got 0)"),
    ("- torch-eager", "- null",
     "matrix.backends[0]: expected a backend name or a mapping {backend: NAME, ...} (got null)"),
    ("- torch-eager", "- []", "matrix.backends[0]: expected a backend name or a mapping {backend: NAME, ...} (got [])"),
    ("{io_binding: true}", "3", "matrix.backends[1].options: Input should be a valid dictionary (got 3)"),
    ("name: t", "name: t\nmeasure: 3", "measure: Input should be a valid dictionary (got 3)"),
    ("name: t", "name: t\nmeasure: {warmup_iters: 1e30}",
     "measure.warmup_iters: Input should be a valid integer (got '1e30')"),
    ("name: t", "name: t\nmeasure: {warmup_max_s: .inf}",
     "measure.warmup_max_s: Input should be a finite number (got inf)"),
    ("{io_binding: true}", "{providers: []}",
     "matrix.backends[1].options.providers: Input should have at least 1 item (got [])"),
])
def test_messages_speak_the_plans_language(write_plan, old, new, message):
    msg = error_of(write_plan, BASE.replace(old, new))
    assert message in msg, msg
    for word in ("Unable to", "discriminator", "instance of", "OrtOptions", "MeasureSpec", "Matrix", ".int",
                 "after validation"):
        assert word not in msg, msg


def test_a_bad_exclude_value_is_located_at_its_key(write_plan):
    msg = error_of(write_plan, BASE + "  exclude: [{batch_size: abc}]\n")
    assert msg.endswith("plan.yaml: matrix.exclude[0].batch_size: Input should be a valid integer or a list of them "
                        "(got 'abc')"), msg
    msg = error_of(write_plan, BASE + "  exclude: [{batch_size: [1, abc]}]\n")
    assert msg.endswith("plan.yaml: matrix.exclude[0].batch_size[1]: Input should be a valid integer (got 'abc')"), msg


def test_an_axis_shorthand_is_located_as_written(write_plan):
    text = BASE.replace("[torchvision:resnet18]", "[{python: 'textnet:one_arg', inputs: [{name: ids, dtype: int64, "
                        "shape: [batch, seq], high: 10}]}]") + "  seq_lens: [8, x]\n"
    msg = error_of(write_plan, text)
    assert "matrix.seq_lens[1]: Input should be a valid integer (got 'x')" in msg and "axes" not in msg, msg
    assert "matrix.seq_lens[1]: 8 is listed twice" in error_of(write_plan, text.replace("[8, x]", "[8, 8]"))


def _relu_onnx(path, name: str, shape: list[int]) -> None:
    import onnx
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, shape)
    graph = helper.make_graph([helper.make_node("Relu", [name], ["y"])], "g", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8  # one every ONNX Runtime reads
    onnx.save(model, str(path))


def test_the_one_input_form_names_the_onnx_files_input(write_plan, tmp_path):
    from workers.rows import spec_columns

    _relu_onnx(tmp_path / "net.onnx", "features", [1, 4])
    trials = expand(load_plan(write_plan(BASE.replace("[torchvision:resnet18]", "[net.onnx]"))))
    assert spec_columns(trials[0])["inputs"] == [{"name": "features", "dtype": "float32", "shape": [1, 4]}]
    # a torchvision model's single input has no name of its own
    trials = expand(load_plan(write_plan(BASE, "tv.yaml")))
    assert spec_columns(trials[0])["inputs"][0]["name"] == "input"


def test_the_reference_plan_in_the_docs_validates(tmp_path, monkeypatch):
    """docs/plans-and-backends.md's "Every key" plan, with the files it names, is a valid plan."""
    import re

    from helpers import REPO

    page = (REPO / "docs" / "plans-and-backends.md").read_text()
    text = re.search(r"## Every key\n.*?```yaml\n(.*?)```", page, re.S).group(1)
    (tmp_path / "models").mkdir()
    _relu_onnx(tmp_path / "models" / "net.onnx", "x", [1, 3, 8, 8])
    (tmp_path / "mypkg").mkdir()
    (tmp_path / "mypkg" / "__init__.py").write_text("")
    (tmp_path / "mypkg" / "models.py").write_text("def make_net():\n    raise NotImplementedError\n")
    (tmp_path / "plan.yaml").write_text(text)
    monkeypatch.chdir(tmp_path)
    trials = expand(load_plan(tmp_path / "plan.yaml"))
    assert {t.label for t in trials} == {"torch-eager", "torch-cudagraph", "ort-default", "ort-tuned"}


def test_a_value_repeated_in_a_scenario_axis_is_named(write_plan):
    text = BASE + "scenario: {name: offline, concurrency: [1, 2, 2]}\n"
    assert "scenario.concurrency[2]: 2 is listed twice (also at scenario.concurrency[1])" in error_of(write_plan, text)


def test_a_model_message_writes_its_example_with_single_braces(write_plan):
    model = "[{hf: bert-base, axes: {seq: 8}, overrides: {num_hidden_layers: [2]}}]"
    text = BASE.replace("[torchvision:resnet18]", model)
    msg = error_of(write_plan, text)
    assert "e.g. {num_hidden_layers: 2}" in msg and "{{" not in msg, msg
