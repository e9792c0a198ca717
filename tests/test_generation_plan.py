"""Generation from a plan, the user's way: ``hf-causal`` models with ``matrix.prompt_lens`` and
``new_tokens`` run through ``infer-orch run`` on this CPU (torch eager, ORT with IO binding, ORT GenAI's
CPU execution provider), read back by ``report`` and judged by ``compare`` on TPOT and TTFT; each bad
input refused by ``validate`` at its key. One shared run (tiny models) serves the run's assertions."""

from __future__ import annotations

import importlib.util
import json
import textwrap

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from helpers import cli

from orchestrator.plan.expand import expand
from orchestrator.plan.load import parse_plan

HAS_GENAI = importlib.util.find_spec("onnxruntime_genai") is not None
TINY_LLAMA = ("{num_hidden_layers: 2, hidden_size: 64, num_attention_heads: 4, num_key_value_heads: 2, "
              "intermediate_size: 128, vocab_size: 256, max_position_embeddings: 64}")
PLAN = f"""\
name: gen-tiny
device: cpu
models:
  - hf-causal: llama
    name: tiny-llama
    overrides: {TINY_LLAMA}
  - hf-causal: gpt2
    name: tiny-gpt2
    overrides: {{n_layer: 2, n_embd: 64, n_head: 4, vocab_size: 256, n_positions: 64}}
matrix:
  batch_sizes: [2]
  prompt_lens: [4]
  new_tokens: [5]
  backends: [torch-eager, ort, ort-genai]
measure: {{generations: 2, warmup_generations: 0}}
"""


@pytest.fixture(scope="module")
def gen_run(ray_gpus, tmp_path_factory):
    d = tmp_path_factory.mktemp("gen")
    (d / "plan.yaml").write_text(PLAN)
    res = cli("run", d / "plan.yaml", "--out", d / "out")
    assert res.returncode == 0, res.stdout + res.stderr
    rows = pq.read_table(d / "out").to_pylist()
    return d / "out", {(r["model"], r["label"]): r for r in rows}


def test_a_generation_row_holds_one_ttft_and_new_tokens_minus_one_decode_steps_per_generation(gen_run):
    _, rows = gen_run
    r = rows[("tiny-llama", "torch-eager")]
    assert r["status"] == "ok", r["error"]
    assert r["scenario"] == "generate" and (r["prompt_len"], r["new_tokens"]) == (4, 5)
    assert r["inputs"] == [{"name": "input_ids", "dtype": "int64", "shape": [2, 4]}]
    assert len(r["ttft_samples_ms"]) == 2 and len(r["samples_ms"]) == r["iters"] == 2 * 4  # 2 generations x 4 steps
    assert r["tpot_ms"] == pytest.approx(float(np.median(r["samples_ms"])))
    assert r["latency_ms_median"] == pytest.approx(r["tpot_ms"]) and r["ttft_ms"] > 0
    assert r["tokens_per_s"] > 0 and r["e2e_ms"] > r["ttft_ms"]
    assert r["kv_cache_bytes"] == 2 * 2 * 2 * 2 * 9 * 16 * 4  # K+V, layers, batch, kv heads, 4+5 tokens, head 16, fp32
    assert r["decode_bytes"] > 0 and r["generation_clock"] == "host" and r["roofline_frac"] is None  # no GPU
    assert r["setup_s"] > 0 and r["artifact_build_s"] is None  # torch builds nothing


def test_every_backend_agrees_with_the_fp32_reference_and_gpt2_skips_where_the_builder_cant(gen_run):
    _, rows = gen_run
    ran = ["torch-eager", "ort"] + (["ort-genai"] if HAS_GENAI else [])
    for label in ran:
        r = rows[("tiny-llama", label)]
        assert r["status"] == "ok", (label, r["error"])
        assert r["parity_max_rel_err"] < 1e-4 and r["token_agreement"] == 1.0 and r["parity_steps"] == 3, label
        if label != "torch-eager":  # one build of the node's cache, made by one trial, taken by the other
            assert r["artifact_build_s"] is not None and r["artifact_wait_s"] is not None, label
    assert rows[("tiny-gpt2", "torch-eager")]["status"] == "ok"
    assert rows[("tiny-gpt2", "torch-eager")]["token_agreement"] == 1.0
    for label in ("ort", "ort-genai"):
        r = rows[("tiny-gpt2", label)]
        assert r["status"] == "skipped" and ("does not build gpt2" in r["error"] or "not installed" in r["error"])
    if not HAS_GENAI:
        assert "onnxruntime_genai not installed" in rows[("tiny-llama", "ort-genai")]["error"]


