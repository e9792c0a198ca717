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

import errno
import json
import os
import re
import tempfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import yaml

from orchestrator.errors import InputError, OutputError, ResultWriteError
from orchestrator.results.partwriter import BatchWriter
from workers.contract import FILES_KEY, PROFILES_DIR, strip_escapes
from workers.schema import NAMES, SCHEMA, SCHEMA_VERSION, to_batch

PLAN_FILE = "_plan.yaml"
RUN_FILE = "_run.json"
COMPACT_FILE = "results.parquet"
HISTORY_FILE = "_history/history.parquet"
FRESH_FILE = ".fresh.parquet.tmp"
ABSORBED = ".absorbed"
TRIAL_ID = re.compile(r"[0-9a-f]{16}")
ATTACHED_FILE = re.compile(rf"{PROFILES_DIR}/[0-9a-f]{{16}}\.[a-z0-9][a-z0-9_-]*\.json")
#: The per-iteration columns: what makes a row big (up to 2 x 20,000 floats a repeat). The driver
#: keeps no row with them (``slim``); they are on disk.
SAMPLE_COLUMNS = ("samples_ms", "host_samples_ms")
#: A row group of the compacted file holds about this many bytes (in memory, uncompressed): large
#: enough that a reader's per-group cost vanishes, small enough to bound the writer's buffer.
ROW_GROUP_BYTES = 64 << 20
#: Writer options of a part: it is read whole, once, by compaction (or by a reader of a run going
#: on), so no statistics, dictionaries or compression: 15-20% less of the driver's time a trial.
PART_OPTIONS: dict[str, Any] = {"write_statistics": False, "use_dictionary": False, "compression": "none"}
#: What identifies one execution of a trial (a retried trial has another run or start time).
ATTEMPT_KEY = ("trial_id", "run_id", "started_at", "attempt")
#: Writer options of the compacted file (BENCHMARKS.md, "Samples on disk"): zstd; no dictionary for
#: the per-iteration floats (it only grows them); byte-stream-split measured larger on timer samples.
COMPACT_OPTIONS: dict[str, Any] = {"compression": "zstd",
                                   "use_dictionary": [n for n, t in zip(SCHEMA.names, SCHEMA.types, strict=True)
                                                      if not pa.types.is_list(t)]}


def slim(row: dict[str, Any]) -> dict[str, Any]:
    """``row`` without its per-iteration samples: what the driver keeps of a trial it stored."""
    return {k: v for k, v in row.items() if k not in SAMPLE_COLUMNS}


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


def _part_id(path: Path) -> str:
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
            if not strict and _part_id(part) not in ids:
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
        return {k.decode().removeprefix("infer_orch."): _decode(k, v) for k, v in meta.items()
                if k.startswith(b"infer_orch.")}
    return {}


#: The metadata key a part leaves out (see ResultSink).
PART_OMITS = "plan"
#: Metadata keys stored as plain text; the others are JSON.
RAW_KEYS = frozenset({"schema_version", "run_id"})


def _decode(key: bytes, value: bytes) -> Any:
    if key.decode().removeprefix("infer_orch.") in RAW_KEYS:
        return value.decode()
    try:
        return json.loads(value)
    except ValueError:
        return value.decode()


def _encode(meta: dict[str, Any]) -> dict[str, str]:
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


class _RowGroups:
    """A Parquet writer fed small tables, writing row groups of about ROW_GROUP_BYTES."""

    def __init__(self, path: Path, schema: pa.Schema, options: dict[str, Any]) -> None:
        self.writer = pq.ParquetWriter(path, schema, **options)
        self.schema = schema
        self._buf: list[pa.Table] = []
        self._small: list[pa.RecordBatch] = []
        self._bytes = 0
        self.rows = 0

    def add_batch(self, batch: pa.RecordBatch) -> None:
        """One row (or a few): gathered, so a run of many trials holds few Arrow buffers."""
        self._small.append(batch)
        if len(self._small) >= 256:
            self._gather()

    def _gather(self) -> None:
        if self._small:
            self.add(pa.Table.from_batches(self._small).combine_chunks())
            self._small = []

    def add(self, table: pa.Table) -> None:
        if not table.num_rows:
            return
        self._buf.append(table)
        self._bytes += table.nbytes
        self.rows += table.num_rows
        if self._bytes >= ROW_GROUP_BYTES:
            self.flush()

    def flush(self) -> None:
        self._gather()
        if self._buf:
            table = pa.concat_tables(self._buf).combine_chunks().replace_schema_metadata(self.schema.metadata)
            self.writer.write_table(table, row_group_size=max(table.num_rows, 1))
            self._buf, self._bytes = [], 0

    def close(self) -> None:
        self.flush()
        self.writer.close()

    def abandon(self) -> None:
        try:
            self.writer.close()
        except Exception:
            pass


