"""Interleaved A/B (``measure.interleave``) and the injected slowdown: the paired interval's coverage,
the rounds one worker runs, the verdicts, the plan's keys."""

from __future__ import annotations

import numpy as np
import pytest
from test_bad_input import refused
from typer.testing import CliRunner

from orchestrator.answers import paired as paired_answers
from orchestrator.cli import app
from orchestrator.plan.expand import expand
from orchestrator.plan.interleave import units
from orchestrator.plan.load import parse_plan
from workers.backends.sleep import SleepRunner
from workers.measure import paired, stats
from workers.models.build import ModelStore
from workers.trial import run_trial

STEP_S = 0.002


def _plan(arms: list[dict], rounds: int = 6, **interleave) -> dict:
    return {"name": "ab", "device": "cpu", "models": ["torchvision:resnet18"],
            "matrix": {"batch_sizes": [1], "backends": [{"backend": "sleep", "options": {"step_s": STEP_S}, **a}
                                                       for a in arms]},
            "measure": {"warmup_iters": 2, "warmup_max_iters": 2,
                        "interleave": {"rounds": rounds, "round_s": 0.03, "warmup_s": 0.005, **interleave}}}


def _simulate(rng: np.random.Generator, rounds: int, effect: float) -> tuple[np.ndarray, np.ndarray]:
    """Per-round medians of two arms in one drifting process: a random walk of the process's pace
    (1% a round, what moves both arms), a fixed place effect of the arm timed second in a round,
    each round's 40 lognormal samples (5% spread) per arm, and now and then (5% of the windows) an
    arm's whole window stalled, 1.3-3x slower (a descheduled process on a shared machine)."""
    drift = np.exp(np.cumsum(rng.normal(0, 0.01, rounds)))
    orders = paired.round_orders(2, rounds, int(rng.integers(1 << 30)))
    second = np.array([o.index(1) for o in orders])  # the candidate's place in each round
    place = np.where(second == 1, 1.003, 1 / 1.003)  # being second costs 0.3%, the rotation balances it
    base = np.median(drift[:, None] * np.exp(rng.normal(0, 0.05, (rounds, 40))), axis=1)
    cand = np.median((1 + effect) * place[:, None] * drift[:, None] * np.exp(rng.normal(0, 0.05, (rounds, 40))),
                     axis=1)
    stalls = [np.where(rng.random(rounds) < 0.05, rng.uniform(1.3, 3.0, rounds), 1.0) for _ in range(2)]
    return base * stalls[0], cand * stalls[1]


def test_the_paired_interval_covers_the_true_ratio_in_a_drifting_process_as_often_as_it_says():
    """Rounds are the unit: over 600 simulated drifting runs the 95% interval holds the true ratio
    about 95% of the time; the ratio of the pooled medians (what one row per arm would give) is off by
    the drift, and an interval from the pooled samples alone would hold it far less often."""
    rng = np.random.default_rng(7)
    effect, hits, pooled_hits = 0.02, 0, 0
    for _ in range(600):
        base, cand = _simulate(rng, 20, effect)
        ratio, lo, hi = paired.paired_ratio(base, cand, 0.95)
        hits += lo <= 1 + effect <= hi
        pooled_hits += abs(float(np.median(cand) / np.median(base)) - (1 + effect)) < 0.0025
    assert 0.92 <= hits / 600 <= 0.98
    assert pooled_hits / 600 < 0.6  # the drift moves an unpaired ratio by more than the paired interval's width


