"""The run directory: its files, by kind, and what it stores, read back the way every reader needs it.

See ``orchestrator.results.sink`` for how a run is written into it and which file wins when a trial is in
several. Also the file primitives both the sink and compaction use: a file is written whole or not at all.
"""

from __future__ import annotations

import errno
import json
import os
import re
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypedDict

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from orchestrator.errors import InputError, OutputError
from workers.contract import PROFILES_DIR
from workers.measure.envinfo import EnvInfo

PLAN_FILE = "_plan.yaml"
RUN_FILE = "_run.json"
COMPACT_FILE = "results.parquet"
HISTORY_FILE = "_history/history.parquet"
FRESH_FILE = ".fresh.parquet.tmp"
ABSORBED = ".absorbed"
TRIAL_ID = re.compile(r"[0-9a-f]{16}")
ATTACHED_FILE = re.compile(rf"{PROFILES_DIR}/[0-9a-f]{{16}}\.[a-z0-9][a-z0-9_-]*\.json")



class Environments(TypedDict):
    """The environments of a run's processes, as its metadata stores them (``infer_orch.environment``)."""

    driver: EnvInfo | None  # None where unknown
    workers: dict[str, EnvInfo | None]  # by worker name


class TrialEnvironment(TypedDict):
    """The environments a row was measured in: the driver's and its worker's (``ResultSink.write``)."""

    driver: EnvInfo | None
    worker: EnvInfo | None


class WriterOptions(TypedDict, total=False):
    """``pyarrow.parquet.ParquetWriter``'s options that infer-orch sets."""

    compression: str
    use_dictionary: bool | list[str]  # every column, or these
    write_statistics: bool


@dataclass
class Layout:
    """What a run directory holds, by kind of file."""

    compacted: Path | None
    parts: list[Path] = field(default_factory=list)  # part-*.parquet
    absorbed: list[Path] = field(default_factory=list)  # .part-*.parquet.absorbed: a compaction's, interrupted

    @property
    def empty(self) -> bool:
        return self.compacted is None and not self.parts and not self.absorbed

    @property
    def pending(self) -> bool:
        """Rows not (only) in the compacted file yet: parts, or a compaction that did not finish."""
        return bool(self.parts or self.absorbed)


def layout(out: Path) -> Layout:
    compacted = out / COMPACT_FILE
    return Layout(compacted=compacted if compacted.is_file() else None,
                  parts=_newest_first(out.glob("part-*.parquet")),
                  absorbed=_newest_first(out.glob(f".part-*.parquet{ABSORBED}")))


def _newest_first(paths: Iterable[Path]) -> list[Path]:
    """Parts by when they were written, the newest first (by name where that is equal): a trial in
    two parts (two runs stopped before compaction) is the newer attempt's. A part is named after its
    first trial, so names say nothing of age."""
    def written(p: Path) -> int:
        try:
            return p.stat().st_mtime_ns
        except FileNotFoundError:  # removed meanwhile (a compaction ending): the oldest
            return 0

    return sorted(sorted(paths), key=written, reverse=True)


def part_id(path: Path) -> str:
    """The trial id in a part's file name (visible or absorbed)."""
    return path.name.lstrip(".").removesuffix(ABSORBED)[len("part-"):-len(".parquet")]


def check_writable(out: Path) -> None:
    """Fail early, before anything runs, when ``out`` can't be used. Leaves nothing behind."""
    probe = out
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir():
        raise OutputError(f"output directory {out}: {probe} is a file, not a directory")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise OutputError(f"output directory {out}: {probe} is not writable")
    try:  # permissions are not the whole story: /proc, a read-only mount, root on a network share
        os.rmdir(tempfile.mkdtemp(prefix=".infer-orch-probe-", dir=probe))
    except OSError as exc:
        raise OutputError(f"output directory {out}: can't create a directory in {probe}: "
                          f"{exc.strerror or exc}") from None
    if out.exists() and not layout(out).empty:
        raise OutputError(f"output directory {out} already holds results: continue that run with "
                          f"`--resume {out}` (the same plan), or choose another --out")


def check_hidden(path: Path, out: Path, option: str) -> None:
    """Refuse (exit 2) a file that a command would write into the run directory ``out`` where
    readers of the directory would take it for rows: ``pandas.read_parquet(out)`` reads every file
    whose path below ``out`` has no part starting with ``_`` or ``.``, and fails on one that is not
    Parquet. Outside ``out``, or hidden inside it (``out/_junit.xml``), it is fine."""
    try:
        rel = path.resolve().relative_to(out.resolve())
    except ValueError:
        return
    if rel.parts and not any(part.startswith(("_", ".")) for part in rel.parts):
        raise OutputError(f"{option} {path}: a file in the run directory {out} must have a name starting with "
                          f"'_' (e.g. {out / ('_' + rel.parts[0])}), or pandas.read_parquet({str(out)!r}) would "
                          "fail on it; or write it outside the run directory")


def _read(path: Path, columns: Iterable[str] | None) -> pa.Table:
    """A Parquet file's table (only ``columns``, those it has), without its metadata."""
    if columns is not None:
        names = set(pq.read_schema(path).names)
        columns = [c for c in columns if c in names]
    return pq.read_table(path, columns=columns).replace_schema_metadata(None)


