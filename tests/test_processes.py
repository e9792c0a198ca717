"""``measure.process_repeats``: a trial measured in N fresh processes, one row.

In-process: the merge's interval of the median holds the spread between processes (seeded
processes whose medians move, as a launch-bound loop's do between fresh processes), and compare
judges a row by its measured spread instead of the floor. Through the real run path (Ray, the
sleep backend): the processes are distinct, a crashing process is the trial's failed row, and two
runs of the same trials give no verdict."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
from helpers import trials_for

from orchestrator.answers.compare import BETWEEN_RUN_FLOOR, between_run_noise, compare
from orchestrator.results.read import load_results
from orchestrator.run.api import run_plan
from orchestrator.run.dispatch import job_of
from workers.measure import processes, stats
from workers.schema import SCHEMA


def trial(n: int = 5):
    return trials_for([{"backend": "sleep"}], io=("device",), measure={"iters": 5, "process_repeats": n})[0]


def process_rows(medians_ms: list[float], n_samples: int = 40, within: float = 0.01, seed: int = 0) -> list[dict]:
    """One ok row per process, as a process reports it: seeded samples around its median."""
    rng = np.random.default_rng(seed)
    return [process_row(rng.normal(m, within * m, n_samples).tolist()) for m in medians_ms]


def process_row(samples: list[float]) -> dict:
    return {"status": "ok", "samples_ms": samples, "host_samples_ms": samples, "converged": True, "repeats": 1,
            "repeat_medians_ms": [stats.median(samples)], "repeat_rel_ci": [stats.relative_ci(samples)],
            "iters": len(samples), **stats.latency_stats(samples, 1)}


def test_the_interval_of_the_median_holds_the_spread_between_processes():
    t = trial()
    pids = [11, 12, 13, 14, 15]
    tight = processes.merge(process_rows([10.0] * 5), pids, t)
    spread = processes.merge(process_rows([9.4, 9.7, 10.0, 10.3, 10.6]), pids, t)
    width = {name: r["latency_ms_ci_high"] / r["latency_ms_ci_low"] - 1 for name, r in (("tight", tight),
                                                                                         ("spread", spread))}
    assert width["spread"] > 2 * width["tight"] and width["spread"] > 0.05  # b = 2.78 * 4.9% / sqrt(5) each side
    assert spread["process_pids"] == pids and spread["process_repeats"] == 5 and spread["iters"] == 200
    assert spread["process_cv"] == pytest.approx(0.0474, abs=0.003)
    assert spread["latency_ms_ci_low"] < spread["latency_ms_median"] < spread["latency_ms_ci_high"]
    assert spread["valid"], spread["invalid_reasons"]  # the spread between processes: in the interval, no reason

    # coverage: where each process lands at random (a 5% SD between processes), the interval of the merged
    # median covers the centre about 95% of the time; the pooled samples' own interval alone rarely does
    rng = np.random.default_rng(1)
    covered = naive = 0
    for k in range(200):
        medians = (10.0 * np.exp(rng.normal(0, 0.05, 5))).tolist()
        rows = process_rows(medians, n_samples=10, seed=k)
        pooled = np.concatenate([r["samples_ms"] for r in rows])
        lo, hi = stats.bootstrap_median_ci(pooled, seed=k, resamples=200)
        wlo, whi = processes.widened_ci(float(np.median(pooled)), lo, hi, [stats.median(r["samples_ms"]) for r in rows])
        covered += wlo <= 10.0 <= whi
        naive += lo <= 10.0 <= hi
    assert covered >= 0.9 * 200 and naive < 0.6 * 200, (covered, naive)


def test_process_repeats_is_in_the_trial_id_as_repeats_is_and_each_process_gets_the_timeout():
    plain = trials_for([{"backend": "sleep"}], io=("device",), measure={"iters": 5})[0]
    assert trial(1).trial_id == plain.trial_id != trial(3).trial_id  # out of the id at its default
    timed = trials_for([{"backend": "sleep"}], io=("device",), measure={"iters": 5, "process_repeats": 3},
                       timeout_s=100)[0]
    assert job_of(timed).timeout_s == 300 and job_of(plain).timeout_s == plain.timeout_s == 900


def test_a_plan_whose_every_trial_is_of_a_load_or_generation_scenario_is_refused_at_the_key():
    from orchestrator.errors import PlanError
    from orchestrator.plan.expand import expand
    from orchestrator.plan.load import parse_plan

    decoder = {"hf-causal": "llama", "overrides": {"num_hidden_layers": 1, "hidden_size": 32, "num_attention_heads": 2,
                                                   "num_key_value_heads": 1, "intermediate_size": 64}}
    plans = {  # a key, a plan none of whose trials it applies to: each trial would be a skipped row
        "process_repeats": {"models": [decoder], "matrix": {"batch_sizes": [1], "prompt_lens": [8], "new_tokens": [4],
                                                           "backends": ["torch-eager"]}},
        "input_pool": {"models": ["torchvision:resnet18"],
                       "matrix": {"batch_sizes": [1], "backends": ["torch-eager"], "scenarios": ["offline"]}},
    }
    for key, plan in plans.items():
        with pytest.raises(PlanError, match=rf"measure.{key}: 2 applies to requests timed one at a time "
                                            r"\(scenario single-stream\); every trial of this plan is of scenario"):
            expand(parse_plan({"name": "p", "device": "cpu", **plan, "measure": {key: 2}}))
    mixed = {"models": ["torchvision:resnet18"],
             "matrix": {"batch_sizes": [1], "backends": ["torch-eager"], "scenarios": ["single-stream", "offline"]}}
    assert len(expand(parse_plan({"name": "p", "device": "cpu", **mixed, "measure": {"process_repeats": 2}}))) == 2


def test_a_noisy_process_makes_the_row_invalid_and_says_which_the_sample_count_is_the_rows():
    rows = process_rows([10.0, 10.0, 10.0])
    rows[1] = process_row([8.0, 12.0] * 20)  # IQR/median 40%: noisy within its own loop
    merged = processes.merge(rows, [1, 2, 3], trial(3))
    assert merged["valid"] is False and merged["invalid_reasons"][0].startswith("process 2 of 3: noisy: IQR/median")
    few = processes.merge(process_rows([10.0, 10.0, 10.0], n_samples=4), [1, 2, 3], trial(3))
    assert few["valid"], few["invalid_reasons"]  # 4 each, too few for a process's interval; 12 are enough
    assert processes.merge(process_rows([10.0], n_samples=4), [1], trial(3))["invalid_reasons"] == [
        "too few samples: 4 < 6, no confidence interval of the median"]


def row(label: str, medians_ms: list[float], seed: int) -> dict:
    """A compare-ready cpu row: one process's samples, or the merge of several (``len(medians_ms)`` > 1)."""
    rows = process_rows(medians_ms, n_samples=60, within=0.005, seed=seed)
    r = processes.merge(rows, list(range(len(rows))), trial(len(rows))) if len(rows) > 1 else rows[0]
    if len(rows) == 1:
        r.update(stats.latency_stats(r["samples_ms"], 1, seed=seed))
    return {**{k: r.get(k) for k in SCHEMA.names}, "trial_id": label, "label": label, "model": "m",
            "batch_size": 1, "device": "cpu", "status": "ok", "valid": True, "invalid_reasons": []}