def test_report_shows_the_generation_table(gen_run):
    out, _ = gen_run
    res = cli("report", out)
    assert res.returncode == 0, res.stdout
    assert "Generation (TTFT" in res.stdout and "4+5" in res.stdout
    assert "fastest per output token" in res.stdout


def _fixed(run, copy_to, tpot_ms, ttft_ms):
    """``run`` copied to ``copy_to`` with the ok generation rows' decode steps and TTFTs replaced by
    seeded ones around ``tpot_ms`` / ``ttft_ms`` (by label; 1% spread), their columns and verdicts
    recomputed: a real run with figures fixed whatever the machine's load did."""
    import shutil

    from workers.measure import stats, validity

    run = shutil.copytree(run, copy_to)
    path = run / "results.parquet"
    table = pq.read_table(path)
    rows, rng = table.to_pylist(), np.random.default_rng(0)
    for r in rows:
        if r["status"] != "ok" or r["label"] not in tpot_ms:
            continue
        steps = rng.normal(tpot_ms[r["label"]], 0.01 * tpot_ms[r["label"]], 200)
        ttft = rng.normal(ttft_ms[r["label"]], 0.01 * ttft_ms[r["label"]], 20)
        r.update(samples_ms=steps.tolist(), iters=200, tpot_ms=float(np.median(steps)), ttft_samples_ms=ttft.tolist(),
                 ttft_ms=float(np.median(ttft)), repeat_medians_ms=None,
                 **stats.latency_stats(steps, r["batch_size"]))
        r.update(validity.verdict(r, None))
        assert r["valid"], r["invalid_reasons"]
    pq.write_table(pa.Table.from_pylist(rows, schema=table.schema), path)
    return run


def test_compare_judges_tpot_and_ttft(gen_run, tmp_path):
    out, _ = gen_run
    base = _fixed(out, tmp_path / "base", {"torch-eager": 2.0, "ort": 1.0}, {"torch-eager": 5.0, "ort": 3.0})
    cand = _fixed(out, tmp_path / "cand", {"torch-eager": 2.0, "ort": 1.5}, {"torch-eager": 6.0, "ort": 3.0})
    res = cli("compare", base, cand, "--format", "json")
    assert res.returncode == 1, res.stdout  # a regression
    items = {(i["model"], i["label"]): i for i in json.loads(res.stdout)["trials"]}
    ort = items[("tiny-llama", "ort")]
    assert ort["metric"] == "TPOT ms" and ort["verdict"] == "regressed" and ort["ratio"] == pytest.approx(1.5, 0.02)
    eager = items[("tiny-llama", "torch-eager")]  # TPOT the same, TTFT 20% slower: the worst figure decides
    assert [f["metric"] for f in eager["figures"]] == ["TPOT ms", "TTFT ms"]
    assert eager["figures"][0]["verdict"] == "unchanged" and eager["figures"][1]["verdict"] == "regressed"
    assert eager["verdict"] == "regressed"


def test_generation_fields_keep_every_other_trial_id_and_enter_only_generation_ids():
    plan = yaml.safe_load(PLAN)
    ids = {t.trial_id for t in expand(parse_plan(plan))}
    plan["matrix"]["prompt_lens"] = [4, 8]
    more = {t.trial_id for t in expand(parse_plan(plan))}
    assert ids < more and len(more) == 2 * len(ids)  # the new prompt length: new ids; the others unchanged


BAD = [
    ("prompt_lens: [60]\n  new_tokens: [8]", "matrix.prompt_lens[0]: prompt 60 + new_tokens 8 = 68 tokens is longer "
                                            "than the model's 64 positions"),
    ("prompt_lens: [4]\n  new_tokens: [5, 0]", "matrix.new_tokens[1]: 0 new tokens; a generation makes at least 1"),
    ("prompt_lens: [4]", "matrix.new_tokens: required for generation trials"),
    ("prompt_lens: [4]\n  new_tokens: [5]\n  scenarios: [single-stream]",
     "matrix.backends[0]: hf-causal models run the generate scenario (one generation at a time) and the load "
     "scenarios (offline, server, find-peak); single-stream is not built for generation"),
    ("prompt_lens: [4]\n  new_tokens: [5]\n  io: [host]", "matrix.io: generation trials keep the prompt and the "
                                                           "tokens on the device"),
]


