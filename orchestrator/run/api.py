"""The run path as a Python API: plan -> trials -> Ray workers -> Parquet part files -> verdicts.

The CLI's ``run`` is a thin shell over :func:`run_plan`: it prints the :class:`RunResult` and exits
with its ``exit_code`` (failed trials and missed budgets are judged here, so callers of
:func:`run_plan` get the same verdicts). Tests call it directly with a Ray they initialised
themselves (``ray.init(num_gpus=4)``), which it then uses as it is.
"""

from __future__ import annotations

import datetime as dt
import os
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import JsonValue

from orchestrator.answers import budgets
from orchestrator.errors import InputError, Interrupted, ResultWriteError, Terminated, env_switch
from orchestrator.plan import interleave
from orchestrator.plan.expand import expand, with_profiles
from orchestrator.plan.load import load_plan
from orchestrator.plan.schema import Plan
from orchestrator.results.resume import open_resume, resume_command
from orchestrator.results.sink import (
    SAMPLE_COLUMNS,
    Compaction,
    ResultSink,
    check_writable,
    compact,
    describe,
    layout,
    slim,
)
from orchestrator.run import ahead, cluster, placement
from orchestrator.run.ahead import Stats
from orchestrator.run.headwatch import HeadWatch, failures_allowed, gcs_address
from orchestrator.run.raylog import RayLog
from orchestrator.run.scheduler import schedule
from orchestrator.run.shipping import check_factories, ship
from orchestrator.run.stops import SIGTERM_SEEN, catch_sigterm, noting_stops, release_sigterm, stopped_while_starting
from workers.contract import Trial, succeeded
from workers.row import Row

#: A process's environment (versions, host, GPUs: ``workers.measure.envinfo.environment``), as the
#: results' metadata stores it.
Environment = dict[str, JsonValue]


@dataclass
class RunResult:
    out: Path
    run_id: str
    device: str
    workers: list[str]
    #: this run's rows as stored, less their per-iteration samples (``sink.slim``): they are on disk
    rows: list[Row] = field(default_factory=list)
    kept: dict[str, str] = field(default_factory=dict)  # resuming: trial id -> status of stored rows kept
    trials: list[Trial] = field(default_factory=list)  # every trial of the plan (kept ones too)
    #: workers that died during the run (name -> cause) and what became of their trials
    lost_workers: dict[str, str] = field(default_factory=dict)
    requeued: list[str] = field(default_factory=list)
    #: (row, messages) for each ok row, run now or kept, that misses a budget of its trial
    budget_misses: list[tuple[Row, list[str]]] = field(default_factory=list)
    #: (row, message) for each ok but invalid row a budget was judged on (met or missed)
    budget_invalid: list[tuple[Row, str]] = field(default_factory=list)
    #: what the compaction at the end did (None: nothing to do), or why it could not be done
    compaction: Compaction | None = None
    compact_error: str | None = None
    #: what the build-ahead tasks did (None: none ran)
    ahead: Stats | None = None

    @property
    def counts(self) -> dict[str, int]:
        return dict(Counter(r["status"] for r in self.rows))

    @property
    def total_counts(self) -> dict[str, int]:
        """Statuses of every trial in the directory: the ones kept and the ones run now."""
        return dict(Counter([r["status"] for r in self.rows] + list(self.kept.values())))

    @property
    def failed(self) -> list[Row]:
        """The rows of this run (not the kept ones) whose status is not ok or skipped."""
        return [r for r in self.rows if not succeeded(r["status"])]

    @property
    def failed_trials(self) -> list[str]:
        """Ids of the trials in the directory, run now or kept, whose status is not ok or skipped."""
        fresh = {r["trial_id"]: r["status"] for r in self.rows}
        return [t for t, s in {**self.kept, **fresh}.items() if not succeeded(s)]

    @property
    def exit_code(self) -> int:
        """The command line's: 0 when every trial is ok or skipped and within its budgets, else 1."""
        return 1 if self.failed_trials or self.budget_misses else 0

    def report_rows(self) -> list[Row]:
        """The rows a report of the run covers: this run's, and for a resumed run the kept ones
        (read back from ``out``, without their samples)."""
        rows = list(self.rows)
        if self.kept:
            from orchestrator.results.read import load_results
            from workers.schema import SCHEMA

            fresh = {r["trial_id"] for r in rows}
            columns = [n for n in SCHEMA.names if n not in SAMPLE_COLUMNS]
            rows += [r for r in load_results(self.out, columns=columns).to_pylist()
                     if r["trial_id"] in self.kept and r["trial_id"] not in fresh]
        return rows

    def judge(self) -> RunResult:
        """Fill in the verdicts that need the stored rows (budgets); returns itself."""
        rows = self.report_rows()
        self.budget_misses = budgets.misses(self.trials, rows)
        self.budget_invalid = budgets.on_invalid(self.trials, rows)
        return self

    @property
    def invalid(self) -> list[Row]:
        """The rows of this run (not the kept ones) that are ok but not valid (workers/measure/validity.py)."""
        return [r for r in self.rows if r.get("valid") is False]


