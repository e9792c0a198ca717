"""`infer-orch run --junit`: one test case per trial, failures and skips as CI tools read them;
plan budgets (validated with located messages) fail the cases that miss them."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest
from helpers import REPO, cli

from orchestrator.answers.junit import to_xml
from orchestrator.errors import PlanError
from orchestrator.plan.expand import expand
from orchestrator.plan.load import load_plan

# On CPU workers: tiny eager ok but over an impossible budget, its CUDA graph skipped, a broken
# factory failed, a NaN model parity_failed, and a sleep entry within its budget on each model.
PLAN = """\
name: ci
device: cpu
models:
  - {python: "tinynet:make", name: tiny, input_shape: [3, 16, 16]}
  - {python: "tinynet:not_a_module", name: broken, input_shape: [3, 16, 16]}
  - {python: "nannet:make", name: nan, input_shape: [3, 16, 16]}
matrix:
  batch_sizes: [2]
  io: [host]
  backends:
    - torch-eager
    - torch-cudagraph
    - backend: sleep
      label: nap
      options: {step_s: 0.001}
      budgets: {max_latency_ms: 1000, min_throughput: 1}
  exclude:
    - {model: [broken, nan], backend: torch-cudagraph}
budgets:
  - {model: tiny, backend: torch-eager, max_latency_ms: 0.000001}
