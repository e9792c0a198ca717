"""The driver-worker contract: trial ids that stay stable, statuses that old runs still load with,
rows checked on the worker (a bad column costs one trial), measurement settings that reject typos."""

from __future__ import annotations

import dataclasses
import json

import pyarrow.parquet as pq
import pytest
import yaml
from pydantic import ValidationError

from orchestrator.plan.expand import expand
from orchestrator.plan.load import parse_plan
from orchestrator.results.sink import ResultSink
from workers import contract, scenarios
from workers.backends import math_before
from workers.backends.sleep import SleepRunner
from workers.contract import MeasureSpec, Status, Trial
from workers.models.build import ModelStore
from workers.rows import checked_row, failure_row, spec_columns
from workers.trial import run_trial

# The ids plans/quickstart.yaml had from the first schema until its measure section got a CI target
# (2026-11-26), pinned on that plan's text: compare and --resume match runs by them, so a change to
# the Trial type must not change them.
QUICKSTART_IDS = ["545dfc365f6bf9c5", "5c02aa11a9e0759a", "8a23e1244eadd8ad", "469a606cd512a160"]
FIRST_QUICKSTART = """\
name: quickstart
device: auto
models:
  - torchvision:resnet18
matrix:
  batch_sizes: [1, 4]
  dtypes: [fp32]
  io: [host]
  backends:
    - torch-eager
    - backend: ort
      options: {graph_optimization_level: all}
measure:
  warmup_iters: 3
  warmup_max_s: 2
  iters: 10
  max_time_s: 5
"""

SLEEP_PLAN = {
    "name": "c", "device": "cpu", "models": ["torchvision:resnet18"],
    "matrix": {"batch_sizes": [1], "backends": [{"backend": "sleep", "options": {"step_s": 0}}]},
    "measure": {"warmup_iters": 0, "warmup_max_iters": 0, "iters": 5, "target_rel_ci": None},
}


def sleep_trial() -> Trial:
    (trial,) = expand(parse_plan(SLEEP_PLAN))
    return trial


def test_trial_ids_of_a_plan_stay_what_they_were():
    """Except the torch fp32 trials': their matmuls ran IEEE fp32 and their convolutions TF32 before
    trials had a math mode, neither of today's modes, so they measure something else now (the ORT
    trials ran TF32, today's default, and keep theirs)."""
    trials = expand(parse_plan(yaml.safe_load(FIRST_QUICKSTART)))
    assert [t.backend for t in trials] == ["torch-eager", "ort"] * 2
    ids = [t.trial_id for t in trials]
    assert ids[1::2] == QUICKSTART_IDS[1::2]
    assert not set(ids[::2]) & set(QUICKSTART_IDS)
    strict = [dataclasses.replace(t, math="strict").with_id(math_before).trial_id for t in trials[::2]]
    assert not set(strict) & set(QUICKSTART_IDS) and len(set(strict + ids)) == 6


def test_a_field_added_later_stays_out_of_the_id_at_its_default(monkeypatch):
    @dataclasses.dataclass(frozen=True)
    class LaterTrial(Trial):
        placement: str = "one-worker"

    base = sleep_trial()
    monkeypatch.setitem(contract.ID_FIELDS_ADDED, "placement", "one-worker")
    fields = {f.name: getattr(base, f.name) for f in dataclasses.fields(Trial)}
    same = LaterTrial(**fields).with_id(math_before)
    other = LaterTrial(**fields, placement="two-workers").with_id(math_before)
    assert same.trial_id == base.trial_id
    assert other.trial_id != base.trial_id


#: SLEEP_PLAN's trial id before the Trial had scenario fields (computed at that commit).
SLEEP_ID_BEFORE_SCENARIOS = "59c3c8dec932720d"


def test_the_scenario_fields_stay_out_of_the_id_at_their_defaults():
    base = sleep_trial()
    assert base.trial_id == SLEEP_ID_BEFORE_SCENARIOS
    # every scenario field written out at its default, in the plan and on the trial: the same id
    spelled = {"name": "single-stream", "concurrency": 1, "arrival": "poisson", "min_duration_s": 2.0,
               "min_requests": 200}
    (planned,) = expand(parse_plan({**SLEEP_PLAN, "scenario": spelled}))
    assert planned.trial_id == SLEEP_ID_BEFORE_SCENARIOS
    defaults = {name: contract.ID_FIELDS_ADDED[name] for name in scenarios.get("server").fields}
    explicit = dataclasses.replace(base, scenario="single-stream", **defaults).with_id(math_before)
    assert explicit.trial_id == SLEEP_ID_BEFORE_SCENARIOS
    offline = dataclasses.replace(base, scenario="offline", concurrency=2).with_id(math_before)
    assert offline.trial_id != base.trial_id
    assert dataclasses.replace(offline, concurrency=4).with_id(math_before).trial_id != offline.trial_id


