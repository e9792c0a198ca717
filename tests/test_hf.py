"""`hf:` models: transformer architectures from their config class, random weights, no download.

A tiny BERT (2 layers, hidden 64) and a tiny GPT-2 run in this process on the CPU, on torch eager
and ORT, with parity over every tensor output; the driver checks `hf:` plans without importing
transformers (or torch); the table in workers/models/hf.py is kept true against the installed library.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from helpers import REPO, cli, run_all

from orchestrator.plan.expand import expand
from orchestrator.plan.load import parse_plan
from workers.models import hf

TINY_BERT = {"hf": "bert-base", "name": "bert-tiny", "overrides": {
    "num_hidden_layers": 2, "hidden_size": 64, "num_attention_heads": 4, "intermediate_size": 128}}
TINY_GPT2 = {"hf": "gpt2", "name": "gpt2-tiny", "overrides": {"n_layer": 2, "n_embd": 64, "n_head": 4}}
MEASURE = {"warmup_iters": 1, "iters": 3, "warmup_max_s": 0.2, "max_time_s": 0.5, "target_rel_ci": None}


def plan(models, backends=("torch-eager", "ort"), device="cpu", **matrix):
    return {"name": "hf", "device": device, "models": models, "measure": MEASURE,
            "matrix": {"batch_sizes": [2], "backends": list(backends), "seq_lens": [8, 16], **matrix}}


def test_tiny_bert_and_gpt2_on_torch_eager_and_ort_agree_at_two_sequence_lengths():
    rows = run_all(expand(parse_plan(plan([TINY_BERT, {**TINY_GPT2, "axes": {"seq": 8}}]))))
    assert len(rows) == 6
    for r in rows:
        assert r["status"] == "ok", (r["model"], r["backend"], r.get("error"))
        assert r["parity_reference"].startswith("torch-eager fp32") and r["parity_max_rel_err"] < 1e-4
    bert = [r for r in rows if r["model"] == "bert-tiny" and json.loads(r["axes"]) == {"seq": 16}]
    assert {r["parity_worst_output"] for r in bert} <= {"last_hidden_state", "pooler_output"}
    assert bert[0]["inputs"] == [{"name": n, "dtype": "int64", "shape": [2, 16]}
                                 for n in ("input_ids", "attention_mask", "token_type_ids")]
    ort = [r for r in rows if r["backend"] == "ort"]
    assert {r["export_route"] for r in ort} == {"torch.onnx dynamo export of the fp32 model, static shapes"}


def test_token_ids_stay_below_the_vocabulary_and_overrides_are_part_of_the_id():
    small = {**TINY_BERT, "overrides": {**TINY_BERT["overrides"], "vocab_size": 7}}
    (a, _), (b, _) = (expand(parse_plan(plan([m], ["torch-eager"]))) for m in (TINY_BERT, small))
    ids = {i.name: i for i in b.model.inputs}["input_ids"]
    assert (ids.low, ids.high) == (0, 7)
    assert {i.name: i for i in a.model.inputs}["input_ids"].high == 30522  # BertConfig's vocabulary
    assert a.trial_id != b.trial_id and a.model.key != b.model.key


def test_checking_an_hf_plan_imports_neither_transformers_nor_torch(tmp_path):
    f = tmp_path / "p.yaml"
    f.write_text(json.dumps(plan([TINY_BERT, "hf:gpt2", "hf:vit-base"], device="cuda")))
    code = ("import json, sys\nfrom orchestrator.cli import app\n"
            f"try:\n    app(['validate', {str(f)!r}], standalone_mode=False)\n"
            "except SystemExit as e:\n    assert not e.code\n"
            "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'transformers'})))")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.returncode == 0, proc.stderr
    assert "valid, 10 trials" in proc.stdout  # vit has no seq axis: 2 backends, not 4
    assert json.loads(proc.stdout.splitlines()[-1]) == []


@pytest.mark.parametrize("model, matrix, expected", [
    ({"hf": "bert-bse"}, {}, "hf:bert-bse is not a known architecture"),
    ({"hf": "bert-base", "overrides": {"num_layers": 2}}, {}, "overrides.num_layers: not a config key"),
    ({"hf": "bert-base", "overrides": [2]}, {}, "overrides: a mapping of config key"),
    ({"hf": "gpt2", "inputs": [{"name": "input_ids"}]}, {}, "inputs: an hf model's inputs come from"),
    ({"hf": "bert-base"}, {"seq_lens": [128, 1024]}, "at most 512 tokens (max_position_embeddings); seq 1024"),
    ({"hf": "bert-base"}, {"seq_lens": None}, "dim 1 'seq' has no value"),
])
def test_bad_hf_models_are_located_exit_2(tmp_path, model, matrix, expected):
    data = plan([model])
    data["matrix"].update(matrix)
    if data["matrix"]["seq_lens"] is None:
        del data["matrix"]["seq_lens"]
    f = tmp_path / "bad.yaml"
    f.write_text(json.dumps(data))
    result = cli("validate", f)
    out = result.stdout + result.stderr
    assert result.returncode == 2 and expected in out and "Traceback" not in out, out
    assert "models[0]" in out, out


def test_a_local_model_folder_is_loaded_from_its_config(tmp_path):
    """A folder written by save_pretrained: its architecture from config.json, its own weights."""
    import torch
    import transformers

    cfg = transformers.DistilBertConfig(n_layers=1, dim=32, n_heads=2, hidden_dim=64, vocab_size=100)
    torch.manual_seed(3)
    transformers.DistilBertModel(cfg).save_pretrained(tmp_path / "mine")
    (t,) = expand(parse_plan({**plan([{"hf": str(tmp_path / "mine")}], ["torch-eager"]),
                              "matrix": {"batch_sizes": [1], "backends": ["torch-eager"], "seq_lens": [4]}}))
    assert t.model.name == "mine" and {i.name: i.high for i in t.model.inputs}["input_ids"] == 100
    (row,) = run_all([t])
    assert row["status"] == "ok", row.get("error")
    built = hf.build(t.model.ref, {}, seed=0)
    saved = transformers.DistilBertModel.from_pretrained(tmp_path / "mine")
    assert torch.equal(built.inner.embeddings.word_embeddings.weight, saved.embeddings.word_embeddings.weight)


@pytest.mark.parametrize("name", sorted(hf.ARCHS))
def test_the_table_says_what_the_installed_transformers_has(name):
    import transformers

    arch = hf.ARCHS[name]
    config = getattr(transformers, arch.config)()
    assert config.model_type == arch.model_type
    assert hasattr(transformers, arch.model)
    assert [k for k in arch.overridable if k not in config.to_dict()] == []
    if arch.vocab_key:
        assert getattr(config, arch.vocab_key) == arch.vocab_size
    if arch.max_seq_key:
        assert getattr(config, arch.max_seq_key) == arch.max_seq
    if arch.image_key:
        assert getattr(config, arch.image_key) == arch.extra["image"]


@pytest.mark.gpu
def test_tiny_bert_on_every_cuda_backend_in_fp32_and_fp16():
    """A graph per shape (torch CUDA graph, ORT's CUDA graph), every input bound, ORT fp16 from the
    fp16 model's export; parity holds on every backend, dtype and sequence length."""
    from workers.models.build import ModelStore
    from workers.trial import run_trial

    backends = ["torch-eager", "torch-cudagraph", {"backend": "torch-compile", "options": {"mode": "default"}},
                {"backend": "ort", "io": ["host"]},
                {"backend": "ort", "label": "ort-bind", "options": {"io_binding": True}},
                {"backend": "ort", "label": "ort-graph", "options": {"io_binding": True, "cuda_graph": True}},
                {"backend": "ort", "label": "ort-dynamic", "options": {"io_binding": True, "dynamic_shapes": True}}]
    data = plan([TINY_BERT], backends, device="cuda", dtypes=["fp32", "fp16"])
    store = ModelStore()
    rows = [run_trial(t, "cuda", store) for t in expand(parse_plan(data))]
    assert len(rows) == 28
    for r in rows:
        assert r["status"] == "ok", (r["label"], r["dtype"], r["axes"], r.get("error"))
    routes = {r["label"]: r["export_route"] for r in rows if r["backend"] == "ort" and r["dtype"] == "fp16"}
    route = "torch.onnx dynamo export of the fp16 model, "
    assert routes.pop("ort-dynamic") == route + "dynamic shapes (one export for every shape)"
    assert set(routes.values()) == {route + "static shapes"}


@pytest.mark.parametrize("exporter", ["dynamo", "torchscript"])
def test_dynamic_shapes_is_one_export_for_every_shape_and_agrees(exporter):
    """ORT's dynamic_shapes option: the second sequence length reuses the first one's export, with
    either exporter (dynamo takes torch.export's dynamic_shapes; it can't convert dynamic_axes here)."""
    data = plan([TINY_BERT], [{"backend": "ort", "options": {"dynamic_shapes": True, "exporter": exporter}}])
    data["matrix"].update(batch_sizes=[1, 3], exclude=[{"batch_size": 1, "axes": {"seq": 16}},
                                                       {"batch_size": 3, "axes": {"seq": 8}}])
    rows = run_all(expand(parse_plan(data)))
    assert [(r["batch_size"], r["inputs"][0]["shape"]) for r in rows] == [(1, [1, 8]), (3, [3, 16])]
    assert [r["status"] for r in rows] == ["ok"] * 2, [r.get("error") for r in rows]
    assert [r["export_cached"] for r in rows] == [False, True]
    assert all(r["parity_max_rel_err"] < 1e-4 for r in rows)
    assert rows[0]["export_route"].endswith("dynamic shapes (one export for every shape)")


@pytest.mark.gpu
def test_a_cuda_graph_trial_measures_the_same_first_in_its_worker_and_after_others():
    """bench/trial_order.py in a fresh process: the same BERT-base graph trial three times in a row.
    The first trial of a process used to run 7-8% faster than the next ones, on an H200."""
    done = subprocess.run([sys.executable, "bench/trial_order.py"], cwd=REPO, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("(ok)") == 3, done.stdout
    spread = float(done.stdout.rsplit("spread:", 1)[1])
    assert spread <= 1.02, done.stdout
