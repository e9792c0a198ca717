"""Generation under load: k generations in flight (offline, server, find-peak) of a tiny Llama-shaped
model (2 layers, hidden 64) on torch eager on this CPU, through the worker's ``run_trial`` in this
process; find-peak's two bounds; the generation table and compare on the load figures; the plan's
checks of load scenarios for hf-causal models. GPU tests (marked ``gpu``): every CUDA path under
offline load."""

from __future__ import annotations

import copy
import importlib.util

import numpy as np
import pyarrow as pa
import pytest

from orchestrator.errors import PlanError
from orchestrator.plan.expand import count_trials, expand
from orchestrator.plan.load import parse_plan
from workers.models.build import ModelStore
from workers.schema import SCHEMA
from workers.trial import run_trial

TINY_LLAMA = {"num_hidden_layers": 2, "hidden_size": 64, "num_attention_heads": 4, "num_key_value_heads": 2,
              "intermediate_size": 128, "vocab_size": 256, "max_position_embeddings": 64}
#: a TTFT bound every run here meets, and a TPOT bound none can
TTFT_BOUND, TPOT_BOUND = 1000.0, 0.001
PLAN = {
    "name": "gen-load", "device": "cpu",
    "models": [{"hf-causal": "llama", "name": "tiny-llama", "overrides": TINY_LLAMA}],
    "matrix": {"batch_sizes": [2], "prompt_lens": [4], "new_tokens": [5], "backends": ["torch-eager"]},
    # 400 requests/s is about twice what two lanes serve here: requests queue
    "scenario": {"name": ["offline", "server", "find-peak"], "concurrency": 2, "rates": [400], "min_requests": 12,
                 "min_duration_s": 0.2, "latency_bound_ms": TTFT_BOUND, "tpot_bound_ms": TPOT_BOUND},
    "measure": {"generations": 1, "warmup_generations": 1, "max_time_s": 1.5},
}


@pytest.fixture(scope="module")
def rows():
    return {t.scenario: run_trial(t, "cpu", ModelStore()) for t in expand(parse_plan(copy.deepcopy(PLAN)))}


def _per_request(r):
    return len(r["request_start_s"]), len(r["ttft_samples_ms"]), len(r["tpot_samples_ms"])


def test_offline_keeps_k_generations_in_flight_and_counts_every_token(rows):
    r = rows["offline"]
    assert r["status"] == "ok" and r["valid"], (r.get("error"), r.get("invalid_reasons"))
    assert r["scenario"] == "offline" and r["concurrency"] == 2 and set(r["request_lane"]) == {0, 1}
    n = r["requests"]
    assert n >= 12 and _per_request(r) == (n, n, n * 4)  # one TTFT and new_tokens - 1 decode steps per request
    assert r["tokens_per_s"] == pytest.approx(n * 2 * 5 / r["measured_s"])  # requests x batch x new tokens
    assert r["achieved_rate"] == pytest.approx(n / r["measured_s"])
    assert r["tpot_ms"] == pytest.approx(np.median(r["tpot_samples_ms"]))
    assert r["ttft_ms_p99"] == pytest.approx(np.percentile(r["ttft_samples_ms"], 99))
    # offline: a request's TTFT counts from its start, within its service time
    assert all(0 < t <= s for t, s in zip(r["ttft_samples_ms"], r["request_service_ms"]))
    assert r["token_agreement"] == 1.0 and r["parity_max_rel_err"] < 1e-4 and r["generation_clock"] == "host"