def test_measure_keys_added_later_stay_out_of_the_id_at_their_default():
    class LaterMeasure(MeasureSpec):
        warmup_policy: str = "windows"

    base = sleep_trial()
    settings = base.measure.model_dump()
    same = dataclasses.replace(base, measure=LaterMeasure(**settings))
    other = dataclasses.replace(base, measure=LaterMeasure(**settings, warmup_policy="fixed"))
    assert contract.trial_id(same, math_before) == base.trial_id
    assert contract.trial_id(other, math_before) != base.trial_id


def test_labels_budgets_and_fault_settings_are_not_part_of_the_id():
    base = sleep_trial()
    for change in ({"label": "x"}, {"plan": "other"}, {"timeout_s": 5.0}, {"retries": 3},
                   {"budgets": ({"max_latency_ms": 1},)}):
        assert dataclasses.replace(base, **change).with_id(math_before).trial_id == base.trial_id, change
    assert dataclasses.replace(base, batch_size=2).with_id(math_before).trial_id != base.trial_id


def test_status_strings_are_the_stored_ones_and_only_ok_and_skipped_succeed():
    assert {s.value for s in Status} == {"ok", "skipped", "failed", "parity_failed", "timeout", "oom"}
    assert Status("parity_failed") is Status.PARITY_FAILED and str(Status.OOM) == "oom"
    assert {s.value for s in Status if s.succeeded} == set(contract.SUCCESS) == {"ok", "skipped"}


def test_a_trial_crosses_process_boundaries_intact():
    import pickle

    trial = sleep_trial()
    again = pickle.loads(pickle.dumps(trial))
    assert again == trial and again.model.key == trial.model.key
    assert json.loads(json.dumps(trial.summary()))["model"]["name"] == "resnet18"


def test_a_runner_reporting_a_column_the_schema_lacks_fails_only_its_trial(monkeypatch, tmp_path):
    trial = sleep_trial()
    good = run_trial(trial, "cpu", ModelStore())
    assert good["status"] == "ok" and good["iters"] == 5
    monkeypatch.setattr(SleepRunner, "extra_columns", lambda self: {"latency_ms_medain": 1.0})
    bad = run_trial(trial, "cpu", ModelStore())
    assert bad["status"] == "failed" and "latency_ms_medain" in bad["error"] and "latency_ms_medain" not in bad
    assert bad["trial_id"] == trial.trial_id and bad["label"] == "sleep"
    # and the driver writes it like any row
    sink = ResultSink(tmp_path, "r", "plan: x\n", metadata={})
    sink.write(bad)
    sink.flush()
    (stored,) = pq.read_table(tmp_path).to_pylist()
    assert stored["status"] == "failed" and stored["trial_id"] == trial.trial_id


def test_failure_rows_carry_the_spec_and_check_their_columns():
    trial = sleep_trial()
    row = failure_row(trial, Status.TIMEOUT, "ran past its timeout_s", worker="w0")
    assert row == {**spec_columns(trial), "worker": "w0", "status": "timeout", "error": "ran past its timeout_s"}
    assert checked_row({**row, "nonsense": 1})["status"] == "failed"


def test_measure_settings_reject_misspelled_keys_and_impossible_bounds():
    with pytest.raises(ValidationError, match="did you mean 'iters'"):
        MeasureSpec(iter=5)
    with pytest.raises(ValidationError, match="iters .* is larger than max_iters"):
        MeasureSpec(iters=10, max_iters=5)


def test_the_row_type_is_generated_from_the_schema_and_current():
    """``workers.row.Row`` names every column of the schema: regenerate it when a column changes."""
    from pathlib import Path

    from workers import row, schema

    current = (Path(row.__file__)).read_text()
    assert current == schema.row_module(), "workers/row.py is stale: python -m workers.schema row > workers/row.py"
    assert set(row.Row.__annotations__) == schema.NAMES
