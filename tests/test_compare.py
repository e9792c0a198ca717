"""`infer-orch compare`: runs made through the real run path with the sleep backend, their timed
samples then seeded (a sleep wakes late by a few milliseconds when the 2-core CI machine is busy,
which once made a 15 ms `steady` trial "improved", once "regressed"); a 30% slowdown is found, two
runs of the same trials stay quiet; the statistics on seeded samples.

The runs' verdicts use a 15% threshold, the statistics at the default threshold are checked on
seeded tables below."""

from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from helpers import cli, reseed

from orchestrator.answers.compare import bootstrap_ratio_ci, compare
from orchestrator.results.read import load_results
from orchestrator.run.api import run_plan

PLAN = """\
name: cmp
device: cuda
models: [torchvision:resnet18]
matrix:
  batch_sizes: [1]
  backends:
    - backend: sleep
      label: nap
      options: {step_s: STEP}
    - backend: sleep
      label: steady
      options: {step_s: 0.036}
measure: {warmup_iters: 2, warmup_max_iters: 2, iters: 20, target_rel_ci: null}  # a sleep needs no warm-up
"""


@pytest.fixture(scope="module")
def runs(ray_gpus, tmp_path_factory):
    """base and same: the same trials twice; slow: the `nap` entry 30% slower (a code change).

    base and slow are real runs; their timed samples are then replaced by seeded ones around the
    steps' nominal times (``reseed``), so the verdicts are the same whatever a busy machine did to
    the sleeps; same is base with other seeded samples. test_validity.py is about invalid rows."""
    d = tmp_path_factory.mktemp("cmp")
    out = {}
    for name, step in (("base", "0.040"), ("slow", "0.052")):
        (d / f"{name}.yaml").write_text(PLAN.replace("STEP", step))
        assert run_plan(d / f"{name}.yaml", out=d / name, workers=1).counts == {"ok": 2}
        out[name] = reseed(d / name, {"nap": 1e3 * float(step), "steady": 36.0}, seed=len(out))
    out["same"] = reseed(d / "base", {"nap": 40.0, "steady": 36.0}, seed=2, copy_to=d / "same")
    return out


NOISY_MACHINE = 0.15  # see the module's docstring


def test_a_thirty_percent_slowdown_is_a_regression_and_exits_1(runs):
    proc = cli("compare", runs["base"], runs["slow"], "--format", "json", "--threshold", str(NOISY_MACHINE))
    assert proc.returncode == 1, proc.stderr
    report = json.loads(proc.stdout)
    nap, steady = (next(t for t in report["trials"] if t["label"] == x) for x in ("nap", "steady"))
    assert report["regressions"] == 1 and len(report["trials"]) == 2
    assert nap["verdict"] == "regressed" and nap["matched_by"] == "label"  # its options changed
    assert 1.15 < nap["ratio"] < 1.5 and 1 < nap["ci_low"] <= nap["ratio"] <= nap["ci_high"]
    assert steady["verdict"] == "unchanged" and steady["matched_by"] == "trial_id"


def test_two_runs_of_the_same_trials_stay_quiet(runs):
    proc = cli("compare", runs["base"], runs["same"], "--threshold", str(NOISY_MACHINE))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "2 trials compared, 0 regressed" in proc.stdout and "regressed  " not in proc.stdout


def test_the_slower_run_as_base_shows_an_improvement_not_a_regression(runs):
    items = compare(load_results(runs["slow"]), load_results(runs["base"]), threshold=NOISY_MACHINE)
    assert sorted(i["verdict"] for i in items) == ["improved", "unchanged"]


def test_missing_and_broken_trials_are_reported(runs):
    base = load_results(runs["base"])
    cand = load_results(runs["same"])
    # the candidate's first trial failed; then the candidate lost it
    rows = cand.to_pylist()
    rows[0].update(status="failed", error="RuntimeError: boom", latency_ms_median=None, samples_ms=None)
    items = compare(base, pa.Table.from_pylist(rows, schema=cand.schema), threshold=NOISY_MACHINE)
    assert sorted(i["verdict"] for i in items) == ["broken", "unchanged"]
    items = compare(base, pa.Table.from_pylist(rows[1:], schema=cand.schema), threshold=NOISY_MACHINE)
    assert sorted(i["verdict"] for i in items) == ["only in base", "unchanged"]


