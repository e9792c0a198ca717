"""Writing a run: one Parquet part file per trial, the resolved plan beside them.

Layout of a run directory::

    results/quickstart-20261124-153012/
        _plan.yaml          the plan as resolved (defaults filled in)
        _run.json           run id, start, device, workers, and the final counts
        _ray.log            Ray's own messages during the run (see orchestrator.raylog)
        part-<trial_id>.parquet   one per trial, all with the same schema
        profiles/<trial_id>.<backend>.json   a trial's profile, when asked for (its row's profile_file)

Files starting with ``_`` are ignored by Arrow datasets, so ``pandas.read_parquet(dir)`` reads
the parts alone; polars and DuckDB read ``dir/*.parquet``. Each part is written under a
temporary name and renamed, so a crash never leaves a torn file in the dataset.
"""

from __future__ import annotations

import errno
import json
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from orchestrator.errors import OutputError, ResultWriteError
from workers.contract import FILES_KEY
from workers.schema import SCHEMA, SCHEMA_VERSION, to_batch

PLAN_FILE = "_plan.yaml"
RUN_FILE = "_run.json"
TRIAL_ID = re.compile(r"[0-9a-f]{16}")
ATTACHED_FILE = re.compile(r"profiles/[0-9a-f]{16}\.[a-z0-9][a-z0-9_-]*\.json")


def check_writable(out: Path) -> None:
    """Fail early, before anything runs, when ``out`` can't be used. Creates nothing."""
    probe = out
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir():
        raise OutputError(f"output directory {out}: {probe} is a file, not a directory")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise OutputError(f"output directory {out}: {probe} is not writable")
    if out.exists() and any(out.glob("part-*.parquet")):
        raise OutputError(f"output directory {out} already holds results: continue that run with "
                          f"`--resume {out}` (the same plan), or choose another --out")


def stored_trials(out: Path) -> dict[str, str]:
    """trial id -> status of every part file in ``out`` that reads; a torn or foreign file counts as absent."""
    found = {}
    for part in sorted(out.glob("part-*.parquet")):
        tid = part.name[len("part-"):-len(".parquet")]
        if not TRIAL_ID.fullmatch(tid):
            continue
        try:
            t = pq.read_table(part, columns=["trial_id", "status"]).to_pylist()
        except Exception:  # unreadable: the trial runs again and its part is replaced
            continue
        if len(t) == 1 and t[0]["trial_id"] == tid:
            found[tid] = t[0]["status"]
    return found


def stored_invalid(out: Path, ids: set[str]) -> set[str]:
    """Which of ``ids`` (stored trials) are stored as ok but not valid (workers/validity.py); parts
    written before the verdict existed have no ``valid`` column and count as valid."""
    found = set()
    for tid in ids:
        part = out / f"part-{tid}.parquet"
        try:
            if "valid" not in pq.read_schema(part).names:
                continue
            (row,) = pq.read_table(part, columns=["valid"]).to_pylist()
        except Exception:
            continue
        if row["valid"] is False:
            found.add(tid)
    return found


def stored_run_id(out: Path) -> str | None:
    """The run id of the run in ``out`` (from _run.json, else from a part file's metadata)."""
    try:
        return json.loads((out / RUN_FILE).read_text())["run_id"]
    except (OSError, ValueError, KeyError):
        pass
    for part in out.glob("part-*.parquet"):
        try:
            return pq.read_schema(part).metadata[b"infer_orch.run_id"].decode()
        except Exception:
            continue
    return None


class ResultSink:
    """Writes one run's directory. ``plan_yaml=None`` (resuming) keeps the ``_plan.yaml`` there."""

    def __init__(self, out: Path, run_id: str, plan_yaml: str | None, metadata: dict[str, Any]) -> None:
        self.out, self.run_id = out, run_id
        self.rows: list[dict[str, Any]] = []
        meta = {"infer_orch.schema_version": SCHEMA_VERSION, "infer_orch.run_id": run_id,
                **{f"infer_orch.{k}": json.dumps(v, default=str) for k, v in metadata.items()}}
        self.schema = SCHEMA.with_metadata(meta)
        self._plan_yaml = plan_yaml
        self._opened = False

    def _open(self) -> None:
        try:
            self.out.mkdir(parents=True, exist_ok=True)
            if self._plan_yaml is not None:
                _atomic_write(self.out / PLAN_FILE, self._plan_yaml.encode())
            for stale in self.out.glob(".part-*.tmp"):  # left by a driver killed mid-write
                stale.unlink()
        except OSError as exc:
            raise OutputError(f"output directory {self.out}: {exc.strerror or exc}") from None
        self._opened = True

    def write(self, row: dict[str, Any], metadata: dict[str, Any] | None = None) -> Path:
        """Persist one trial's row now, as its own part file (``metadata``: this file's own keys).

        Files the worker sent with the row (``FILES_KEY``: profiles) are taken out of ``row`` and
        written first, so a stored row never names a file that is not there."""
        if not self._opened:
            self._open()
        files = dict(row.pop(FILES_KEY, None) or {})
        for rel in [rel for rel in files if not ATTACHED_FILE.fullmatch(rel)]:  # names are the worker's:
            del files[rel]  # only the shape a profile's has is written
            row.update(profile_file=None, profile_error=f"not written: {rel!r} is not a profile's file name")
        row = {**row, "run_id": self.run_id}
        tid = str(row["trial_id"])
        if not TRIAL_ID.fullmatch(tid):  # file names come from ids alone, never from labels or models
            raise ValueError(f"trial id {tid!r} is not a trial id")
        schema = self.schema
        if metadata:
            schema = schema.with_metadata({**schema.metadata, **{
                f"infer_orch.{k}".encode(): json.dumps(v, default=str).encode() for k, v in metadata.items()}})
        path = self.out / f"part-{tid}.parquet"
        try:  # a full disk, a file-size limit: no partial file stays behind, the run stops with one line
            for rel, data in files.items():
                (self.out / rel).parent.mkdir(exist_ok=True)
                _atomic_write(self.out / rel, data)
            table = pa.Table.from_batches([to_batch([row])]).cast(schema)
            _atomic(path, lambda tmp: pq.write_table(table, tmp))
        except OSError as exc:
            raise ResultWriteError(f"could not write results in {self.out}: {describe(exc)}") from None
        self.rows.append(row)
        return path

    def finish(self, summary: dict[str, Any]) -> None:
        if not self._opened:
            self._open()
        _atomic_write(self.out / RUN_FILE, json.dumps({"run_id": self.run_id, **summary},
                                                      indent=2, default=str).encode())


def describe(exc: OSError) -> str:
    """What went wrong writing, in a few words; Arrow's errors carry the errno only in the text."""
    text = str(exc)
    if exc.errno == errno.ENOSPC or "No space left" in text:
        return "no space left on the device"
    if exc.errno == errno.EFBIG or "File too large" in text:
        return "a file reached the file-size limit (ulimit -f)"
    return exc.strerror or (text.strip().splitlines() or [type(exc).__name__])[-1]


def _discard(path: Path) -> None:
    try:
        path.unlink(missing_ok=True)
    except OSError:  # the next run in this directory removes it (see ResultSink._open)
        pass


def _atomic(path: Path, write: Callable[[Path], None]) -> None:
    """``path`` whole or not at all: ``write`` fills a temporary name beside it, renamed into place
    once complete; if writing fails, the temporary file goes too (and the OSError goes on)."""
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    except OSError:
        _discard(tmp)
        raise


def _atomic_write(path: Path, data: bytes) -> None:
    _atomic(path, lambda tmp: tmp.write_bytes(data))
