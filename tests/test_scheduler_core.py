"""The scheduler's decisions without Ray: fake workers (a recording pool), a fake clock, a set of live nodes.

Each test plays the events a Ray loop would feed (a worker answered, returned a row, died, ...)
and checks what the dispatcher asked of the workers and which outcomes it reported.
"""

from __future__ import annotations

import pytest

from orchestrator.run.ahead import WINDOW_PER_BUILDER, Ahead, default_builders
from orchestrator.run.dispatch import (
    MAX_START_FAILURES,
    NODE_DEATH_GRACE_S,
    START_TIMEOUT_S,
    Dispatcher,
    Outcome,
    State,
)
from workers.contract import ModelSpec, Trial


def trial(tid: str, model: str = "a", timeout_s: float | None = 60.0, retries: int = 0, batch: int = 1) -> Trial:
    return Trial(plan="core", model=ModelSpec(kind="torchvision", ref=model, name=model, input_shape=(3, 8, 8)),
                 backend="sleep", label="sleep", options={}, batch_size=batch, dtype="fp32", io="device",
                 device="cuda", timeout_s=timeout_s, retries=retries, trial_id=tid)


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


class Pool:
    """Fake workers: records what the dispatcher asks; ``running[name]`` is the trial id it runs."""

    def __init__(self) -> None:
        self.running: dict[str, str] = {}
        self.log: list[tuple[str, str]] = []  # (what, worker)

    def run(self, name: str, trial: Trial) -> None:
        assert name not in self.running, f"{name} got a second trial"
        self.running[name] = trial.trial_id
        self.log.append(("run", name))

    def kill(self, name: str) -> None:
        self.running.pop(name, None)
        self.log.append(("kill", name))

    def respawn(self, name: str) -> None:
        self.log.append(("respawn", name))


class Run:
    """A dispatcher over fake workers, started (every worker answered) unless told otherwise."""

    def __init__(self, trials: list[Trial], workers: dict[str, str | None] | int = 1,
                 started: bool = True, can_respawn: bool = True) -> None:
        if isinstance(workers, int):
            workers = {f"w{i}": "n0" for i in range(workers)}
        self.pool, self.clock, self.alive = Pool(), Clock(), {"n0", "n1", "n2"}
        self.core = Dispatcher(self.pool, trials, workers, can_respawn=can_respawn, clock=self.clock,
                               alive_nodes=lambda: set(self.alive))
        self.outcomes: list[Outcome] = []
        if started:
            for name in workers:
                self.core.started(name)
        self.step()

    def step(self, stop: bool = False) -> None:
        self.core.dispatch(stop)
        self.outcomes += self.core.take_outcomes()

    def ok(self, name: str, stop: bool = False) -> None:
        """The worker returns an ok row for its trial."""
        tid = self.pool.running.pop(name)
        self.core.finished(name, {"trial_id": tid, "status": "ok", "error": None})
        self.step(stop)

    def row(self, name: str, status: str, error: str) -> None:
        tid = self.pool.running.pop(name)
        self.core.finished(name, {"trial_id": tid, "status": status, "error": error})
        self.step()

    def by_id(self) -> dict[str, Outcome]:
        return {o.job.trial_id: o for o in self.outcomes}

    def state(self, name: str) -> State:
        return self.core.workers[name].state


def test_a_worker_prefers_its_own_model_then_one_nobody_runs_then_the_first():
    trials = [trial("a1", "a"), trial("a2", "a"), trial("b1", "b"), trial("c1", "c"), trial("a3", "a"),
              trial("b2", "b")]
    r = Run(trials, workers=2)
    assert r.pool.running == {"w0": "a1", "w1": "b1"}  # w1: not a2, a model w0 is busy with
    r.ok("w0")
    assert r.pool.running["w0"] == "a2"  # its own model, though c1 came first
    r.ok("w1")
    assert r.pool.running["w1"] == "b2"
    r.ok("w1")
    assert r.pool.running["w1"] == "c1"  # no b left: c, which nobody runs, before a3
    r.ok("w1")
    assert r.pool.running["w1"] == "a3"  # only a left: the first, though w0 runs a
    r.ok("w0")
    r.ok("w1")
    assert [o.status for o in r.outcomes] == ["ok"] * 6 and not r.core.active(stop=False)