def _without(table: pa.Table, ids: set[str]) -> pa.Table:
    if not ids or not table.num_rows:
        return table
    return table.filter(pc.invert(pc.is_in(table.column("trial_id"), value_set=pa.array(sorted(ids)))))


def stored_table(out: Path, columns: Iterable[str] | None = None, strict: bool = True) -> pa.Table | None:
    """Every trial stored in the run directory ``out``, once (its newest attempt), as one table;
    None when it holds no rows. ``columns``: only these (a file lacking one gives it null).

    ``strict``: a part file that can't be read raises InputError (naming it); otherwise such a
    file, or a part whose rows are not of the trial its name says, counts as absent (resuming runs
    its trials again and replaces them)."""
    lay = layout(out)
    columns = list(columns) if columns is not None else None
    if columns is not None and "trial_id" not in columns:
        columns.append("trial_id")
    tables, seen = [], set()
    for group in (lay.parts, lay.absorbed):  # newest first
        for part in group:
            try:
                t = _read(part, columns)
            except (OSError, pa.ArrowException) as exc:
                if strict:
                    raise InputError(f"{part}: can't read this part file: {exc}") from None
                continue
            ids = t.column("trial_id").to_pylist() if "trial_id" in t.column_names else []
            if not strict and part_id(part) not in ids:
                continue
            if set(ids) & seen:  # an absorbed part of a trial whose part is newer
                t = _without(t, seen)
            seen.update(ids)
            tables.append(t)
    if lay.compacted is not None:
        try:
            tables.append(_without(_read(lay.compacted, columns), seen))
        except (OSError, pa.ArrowException) as exc:
            raise InputError(f"{lay.compacted}: can't read this results file: {exc}") from None
    if not tables:
        return None
    tables.reverse()  # the compacted rows first, then the parts, oldest first
    return pa.concat_tables(tables, promote_options="permissive")


def stored_trials(out: Path) -> dict[str, str]:
    """trial id -> status of every trial stored in ``out``; a torn or foreign part counts as absent."""
    t = stored_table(out, columns=["trial_id", "status"], strict=False)
    if t is None:
        return {}
    return dict(zip(t.column("trial_id").to_pylist(), t.column("status").to_pylist(), strict=True))


def stored_metadata(out: Path) -> dict[str, Any]:
    """The ``infer_orch.*`` metadata of the run in ``out`` (``plan``, ``environment``, ...), decoded:
    the compacted file's, else a part's. Empty when there is neither."""
    lay = layout(out)
    for path in [*([lay.compacted] if lay.compacted else []), *lay.parts[:1], *lay.absorbed[:1]]:
        try:
            meta = pq.read_schema(path).metadata or {}
        except Exception:
            continue
        return {k.decode().removeprefix("infer_orch."): decode_meta(k, v) for k, v in meta.items()
                if k.startswith(b"infer_orch.")}
    return {}


#: Metadata keys stored as plain text; the others are JSON.
RAW_KEYS = frozenset({"schema_version", "run_id"})


def decode_meta(key: bytes, value: bytes) -> Any:
    if key.decode().removeprefix("infer_orch.") in RAW_KEYS:
        return value.decode()
    try:
        return json.loads(value)
    except ValueError:
        return value.decode()


def encode_meta(meta: dict[str, Any]) -> dict[str, str]:
    return {f"infer_orch.{k}": str(v) if k in RAW_KEYS else json.dumps(v, default=str) for k, v in meta.items()}


def stored_invalid(out: Path, ids: set[str]) -> set[str]:
    """Which of ``ids`` (stored trials) are stored as ok but not valid (workers/measure/validity.py), in
    either layout; rows written before the verdict existed have no ``valid`` and count as valid."""
    t = stored_table(out, columns=["trial_id", "valid"], strict=False)
    if t is None or "valid" not in t.column_names:
        return set()
    return {tid for tid, valid in zip(t.column("trial_id").to_pylist(), t.column("valid").to_pylist(), strict=True)
            if tid in ids and valid is False}


def stored_run_id(out: Path) -> str | None:
    """The run id of the run in ``out`` (from _run.json, else from its results' metadata)."""
    try:
        return json.loads((out / RUN_FILE).read_text())["run_id"]
    except (OSError, ValueError, KeyError):
        pass
    run_id = stored_metadata(out).get("run_id")
    return str(run_id) if run_id is not None else None


def fsync(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)



def describe(exc: OSError) -> str:
    """What went wrong writing, in a few words; Arrow's errors carry the errno only in the text."""
    text = str(exc)
    if exc.errno == errno.ENOSPC or "No space left" in text:
        return "no space left on the device"
    if exc.errno == errno.EFBIG or "File too large" in text:
        return "a file reached the file-size limit (ulimit -f)"
    return exc.strerror or (text.strip().splitlines() or [type(exc).__name__])[-1]


def discard(path: Path) -> None:
    try:
        path.unlink(missing_ok=True)
    except OSError:  # the next run in this directory removes it (see ResultSink._open)
        pass


def atomic(path: Path, write: Callable[[Path], None]) -> None:
    """``path`` whole or not at all: ``write`` fills a temporary name beside it, renamed into place
    once complete; if writing fails, the temporary file goes too (and the OSError goes on)."""
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    except OSError:
        discard(tmp)
        raise


def atomic_write(path: Path, data: bytes) -> None:
    atomic(path, lambda tmp: tmp.write_bytes(data))