def test_a_broken_trial_makes_compare_exit_1_through_the_cli(runs, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(runs["same"], broken)
    table = pq.read_table(broken / "results.parquet")
    rows = [r | dict(status="failed", error="RuntimeError: boom", latency_ms_median=None, samples_ms=None,
                     valid=None, invalid_reasons=None) if r["label"] == "nap" else r for r in table.to_pylist()]
    pq.write_table(pa.Table.from_pylist(rows, schema=table.schema), broken / "results.parquet")
    proc = cli("compare", runs["base"], broken, "--format", "json", "--threshold", str(NOISY_MACHINE))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    report = json.loads(proc.stdout)
    assert report["regressions"] == 1 and report["verdicts"] == {"broken": 1, "unchanged": 1}
    proc = cli("compare", runs["base"], broken, "--threshold", str(NOISY_MACHINE))
    assert proc.returncode == 1 and "2 trials compared, 1 regressed" in proc.stdout and "broken" in proc.stdout


def test_confidence_and_noise_floor_set_the_interval(runs):
    def nap(*options: str) -> tuple[int, dict]:
        proc = cli("compare", runs["base"], runs["slow"], "--format", "json", *options)
        return proc.returncode, next(t for t in json.loads(proc.stdout)["trials"] if t["label"] == "nap")

    code_50, half = nap("--confidence", "0.5", "--noise-floor", "0")
    code_99, wide = nap("--confidence", "0.99", "--noise-floor", "0")
    assert code_50 == code_99 == 1 and half["verdict"] == wide["verdict"] == "regressed"
    assert wide["ci_low"] < half["ci_low"] <= half["ratio"] <= half["ci_high"] < wide["ci_high"]
    # a between-run noise of 20% on each side widens the 99% interval by exp(z sqrt(0.2^2 + 0.2^2)) each
    # way (z = 2.5758, the 99% quantile): a 30% slowdown is then within the noise, and nothing regressed
    code, noisy = nap("--confidence", "0.99", "--noise-floor", "0.2")
    widen = math.exp(2.5758293 * math.sqrt(2 * 0.2**2))
    assert noisy["ci_low"] == pytest.approx(wide["ci_low"] / widen) and noisy["ci_high"] == pytest.approx(
        wide["ci_high"] * widen)
    assert code == 0 and noisy["verdict"] == "unchanged"
    proc = cli("compare", runs["base"], runs["slow"], "--confidence", "1.5")
    assert proc.returncode == 2 and "Invalid value for '--confidence'" in proc.stdout + proc.stderr


def test_bad_input_is_one_line_with_exit_2(runs, tmp_path):
    proc = cli("compare", runs["base"], tmp_path / "missing")
    assert proc.returncode == 2 and "no such run directory" in proc.stderr and "Traceback" not in proc.stderr
    proc = cli("compare", runs["base"], runs["same"], "--format", "xml")
    assert proc.returncode == 2 and "--format must be table or json" in proc.stderr


def _table(samples: dict[str, np.ndarray], **columns) -> pa.Table:
    return pa.Table.from_pylist([
        {"trial_id": tid, "model": "m", "backend": "b", "label": "l", "options": "{}", "batch_size": 1,
         "dtype": "fp32", "io": "device", "status": "ok", "latency_ms_median": float(np.median(s)),
         "samples_ms": s.tolist(), "device": "cuda", **columns} for tid, s in samples.items()])


def test_regression_needs_both_size_and_significance():
    rng = np.random.default_rng(7)
    base = {"noisy": rng.normal(10, 3, 20), "tight": rng.normal(10, 0.05, 200), "big": rng.normal(10, 0.1, 100)}
    cand = {"noisy": rng.normal(11, 3, 20),  # 10% slower but within the noise: not significant
            "tight": rng.normal(10.15, 0.05, 200),  # significant but only 1.5%: under the threshold
            "big": rng.normal(11, 0.1, 100)}  # 10% and significant
    # noise_floor 0: the within-run statistics alone (between-run noise: the next test)
    verdicts = {i["trial_id"]: i for i in compare(_table(base), _table(cand), noise_floor=0)}
    assert verdicts["noisy"]["verdict"] == "unchanged" and verdicts["noisy"]["ci_low"] < 1
    assert verdicts["tight"]["verdict"] == "unchanged" and verdicts["tight"]["ci_low"] > 1
    assert verdicts["big"]["verdict"] == "regressed"
    # a 1% threshold: the significant 1.5% slowdown is a regression too; the noisy 10% still is not
    verdicts = {i["trial_id"]: i["verdict"] for i in compare(_table(base), _table(cand), threshold=0.01, noise_floor=0)}
    assert verdicts == {"noisy": "unchanged", "tight": "regressed", "big": "regressed"}


def test_between_run_noise_widens_the_interval_so_a_machine_drift_is_no_verdict():
    """Two runs of the same code on a CPU: each run's median is tight, but the runs differ by 5%
    (another load on the machine). Within-run statistics alone call it a regression; the CPU floor
    (or the trial's own repeats showing that spread) does not. A 30% slowdown is still caught."""
    rng = np.random.default_rng(11)
    base = {"drift": rng.normal(10, 0.1, 200), "slow": rng.normal(10, 0.1, 200)}
    cand = {"drift": rng.normal(10.5, 0.1, 200), "slow": rng.normal(13, 0.1, 200)}
    alone = {i["trial_id"]: i["verdict"] for i in compare(_table(base), _table(cand), noise_floor=0)}
    assert alone == {"drift": "regressed", "slow": "regressed"}
    on_cpu = {i["trial_id"]: i for i in compare(_table(base, device="cpu"), _table(cand, device="cpu"))}
    assert on_cpu["drift"]["verdict"] == "unchanged" and on_cpu["drift"]["ci_low"] < 1 < on_cpu["drift"]["ci_high"]
    assert on_cpu["slow"]["verdict"] == "regressed" and on_cpu["drift"]["noise"] == pytest.approx(0.03 * 2 ** 0.5)
    repeated = {i["trial_id"]: i["verdict"] for i in compare(_table(base, repeat_cv=0.04), _table(cand))}
    assert repeated == {"drift": "unchanged", "slow": "regressed"}  # on a GPU, but its repeats spread 4%


def test_a_launch_bound_gpu_row_is_judged_at_the_host_floor():
    """On a GPU, a trial whose GPU sat idle most of its timing (gpu_util_pct low: eager at batch 1)
    measures the host: an 8% move between runs is no verdict there, while the same move of a
    GPU-bound row is; a 40% slowdown of the launch-bound row is still caught."""
    rng = np.random.default_rng(5)
    base = {"moved": rng.normal(10, 0.1, 200), "slow": rng.normal(10, 0.1, 200)}
    cand = {"moved": rng.normal(10.8, 0.1, 200), "slow": rng.normal(14, 0.1, 200)}
    gpu_bound = {i["trial_id"]: i["verdict"] for i in compare(_table(base, gpu_util_pct=98.0),
                                                                 _table(cand, gpu_util_pct=97.0))}
    assert gpu_bound == {"moved": "regressed", "slow": "regressed"}
    launch = {i["trial_id"]: i for i in compare(_table(base, gpu_util_pct=35.0), _table(cand, gpu_util_pct=33.0))}
    assert {k: v["verdict"] for k, v in launch.items()} == {"moved": "unchanged", "slow": "regressed"}
    assert launch["moved"]["noise"] == pytest.approx(0.05 * 2 ** 0.5)
    unknown = compare(_table(base), _table(cand))  # no utilization read (no NVML): the GPU floor
    assert {i["trial_id"]: i["verdict"] for i in unknown} == {"moved": "regressed", "slow": "regressed"}


def test_bootstrap_interval_is_seeded_and_covers_the_true_ratio():
    rng = np.random.default_rng(1)
    a, b = rng.exponential(1, 500) + 5, (rng.exponential(1, 500) + 5) * 1.2
    lo, hi = bootstrap_ratio_ci(a, b)
    assert (lo, hi) == bootstrap_ratio_ci(a, b)  # same inputs, same interval
    assert lo < 1.2 < hi and hi - lo < 0.1
