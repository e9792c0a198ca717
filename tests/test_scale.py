"""bench/scale.py at the test suite's size: 100 short sleep trials, 5% of them faults of every mode.

The same plan and checks as the 500-trial fault run and the 10,000-trial run of BENCHMARKS.md,
on the shared embedded Ray (4 logical GPUs): every trial id exactly once, the exact status counts,
the run compacted into one file.
"""

from __future__ import annotations

import time

from bench.scale import check, fault_modes, make_plan
from bench.span_budget import span_budget
from orchestrator.results.read import is_compacted
from orchestrator.run.api import run_plan


def test_a_hundred_trials_with_faults_every_id_once_exact_statuses_compacted(ray_gpus, write_plan, tmp_path):
    text, expected, facts = make_plan(100, trial_s=0.05, faults=0.05)
    assert sum(facts["faults"].values()) == 5 and set(facts["faults"]) == set(fault_modes())
    plan, out = write_plan(text), tmp_path / "out"
    started = time.monotonic()
    result = run_plan(plan, out=out, workers=4)
    wall_s = time.monotonic() - started
    assert result.counts == expected and result.compact_error is None
    c = check(out, plan, expected)
    assert c["ids_once"] and c["counts_ok"], c
    assert is_compacted(out) and not list(out.glob("part-*")) and not list(out.glob(".*"))
    assert all("samples_ms" not in r for r in result.rows)  # the driver kept none of the samples
    b = span_budget(out, nominal_s=0.05)  # where the run's worker-seconds went, from the stored rows
    assert 90 <= b["trials"] <= 100 and b["workers"] == 4  # (a trial whose worker died has no start)
    assert b["gaps"] >= 0  # a worker runs one trial at a time: none starts before its previous one ended
    # the stored span lies within the run as this test clocked it, and holds at least the 95 sleep
    # trials' own sleeping (10 steps of 5 ms each, which no machine shortens) spread over the 4 workers
    assert facts["sleep"] * 0.05 / 4 <= b["span_s"] <= wall_s, (b["span_s"], wall_s)