def test_a_worker_that_dies_is_replaced_and_its_trial_failed():
    r = Run([trial("t1"), trial("t2")])
    r.core.died("w0", "its process (pid 7) exited")
    r.step()
    (o,) = r.outcomes
    assert o.status == "failed" and o.row is None and o.replaced and o.worker == "w0" and o.attempt == 1
    assert o.error == "worker w0 died while running this trial: its process (pid 7) exited"
    assert r.pool.log[-2:] == [("kill", "w0"), ("respawn", "w0")] and r.state("w0") is State.STARTING
    assert "w0" not in r.pool.running  # no trial before the fresh worker answers
    r.core.started("w0")
    r.step()
    assert r.pool.running == {"w0": "t2"}


def test_a_crash_with_retries_is_retried_and_its_row_says_attempt_2_and_the_earlier_error():
    r = Run([trial("t1", retries=1), trial("t2")], workers=2)
    r.core.died("w0", "boom")
    r.step()
    assert r.outcomes == [] and r.pool.running == {"w1": "t2"}
    r.ok("w1")
    assert r.pool.running == {"w1": "t1"}  # requeued at the head, taken by the next free worker
    r.ok("w1")
    t1 = r.by_id()["t1"]
    assert t1.status == "ok" and t1.attempt == 2 and t1.row is not None
    assert t1.earlier_errors == ("worker w0 died while running this trial: boom",)
    assert r.by_id()["t2"].attempt == 1 and r.by_id()["t2"].earlier_errors == ()


def test_a_trial_past_its_timeout_is_killed_replaced_and_timeout():
    r = Run([trial("slow", timeout_s=5.0), trial("next", timeout_s=None)])
    assert r.core.next_deadline() == r.clock.t + 5.0
    r.clock.t += 4.9
    r.core.tick()
    assert r.state("w0") is State.BUSY
    r.clock.t += 0.2
    r.core.tick()
    r.step()
    (o,) = r.outcomes
    assert o.status == "timeout" and o.replaced and o.attempt == 1
    assert o.error == "ran past its timeout_s (5 s) on worker w0; the worker was killed and replaced"
    assert ("kill", "w0") in r.pool.log and r.pool.log[-1] == ("respawn", "w0")
    r.core.started("w0")
    r.step()
    assert r.pool.running == {"w0": "next"} and r.core.next_deadline() == float("inf")  # no timeout_s


@pytest.mark.parametrize("status,error", [
    ("oom", "CUDA out of memory. Tried to allocate 20.00 GiB"),
    ("failed", "RuntimeError: CUDA error: an illegal memory access was encountered"),
])
def test_oom_and_cuda_errors_replace_the_worker_and_keep_its_row(status, error):
    r = Run([trial("t1"), trial("t2")])
    r.row("w0", status, error)
    (o,) = r.outcomes
    assert o.status == status and o.row is not None and o.row["error"] == error and o.replaced
    assert r.pool.log[-2:] == [("kill", "w0"), ("respawn", "w0")] and r.state("w0") is State.STARTING


def test_a_trial_that_raises_keeps_its_worker():
    r = Run([trial("t1"), trial("t2"), trial("t3")])
    r.row("w0", "failed", "ValueError: injected error")
    assert r.pool.running == {"w0": "t2"} and ("kill", "w0") not in r.pool.log
    r.pool.running.pop("w0")
    r.core.raised("w0", "TypeError: can't pickle")  # the call itself failed
    r.step()
    assert r.pool.running == {"w0": "t3"}
    failed = [o for o in r.outcomes if o.status == "failed"]
    assert [(o.replaced, o.error) for o in failed] == [(False, "ValueError: injected error"),
                                                       (False, "TypeError: can't pickle")]
    assert failed[1].row is None and failed[1].worker == "w0"