def test_compare_judges_a_row_by_its_processes_spread_where_it_has_one_else_by_the_floor():
    """A 6% slowdown: the CPU floor (3% a row) hides it; five processes that agree within 0.5% show it;
    five that spread 6% hide it again, by their own measure; a row of one process keeps its floor."""
    base = {"one": row("one", [10.0], 1), "tight": row("tight", [9.95, 10.0, 10.05, 10.0, 10.0], 2),
            "wide": row("wide", [9.4, 9.7, 10.0, 10.3, 10.6], 3), "mixed": row("mixed", [10.0], 4)}
    cand = {"one": row("one", [10.6], 5), "tight": row("tight", [10.55, 10.6, 10.65, 10.6, 10.6], 6),
            "wide": row("wide", [9.96, 10.28, 10.6, 10.92, 11.24], 7),
            "mixed": row("mixed", [10.55, 10.6, 10.65, 10.6, 10.6], 8)}
    assert between_run_noise(base["one"]) == BETWEEN_RUN_FLOOR["cpu"]
    assert between_run_noise(base["tight"]) < 0.005 < 0.02 < between_run_noise(base["wide"])

    def table(rows: dict) -> pa.Table:
        return pa.Table.from_pylist(list(rows.values()), schema=SCHEMA)

    verdicts = {v["label"]: v for v in compare(table(base), table(cand))}
    assert {k: v["verdict"] for k, v in verdicts.items()} == {
        "one": "unchanged", "tight": "regressed", "wide": "unchanged", "mixed": "unchanged"}
    assert all(1.05 < v["ratio"] < 1.07 for v in verdicts.values())
    # a row with its spread beside one without: its own noise and the other's floor, combined
    assert verdicts["mixed"]["noise"] == pytest.approx(np.hypot(0.03, between_run_noise(cand["mixed"])))