def needs_torch(trials: list[Trial]) -> bool:
    """Whether any trial has a model (its worker imports torch); model-less ones run on light workers."""
    from workers.backends import registry

    runners = registry()
    return any(t.backend not in runners or not runners[t.backend].modelless for t in trials)


def default_out(plan: Plan, now: dt.datetime) -> Path:
    return Path("results") / f"{plan.name}-{now:%Y%m%d-%H%M%S}"


def resolved_yaml(plan: Plan) -> str:
    return yaml.safe_dump(plan.model_dump(mode="json"), sort_keys=False)


class _Environments:
    """The driver's and the workers' environments (versions, hosts, GPUs), for the metadata.

    Asked of every worker at once, without waiting: the first trial starts as soon as its own
    worker is up, not when the slowest is. A worker's answer is read when its first row is
    written (it queued before the trial, so it is there by then); a worker that never answered
    (it failed to start) has an empty one.
    """

    def __init__(self, pool: list[tuple[Any, str]]) -> None:
        self._refs = {name: actor.environment.remote() for actor, name in pool}
        self._got: dict[str, Environment] = {}
        self._driver: Environment | None = None

    @property
    def driver(self) -> Environment:
        """The driver's own, taken when the first row is written: not on the way to the first trial."""
        if self._driver is None:
            from workers.measure.envinfo import environment

            self._driver = environment("cpu")
        return self._driver

    def worker(self, name: str | None, timeout: float = 30.0) -> Environment:
        import ray

        if name not in self._refs:
            return {}
        if name not in self._got:
            try:
                self._got[name] = ray.get(self._refs[name], timeout=timeout)
            except Exception:  # the worker died or never started
                self._got[name] = {}
        return self._got[name]

    def of_row(self, row: Row) -> dict[str, Environment]:
        return {"driver": self.driver, "worker": self.worker(row.get("worker"))}

    def all(self) -> dict[str, JsonValue]:
        return {"driver": self.driver, "workers": {n: self.worker(n, timeout=5.0) for n in self._refs}}