def test_a_worker_that_keeps_failing_to_start_is_lost_and_the_remaining_trials_fail_with_the_reason():
    r = Run([trial("t1", "b"), trial("t2", "a"), trial("t3", "b")], started=False)
    for i in range(MAX_START_FAILURES - 1):
        r.core.died("w0", f"ImportError {i}")
        r.step()
        assert r.state("w0") is State.STARTING and r.core.active(stop=False)
    r.clock.t += START_TIMEOUT_S  # the last fresh one never answers
    r.core.tick()
    r.step()
    assert r.state("w0") is State.LOST and r.pool.log.count(("respawn", "w0")) == MAX_START_FAILURES - 1
    assert r.core.lost == {"w0": f"failed to start {MAX_START_FAILURES} time(s): did not start within 300 s"}
    assert not r.core.active(stop=False)
    r.core.close(stop=False)
    r.step()
    assert [o.job.trial_id for o in r.outcomes] == ["t1", "t2", "t3"]  # in queue order
    assert all(o.status == "failed" and o.worker is None and not o.replaced for o in r.outcomes)
    assert r.outcomes[0].error == (f"no worker left to run this trial (w0: failed to start {MAX_START_FAILURES} "
                                   "time(s): did not start within 300 s)")


def test_a_start_failure_count_restarts_once_a_worker_answers():
    r = Run([trial("t1")], started=False)
    for _ in range(MAX_START_FAILURES - 1):
        r.core.died("w0", "flaky")
    r.core.started("w0")
    r.step()
    r.core.died("w0", "segfault")  # while running t1: a crash, not a start failure
    r.core.died("w0", "flaky")
    assert r.state("w0") is State.STARTING and r.core.lost == {}


def test_without_respawn_a_dead_worker_is_lost_and_the_others_go_on():
    r = Run([trial("t1"), trial("t2"), trial("t3")], workers=2, can_respawn=False)
    r.core.died("w0", "abort")
    r.step()
    assert r.core.lost == {"w0": "died, and no way to start it again"} and ("respawn", "w0") not in r.pool.log
    r.ok("w1")
    r.ok("w1")
    assert [o.status for o in r.outcomes] == ["failed", "ok", "ok"] and r.outcomes[0].replaced


def test_a_trial_whose_node_dies_is_requeued_once_then_fails_on_a_second_loss():
    r = Run([trial("t1"), trial("t2")], workers={"w0": "n0", "w1": "n1", "w2": "n2"})
    assert r.pool.running == {"w0": "t1", "w1": "t2"}
    r.alive.discard("n0")
    r.core.died("w0", "its node died")
    r.step()
    assert r.outcomes == [] and r.pool.running == {"w1": "t2", "w2": "t1"}  # re-run on the idle worker
    assert r.core.lost == {"w0": "its node n0 died"} and ("respawn", "w0") not in r.pool.log
    assert list(r.core.requeued) == ["t1"]
    r.alive.discard("n2")
    r.core.died("w2", "its node died")
    r.step()
    (o,) = r.outcomes
    assert o.status == "failed" and not o.replaced and o.worker == "w2" and o.attempt == 1
    assert "(the second node lost under this trial)" in o.error
    r.ok("w1")
    assert not r.core.active(stop=False) and list(r.core.requeued) == ["t1"]


def test_a_worker_on_a_dead_node_is_not_replaced_after_a_timeout():
    r = Run([trial("t1", timeout_s=1.0)], workers={"w0": "n0"})
    r.alive.discard("n0")
    r.clock.t += 2
    r.core.tick()
    r.step()
    assert r.outcomes[0].status == "timeout" and r.core.lost == {"w0": "its node n0 died"}
    assert ("respawn", "w0") not in r.pool.log


def test_a_doubtful_worker_is_lost_with_its_node_or_a_crash_after_the_grace():
    r = Run([trial("t1"), trial("t2")], workers={"w0": "n0", "w1": "n1"})
    r.core.unavailable("w0", "connection lost")
    r.core.unavailable("w1", "connection lost")
    r.step()
    assert r.state("w0") is State.DOUBTFUL and r.outcomes == [] and r.core.active(stop=False)
    assert r.core.next_deadline() == r.clock.t + NODE_DEATH_GRACE_S
    r.clock.t += 10
    r.alive.discard("n0")  # Ray decides: w0's node died
    r.core.tick()
    r.step()
    assert r.state("w0") is State.LOST and list(r.core.requeued) == ["t1"] and r.outcomes == []
    assert r.state("w1") is State.DOUBTFUL  # its node still alive: wait out the grace
    r.clock.t += NODE_DEATH_GRACE_S - 10
    r.core.tick()
    r.step()
    (o,) = r.outcomes
    assert o.job.trial_id == "t2" and o.status == "failed" and o.replaced
    assert o.error == "worker w1 died while running this trial: connection lost"
    assert r.state("w1") is State.STARTING
    r.core.started("w1")
    r.step()
    assert r.pool.running == {"w1": "t1"}  # the requeued trial runs on the survivor