def test_server_counts_time_to_first_token_from_the_scheduled_arrival(rows):
    r = rows["server"]
    assert r["status"] == "ok", r.get("error")
    n = r["requests"]
    assert _per_request(r) == (n, n, n * 4) and r["tpot_bound_ms"] == TPOT_BOUND
    wait = (np.asarray(r["request_start_s"]) - np.asarray(r["request_arrival_s"])) * 1e3
    ttft, service = np.asarray(r["ttft_samples_ms"]), np.asarray(r["request_service_ms"])
    assert (wait > 1).any(), wait  # at twice the capacity, requests queued
    assert (ttft > wait).all() and (ttft <= wait + service).all()  # the wait counts; the first token is in service
    assert r["ttft_ms_p99"] == pytest.approx(np.percentile(ttft, 99))
    assert r["tpot_ms_p99"] == pytest.approx(np.percentile(r["tpot_samples_ms"], 99))
    assert f"over the bound: TPOT p99 {r['tpot_ms_p99']:.3g} ms > tpot_bound_ms 0.001" in r["invalid_reasons"]


def test_find_peak_searches_under_both_bounds_and_says_which_it_missed(rows):
    r = rows["find-peak"]  # a TTFT bound met, a TPOT bound no decode step meets: no rate passes
    assert r["status"] == "ok" and r.get("peak_rate") is None and r["probe_rates"], r.get("error")
    assert len(r["probe_tpot_p99_ms"]) == len(r["probe_p99_ms"]) == len(r["probe_rates"])
    assert not any(r["probe_passed"]) and max(r["probe_p99_ms"]) <= TTFT_BOUND < min(r["probe_tpot_p99_ms"]) * 1e6
    assert r["valid"] is False and r["invalid_reasons"] == [
        f"no peak: none of the {len(r['probe_rates'])} rate(s) tried met TTFT p99 <= 1000 ms and TPOT p99 <= 0.001 ms"]


def test_a_probe_passes_only_within_both_bounds():
    from types import SimpleNamespace

    from workers.scenarios._peak import _judge

    trial = SimpleNamespace(confident=False, latency_bound_ms=10.0, tpot_bound_ms=2.0)
    kept = {"schedule_rate": 100.0, "achieved_rate": 100.0, "ttft_samples_ms": [1.0]}
    for ttft, tpot, verdict in ((5, 1, "pass"), (11, 1, "fail"), (5, 3, "fail"), (5, None, "pass")):
        assert _judge({**kept, "ttft_ms_p99": ttft, "tpot_ms_p99": tpot}, trial, 0.01, np.ones(1)) == verdict
    trial.tpot_bound_ms = None  # no TPOT bound: TTFT alone
    assert _judge({**kept, "ttft_ms_p99": 5, "tpot_ms_p99": 3}, trial, 0.01, np.ones(1)) == "pass"


def test_the_generation_table_and_compare_take_up_the_load_figures(rows):
    from orchestrator.answers import compare, generation, tables

    cells = {c[4]: c for c in generation.cells(list(rows.values()))}
    assert cells["offline c=2"][6] == f"{rows['offline']['achieved_rate']:.1f}"  # req/s
    assert "server c=2 400/s TTFT p99<=1000ms TPOT p99<=0.001ms" in cells
    offline = rows["offline"]  # valid: judged on tokens/s, then the TPOT p99
    slower = {**offline, "tpot_samples_ms": [3 * x for x in offline["tpot_samples_ms"]]}
    slower["tpot_ms_p99"] = float(np.percentile(slower["tpot_samples_ms"], 99))
    base, cand = (pa.Table.from_pylist([r], schema=SCHEMA) for r in (offline, slower))
    (item,) = compare.compare(base, cand, n_boot=200)
    assert [f["metric"] for f in item["figures"]] == ["tokens/s", "TPOT p99 ms"]
    assert item["figures"][0]["verdict"] == "unchanged" and item["figures"][1]["verdict"] == "regressed"
    assert item["verdict"] == "regressed"
    peak = {**rows["find-peak"], "peak_rate": 12.5}  # the serving answer names both bounds
    (line,) = tables.serving_answers([peak])
    assert line.startswith("tiny-llama 4+5 batch 2 fp32: most requests/s at TTFT p99 <= 1000 ms and TPOT p99 <= "
                           "0.001 ms: torch-eager (device, concurrency 2): 12.5/s"), line