measure: {warmup_iters: 1, iters: 3, warmup_max_s: 0.5, max_time_s: 1}  # bounded: a busy machine can't stretch it
"""


@pytest.fixture(scope="module")
def junit_run(ray_gpus, tmp_path_factory):
    # on the tests' Ray, whose workers import the tests' model factories
    d = tmp_path_factory.mktemp("junit")
    (d / "plan.yaml").write_text(PLAN)
    proc = cli("run", d / "plan.yaml", "--out", d / "run", "--workers", "1", "--junit", d / "out.xml")
    return proc, d / "out.xml"


def test_junit_file_has_a_case_per_trial_with_the_right_outcomes(junit_run):
    proc, xml = junit_run
    assert proc.returncode == 1, proc.stderr[-2000:]  # failures and a missed budget
    assert "JUnit: " in proc.stdout and "7 tests, 3 failures, 0 errors, 1 skipped" in proc.stdout
    assert "over budget torch-eager tiny bs=2 fp32 host: median latency" in proc.stdout
    root = ET.parse(xml).getroot()
    assert root.tag == "testsuites" and root.get("tests") == "7" and root.get("failures") == "3"
    [suite] = root.findall("testsuite")
    assert suite.get("skipped") == "1" and suite.get("errors") == "0"
    cases = {f"{c.get('classname')}::{c.get('name')}": c for c in suite.findall("testcase")}
    assert len(cases) == 7
    outcome = {k: (c[0].tag, c[0].get("type")) if c[0].tag != "system-out" else ("passed", None)
               for k, c in cases.items()}
    assert outcome == {
        "ci.tiny::torch-eager[bs=2,fp32,host]": ("failure", "budget"),
        "ci.tiny::torch-cudagraph[bs=2,fp32,host]": ("skipped", None),
        "ci.tiny::nap[bs=2,fp32,host]": ("passed", None),
        "ci.broken::torch-eager[bs=2,fp32,host]": ("failure", "failed"),
        "ci.broken::nap[bs=2,fp32,host]": ("passed", None),
        "ci.nan::torch-eager[bs=2,fp32,host]": ("failure", "parity_failed"),
        "ci.nan::nap[bs=2,fp32,host]": ("passed", None),
    }
    budget = cases["ci.tiny::torch-eager[bs=2,fp32,host]"].find("failure")
    assert "is above max_latency_ms 1e-06 (budgets[0])" in budget.get("message")
    broken = cases["ci.broken::torch-eager[bs=2,fp32,host]"].find("failure")
    assert "returned int, not an nn.Module" in broken.get("message") and "Traceback" in broken.text
    assert "NaN/Inf" in cases["ci.nan::torch-eager[bs=2,fp32,host]"].find("failure").get("message")
    assert sum(float(c.get("time")) for c in cases.values()) == pytest.approx(float(suite.get("time")), abs=0.01)


def test_junitparser_reads_the_same_counts(junit_run):
    junitparser = pytest.importorskip("junitparser")
    _, xml = junit_run
    suites = junitparser.JUnitXml.fromfile(str(xml))
    [suite] = list(suites)
    assert (suite.tests, suite.failures, suite.errors, suite.skipped) == (7, 3, 0, 1)
    results = {(case.classname, case.name): [type(r).__name__ for r in case.result] for case in suite}
    assert results[("ci.tiny", "torch-cudagraph[bs=2,fp32,host]")] == ["Skipped"]
    assert sorted(c for (c, n), r in results.items() if r == ["Failure"]) == ["ci.broken", "ci.nan", "ci.tiny"]


def test_a_trial_without_a_row_is_an_error(write_plan):
    trials = expand(load_plan(write_plan(PLAN)))
    root = to_xml(trials, rows=[], suite="cut").getroot()
    assert root.get("errors") == "7" and root.get("tests") == "7"
    assert all(c.find("error") is not None for c in root.iter("testcase"))


def test_budgets_apply_by_rule_and_by_entry(write_plan):
    trials = expand(load_plan(write_plan(PLAN)))
    by = {(t.model.name, t.label): list(t.budgets) for t in trials}
    assert by[("tiny", "torch-eager")] == [{"where": "budgets[0]", "max_latency_ms": 1e-6}]
    assert by[("nan", "torch-eager")] == []
    assert by[("nan", "nap")] == [{"where": "matrix.backends[2].budgets", "max_latency_ms": 1000, "min_throughput": 1}]
    # budgets don't change what is measured: the trial ids stay the same without them
    plain = PLAN.replace("      budgets: {max_latency_ms: 1000, min_throughput: 1}\n", "")
    plain = plain.replace("budgets:\n  - {model: tiny, backend: torch-eager, max_latency_ms: 0.000001}\n", "")
    assert [t.trial_id for t in expand(load_plan(write_plan(plain, "plain.yaml")))] == \
        [t.trial_id for t in trials]


@pytest.mark.parametrize(("old", "new", "message"), [
    ("max_latency_ms: 1000,", "max_latency: 1000,",
     "matrix.backends[2].budgets: unknown key 'max_latency' (did you mean 'max_latency_ms'?)"),
    ("min_throughput: 1}", "min_throughput: -1}",
     "matrix.backends[2].budgets.min_throughput: Input should be greater than 0 (got -1)"),
    ("budgets: {max_latency_ms: 1000, min_throughput: 1}", "budgets: {}",
     "matrix.backends[2].budgets: a budget needs at least one of: max_latency_ms, max_p99_ms, min_throughput"),
    ("backend: torch-eager, max_latency_ms", "backend: torch-eager, dtype: fp64, max_latency_ms",
     "budgets[0].dtype"),
    ("max_latency_ms: 0.000001}", "max_latency_ms: fast}",
     "budgets[0].max_latency_ms: Input should be a valid number"),
    ("  - {model: tiny, backend: torch-eager, max_latency_ms: 0.000001}", "  max_latency_ms: 5",
     "plan.yaml: budgets: Input should be a valid list"),
])
def test_bad_budgets_are_located(write_plan, old, new, message):
    assert old in PLAN
    with pytest.raises(PlanError) as exc:
        load_plan(write_plan(PLAN.replace(old, new)))
    assert message in str(exc.value), str(exc.value)


def test_gpu_tests_plan_validates_and_covers_every_backend_against_eager():
    # what `infer-orch validate plans/gpu-tests.yaml` runs
    trials = expand(load_plan(REPO / "plans/gpu-tests.yaml"))
    from workers.backends import registry

    # testing aids, and backends that only generate (the plan's models are single-pass ones)
    shipped = {name for name, cls in registry().items() if set(cls.scenarios()) - {"generate"}} - {"sleep", "fault"}
    for model in {t.model.name for t in trials}:
        assert {t.backend for t in trials if t.model.name == model} == shipped
    assert all(t.budgets for t in trials)


def test_junit_path_that_cannot_be_written_stops_the_run_before_it_starts(tmp_path):
    proc = cli("run", REPO / "plans/quickstart.yaml", "--out", tmp_path / "o", "--junit", tmp_path)
    assert proc.returncode == 2 and "is a directory; give a file name" in proc.stderr
    assert not (tmp_path / "o").exists() and "Traceback" not in proc.stderr