def test_should_stop_stops_dispatch_but_running_trials_finish():
    r = Run([trial("t1"), trial("t2"), trial("t3")], workers=2)
    r.ok("w0", stop=True)
    assert r.pool.running == {"w1": "t2"} and r.core.active(stop=True)  # w1 still runs its trial
    r.ok("w1", stop=True)
    assert r.pool.running == {} and not r.core.active(stop=True) and r.core.active(stop=False)
    r.core.close(stop=True)
    assert [o.job.trial_id for o in r.outcomes + r.core.take_outcomes()] == ["t1", "t2"]
    assert r.core.pending == 1  # stopped: t3 is not failed, it is left for --resume


def test_concurrent_counts_the_other_busy_workers_on_the_same_node():
    r = Run([trial(f"t{i}") for i in range(4)], workers={"w0": "n0", "w1": "n0", "w2": "n1"})
    r.ok("w0")  # t3 goes to w0 while w1 runs on n0
    for name in ("w1", "w2", "w0"):
        r.ok(name)
    assert {tid: o.concurrent for tid, o in r.by_id().items()} == {"t0": 0, "t1": 1, "t2": 0, "t3": 1}


def test_busy_max_counts_the_most_trials_on_the_node_while_a_trial_ran_neighbours_that_came_later_too():
    r = Run([trial(f"t{i}") for i in range(5)], workers={"w0": "n0", "w1": "n0", "w2": "n1"})
    r.ok("w0")  # t3 goes to w0 while w1 runs on n0
    r.ok("w1")  # t4 goes to w1 while t3 runs
    r.ok("w0")  # t3 ends: t4 runs alone from here, but had a neighbour while it ran
    for name in ("w1", "w2"):
        r.ok(name)
    got = {tid: (o.concurrent, o.busy_max) for tid, o in r.by_id().items()}
    assert got == {"t0": (0, 2), "t1": (1, 2), "t2": (0, 1), "t3": (1, 2), "t4": (1, 2)}


def test_a_trial_that_finished_in_time_is_not_timed_out_later():
    r = Run([trial("t1", timeout_s=5.0), trial("t2", timeout_s=50.0)])
    r.clock.t += 4
    r.ok("w0")  # t2 starts: its deadline is 54 s from the start, t1's (5 s) is gone
    assert r.core.next_deadline() == r.clock.t + 50.0
    r.clock.t += 10
    r.core.tick()
    r.ok("w0")
    assert [(o.job.trial_id, o.status) for o in r.outcomes] == [("t1", "ok"), ("t2", "ok")]
    assert ("kill", "w0") not in r.pool.log


def test_a_models_trials_go_grouped_by_shape_in_the_order_each_shape_first_came():
    trials = [trial("a1-b1", batch=1), trial("a1-b8", batch=8), trial("a2-b1", batch=1), trial("a2-b8", batch=8),
              trial("c-b1", "c", batch=1)]
    r = Run(trials, workers=1)
    order = [r.pool.running["w0"]]
    while r.pool.running:
        r.ok("w0")
        order += list(r.pool.running.values())
    assert order == ["a1-b1", "a2-b1", "a1-b8", "a2-b8", "c-b1"]  # one shape after the other, then the next model
    assert sorted(o.job.trial_id for o in r.outcomes) == sorted(t.trial_id for t in trials)  # every id, once