def run_plan(
    plan_path: str | Path,
    *,
    out: str | Path | None = None,
    address: str | None = None,
    workers: int | None = None,
    cpus_per_worker: float | None = None,
    builders: int | None = None,
    on_start: Callable[[int, list[str], str], None] | None = None,
    on_row: Callable[[Row], None] | None = None,
    resume: str | Path | None = None,
    retry_failed: bool = False,
    profile: Sequence[str] = (),
    retry_invalid: bool = False,
    on_warning: Callable[[str], None] | None = None,
    command_options: Sequence[str] = (),
) -> RunResult:
    """Run every trial of the plan at ``plan_path``; every trial becomes a row in ``out``.

    ``resume``: a run directory of this plan; only the trials not stored there run (with
    ``retry_failed``, also those stored with a status other than ok or skipped; with ``retry_invalid``,
    those stored ok but not valid), into it.
    Raises an ``InputError`` (and writes nothing) for a bad plan, an unusable output
    directory, or a cluster that can't run the plan; ``Interrupted`` on Ctrl-C, after keeping
    what ran and with the command that resumes the run. ``cpus_per_worker`` and ``builders`` (build-ahead
    tasks per node, ``orchestrator/run/ahead.py``) override the plan's.
    ``profile``: backend labels whose trials also record a profile (as ``profile: true`` on their entries).
    ``on_warning``: gets each warning line (a ``python:`` module not found here, on a cluster run).
    The result carries the verdicts: ``failed_trials``, ``budget_misses`` and the ``exit_code``
    the command line exits with. ``command_options``: the command line's own options (``--junit
    FILE``), repeated in the resume command a stopped run prints. ``out`` is made absolute: the
    paths printed and returned say where the rows are whatever the directory the run started in
    (a Ray job's is the one ``ray start`` ran in).
    """

    plan = load_plan(plan_path)
    trials = all_trials = with_profiles(expand(plan, source=str(plan_path)), tuple(profile), str(plan_path))
    check_factories(plan.models, str(plan_path), address, on_warning)
    now = dt.datetime.now(dt.timezone.utc)
    previous = None
    if resume is not None:
        if out is not None and Path(out) != Path(resume):
            raise InputError(f"--out {out} and --resume {resume}: a resumed run writes into its own directory; "
                             "give only --resume")
        previous = open_resume(Path(resume), plan, trials, str(plan_path), retry_failed, retry_invalid)
        trials = [t for t in trials if t.trial_id not in previous.kept]
        if not trials:  # everything is stored already: no cluster needed; the run is complete
            return _nothing_to_run(plan, previous, all_trials)
    head_failures = _check_switches(address)
    out_dir = (previous.out if previous else Path(out) if out else default_out(plan, now)).absolute()

    def resume_line() -> str:
        """The command that continues this run: on the cluster it ran on (``RAY_ADDRESS``: a Ray job's)."""
        return resume_command(plan_path, out_dir, address or os.environ.get("RAY_ADDRESS") or None, workers,
                              cpus_per_worker, profile, retry_failed=retry_failed, retry_invalid=retry_invalid,
                              extra=command_options)
    if previous is None:
        check_writable(out_dir)
    run = _Run(plan, trials, all_trials, previous, out_dir, now, resume_line,
               plan.builders if builders is None else builders)
    previous_handler = catch_sigterm()
    raylog = RayLog(out_dir).install()  # Ray's own messages: to the run's log, not the terminal
    started_ray = _connect(address, raylog, previous_handler)
    catch_sigterm()  # Ray's driver installs its own SIGTERM handler as it connects: ours must win
    try:
        return run.on_cluster(address, workers, cpus_per_worker, head_failures, on_start, on_row)
    finally:
        run.close()
        try:
            if started_ray:
                cluster.disconnect()
        finally:
            raylog.close(show_pending=not run.stopped)
        release_sigterm(previous_handler)


def _check_switches(address: str | None) -> int | None:
    """The environment switches a run reads, refused before any write when bad; the head failures a
    run on a cluster (``address``) allows (None: no cluster joined)."""
    # read by the workers (workers/measure/affinity.py)
    env_switch("INFER_ORCH_PIN_TIMING")
    if not address:
        return None
    head_failures = failures_allowed()  # INFER_ORCH_HEAD_TIMEOUT_S
    cluster.connect_wait_s()  # INFER_ORCH_CONNECT_WAIT_S
    return head_failures


def _nothing_to_run(plan: Plan, previous: Any, all_trials: list[Trial]) -> RunResult:
    """A resumed run whose every trial is stored already: compacted if it has parts; no cluster needed."""
    result = RunResult(out=previous.out.absolute(), run_id=previous.run_id or "", device=plan.device,
                       workers=[], kept=previous.kept, trials=all_trials)
    if layout(previous.out).pending:
        try:
            result.compaction = compact(previous.out)
        except OSError as exc:
            result.compact_error = f"could not compact the results in {previous.out}: {describe(exc)}"
    return result.judge()


def _connect(address: str | None, raylog: RayLog, previous_handler: Any) -> bool:
    """Connect to Ray (``address``, else an embedded one); whether Ray was started here. A stop while
    it starts leaves nothing of it and raises ``stopped_while_starting``'s one line."""
    started_ray = False
    with noting_stops() as stops:
        try:
            started_ray = cluster.connect(address)
            if stops or SIGTERM_SEEN.is_set():  # a stop that landed in a callback of Ray's, which swallowed it
                raise KeyboardInterrupt
        except BaseException as exc:
            stopped = isinstance(exc, KeyboardInterrupt) or bool(stops) or SIGTERM_SEEN.is_set()
            try:
                if started_ray:
                    cluster.disconnect()
            finally:
                raylog.close(show_pending=not stopped)  # a stop says one line, not Ray's start-up notes
                release_sigterm(previous_handler)
            if stopped:
                raise stopped_while_starting(exc) from None
            raise
    return started_ray


