"""A run's results compacted into one file: both layouts read, every crash window, the history.

No Ray here: rows are written with the driver's own ResultSink, and compaction is stopped at each
of its steps (``crash_after``) as a killed driver would leave it.
"""

from __future__ import annotations

import datetime as dt
import json

import duckdb
import pandas as pd
import polars as pl
import pyarrow.parquet as pq
import pytest

from orchestrator.errors import OutputError
from orchestrator.results.read import is_compacted, load_results
from orchestrator.results.sink import ResultSink, check_writable, compact, stored_trials

ENV = {"driver": {"host": "d"}, "worker": {"host": "h", "worker": "w0"}}


def row(i: int, status: str = "ok", started: int = 0, attempt: int = 1) -> dict:
    return {"trial_id": f"{i:016x}", "status": status, "label": "sleep", "model": "m", "batch_size": i,
            "dtype": "fp32", "io": "device", "worker": f"w{i % 2}", "attempt": attempt,
            "started_at": dt.datetime(2026, 11, 25, 12, 0, started, tzinfo=dt.timezone.utc),
            "samples_ms": [1.0 + i, 2.0 + i], "host_samples_ms": [1.5, 2.5],
            "latency_ms_median": 1.5 + i if status == "ok" else None, "error": None if status == "ok" else "boom"}


def write_run(out, rows, run_id="r1", part_each=False):
    """``rows`` written by the driver's sink, on disk; ``part_each``: a part each (trials that end
    far apart), else as the writer thread gathers them."""
    sink = ResultSink(out, run_id, "plan: x\n", metadata={"plan": {"name": "x"}, "device": "cuda"})
    for r in rows:
        sink.write(dict(r), environment={**ENV, "worker": {"worker": r["worker"]}})
        if part_each:
            sink.flush()
    sink.flush()  # the writer thread's parts on disk
    return sink


def part_rows(out):
    """The rows of each part file (the trials that ended together share one)."""
    return [pq.read_metadata(p).num_rows for p in sorted(out.glob("part-*.parquet"))]


def ids_once(out, n):
    t = load_results(out)
    ids = t.column("trial_id").to_pylist()
    assert len(ids) == n and len(set(ids)) == n
    return {r["trial_id"]: r for r in t.to_pylist()}


def globbed(out):
    """What a reader that globs *.parquet (DuckDB, polars) would read: the trial ids, with repeats."""
    return [r[0] for r in duckdb.sql(f"select trial_id from read_parquet('{out}/*.parquet')").fetchall()]


def test_a_finished_run_is_one_file_that_every_reader_reads(tmp_path):
    out = tmp_path / "run"
    sink = write_run(out, [row(i) for i in range(6)])
    parts = part_rows(out)
    assert sum(parts) == 6 and len(parts) < 6 and not is_compacted(out)  # rows that came together: one part
    done = sink.compact()
    assert (done.rows, done.parts, done.history) == (6, len(parts), 0)
    assert sorted(p.name for p in out.iterdir()) == ["_plan.yaml", "results.parquet"] and is_compacted(out)
    meta = pq.read_schema(out / "results.parquet").metadata
    env = json.loads(meta[b"infer_orch.environment"])
    assert env == {"driver": {"host": "d"}, "workers": {"w0": {"worker": "w0"}, "w1": {"worker": "w1"}}}
    assert json.loads(meta[b"infer_orch.plan"]) == {"name": "x"} and meta[b"infer_orch.run_id"] == b"r1"
    rows = ids_once(out, 6)
    assert rows[f"{3:016x}"]["samples_ms"] == [4.0, 5.0]  # every sample kept
    assert len(pd.read_parquet(out)) == 6 and pq.read_table(out).num_rows == 6
    assert pl.read_parquet(f"{out}/*.parquet").height == 6 and sorted(globbed(out)) == sorted(rows)
    assert stored_trials(out) == {tid: "ok" for tid in rows}
    with pytest.raises(OutputError, match="already holds results"):
        check_writable(out)


@pytest.mark.parametrize("step", ["history", "hide", "rename"])
def test_a_crash_at_any_step_of_compaction_loses_nothing_and_shows_no_trial_twice(tmp_path, step):
    out = tmp_path / "run"
    sink = write_run(out, [row(i) for i in range(6)], part_each=True)  # "hide" stops half-way through them
    sink._fresh.close()  # what ResultSink.compact does first (the writer thread is idle: flushed)
    sink._fresh = None
    with pytest.raises(SystemExit):
        compact(out, out / ".fresh.parquet.tmp", crash_after=step)
    rows = ids_once(out, 6)  # infer-orch's readers: every trial, once
    assert len(set(globbed(out))) == len(globbed(out))  # a glob of *.parquet: never one twice
    assert stored_trials(out) == {tid: "ok" for tid in rows}
    with pytest.raises(OutputError, match="already holds results"):
        check_writable(out)
    compact(out)  # what --resume (or the next compaction) does with what is left
    assert sorted(p.name for p in out.iterdir()) == ["_plan.yaml", "results.parquet"]
    assert b"infer_orch.plan" in pq.read_schema(out / "results.parquet").metadata  # (parts don't carry it)
    assert ids_once(out, 6).keys() == rows.keys() and sorted(globbed(out)) == sorted(rows)