def test_with_builds_as_units_the_interval_holds_a_spread_between_builds_that_rounds_cannot_see():
    """Each build of a runner keeps an offset of its own (1.5%, kernel choice and buffer placement: two
    runners of one GPU configuration measured up to 3.3% apart). Built once, every round carries the
    same offsets and the rounds' interval misses the true ratio most of the time; built afresh for each
    of 5 blocks of rounds (``builds: 5``), the blocks' interval holds it about as often as it says."""
    rng = np.random.default_rng(11)
    effect, once, blocks = 0.02, 0, 0
    for _ in range(400):
        for builds in (1, 5):
            base, cand = _simulate(rng, 20, effect)
            for block in np.array_split(np.arange(20), builds):
                base[block] *= np.exp(rng.normal(0, 0.015))
                cand[block] *= np.exp(rng.normal(0, 0.015))
            _, lo, hi = paired.paired_ratio(base, cand, 0.95, builds=builds)
            if builds == 1:
                once += lo <= 1 + effect <= hi
            else:
                blocks += lo <= 1 + effect <= hi
    assert once / 400 < 0.6
    assert 0.91 <= blocks / 400 <= 0.985


def test_round_orders_give_every_arm_every_place_once_per_block_and_follow_the_seed():
    orders = paired.round_orders(2, 20, seed=3)
    assert orders == paired.round_orders(2, 20, seed=3) != paired.round_orders(2, 20, seed=4)
    for block in range(0, 20, 2):
        assert sorted(map(tuple, orders[block:block + 2])) == [(0, 1), (1, 0)]  # A B then B A, or B A then A B
    three = paired.round_orders(3, 9, seed=0)
    assert all(sorted(o[k] for o in three[b:b + 3]) == [0, 1, 2] for b in (0, 3, 6) for k in range(3))
    assert paired.verdict(1.03, 1.01, 1.05, 0.01) == "regressed"
    assert paired.verdict(0.97, 0.95, 0.99, 0.01) == "improved"
    assert paired.verdict(1.03, 0.99, 1.07, 0.01) == "unchanged"  # the interval reaches 1
    assert paired.verdict(1.005, 1.001, 1.009, 0.01) == "unchanged"  # significant, below the threshold
    assert stats.t_quantile(0.975, 19) == pytest.approx(2.093, abs=1e-3)


def test_one_worker_alternates_the_arms_in_rounds_sets_each_up_once_and_finds_an_injected_slowdown(monkeypatch):
    """A unit of three sleep arms, one slowed by 5%: every arm's runner set up once for every round,
    the places as the seed drew them, the twin unchanged and the slowed one regressed."""
    setups: list[str] = []
    real = SleepRunner.setup
    monkeypatch.setattr(SleepRunner, "setup", lambda self: (setups.append(self.ctx.trial.label), real(self))[1])
    trials = expand(parse_plan(_plan([{"label": "a"}, {"label": "twin"}, {"label": "slow", "slowdown": 0.05}],
                                     rounds=6, base="a")))
    assert {t.scenario for t in trials} == {"interleaved"} and len({t.trial_id for t in trials}) == 3
    (unit,) = units(trials)
    lead = run_trial(unit, "cpu", ModelStore())
    rows = [lead, *lead.pop("_arms")]
    assert [r["status"] for r in rows] == ["ok"] * 3, [r.get("error") for r in rows]
    assert sorted(setups) == ["a", "slow", "twin"]  # once each, kept between rounds
    orders = paired.round_orders(3, 6, unit.seed)
    for i, r in enumerate(rows):
        assert r["ab_runners_kept"] is True and r["ab_setups"] == 1 and r["ab_rounds"] == 6
        assert r["round_positions"] == [o.index(i) for o in orders]
        assert sum(r["round_iters"]) == len(r["samples_ms"]) and len(r["round_medians_ms"]) == 6
        assert r["ab_group"] == unit.trial_id and r["ab_base"] == "a"
    a, twin, slow = rows
    assert a["ab_ratio"] is None and a["ab_verdict"] is None
    assert twin["ab_verdict"] == "unchanged", (twin["ab_ratio"], twin["ab_ratio_low"], twin["ab_ratio_high"])
    assert slow["ab_verdict"] == "regressed" and slow["slowdown"] == 0.05 and slow["slowdown_kind"] == "backend"
    assert 1.02 < slow["ab_ratio"] < 1.08