class _Run:
    """One run once Ray is connected: its workers started, its trials scheduled, each row stored as it
    comes, the parts compacted, the verdicts judged. ``close`` ends what it started, however it ended."""

    def __init__(self, plan: Plan, trials: list[Trial], all_trials: list[Trial], previous: Any, out_dir: Path,
                 now: dt.datetime, resume_line: Callable[[], str], builders: int | None = None) -> None:
        self.plan, self.trials, self.all_trials, self.previous = plan, trials, all_trials, previous
        self.builders = builders  # build-ahead tasks per node (None: the node's spare CPUs)
        self.shipped: Any = None
        self.out_dir, self.now, self.resume_line = out_dir, now, resume_line
        self.watch: HeadWatch | None = None
        self.sink: ResultSink | None = None
        self.scheduling = self.stopped = False

    def on_cluster(self, address: str | None, workers: int | None, cpus_per_worker: float | None,
                   head_failures: int | None, on_start: Callable[[int, list[str], str], None] | None,
                   on_row: Callable[[Row], None] | None) -> RunResult:
        try:
            device, seats, pool = self._start_workers(workers, cpus_per_worker)
            previous, plan, now = self.previous, self.plan, self.now
            run_id = (previous and previous.run_id) or f"{plan.name}-{now:%Y%m%d-%H%M%S}-{uuid.uuid4().hex[:6]}"
            result = RunResult(out=self.out_dir, run_id=run_id, device=device, workers=[name for _, name in pool],
                               kept=previous.kept if previous else {}, trials=self.all_trials)
            self.envs = _Environments(pool)
            self.sink = sink = ResultSink(self.out_dir, run_id, None if previous else resolved_yaml(plan),
                                          metadata={"plan": plan.model_dump(mode="json"), "device": device})
            if on_start:
                on_start(len(self.trials), result.workers, device)
            self.summary = {"plan": plan.name, "device": device, "workers": result.workers,
                            "started_at": now.isoformat()}
            self.watch = _watch_head(address, lambda: self._head_lost(result, sink, address), head_failures)
            self.scheduling = True
            report = self._schedule(result, sink, pool, seats, device, on_row)
            self._finish(result, sink, report)
            return result.judge()
        except KeyboardInterrupt as stop:  # while the workers started: no trial ran (later ones are Interrupted)
            self.stopped = True
            if self.scheduling:
                raise
            raise stopped_while_starting(stop) from None

    def _start_workers(self, workers: int | None, cpus_per_worker: float | None) -> tuple[str, list[Any], list[Any]]:
        """The device, the workers' seats and the workers (started, not waited for)."""
        plan, trials = self.plan, self.trials
        nodes = placement.nodes()
        device = placement.resolve_device(plan.device, nodes)
        nodes = placement.select_nodes(nodes, device, plan.accelerator_type)
        # never more workers than trials to run: each would start (and import torch) for nothing
        most = min(workers or (len(trials) if device == "cuda" else 1), len(trials))
        seats = placement.layout(nodes, device, most, cpus_per_worker or plan.cpus_per_worker)
        if self.previous is not None and layout(self.out_dir).pending:
            # parts left by a run that did not end (or of an older version): compacted first, so
            # that a row this run replaces (--retry-failed) is still there to go to the history
            try:
                compact(self.out_dir)
            except OSError as exc:
                raise ResultWriteError(f"could not compact the results in {self.out_dir}: {describe(exc)}; "
                                       "nothing was run") from None
        # Started before anything else the driver does, so that their start-up (and, for model
        # trials, torch's import and CUDA's initialisation) overlaps the rest of the driver's.
        shipped = ship(trials, cluster.worker_pythonpath())  # the run's own files, for every node
        pool = placement.start_workers(seats, device, plan.seed, warm=needs_torch(trials), shipped=shipped)
        self.shipped = shipped
        return device, seats, pool

    def _head_lost(self, result: RunResult, sink: ResultSink, address: str | None) -> str:
        """What a run says when its cluster's head stopped answering, its rows stored first."""
        try:
            sink.flush()  # the rows waiting in the writer: on disk before the process leaves
        except ResultWriteError:
            pass
        sink.finish({**self.summary, "state": "interrupted", "counts": result.total_counts,
                          "environment": self.envs.all(), "head_lost": True})
        stored = sink.stored + len(result.kept)
        return (f"the cluster's head ({self.watch.address if self.watch else address}) stopped answering mid-run; "
                f"{stored} of {len(self.trials) + len(result.kept)} trials are stored in {self.out_dir}, whole; once "
                f"a cluster is up again (or without --address, on this machine), resume with: {self.resume_line()}")

    def _schedule(self, result: RunResult, sink: ResultSink, pool: list[Any], seats: list[Any], device: str,
                  on_row: Callable[[Row], None] | None) -> Any:
        """Every trial on the workers, each row stored as it comes; the scheduler's report. A failed
        write or a stop ends the run with the rows stored so far and the command that resumes it."""
        def take(row: Row) -> None:
            sink.write(row, environment=self.envs.of_row(row))  # handed to the sink's writer thread
            result.rows.append(slim(row))  # the samples are on disk: the driver keeps no more per trial
            if on_row:
                on_row(row)

        try:
            # kills its workers when it returns
            # an interleaved unit's trials go to one worker as one (orchestrator/plan/interleave.py)
            report = schedule(pool, interleave.units(self.trials), take, respawn=placement.respawn,
                              facts={s.name: s.columns() for s in seats}, run=Row(device=device),
                              ahead=ahead.start(seats, self.trials, self.builders, self.plan.seed, self.shipped))
            sink.flush()  # the last rows: a failed write stops the run here, not in the compaction
        except ResultWriteError as exc:
            sink.discard_stream()
            stored = sink.stored + len(result.kept)
            raise ResultWriteError(
                f"{exc}; {stored} of {len(self.trials) + len(result.kept)} trials are stored there, whole; once it "
                f"can be written, resume with: "
                f"{self.resume_line()}") from None
        except KeyboardInterrupt as stop:
            sink.discard_stream()  # the rows waiting are written: the parts hold every row, --resume compacts
            sink.finish({**self.summary, "state": "interrupted", "counts": result.total_counts,
                         "environment": self.envs.all()})
            stored = sink.stored + len(result.kept)
            # Ray turns any exception a signal handler raises inside its blocking calls into a plain
            # KeyboardInterrupt, so the handler's flag says which signal it was
            term = isinstance(stop, Terminated) or SIGTERM_SEEN.is_set()
            raise Interrupted(
                f"{'terminated (SIGTERM)' if term else 'interrupted'}: {stored} of "
                f"{len(self.trials) + len(result.kept)} trials are stored in {self.out_dir}\n"
                f"resume with: {self.resume_line()}",
                exit_code=Terminated.exit_code if term else Interrupted.exit_code,
            ) from None
        return report

    def _finish(self, result: RunResult, sink: ResultSink, report: Any) -> None:
        """The run's ending: its lost workers, the compaction, the run's summary in the metadata."""
        result.lost_workers, result.requeued, result.ahead = report.lost_workers, report.requeued, report.ahead
        try:
            result.compaction = sink.compact()
        except ResultWriteError as exc:  # every row is stored, in its part: the run itself stands
            result.compact_error = str(exc)
        sink.finish({**self.summary, "state": "finished", "counts": result.total_counts,
                          "environment": self.envs.all(), "lost_workers": result.lost_workers,
                          "requeued": result.requeued, "compacted": _compacted(self.out_dir)})

    def close(self) -> None:
        """However the run ended: its waiting rows to parts, the writer stopped; the head's watch stopped."""
        if self.sink is not None:
            self.sink.discard_stream()
        if self.watch is not None:
            self.watch.stop()


def _watch_head(address: str | None, on_lost: Callable[[], str], failures: int | None) -> HeadWatch | None:
    """For a run on a cluster it joined, a watch on the cluster's head (``orchestrator.run.headwatch``)."""
    if not address:
        return None
    gcs = gcs_address()
    return HeadWatch(gcs, on_lost, failures=failures).start() if gcs else None


def _compacted(out: Path) -> bool:
    """Whether every row of ``out`` is in its compacted file (a compaction skipped for rows of a newer
    version, or one that failed, leaves parts)."""
    lay = layout(out)
    return lay.compacted is not None and not lay.pending