def test_a_run_of_parts_only_loads_and_compacts(tmp_path):
    out = tmp_path / "old"
    sink = write_run(out, [row(i) for i in range(4)])
    sink.discard_stream()  # an older version's run, or one that was interrupted: parts only
    assert [p.name for p in out.iterdir() if p.name.startswith(".")] == []
    assert ids_once(out, 4) and len(pd.read_parquet(out)) == 4
    parts = part_rows(out)
    assert sum(parts) == 4 and max(parts) > 1  # (a part of two workers' rows: the check below means something)
    done = compact(out)
    assert (done.rows, done.parts) == (4, len(parts)) and is_compacted(out)
    assert ids_once(out, 4)[f"{2:016x}"]["samples_ms"] == [3.0, 4.0]
    # the parts held rows of two workers: each worker's environment is its own in the compacted file
    env = json.loads(pq.read_schema(out / "results.parquet").metadata[b"infer_orch.environment"])
    assert env == {"driver": {"host": "d"}, "workers": {"w0": {"worker": "w0"}, "w1": {"worker": "w1"}}}


def test_a_newer_attempt_wins_and_the_older_stays_as_history(tmp_path):
    out = tmp_path / "run"
    write_run(out, [row(0), row(1, "failed", started=1)]).compact()
    # --retry-failed: trial 1 runs again (the part of the newer attempt, beside the compacted file)
    again = write_run(out, [row(1, "ok", started=9)])
    rows = ids_once(out, 2)
    assert rows[f"{1:016x}"]["status"] == "ok"  # before compaction: the part wins
    assert sorted(globbed(out)) == [f"{0:016x}", f"{1:016x}", f"{1:016x}"]  # (DuckDB sees both meanwhile)
    done = again.compact()
    assert done.history == 1 and is_compacted(out)
    rows = ids_once(out, 2)
    assert rows[f"{1:016x}"]["status"] == "ok" and rows[f"{0:016x}"]["started_at"].second == 0
    (old,) = pq.read_table(out / "_history/history.parquet").to_pylist()
    assert (old["trial_id"], old["status"], old["started_at"].second) == (f"{1:016x}", "failed", 1)
    assert sorted(globbed(out)) == [f"{0:016x}", f"{1:016x}"]  # the history is out of the readers' way
    assert len(pd.read_parquet(out)) == 2
    # compacting again adds nothing to the history
    write_run(out, [row(2)]).compact()
    assert pq.read_table(out / "_history/history.parquet").num_rows == 1 and ids_once(out, 3)


def test_with_two_uncompacted_attempts_the_newer_part_wins_whatever_the_names(tmp_path):
    # A run killed before compaction, then a --retry-failed run killed too: both attempts of trial 3
    # are in parts. The newer one is in a part named after another trial, sorting after the older.
    out = tmp_path / "run"
    write_run(out, [row(3, "failed", started=1)]).discard_stream()
    again = write_run(out, [row(9, started=5), row(3, "ok", started=6)])
    again.discard_stream()
    (old,) = [p for p in out.glob("part-*.parquet") if pq.read_metadata(p).num_rows == 1]
    (new,) = [p for p in out.glob("part-*.parquet") if p != old]
    assert old.name < new.name, "the test needs the older attempt's part to sort first"
    assert ids_once(out, 2)[f"{3:016x}"]["status"] == "ok"
    assert stored_trials(out)[f"{3:016x}"] == "ok"  # what --resume goes by
    done = compact(out)
    assert done.history == 1 and ids_once(out, 2)[f"{3:016x}"]["status"] == "ok"
    (hist,) = pq.read_table(out / "_history/history.parquet").to_pylist()
    assert (hist["status"], hist["started_at"].second) == ("failed", 1)


def test_rows_waiting_in_the_writer_are_written_when_the_run_stops(tmp_path):
    out = tmp_path / "run"
    sink = ResultSink(out, "r1", "plan: x\n", metadata={"plan": {"name": "x"}, "device": "cuda"})
    sink._writer.batch_s = 60  # a busy run: every row after the first waits for the next part
    for i in range(5):
        sink.write(row(i))
    assert sink.stored < 5
    sink.discard_stream()  # what Ctrl-C, SIGTERM and a failed run do before they report
    assert sink.stored == 5 and stored_trials(out) == {f"{i:016x}": "ok" for i in range(5)}
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith("part-")) == ["_plan.yaml"]
