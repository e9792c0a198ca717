"""bench/scale.py at the test suite's size: 100 short sleep trials, 5% of them faults of every mode.

The same plan and checks as the 500-trial fault run and the 10,000-trial run of BENCHMARKS.md,
on the shared embedded Ray (4 logical GPUs): every trial id exactly once, the exact status counts,
the run compacted into one file.
"""

from __future__ import annotations

from bench.scale import check, fault_modes, make_plan
from orchestrator.results import is_compacted
from orchestrator.run import run_plan


def test_a_hundred_trials_with_faults_every_id_once_exact_statuses_compacted(ray_gpus, write_plan, tmp_path):
    text, expected, facts = make_plan(100, trial_s=0.05, faults=0.05)
    assert sum(facts["faults"].values()) == 5 and set(facts["faults"]) == set(fault_modes())
    plan, out = write_plan(text), tmp_path / "out"
    result = run_plan(plan, out=out, workers=4)
    assert result.counts == expected and result.compact_error is None
    c = check(out, plan, expected)
    assert c["ids_once"] and c["counts_ok"], c
    assert is_compacted(out) and not list(out.glob("part-*")) and not list(out.glob(".*"))
    assert all("samples_ms" not in r for r in result.rows)  # the driver kept none of the samples