def _plan(**scenario):
    plan = copy.deepcopy(PLAN)
    plan["scenario"] = {"min_requests": 12, "min_duration_s": 0.2, **scenario}
    return plan


def test_a_plan_asks_load_scenarios_of_a_generation_model():
    plan = _plan(name=["generate", "offline", "server"], concurrency=[1, 4], rates=[20])
    parsed = parse_plan(plan)
    trials = expand(parsed)
    got = sorted((t.scenario, t.concurrency, t.rate or 0, t.io) for t in trials)
    assert got == [("generate", 1, 0, "device"), ("offline", 1, 0, "device"), ("offline", 4, 0, "device"),
                   ("server", 1, 20, "device"), ("server", 4, 20, "device")]
    assert count_trials(parsed) == len(trials) and all(t.new_tokens == 5 for t in trials)


def test_what_a_generation_path_cant_do_under_load_is_refused_at_its_key():
    plan = _plan(name="offline", concurrency=[1, 2])
    plan["matrix"]["backends"] = ["torch-eager", "torch-compile"]
    with pytest.raises(PlanError, match=r"matrix\.backends\[1\]: concurrency 2: torch-compile's generation path "
                                        r"can't keep several generations in flight \(torch\.compile's CUDA graph"):
        parse_plan(plan)
    plan["scenario"]["concurrency"] = 1
    parse_plan(plan)  # one request slot: it can
    single = _plan(name="find-peak", latency_bound_ms=5, tpot_bound_ms=1)
    single["models"] = ["torchvision:resnet18"]
    del single["matrix"]["prompt_lens"], single["matrix"]["new_tokens"]
    with pytest.raises(PlanError, match=r"scenario\.tpot_bound_ms: for generation trials; no model of this plan"):
        parse_plan(single)


def test_a_path_that_keeps_one_generation_at_a_time_is_skipped_with_its_reason_at_two():
    """A trial made without a plan (the plan refuses it): its row says why, before anything is built."""
    from workers.backends.base import SkipTrial
    from workers.generation.load import GenerationLanes

    with pytest.raises(SkipTrial, match=r"torch-compile can't keep 2 generations in flight: torch\.compile's CUDA "
                                        r"graph trees are kept per thread"):
        GenerationLanes("torch-compile", None, "fp16", "cuda", 1, 4, 5, 2, np.zeros((1, 4), dtype=np.int64))


# ----- GPU: every CUDA path under offline load (skipped without CUDA) -----

HAS_GENAI = importlib.util.find_spec("onnxruntime_genai") is not None
GPU_ENTRIES = ["torch-eager", "torch-cudagraph", "torch-compile", "ort", "ort-genai",
               {"backend": "ort-genai", "label": "ort-genai-graph", "options": {"cuda_graph": True}}]


@pytest.mark.gpu
@pytest.mark.parametrize("entry", GPU_ENTRIES, ids=lambda e: e if isinstance(e, str) else e["label"])
def test_every_cuda_path_keeps_two_generations_in_flight_torch_compile_one(entry):
    compiled = entry == "torch-compile"
    plan = _plan(name="offline", concurrency=1 if compiled else 2)
    plan.update(device="cuda")
    plan["matrix"].update(batch_sizes=[1], dtypes=["fp16"], backends=[entry])
    (trial,) = expand(parse_plan(plan))
    row = run_trial(trial, "cuda", ModelStore())
    label = trial.label
    if label.startswith("ort-genai") and not HAS_GENAI:
        assert row["status"] == "skipped" and "not installed" in row["error"]
        return
    assert row["status"] == "ok", (label, row["error"])
    assert set(row["request_lane"]) == ({0} if compiled else {0, 1}) and row["requests"] >= 12
    assert len(row["tpot_samples_ms"]) == 4 * row["requests"] and row["tokens_per_s"] > 0
    assert row["generation_clock"] == ("host (around generate_next_token)" if label.startswith("ort-genai")
                                       else "cuda-events"), label
    assert row["token_agreement"] is not None and (row.get("energy_method") or row.get("energy_note"))  # a short run