class ForeignColumns(Exception):
    """Rows with columns this version does not know (a newer version's): not compacted."""


def conform(table: pa.Table) -> pa.Table:
    """``table`` in this version's schema: a column it lacks (an older run's) is null."""
    extra = set(table.column_names) - NAMES
    if extra:
        raise ForeignColumns(sorted(extra))
    n = table.num_rows
    cols = [table.column(f.name).cast(f.type) if f.name in table.column_names else pa.nulls(n, f.type)
            for f in SCHEMA]
    return pa.Table.from_arrays(cols, schema=SCHEMA)


def _keys(table: pa.Table) -> set[tuple[Any, ...]]:
    cols = [table.column(k).to_pylist() if k in table.column_names else [None] * table.num_rows
            for k in ATTEMPT_KEY]
    return set(zip(*cols))


def _batches(path: Path) -> Iterator[pa.Table]:
    f = pq.ParquetFile(path)
    for i in range(f.num_row_groups):
        yield f.read_row_group(i).replace_schema_metadata(None)


@dataclass
class Compaction:
    rows: int
    history: int  # rows moved to the history by this compaction
    parts: int  # part files absorbed


def compact(out: Path, fresh: Path | None = None, metadata: dict[str, Any] | None = None,
            environment: dict[str, Any] | None = None,
            crash_after: str | None = None) -> Compaction | None:
    """Merge what ``out`` stores into one ``results.parquet``; the parts go once it is in place.

    ``fresh``: a closed Parquet file of this run's rows (newest of all; their parts are absorbed
    without being read). ``metadata``: the run's ``infer_orch.*`` keys (else the stored ones);
    ``environment``: ``{"driver": ..., "workers": {name: ...}}`` of this run, merged over the
    stored ones. A row replaced by a newer attempt of its trial goes to ``_history``. Returns None
    (nothing done) when there is nothing to compact or rows of a newer version are there (their
    columns would be lost). OSError goes on (the parts stay, and the temporary file goes).
    ``crash_after`` is for tests: raise SystemExit after that step ("history", "hide", "rename")."""
    lay = layout(out)
    if fresh is None:
        for stale in (out / FRESH_FILE, out / f".{COMPACT_FILE}.tmp"):  # a killed driver's, half written
            _discard(stale)
        if not lay.pending:
            return None
    meta: dict[str, Any] = {}
    envs: dict[str, Any] = {"driver": None, "workers": {}}
    if lay.compacted is not None:
        stored = stored_metadata(out)
        meta.update({k: v for k, v in stored.items() if k != "environment"})
        env = stored.get("environment") or {}
        envs["driver"] = env.get("driver")
        envs["workers"].update(env.get("workers") or {})
    current: list[pa.Table] = []  # newest first: this run's, parts, absorbed parts
    ids: set[str] = set()
    absorbed: list[Path] = []
    replaced: list[pa.Table] = []
    keys: set[tuple[Any, ...]] = set()
    if fresh is not None:
        t = pq.read_table(fresh, columns=list(ATTEMPT_KEY))
        ids.update(t.column("trial_id").to_pylist())
        keys |= _keys(t)
    env_workers: dict[bytes, set[str]] = {}  # a part's environment (as stored) -> the workers it is of
    try:
        for group in (lay.parts, lay.absorbed):
            for part in group:
                if part.name.startswith("part-") and _part_id(part) in ids and fresh is not None:
                    absorbed.append(part)  # this run's own part: its row is in ``fresh``
                    continue
                try:
                    pf = pq.ParquetFile(part)
                    t = pf.read().replace_schema_metadata(None)
                    part_meta = pf.schema_arrow.metadata or {}
                except (OSError, pa.ArrowException):
                    if part.name.startswith("."):
                        absorbed.append(part)  # torn: its trial is stored elsewhere or runs again
                    continue  # an unreadable part stays where it is (``load_results`` names it)
                if set(t.column_names) - NAMES:
                    raise ForeignColumns(sorted(set(t.column_names) - NAMES))
                tids = t.column("trial_id").to_pylist()
                older = [tid in ids for tid in tids]  # a part is one row: no Arrow set per part
                if any(older):
                    replaced.append(t.filter(pa.array(older)))
                    t = t.filter(pa.array([not o for o in older]))
                if t.num_rows:
                    current.append(t)
                    for k, v in part_meta.items():
                        if k == b"infer_orch.environment":
                            workers = t.column("worker").to_pylist() if "worker" in t.column_names else []
                            env_workers.setdefault(v, set()).update(w for w in workers if w is not None)
                        elif k.startswith(b"infer_orch.") and k.decode().removeprefix("infer_orch.") not in meta:
                            meta[k.decode().removeprefix("infer_orch.")] = _decode(k, v)
                ids.update(tids)
                absorbed.append(part)
    except ForeignColumns:
        return None
    if current:  # the parts' rows in this version's schema, at once (not part by part: 93 casts each)
        current = [conform(pa.concat_tables(current, promote_options="permissive"))]
        keys |= _keys(current[0])
    replaced = [conform(pa.concat_tables(replaced, promote_options="permissive"))] if replaced else []
    for raw, workers in env_workers.items():
        env = _decode(b"infer_orch.environment", raw)
        if isinstance(env, dict):  # a part's: {"driver", "workers": {name: ...}}, or one trial's {"driver", "worker"}
            envs["driver"] = envs["driver"] or env.get("driver")
            own = env.get("workers")
            for w in workers:
                envs["workers"].setdefault(w, own.get(w) if isinstance(own, dict) else env.get("worker"))
    if metadata:
        meta.update(metadata)
    if "plan" not in meta and (out / PLAN_FILE).is_file():  # parts don't carry it: the resolved plan beside them
        try:
            meta["plan"] = yaml.safe_load((out / PLAN_FILE).read_text())
        except (OSError, yaml.YAMLError):
            pass
    if environment:
        envs["driver"] = environment.get("driver") or envs["driver"]
        envs["workers"].update(environment.get("workers") or {})
    meta["environment"] = envs
    meta["schema_version"] = SCHEMA_VERSION
    schema = SCHEMA.with_metadata(_encode(meta))
    tmp = out / f".{COMPACT_FILE}.tmp"
    groups = _RowGroups(tmp, schema, COMPACT_OPTIONS)
    try:
        if lay.compacted is not None:
            newer = pa.array(sorted(ids), pa.string())
            for t in _batches(lay.compacted):
                t = conform(t)
                older = pc.is_in(t.column("trial_id"), value_set=newer)
                if ids and pc.any(older).as_py():
                    replaced.append(t.filter(older))
                    t = t.filter(pc.invert(older))
                groups.add(t)
        for t in reversed(current):
            groups.add(t)
        if fresh is not None:
            for t in _batches(fresh):
                groups.add(conform(t))
        groups.close()
        _fsync(tmp)
    except ForeignColumns:
        groups.abandon()
        _discard(tmp)
        return None
    except BaseException:
        groups.abandon()
        _discard(tmp)
        raise
    # the rows replaced by a newer attempt: kept as history (not a row already there)
    history = [t for t in replaced if t.num_rows]
    moved = 0
    if history:
        rows = pa.concat_tables(history)
        hist_path = out / HISTORY_FILE
        old = pq.read_table(hist_path).replace_schema_metadata(None) if hist_path.is_file() else None
        known = keys | (_keys(old) if old is not None else set())
        new_keys = list(zip(*[rows.column(k).to_pylist() for k in ATTEMPT_KEY]))
        mask, taken = [], set()
        for k in new_keys:
            mask.append(k not in known and k not in taken)
            taken.add(k)
        rows = rows.filter(pa.array(mask))
        moved = rows.num_rows
        if moved:
            merged = pa.concat_tables([conform(old), rows]) if old is not None else rows
            hist_path.parent.mkdir(exist_ok=True)
            try:
                _atomic(hist_path, lambda p: pq.write_table(merged.replace_schema_metadata(schema.metadata), p,
                                                            **COMPACT_OPTIONS))
            except BaseException:
                _discard(tmp)
                raise
    if crash_after == "history":
        raise SystemExit("crash after history")
    # out of sight first (a glob of *.parquet sees a trial in a part or in the new file, never both),
    hidden = []
    for i, part in enumerate(absorbed):
        if part.name.startswith("."):
            hidden.append(part)
            continue
        target = part.with_name(f".{part.name}{ABSORBED}")
        os.replace(part, target)
        hidden.append(target)
        if crash_after == "hide" and i == len(absorbed) // 2:
            raise SystemExit("crash while hiding parts")
    if crash_after == "hide":
        raise SystemExit("crash after hiding parts")
    os.replace(tmp, out / COMPACT_FILE)  # then the compacted file in place,
    _fsync(out)
    if crash_after == "rename":
        raise SystemExit("crash after rename")
    for p in hidden:  # and only then the parts go
        _discard(p)
    if fresh is not None:
        _discard(fresh)
    return Compaction(rows=groups.rows, history=moved, parts=len(absorbed))