def test_builds_set_every_arm_up_once_per_block_in_a_seeded_order_and_the_blocks_judge(monkeypatch):
    """``builds: 3`` over 9 rounds: three blocks of three rounds, every arm's runner set up afresh for each
    (the first block in the plan's order, the later ones shuffled by the seed), the slowed arm still
    found and the twin unchanged."""
    setups: list[str] = []
    real = SleepRunner.setup
    monkeypatch.setattr(SleepRunner, "setup", lambda self: (setups.append(self.ctx.trial.label), real(self))[1])
    plan = _plan([{"label": "a"}, {"label": "twin"}, {"label": "slow", "slowdown": 0.3}], rounds=9, builds=3,
                 base="a", confidence=0.9)
    (unit,) = units(expand(parse_plan(plan)))
    lead = run_trial(unit, "cpu", ModelStore())
    rows = [lead, *lead.pop("_arms")]
    assert [r["status"] for r in rows] == ["ok"] * 3, [r.get("error") for r in rows]
    assert len(setups) == 9 and setups[:3] == ["a", "twin", "slow"]
    assert all(sorted(setups[k:k + 3]) == ["a", "slow", "twin"] for k in (3, 6))
    for r in rows:
        assert r["ab_runners_kept"] is True and r["ab_setups"] == 3 and r["ab_rounds"] == 9
    assert rows[1]["ab_verdict"] == "unchanged" and rows[2]["ab_verdict"] == "regressed", rows[2]["ab_ratio"]
    # the report says what the interval's units were; a GPU arm built once is told what it misses
    notes = {i["arm"]: paired_answers.note(i) for i in paired_answers.items(rows)}
    assert notes == {"twin": "3 builds, the interval's units", "slow": "3 builds, the interval's units"}
    once = [{**r, "ab_setups": 1, "device": "cuda"} for r in rows]
    assert {paired_answers.note(i) for i in paired_answers.items(once)} == {
        "one build: set interleave.builds to judge across builds"}


def test_interleaved_ids_stay_what_they_were_before_builds_and_change_with_more_builds():
    """A plan's interleaved trials keep the ids they had before ``builds`` existed (a resumed run and
    ``compare`` still match them); builds > 1 measures otherwise, so it gets ids of its own."""
    plan = {"name": "ab", "device": "cpu", "models": ["torchvision:resnet18"],
            "matrix": {"batch_sizes": [1], "backends": [{"backend": "sleep", "options": {"step_s": 0.002}, "label": x}
                                                       for x in ("a", "b")]},
            "measure": {"interleave": {"rounds": 6}}}
    ids = [t.trial_id for t in expand(parse_plan(plan))]
    assert ids == ["d7551926c424e21e", "a75b53e22ec92efe"]
    plan["measure"]["interleave"]["builds"] = 1
    assert [t.trial_id for t in expand(parse_plan(plan))] == ids
    plan["measure"]["interleave"]["builds"] = 2
    assert not set(ids) & {t.trial_id for t in expand(parse_plan(plan))}


def test_runners_are_set_up_each_round_when_device_memory_cannot_hold_them_all(monkeypatch):
    """Fault injection: a runner's set-up runs out of memory while another arm's runner is alive."""
    alive: list[object] = []
    real_setup, real_teardown = SleepRunner.setup, SleepRunner.teardown

    def setup(self):
        if alive:
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
        alive.append(self)
        real_setup(self)

    def teardown(self):
        if self in alive:
            alive.remove(self)
        real_teardown(self)

    monkeypatch.setattr(SleepRunner, "setup", setup)
    monkeypatch.setattr(SleepRunner, "teardown", teardown)
    (unit,) = units(expand(parse_plan(_plan([{"label": "a"}, {"label": "b"}], rounds=3))))
    lead = run_trial(unit, "cpu", ModelStore())
    rows = [lead, *lead.pop("_arms")]
    assert [r["status"] for r in rows] == ["ok", "ok"], [r.get("error") for r in rows]
    assert all(r["ab_runners_kept"] is False and r["ab_setups"] == 3 for r in rows)
    assert rows[1]["ab_ratio"] is not None