def _plan(tmp_path, matrix, models=None, backends="[torch-eager]"):
    models = models or f"- hf-causal: llama\n    overrides: {TINY_LLAMA}"
    text = textwrap.dedent(f"""\
        name: bad
        device: cpu
        models:
          {{models}}
        matrix:
          batch_sizes: [1]
          backends: {backends}
          {{matrix}}
        """).format(models=models, matrix=matrix)
    p = tmp_path / "plan.yaml"
    p.write_text(text)
    return p


def _refused(path, expected):
    res = cli("validate", path)
    text = res.stdout + res.stderr
    assert res.returncode == 2, text
    assert expected in " ".join(text.split()), text
    assert "Traceback" not in text


@pytest.mark.parametrize(("matrix", "expected"), BAD, ids=["too-long", "zero-new-tokens", "no-new-tokens",
                                                           "single-stream", "io-host"])
def test_a_bad_generation_request_is_refused_at_its_key(tmp_path, matrix, expected):
    _refused(_plan(tmp_path, matrix), expected)


def test_a_model_that_does_not_generate_is_refused_at_its_key(tmp_path):
    gen = "prompt_lens: [4]\n  new_tokens: [5]\n  scenarios: [generate]"
    _refused(_plan(tmp_path, gen, models="- hf:gpt2"),
             "models[0]: hf:gpt2 is not a decoder for generation trials (hf: is the base model")
    _refused(_plan(tmp_path, "prompt_lens: [4]\n  new_tokens: [5]", models="- hf-causal: bert-base"),
             "models[0]: hf-causal:bert-base: 'bert-base' is not a decoder model")
    _refused(_plan(tmp_path, "prompt_lens: [4]\n  new_tokens: [5]", backends="[sleep]"),
             "matrix.backends[0]: backend sleep runs no generation; these do: ort, ort-genai, torch-compile")
    _refused(_plan(tmp_path, "prompt_lens: [4]", models="- torchvision:resnet18"),
             "matrix.prompt_lens: for generation trials; no model of this plan is an hf-causal decoder")


def test_ort_genai_is_a_backend_with_its_cuda_graph_as_an_option():
    res = cli("backends")
    assert res.returncode == 0 and "ort-genai" in res.stdout


def test_a_kv_cache_that_does_not_fit_is_an_oom_row(monkeypatch):
    """Fault injection: the path's setup raises torch's out-of-memory error (as allocating a KV cache
    too large for the GPU does); the trial is an ``oom`` row, nothing raised to the run."""
    import torch

    from workers.generation import measure as gm
    from workers.generation.torch_paths import TorchEager
    from workers.models.build import ModelStore
    from workers.trial import run_trial

    class NoRoom(TorchEager):
        def _setup(self):
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 64.00 GiB")

    monkeypatch.setitem(gm.RUNNERS, "torch-eager", NoRoom)
    plan = yaml.safe_load(PLAN)
    plan["models"] = plan["models"][:1]
    plan["matrix"]["backends"] = ["torch-eager"]
    (trial,) = expand(parse_plan(plan))
    row = run_trial(trial, "cpu", ModelStore())
    assert row["status"] == "oom" and "Tried to allocate 64.00 GiB" in row["error"], row["error"]
    assert row["prompt_len"] == 4 and row["new_tokens"] == 5 and row["valid"] is None