PLAN = """\
name: procs
device: cuda
models: [torchvision:resnet18]
matrix:
  batch_sizes: [1]
  backends:
    - backend: sleep
      label: nap
      options: {step_s: 0.08}  # long enough that a busy machine's late wake-ups stay well under 3%
EXTRA
measure: {warmup_iters: 1, warmup_max_iters: 1, iters: 5, target_rel_ci: null, process_repeats: 3}
"""
CRASH = """\
    - backend: fault
      label: crash
      options: {mode: abort}"""


def test_process_repeats_run_in_distinct_processes_and_two_runs_give_no_verdict(ray_gpus, tmp_path):
    """Each process of a trial is its own (three pids); one that crashes is the trial's failed row and
    costs the worker nothing; two runs of the same trial compare quietly."""
    (tmp_path / "a.yaml").write_text(PLAN.replace("EXTRA", CRASH))
    (tmp_path / "b.yaml").write_text(PLAN.replace("EXTRA\n", ""))
    run_plan(tmp_path / "a.yaml", out=tmp_path / "a", workers=1)
    run_plan(tmp_path / "b.yaml", out=tmp_path / "b", workers=1)
    keys = ("status", "error", "process_pids", "process_medians_ms", "iters", "worker_replaced")
    a = {r["label"]: {k: r[k] for k in keys} for r in load_results(tmp_path / "a").to_pylist()}
    nap, crash = a["nap"], a["crash"]
    assert nap["status"] == "ok" and len(set(nap["process_pids"])) == 3 and nap["iters"] == 15, a
    assert len(nap["process_medians_ms"]) == 3, a
    assert crash["status"] == "failed" and crash["worker_replaced"] is False, a
    assert crash["error"].startswith(f"process 1 of 3 (pid {crash['process_pids'][0]}): it was killed by signal 6"), a

    verdicts = {v["label"]: v["verdict"] for v in compare(load_results(tmp_path / "a"), load_results(tmp_path / "b"))}
    # quiet: no regressed or improved (a loaded machine's late wake-ups may make a row invalid, which says why)
    assert verdicts["crash"] == "only in base" and verdicts["nap"] in ("unchanged", "invalid"), verdicts


@pytest.mark.gpu
def test_on_a_gpu_the_processes_share_the_workers_gpu_and_its_own_context_is_no_contention():
    """A warm worker (its CUDA context made) measures a model trial in two processes on its GPU: both
    ran there, parity checked in each, and the worker's idle context is not taken for another user."""
    from orchestrator.plan.expand import expand
    from orchestrator.plan.load import parse_plan
    from workers.actor import Worker

    data = {"name": "g", "device": "cuda", "models": [{"python": "tinynet:make", "input_shape": [3, 16, 16]}],
            "matrix": {"batch_sizes": [2], "backends": ["torch-eager"]},
            "measure": {"warmup_iters": 2, "iters": 10, "target_rel_ci": None, "process_repeats": 2}}
    worker = Worker("gpu0", "cuda", cpus=2, warm=True)
    row = worker.run(expand(parse_plan(data))[0])
    assert row["status"] == "ok", row.get("error")
    assert len(set(row["process_pids"])) == 2 and row["device"] == "cuda" and row["iters"] == 20
    assert row["contended"] is False, row["gpu_other_pids"]
    assert row["parity_max_rel_err"] is not None and row["process_cv"] is not None