def _fsync(path: Path) -> None:
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
        self.schema = SCHEMA.with_metadata(_encode({"schema_version": SCHEMA_VERSION, "run_id": run_id,
                                                    **{k: v for k, v in metadata.items() if k != PART_OMITS}}))
        self._plan_yaml = plan_yaml
        self._opened = False
        self._fresh: _RowGroups | None = None
        self._driver_env: Any = None
        self._worker_envs: dict[str, Any] = {}
        self._writer = BatchWriter(self._write_part)

    def _open(self) -> None:
        try:
            self.out.mkdir(parents=True, exist_ok=True)
            if self._plan_yaml is not None:
                _atomic_write(self.out / PLAN_FILE, self._plan_yaml.encode())
            for stale in [*self.out.glob(".part-*.tmp"), *self.out.glob(".*.parquet.tmp")]:
                stale.unlink()  # left by a driver killed mid-write (its rows are in parts)
        except OSError as exc:
            raise OutputError(f"output directory {self.out}: {exc.strerror or exc}") from None
        self._opened = True

    def write(self, row: dict[str, Any], environment: dict[str, Any] | None = None) -> None:
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
                _atomic_write(self.out / rel, data)
        except OSError as exc:
            raise ResultWriteError(f"could not write results in {self.out}: {describe(exc)}") from None
        self._writer.put(row)

    def flush(self) -> None:
        """Return once every row written so far is on disk; ResultWriteError if one could not be."""
        self._writer.flush()

    def _write_part(self, rows: list[dict[str, Any]]) -> None:
        """On the writer thread: ``rows`` as one part, named after the first of them whose name is
        free (a part of an older attempt stays until compaction moves it to the history)."""
        ids = [str(r["trial_id"]) for r in rows]
        path = next((p for p in (self.out / f"part-{t}.parquet" for t in ids) if not p.exists()),
                    self.out / f"part-{ids[0]}.parquet")
        metadata = self.schema.metadata
        workers = sorted({r["worker"] for r in rows if r.get("worker") is not None})
        if self._driver_env is not None or workers:
            env = {"driver": self._driver_env, "workers": {w: self._worker_envs.get(w) for w in workers}}
            metadata = {**metadata, **_encode({"environment": env})}
        try:
            batch = to_batch(rows)
            table = pa.Table.from_batches([batch]).replace_schema_metadata(metadata)
            _atomic(path, lambda tmp: pq.write_table(table, tmp, **PART_OPTIONS))
            if self._fresh is None:
                self._fresh = _RowGroups(self.out / FRESH_FILE, SCHEMA, {"compression": "none"})
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
                _discard(fresh)  # rows of a newer version there: the parts stay, this run's too
            return done
        except OSError as exc:
            if fresh is not None:
                _discard(fresh)
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
            _discard(self.out / FRESH_FILE)

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