def test_a_model_folder_is_checked_by_its_config_without_loading_it(tmp_path):
    """A save_pretrained folder's config.json decides: its positions bound the request; a folder of
    a model that does not generate is refused at the model."""
    folder = tmp_path / "tiny"
    folder.mkdir()
    config = {"model_type": "llama", "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
              "vocab_size": 256, "max_position_embeddings": 16}
    (folder / "config.json").write_text(json.dumps(config))
    ok = _plan(tmp_path, "prompt_lens: [8]\n  new_tokens: [8]", models="- hf-causal: ./tiny")
    (trial,) = expand(parse_plan(yaml.safe_load(ok.read_text()), base_dir=str(tmp_path)))
    assert trial.model.ref == str(folder) and trial.model.name == "tiny" and trial.scenario == "generate"
    _refused(_plan(tmp_path, "prompt_lens: [12]\n  new_tokens: [8]", models="- hf-causal: ./tiny"),
             "matrix.prompt_lens[0]: prompt 12 + new_tokens 8 = 20 tokens is longer than the model's 16 positions")
    (folder / "config.json").write_text(json.dumps({**config, "model_type": "bert"}))
    _refused(_plan(tmp_path, "prompt_lens: [8]\n  new_tokens: [8]", models="- hf-causal: ./tiny"),
             "models[0]: hf-causal:./tiny: model_type 'bert' is not a decoder this can generate with")


def test_the_shorthand_and_the_mapping_name_the_same_model():
    plan = yaml.safe_load(PLAN)
    ids = []
    for form in ("hf-causal:gpt2", {"hf-causal": "gpt2", "name": "gpt2-again"}):
        plan["models"] = [form]
        ids.append([(t.model.kind, t.trial_id) for t in expand(parse_plan(plan))])
    assert ids[0] == ids[1] and ids[0][0][0] == "hf-causal"  # the name is not in the id


def test_a_plan_mixes_generation_and_single_pass_models():
    """hf-causal models generate on the device: one generation at a time in place of the plan's
    one-request scenarios, and under its load scenarios; its io modes cross with its other models
    only; the count before expanding is the count expanded."""
    from orchestrator.plan.expand import count_trials

    plan = yaml.safe_load(PLAN)
    plan["models"] = ["torchvision:resnet18", plan["models"][0]]
    plan["matrix"].update(io=["host", "device"], scenarios=["single-stream", "offline"], backends=["torch-eager"])
    parsed = parse_plan(plan)
    trials = expand(parsed)
    gen = [t for t in trials if t.model.kind == "hf-causal"]
    single = [t for t in trials if t.model.kind != "hf-causal"]
    assert [(t.scenario, t.io, t.prompt_len, t.new_tokens) for t in gen] == [("generate", "device", 4, 5),
                                                                             ("offline", "device", 4, 5)]
    assert {(t.scenario, t.io) for t in single} == {(s, io) for s in ("single-stream", "offline")
                                                    for io in ("host", "device")}
    assert all(t.prompt_len == 0 for t in single) and count_trials(parsed) == len(trials) == 6


@pytest.mark.gpu
def test_every_generation_backend_of_a_plan_gives_its_row_on_a_gpu():
    """The plan's trials on the worker's CUDA device, each backend entry its generation path: a row
    with the CUDA-event or host clock, the roofline fraction and the KV cache (fp16, batch 1)."""
    from workers.models.build import ModelStore
    from workers.trial import run_trial

    plan = yaml.safe_load(PLAN)
    plan.update(device="cuda", models=plan["models"][:1])
    plan["matrix"].update(batch_sizes=[1], dtypes=["fp16"], backends=[
        "torch-eager", "torch-cudagraph", "torch-compile", "ort", "ort-genai",
        {"backend": "ort-genai", "label": "ort-genai-graph", "options": {"cuda_graph": True}}])
    for trial in expand(parse_plan(plan)):
        row = run_trial(trial, "cuda", ModelStore())
        if trial.backend == "ort-genai" and not HAS_GENAI:
            assert row["status"] == "skipped" and "not installed" in row["error"]
            continue
        assert row["status"] == "ok", (trial.label, row["error"])
        assert row["generation_clock"] == ("host (around generate_next_token)" if trial.backend == "ort-genai"
                                           else "cuda-events"), trial.label
        assert len(row["samples_ms"]) == 2 * 4 and 0 < row["roofline_frac"] < 1.5 and row["copy_bandwidth_gbs"] > 0
        assert row["kv_cache_bytes"] > 0 and row["token_agreement"] is not None
        # timed on one CPU near the GPU, as single-pass trials are (where NVML names the GPU's CPUs)
        import os

        from workers.measure import nvml

        pinning = nvml.load() is not None and os.environ.get("INFER_ORCH_PIN_TIMING", "1") != "0"
        assert (row["timing_cpu"] is not None) == pinning, row["timing_cpu"]