def test_upcoming_is_the_order_a_nodes_workers_will_take_the_trials():
    trials = [trial("a1", "a"), trial("b1", "b"), trial("a2", "a"), trial("c1", "c"), trial("b2", "b"),
              trial("a3", "a")]
    r = Run(trials, workers={"w0": "n0", "w1": "n1"})
    assert r.pool.running == {"w0": "a1", "w1": "b1"}
    assert [(j.trial_id, held) for j, held in r.core.upcoming("n0")] == [
        ("a2", True), ("a3", True), ("c1", False), ("b2", False)]  # its model first; the rest in queue order
    r.ok("w0")
    assert r.pool.running["w0"] == "a2" and [j.trial_id for j, _ in r.core.upcoming("n0")][0] == "a3"


class Builds:
    """A fake submit: records each task (node, its trials' ids); a handle per task."""

    def __init__(self) -> None:
        self.tasks: list[tuple[str | None, list[str]]] = []

    def __call__(self, node: str | None, trials: list[Trial]) -> int:
        self.tasks.append((node, [t.trial_id for t in trials]))
        return len(self.tasks) - 1


def test_ahead_builds_in_dispatch_order_never_more_tasks_than_builders_each_artifact_once():
    trials = [trial(f"a{i}", "a", batch=i) for i in range(1, 7)] + [trial("a1-again", "a", batch=1)]
    r = Run(trials, workers={"w0": "n0"})
    builds = Builds()
    ahead = Ahead({"n0": 2}, builds, key=lambda t: ("onnx", t.model.key, t.batch_size))
    ahead.feed(r.core.upcoming, r.core.running())
    # w0 runs a1; the next two artifacts, one to each builder; a1-again shares a1's (w0 builds that one)
    assert builds.tasks == [("n0", ["a2"]), ("n0", ["a3"])] and ahead.stats.most_at_once == 2
    ahead.feed(r.core.upcoming, r.core.running())
    assert len(builds.tasks) == 2  # both builders busy: nothing more
    ahead.finished(0, 0.05, None)  # short builds: the next task takes several, one after the other
    ahead.feed(r.core.upcoming, r.core.running())
    assert builds.tasks[2] == ("n0", ["a4", "a5", "a6"]) and len(ahead.running) == 2
    ahead.finished(1, 0.05, None)
    ahead.finished(2, 0.15, None)
    ahead.feed(r.core.upcoming, r.core.running())
    assert len(builds.tasks) == 3  # every artifact is built or building: nothing twice


def test_ahead_stays_within_its_window_of_artifacts_ahead_of_the_workers():
    trials = [trial(f"a{i}", "a", batch=i) for i in range(1, 100)]
    r = Run(trials, workers={"w0": "n0"})
    builds = Builds()
    ahead = Ahead({"n0": 1}, builds, key=lambda t: t.batch_size)
    for handle in range(50):
        ahead.feed(r.core.upcoming, r.core.running())
        if handle < len(builds.tasks):
            ahead.finished(handle, 0.001, None)
    built = [tid for _, ids in builds.tasks for tid in ids]
    assert len(built) == WINDOW_PER_BUILDER and built == [f"a{i}" for i in range(2, 2 + WINDOW_PER_BUILDER)]
    r.ok("w0")  # the worker moves on: the window with it
    ahead.feed(r.core.upcoming, r.core.running())
    assert [tid for _, ids in builds.tasks for tid in ids][-1] == f"a{2 + WINDOW_PER_BUILDER}"


def test_a_node_builds_another_nodes_artifact_only_for_a_model_its_workers_hold():
    trials = [trial("a1", "a"), trial("b1", "b"), trial("c1", "c"), trial("d1", "d")]
    r = Run(trials, workers={"w0": "n0", "w1": "n1"})
    builds = Builds()
    ahead = Ahead({"n0": 4, "n1": 4}, builds, key=lambda t: t.model.key)
    ahead.feed(r.core.upcoming, r.core.running())
    assert builds.tasks == [("n0", ["c1"]), ("n0", ["d1"])]  # n1's builders leave n0's to it


@pytest.mark.parametrize(("cpus", "workers", "memory", "expected"), [
    (2, 1, None, 0), (2, 2, None, 0), (16, 1, None, 2), (8, 4, None, 3), (128, 8, None, 16), (128, 8, 16 << 30, 4)])
def test_default_builders_are_the_cpus_no_worker_or_ray_holds_within_memory(cpus, workers, memory, expected):
    assert default_builders(cpus, workers, memory) == expected