def test_an_interleaved_aa_run_through_ray_gives_no_verdict_and_finds_the_slowdown(ray_gpus, write_plan, tmp_path):
    """End to end: one unit (A, its twin A', and A slowed 30%) scheduled as one, three rows stored,
    the twin unchanged, the slowed arm regressed; ``compare`` never matches them with ordinary rows.
    (The plumbing, at a 5% threshold: a sleep's pace on a loaded 2-core machine moves by several
    percent between rounds; the 5% slowdown's detection is the in-process test's.)"""
    import yaml

    from orchestrator.answers.compare import compare
    from orchestrator.cli.console import console
    from orchestrator.cli.run import _print_run
    from orchestrator.results.read import load_results
    from orchestrator.run.api import run_plan

    # 10 ms steps in 0.15 s rounds: on two cores busy with the rest of the suite, a sleep wakes up late by
    # a few ms, and 2 ms steps in 0.03 s rounds sometimes left a 30% slowdown's interval across 1
    plan = _plan([{"label": "a"}, {"label": "a2"}, {"label": "slow", "slowdown": 0.3}], rounds=8, threshold=0.05,
                 round_s=0.15)
    for entry in plan["matrix"]["backends"]:
        entry["options"] = {"step_s": 0.01}
    result = run_plan(write_plan(yaml.safe_dump(plan)), out=tmp_path / "ab", workers=2)
    rows = load_results(tmp_path / "ab").to_pylist()
    assert result.exit_code == 0 and len(rows) == 3
    assert len({r["worker"] for r in rows}) == 1  # one unit, one worker
    found = {i["arm"]: i["verdict"] for i in paired_answers.items(rows)}
    assert found == {"a2": "unchanged", "slow": "regressed"}
    gate = CliRunner().invoke(app, ["compare", str(tmp_path / "ab"), str(tmp_path / "ab")])
    assert gate.exit_code == 1 and "Interleaved A/B" in gate.output  # the regressed arm fails the gate
    shown = CliRunner().invoke(app, ["report", str(tmp_path / "ab")])
    assert shown.exit_code == 0 and "1 unchanged, 1 regressed" in " ".join(shown.output.split())
    with console.capture() as printed:  # what `run` prints once such a run ends: its answer, not only medians
        _print_run(result, "auto", None)
    assert "Interleaved A/B" in printed.get() and "1 unchanged, 1 regressed" in " ".join(printed.get().split())
    plain = _plan([{"label": "a"}, {"label": "slow", "slowdown": 0.05}])  # the same labels, ordinary trials
    plain["measure"] = {"warmup_iters": 2, "warmup_max_iters": 2, "iters": 10}
    run_plan(write_plan(yaml.safe_dump(plain), "plain.yaml"), out=tmp_path / "plain", workers=1)
    items = compare(load_results(tmp_path / "plain"), load_results(tmp_path / "ab"))
    assert {i["verdict"] for i in items} == {"only in base", "only in candidate"}


@pytest.mark.parametrize(("change", "message"), [
    ({"rounds": 1}, "measure.interleave.rounds: Input should be greater than or equal to 3"),
    ({"base": "b2"}, "measure.interleave.base: no trial has the label 'b2'"),
    ({"by": "entry"}, "measure.interleave.by: Input should be 'label' or 'model'"),
    ({"one_arm": True}, "has one arm (a); interleaving compares two or more labels"),
    ({"scenario": "offline"}, "measure.interleave: matrix.backends[0] runs offline"),
    ({"slowdown": 1.5}, "matrix.backends[1].slowdown: Input should be less than or equal to 1"),
    ({"sets": [["a", "c"]]}, "measure.interleave.sets[0]: no trial has the label 'c'"),
    ({"repeats": 2}, "measure: interleave: its rounds are its repeats"),
    ({"builds": 3}, "measure: interleave: builds (3) needs at least 9 rounds, 3 for each build"),
    ({"builds": 0}, "measure.interleave.builds: Input should be greater than or equal to 1"),
])
def test_bad_interleave_keys_are_refused_at_the_key(write_plan, tmp_path, change, message):
    import yaml

    plan = _plan([{"label": "a"}, {"label": "b"}],
                 **{k: v for k, v in change.items() if k in ("rounds", "base", "by", "sets", "builds")})
    if "repeats" in change:
        plan["measure"]["repeats"] = change["repeats"]
    if change.get("one_arm"):
        plan["matrix"]["backends"] = plan["matrix"]["backends"][:1]
    if "scenario" in change:
        plan["scenario"] = change["scenario"]
    if "slowdown" in change:
        plan["matrix"]["backends"][1]["slowdown"] = change["slowdown"]
    assert message in refused(write_plan, tmp_path, yaml.safe_dump(plan))


