"""Writing a run: Parquet part files as trials finish, one compacted file at the end.

Layout of a run directory::

    results/quickstart-20261124-153012/
        _plan.yaml          the plan as resolved (defaults filled in)
        _run.json           run id, start, device, workers, and the final counts
        _ray.log            Ray's own messages during the run (see orchestrator.run.raylog)
        results.parquet     every trial's row, once: written when the run ends (compaction)
        part-<trial_id>.parquet   while the run goes on: the trials that ended together, named after
                            the first (one trial each in runs of older versions)
        _history/history.parquet  rows replaced by a newer attempt (``--retry-failed``), if any
        _profiles/<trial_id>.<backend>.json   a trial's profile, when asked for (its row's profile_file;
                            ``profiles/`` in runs of earlier versions)

While a run goes on, a writer thread (``orchestrator.results.partwriter``) writes each finished trial within
``BATCH_S`` of its end, in one part with the trials that ended meanwhile (under a temporary name,
then renamed: a crash never leaves a torn file), and also streams it into ``.fresh.parquet.tmp``
(hidden, unreadable until closed). When the run ends, that file is closed and merged with what was
stored before (a resumed run) into ``results.parquet``: written under a temporary name, then the
parts are renamed out of sight (``.part-<id>.parquet.absorbed``), the compacted file renamed into
place, and only then the hidden parts removed. So the parts stay until compaction has succeeded (a
crash loses nothing), and no reader ever sees a trial twice: readers that glob ``*.parquet`` see a
trial in a part or in ``results.parquet``, never both; infer-orch's own readers (``stored_table``)
also read the hidden parts of an interrupted compaction, with the precedence ``part-*.parquet`` >
``.part-*.absorbed`` > ``results.parquet`` (a trial stored in several places is the newest attempt
where it is newest). Run directories of older versions (parts only) read the same way, and are
compacted when ``--resume`` completes them.

Files and folders starting with ``_`` or ``.`` are ignored by Arrow datasets, so
``pandas.read_parquet(dir)`` reads the rows alone; polars and DuckDB read ``dir/*.parquet``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from orchestrator.errors import OutputError, ResultWriteError
from orchestrator.results.compaction import Compaction, RowGroups, compact
from orchestrator.results.partwriter import BatchWriter
from orchestrator.results.read import RunInfo
from orchestrator.results.rundir import (
    ATTACHED_FILE,
    COMPACT_FILE,
    FRESH_FILE,
    PLAN_FILE,
    RUN_FILE,
    TRIAL_ID,
    TrialEnvironment,
    WriterOptions,
    atomic,
    atomic_write,
    check_hidden,
    check_writable,
    describe,
    discard,
    encode_meta,
    layout,
    stored_invalid,
    stored_metadata,
    stored_run_id,
    stored_table,
    stored_trials,
)
from workers.contract import FILES_KEY
from workers.measure.envinfo import EnvInfo
from workers.messages import strip_escapes
from workers.row import Row
from workers.schema import SCHEMA, SCHEMA_VERSION, to_batch

#: What callers import from here (the run directory and compaction have modules of their own).
__all__ = ["COMPACT_FILE", "PLAN_FILE", "RUN_FILE", "SAMPLE_COLUMNS", "Compaction", "ResultSink", "check_hidden",
           "check_writable", "compact", "describe", "layout", "slim", "stored_invalid", "stored_metadata",
           "stored_run_id", "stored_table", "stored_trials"]

#: The metadata key a part leaves out (see ResultSink).
PART_OMITS = "plan"
#: The per-iteration columns: what makes a row big (up to 2 x 20,000 floats a repeat). The driver
#: keeps no row with them (``slim``); they are on disk.
SAMPLE_COLUMNS = ("samples_ms", "host_samples_ms")
#: Writer options of a part: it is read whole, once, by compaction (or by a reader of a run going
#: on), so no statistics, dictionaries or compression: 15-20% less of the driver's time a trial.
PART_OPTIONS: WriterOptions = {"write_statistics": False, "use_dictionary": False, "compression": "none"}


def slim(row: Row) -> Row:
    """``row`` without its per-iteration samples: what the driver keeps of a trial it stored."""
    return {k: v for k, v in row.items() if k not in SAMPLE_COLUMNS}  # type: ignore[return-value]


class ResultSink:
    """Writes one run's directory. ``plan_yaml=None`` (resuming) keeps the ``_plan.yaml`` there.

    Keeps no row: ``write`` hands each to a writer thread (``orchestrator.results.partwriter``), which writes
    the rows of the last ``BATCH_S`` as one part and into the stream of this run's rows."""

    def __init__(self, out: Path, run_id: str, plan_yaml: str | None, metadata: dict[str, Any]) -> None:
        self.out, self.run_id = out, run_id
        self.stored = 0  # rows on disk (written by the writer thread)
        self._metadata = metadata
        # a part carries what tells its rows apart (schema version, run, device, environment), not the
        # plan: that is in _plan.yaml beside it, and once in the compacted file (14 KB a part saved)
        self.schema = SCHEMA.with_metadata(encode_meta({"schema_version": SCHEMA_VERSION, "run_id": run_id,
                                                    **{k: v for k, v in metadata.items() if k != PART_OMITS}}))
        self._plan_yaml = plan_yaml
        self._opened = False
        self._fresh: RowGroups | None = None
        self._driver_env: EnvInfo | None = None
        self._worker_envs: dict[str, EnvInfo | None] = {}
        self._writer = BatchWriter(self._write_part)

    def _open(self) -> None:
        try:
            self.out.mkdir(parents=True, exist_ok=True)
            if self._plan_yaml is not None:
                atomic_write(self.out / PLAN_FILE, self._plan_yaml.encode())
            for stale in [*self.out.glob(".part-*.tmp"), *self.out.glob(".*.parquet.tmp")]:
                stale.unlink()  # left by a driver killed mid-write (its rows are in parts)
        except OSError as exc:
            raise OutputError(f"output directory {self.out}: {exc.strerror or exc}") from None
        self._opened = True

    def write(self, row: Row, environment: TrialEnvironment | None = None) -> None:
        """Store one trial's row: on disk within ``BATCH_S`` (``flush``: now). ``environment``: the
        driver's and the row's worker's (``{"driver": ..., "worker": ...}``), for the metadata.

        Files the worker sent with the row (``FILES_KEY``: profiles) are taken out of ``row`` and
        written now, before the row is handed over, so a stored row never names a file that is not
        there. Raises ResultWriteError when they, or an earlier part, could not be written."""
        if not self._opened:
            self._open()
        files = dict(row.pop(FILES_KEY, None) or {})
        for rel in [rel for rel in files if not ATTACHED_FILE.fullmatch(rel)]:  # names are the worker's:
            del files[rel]  # only the shape a profile's has is written
            row.update(profile_file=None, profile_error=f"not written: {rel!r} is not a profile's file name")
        row.update(run_id=self.run_id)
        strip_escapes(row)  # whoever built the row (worker, scheduler): its messages are stored as plain text
        tid = str(row["trial_id"])
        if not TRIAL_ID.fullmatch(tid):  # file names come from ids alone, never from labels or models
            raise ValueError(f"trial id {tid!r} is not a trial id")
        if isinstance(environment, dict):
            self._driver_env = environment.get("driver") or self._driver_env
            if row.get("worker") is not None and row["worker"] not in self._worker_envs:
                self._worker_envs[row["worker"]] = environment.get("worker")
        try:  # a full disk, a file-size limit: no partial file stays behind, the run stops with one line
            for rel, data in files.items():
                (self.out / rel).parent.mkdir(exist_ok=True)
                atomic_write(self.out / rel, data)
        except OSError as exc:
            raise ResultWriteError(f"could not write results in {self.out}: {describe(exc)}") from None
        self._writer.put(row)

    def flush(self) -> None:
        """Return once every row written so far is on disk; ResultWriteError if one could not be."""
        self._writer.flush()

    def _write_part(self, rows: list[Row]) -> None:
        """On the writer thread: ``rows`` as one part, named after the first of them whose name is
        free (a part of an older attempt stays until compaction moves it to the history)."""
        ids = [str(r["trial_id"]) for r in rows]
        path = next((p for p in (self.out / f"part-{t}.parquet" for t in ids) if not p.exists()),
                    self.out / f"part-{ids[0]}.parquet")
        metadata = self.schema.metadata
        workers = sorted({r["worker"] for r in rows if r.get("worker") is not None})
        if self._driver_env is not None or workers:
            env = {"driver": self._driver_env, "workers": {w: self._worker_envs.get(w) for w in workers}}
            metadata = {**metadata, **encode_meta({"environment": env})}
        try:
            batch = to_batch(rows)
            table = pa.Table.from_batches([batch]).replace_schema_metadata(metadata)
            atomic(path, lambda tmp: pq.write_table(table, tmp, **PART_OPTIONS))
            if self._fresh is None:
                self._fresh = RowGroups(self.out / FRESH_FILE, SCHEMA, {"compression": "none"})
            self._fresh.add_batch(batch)
        except OSError as exc:
            raise ResultWriteError(f"could not write results in {self.out}: {describe(exc)}") from None
        self.stored += len(rows)

    def compact(self) -> Compaction | None:
        """This run's rows and what was stored before, into ``results.parquet``; the parts go.
        None when there was nothing to do. Raises ResultWriteError when it can't be written (the
        parts stay: every row is still stored, and ``--resume`` compacts)."""
        if not self._opened:
            self._open()
        self._writer.close()  # every row in its part and in the stream (raises if one could not be)
        fresh = None
        try:
            if self._fresh is not None:
                self._fresh.close()
                self._fresh, fresh = None, self.out / FRESH_FILE
            done = compact(self.out, fresh, metadata={"run_id": self.run_id, **self._metadata},
                           environment={"driver": self._driver_env, "workers": self._worker_envs})
            if done is None and fresh is not None:
                discard(fresh)  # rows of a newer version there: the parts stay, this run's too
            return done
        except OSError as exc:
            if fresh is not None:
                discard(fresh)
            raise ResultWriteError(f"could not compact the results in {self.out}: {describe(exc)}; every "
                                   "trial is still stored there, in its own part file") from None

    def discard_stream(self) -> None:
        """Stop streaming (an interrupted run): the rows waiting are written to parts (as far as
        they can be), where they stay for ``--resume``."""
        try:
            self._writer.close()
        except Exception:  # the run stops with its own error; what is on disk stays
            pass
        if self._fresh is not None:
            self._fresh.abandon()
            self._fresh = None
            discard(self.out / FRESH_FILE)

    def finish(self, summary: RunInfo) -> None:
        if not self._opened:
            self._open()
        atomic_write(self.out / RUN_FILE, json.dumps({"run_id": self.run_id, **summary},
                                                      indent=2, default=str).encode())
