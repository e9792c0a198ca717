"""The scenario registry: a scenario is one module of ``workers.scenarios`` (or a class registered
at run time), and nothing outside that package names one."""

from __future__ import annotations

import ast
import time
from pathlib import Path

import pyarrow as pa
import pytest

from orchestrator.answers import compare, report
from orchestrator.errors import PlanError
from orchestrator.plan.expand import expand
from orchestrator.plan.load import parse_plan
from workers import scenarios
from workers.measure import stats
from workers.models.build import ModelStore
from workers.scenarios import Figure, Scenario
from workers.trial import run_trial

ROOT = Path(__file__).resolve().parent.parent


def _documentation(tree: ast.AST) -> set[int]:
    """The string constants that are documentation: a bare string statement (docstrings, attribute docs)."""
    return {id(n.value) for n in ast.walk(tree)
            if isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant) and isinstance(n.value.value, str)}


def test_no_product_module_outside_the_scenarios_package_names_a_scenario():
    """The names are data of the registry: code elsewhere asks it (a scenario's column documentation
    in the schema may still say which scenario fills a column)."""
    names = scenarios.names()
    assert set(names) >= {"single-stream", "offline", "server", "find-peak"}
    found = []
    for path in sorted([*ROOT.glob("orchestrator/**/*.py"), *ROOT.glob("workers/**/*.py")]):
        rel = path.relative_to(ROOT).as_posix()
        if rel.startswith("workers/scenarios/"):
            continue
        tree = ast.parse(path.read_text())
        docs = _documentation(tree)
        for node in ast.walk(tree):
            if not (isinstance(node, ast.Constant) and isinstance(node.value, str)) or id(node) in docs:
                continue
            text = node.value
            named = text.strip() in names or any(f"'{n}'" in text or f'"{n}"' in text for n in names)
            if not named and rel != "workers/schema.py":  # column docs: the scenario's own schema columns
                named = any(n in text for n in names if "-" in n)
            if named:
                found.append(f"{rel}:{node.lineno}: {text[:60]!r}")
    assert not found, "\n".join(found)


class Burst(Scenario):
    """A scenario only this test knows: ``min_requests`` steps back to back through the runner's
    session, judged on the median latency and on throughput (two figures)."""

    name = "burst-test"
    uses_lanes = False
    fields = ("min_requests",)
    figures = (Figure("latency_ms_median", "median ms", "lower", samples="samples_ms"),
               Figure("throughput", "samples/s", "higher"))
    report = "capacity"

    @classmethod
    def check(cls, settings, max_time_s):
        if (settings["min_requests"] or 0) < 3:
            return "burst-test needs min_requests >= 3"
        return super().check(settings, max_time_s)

    @classmethod
    def measure(cls, h):
        from workers.scenarios.base import Measured

        trial = h.trial
        with h.session() as s:
            times = []
            t_all = time.perf_counter()
            for _ in range(trial.min_requests):
                t0 = time.perf_counter()
                s.runner.step()
                times.append((time.perf_counter() - t0) * 1e3)
            window = time.perf_counter() - t_all
            gpu, output, after = s.gpu_columns(), s.runner.output(), s.after()
        cols = {**stats.latency_stats(times, trial.batch_size, seed=trial.seed), "iters": len(times),
                "samples_ms": times, "requests": len(times), "measured_s": window, "setup_s": s.setup_s,
                "throughput": len(times) * trial.batch_size / window, "gpu_mem_peak_bytes": after.peak,
                **after.memory, **gpu, **after.extra}
        return Measured(columns=cols, outputs=[output])

    @classmethod
    def reasons(cls, row, trial):
        return [] if row["requests"] >= trial.min_requests else ["too few requests"]


@pytest.fixture
def burst():
    scenarios.register(Burst)
    yield Burst
    scenarios.unregister(Burst.name)


def _plan(scenario, step_s=0.005):
    return {"name": "b", "device": "cpu", "models": ["torchvision:resnet18"],
            "matrix": {"batch_sizes": [2], "backends": [{"backend": "sleep", "options": {"step_s": step_s}}]},
            "measure": {"warmup_iters": 1, "max_time_s": 10}, "scenario": scenario}