def test_an_arm_a_unit_did_not_measure_shows_its_status_not_a_ratio():
    rows = [{"scenario": "interleaved", "arm": "a", "label": "a", "ab_base": "a", "status": "ok"},
            {"scenario": "interleaved", "arm": "b", "label": "b", "ab_base": None, "status": "failed"}]
    (item,) = paired_answers.items(rows)
    assert item["arm"] == "b" and item["verdict"] == "failed" and item["ratio"] is None


def test_by_model_two_versions_of_a_models_code_are_the_arms_of_one_unit_each_checked_for_parity():
    """``by: model``: a model-code change gated in one worker; real torch runners, each arm's output
    checked against its own reference."""
    model = {"python": "tinynet:make", "input_shape": [3, 16, 16]}
    plan = {"name": "m", "device": "cpu", "models": [{**model, "name": "v1"}, {**model, "name": "v2"}],
            "matrix": {"batch_sizes": [1], "backends": ["torch-eager"]},
            "measure": {"warmup_iters": 2, "warmup_max_iters": 2,
                        "interleave": {"rounds": 3, "round_s": 0.01, "warmup_s": 0.0, "by": "model", "base": "v1"}}}
    (unit,) = units(expand(parse_plan(plan)))
    first = run_trial(unit, "cpu", ModelStore())
    rows = [first, *first.pop("_arms")]
    assert [(r["status"], r["arm"], r["model"]) for r in rows] == [("ok", "v1", "v1"), ("ok", "v2", "v2")]
    assert all(r["parity_max_rel_err"] is not None and r["ab_group"] == unit.trial_id for r in rows)
    assert rows[1]["ab_base"] == "v1" and rows[1]["ab_ratio"] is not None


@pytest.mark.gpu
def test_on_a_gpu_a_gpu_bound_step_is_slowed_by_device_work_and_a_launch_bound_one_on_the_host():
    """ResNet-18 at batch 64 keeps the GPU busy (device work); MobileNetV2 eager at batch 1 waits on
    Python (a host delay); either way the interleaved ratio to its twin finds the 5%."""
    plan = {"name": "g", "device": "cuda", "models": ["torchvision:resnet18", "torchvision:mobilenet_v2"],
            "matrix": {"batch_sizes": [1, 64], "dtypes": ["fp16"],
                       "backends": [{"backend": "torch-eager", "label": "a"},
                                    {"backend": "torch-eager", "label": "slow", "slowdown": 0.05}],
                       "exclude": [{"model": "resnet18", "batch_size": 1},
                                   {"model": "mobilenet_v2", "batch_size": 64}]},
            "measure": {"warmup_max_s": 1, "interleave": {"rounds": 10, "round_s": 0.2}}}
    kinds = {}
    for unit in units(expand(parse_plan(plan))):
        first = run_trial(unit, "cuda", ModelStore())
        slow = first["_arms"][0]
        assert slow["status"] == "ok" and slow["ab_verdict"] == "regressed", slow.get("error")
        assert 1.02 < slow["ab_ratio"] < 1.09
        kinds[slow["model"]] = slow["slowdown_kind"]
    assert kinds == {"resnet18": "device", "mobilenet_v2": "host"}