def test_a_scenario_defined_only_in_a_test_runs_from_plan_to_row_to_report_and_compare(burst):
    (trial,) = expand(parse_plan(_plan({"name": "burst-test", "min_requests": 12})))
    assert trial.scenario == "burst-test" and trial.min_requests == 12
    with pytest.raises(PlanError, match="burst-test needs min_requests >= 3"):
        parse_plan(_plan({"name": "burst-test", "min_requests": 2}))
    row = run_trial(trial, "cpu", ModelStore())
    assert row["status"] == "ok", row["error"]
    assert row["scenario"] == "burst-test" and row["requests"] == 12 and row["valid"] is True
    assert row["latency_ms_median"] >= 5.0 and row["throughput"] > 0
    assert scenarios.tag(row) == "burst-test c=1" and report.speed(row) == pytest.approx(1 / row["latency_ms_median"])
    (slow,) = expand(parse_plan(_plan({"name": "burst-test", "min_requests": 12}, step_s=0.02)))
    slower = run_trial(slow, "cpu", ModelStore())
    slower["trial_id"] = row["trial_id"]  # the same trial, a slower candidate
    (item,) = compare.compare(pa.Table.from_pylist([row]), pa.Table.from_pylist([slower]))
    assert item["metric"] == "median ms" and item["verdict"] == "regressed"
    assert [f["metric"] for f in item["figures"]] == ["median ms", "samples/s"]
    assert all(f["verdict"] == "regressed" for f in item["figures"])


def test_rows_of_a_scenario_not_registered_here_are_judged_by_the_default_rules(tmp_path):
    """A run made with a scenario of its own, read where it is not registered: report and compare
    show its rows under its name, judged on the default scenario's figure, with a note on the page."""
    from orchestrator.results.sink import ResultSink

    scenarios.register(Burst)
    try:
        fast, slow = (expand(parse_plan(_plan({"name": "burst-test", "min_requests": 4}, step_s=s)))[0]
                      for s in (0.005, 0.02))
        row, slower = run_trial(fast, "cpu", ModelStore()), run_trial(slow, "cpu", ModelStore())
    finally:
        scenarios.unregister(Burst.name)
    assert row["status"] == "ok" and not scenarios.is_registered(row)
    default = scenarios.get(scenarios.DEFAULT)
    assert report.speed(row) == pytest.approx(default.figures[0].speed(row))
    (summary,) = report.summarize([row])
    assert report.row_cells(summary, report.columns([summary]))[4] == "burst-test c=1"
    slower["trial_id"] = row["trial_id"]
    (item,) = compare.compare(pa.Table.from_pylist([row]), pa.Table.from_pylist([slower]))
    assert item["verdict"] == "regressed" and item["metric"] == default.figures[0].label
    assert len(item.get("figures") or [item]) == len(default.figures)  # not burst-test's two
    sink = ResultSink(tmp_path / "run", "plugin-1", None, metadata={"device": "cpu"})
    sink.write(dict(row))
    sink.flush()
    sink.compact()
    page = report.html_report(tmp_path / "run")
    assert "burst-test c=1" in page and "scenario burst-test is not registered here" in page


def test_default_scenario_trials_keep_their_ids_and_the_registry_refuses_a_name_twice(burst):
    (plain,) = expand(parse_plan({k: v for k, v in _plan(None).items() if k != "scenario"}))
    (named,) = expand(parse_plan(_plan(scenarios.DEFAULT)))
    assert plain.trial_id == named.trial_id and plain.scenario == scenarios.DEFAULT

    class Other(Scenario):
        name = "burst-test"

    with pytest.raises(ValueError, match="scenario name 'burst-test' is used twice"):
        scenarios.register(Other)


def test_a_lane_whose_request_has_timings_of_its_own_keeps_them_per_request():
    """A request with several timings (a generated sequence's first token, then the rest) returns
    them from ``Lane.run``; offline and server runs keep them with the request they belong to."""
    import numpy as np

    from workers.backends.base import Lane
    from workers.scenarios import _lanes
    from workers.scenarios._session import LaneThreads

    def request() -> float:
        time.sleep(0.002)  # the first token
        first = time.perf_counter()
        time.sleep(0.003)  # the rest
        return first

    threads = LaneThreads([Lane(run=request, output=lambda: None) for _ in range(2)])
    try:
        runs = [_lanes.offline(threads, 20, 0.05, 5.0),
                _lanes.server(threads, _lanes.schedule(200.0, "constant", 0, 20, 0.05), 5.0)]
    finally:
        threads.close()
    for run in runs:
        first = np.asarray(run.marks) - run.t0
        assert len(run.marks) == len(run.end) >= 20
        assert (run.start < first).all() and (first < run.end).all()  # each inside its own request
        assert np.median(first - run.start) >= 0.002 and np.median(run.end - first) >= 0.003
