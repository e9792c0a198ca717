"""Compaction: what a run directory stores (parts, an interrupted compaction's hidden parts, an older
``results.parquet``, this run's stream), merged into one ``results.parquet``; replaced rows go to ``_history``.
The order of its steps is what makes a crash at any point lose nothing (``orchestrator.results.sink``)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import yaml

from orchestrator.results.rundir import (
    ABSORBED,
    COMPACT_FILE,
    FRESH_FILE,
    HISTORY_FILE,
    PLAN_FILE,
    Environments,
    WriterOptions,
    atomic,
    decode_meta,
    discard,
    encode_meta,
    fsync,
    layout,
    part_id,
    stored_metadata,
)
from workers.schema import NAMES, SCHEMA, SCHEMA_VERSION

#: A row group of the compacted file holds about this many bytes (in memory, uncompressed): large
#: enough that a reader's per-group cost vanishes, small enough to bound the writer's buffer.
ROW_GROUP_BYTES = 64 << 20
#: What identifies one execution of a trial (a retried trial has another run or start time).
ATTEMPT_KEY = ("trial_id", "run_id", "started_at", "attempt")
#: Writer options of the compacted file (BENCHMARKS.md, "Samples on disk"): zstd; no dictionary for
#: the per-iteration floats (it only grows them); byte-stream-split measured larger on timer samples.
COMPACT_OPTIONS: WriterOptions = {"compression": "zstd",
                                   "use_dictionary": [n for n, t in zip(SCHEMA.names, SCHEMA.types, strict=True)
                                                      if not pa.types.is_list(t)]}


class RowGroups:
    """A Parquet writer fed small tables, writing row groups of about ROW_GROUP_BYTES."""

    def __init__(self, path: Path, schema: pa.Schema, options: WriterOptions) -> None:
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


@dataclass
class _Merge:
    """What compaction gathers before writing: rows newest first, and whom they replace."""

    ids: set[str] = field(default_factory=set)  # the trials already taken (by a newer file)
    keys: set[tuple[Any, ...]] = field(default_factory=set)  # the attempts kept (ATTEMPT_KEY)
    current: list[pa.Table] = field(default_factory=list)  # newest first: the parts' rows that stay
    replaced: list[pa.Table] = field(default_factory=list)  # rows of an older attempt: to the history
    absorbed: list[Path] = field(default_factory=list)  # the part files this compaction removes
    meta: dict[str, Any] = field(default_factory=dict)  # the run's ``infer_orch.*`` keys
    envs: Environments = field(default_factory=lambda: Environments(driver=None, workers={}))
    env_workers: dict[bytes, set[str]] = field(default_factory=dict)  # a part's environment -> its workers


def compact(out: Path, fresh: Path | None = None, metadata: dict[str, Any] | None = None,
            environment: Environments | None = None,
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
            discard(stale)
        if not lay.pending:
            return None
    merge = _Merge()
    if lay.compacted is not None:
        _take_stored_metadata(out, merge)
    if fresh is not None:
        t = pq.read_table(fresh, columns=list(ATTEMPT_KEY))
        merge.ids.update(t.column("trial_id").to_pylist())
        merge.keys |= _keys(t)
    try:
        for part in (*lay.parts, *lay.absorbed):
            _take_part(part, merge, own=fresh is not None)
    except ForeignColumns:
        return None
    _conform_gathered(merge)
    schema = SCHEMA.with_metadata(encode_meta(_run_metadata(out, merge, metadata, environment)))
    tmp = out / f".{COMPACT_FILE}.tmp"
    rows = _write_compacted(tmp, schema, lay.compacted, fresh, merge)
    if rows is None:
        return None
    try:
        moved = _keep_history(out, merge, schema)
    except BaseException:
        discard(tmp)
        raise
    if crash_after == "history":
        raise SystemExit("crash after history")
    _swap_in(out, tmp, merge.absorbed, crash_after)
    if fresh is not None:
        discard(fresh)
    return Compaction(rows=rows, history=moved, parts=len(merge.absorbed))


def _take_stored_metadata(out: Path, merge: _Merge) -> None:
    """The compacted file's metadata and environments: what the run's rows keep unless told otherwise."""
    stored = stored_metadata(out)
    merge.meta.update({k: v for k, v in stored.items() if k != "environment"})
    env = stored.get("environment") or {}
    merge.envs["driver"] = env.get("driver")
    merge.envs["workers"].update(env.get("workers") or {})


def _take_part(part: Path, merge: _Merge, own: bool) -> None:
    """One part (visible or hidden, newest first) into ``merge``: its rows of a trial a newer file holds
    are replaced, the others stay. ``own``: this run's stream holds its part's rows (not read).
    Raises ForeignColumns for a part of a newer version."""
    if own and part.name.startswith("part-") and part_id(part) in merge.ids:
        merge.absorbed.append(part)  # this run's own part: its row is in ``fresh``
        return
    try:
        pf = pq.ParquetFile(part)
        t = pf.read().replace_schema_metadata(None)
        part_meta = pf.schema_arrow.metadata or {}
    except (OSError, pa.ArrowException):
        if part.name.startswith("."):
            merge.absorbed.append(part)  # torn: its trial is stored elsewhere or runs again
        return  # an unreadable part stays where it is (``load_results`` names it)
    if set(t.column_names) - NAMES:
        raise ForeignColumns(sorted(set(t.column_names) - NAMES))
    tids = t.column("trial_id").to_pylist()
    older = [tid in merge.ids for tid in tids]  # a part is one row: no Arrow set per part
    if any(older):
        merge.replaced.append(t.filter(pa.array(older)))
        t = t.filter(pa.array([not o for o in older]))
    if t.num_rows:
        merge.current.append(t)
        for k, v in part_meta.items():
            if k == b"infer_orch.environment":
                workers = t.column("worker").to_pylist() if "worker" in t.column_names else []
                merge.env_workers.setdefault(v, set()).update(w for w in workers if w is not None)
            elif k.startswith(b"infer_orch.") and k.decode().removeprefix("infer_orch.") not in merge.meta:
                merge.meta[k.decode().removeprefix("infer_orch.")] = decode_meta(k, v)
    merge.ids.update(tids)
    merge.absorbed.append(part)


def _conform_gathered(merge: _Merge) -> None:
    """The parts' rows in this version's schema, at once (not part by part: 93 casts each)."""
    if merge.current:
        merge.current = [conform(pa.concat_tables(merge.current, promote_options="permissive"))]
        merge.keys |= _keys(merge.current[0])
    if merge.replaced:
        merge.replaced = [conform(pa.concat_tables(merge.replaced, promote_options="permissive"))]


def _run_metadata(out: Path, merge: _Merge, metadata: dict[str, Any] | None,
                  environment: Environments | None) -> dict[str, Any]:
    """The compacted file's ``infer_orch.*`` keys: stored, then the parts', then this run's."""
    meta, envs = merge.meta, merge.envs
    for raw, workers in merge.env_workers.items():
        env = decode_meta(b"infer_orch.environment", raw)
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
    return meta


def _write_compacted(tmp: Path, schema: pa.Schema, compacted: Path | None, fresh: Path | None,
                     merge: _Merge) -> int | None:
    """The merged rows into ``tmp`` (synced): the compacted file's that stay, the parts', this run's.
    Returns the row count; None (``tmp`` gone) when the compacted file has a newer version's rows."""
    groups = RowGroups(tmp, schema, COMPACT_OPTIONS)
    try:
        if compacted is not None:
            newer = pa.array(sorted(merge.ids), pa.string())
            for t in _batches(compacted):
                t = conform(t)
                older = pc.is_in(t.column("trial_id"), value_set=newer)
                if merge.ids and pc.any(older).as_py():
                    merge.replaced.append(t.filter(older))
                    t = t.filter(pc.invert(older))
                groups.add(t)
        for t in reversed(merge.current):
            groups.add(t)
        if fresh is not None:
            for t in _batches(fresh):
                groups.add(conform(t))
        groups.close()
        fsync(tmp)
    except ForeignColumns:
        groups.abandon()
        discard(tmp)
        return None
    except BaseException:
        groups.abandon()
        discard(tmp)
        raise
    return groups.rows


def _keep_history(out: Path, merge: _Merge, schema: pa.Schema) -> int:
    """The rows replaced by a newer attempt, into ``_history`` (not a row already there); how many."""
    history = [t for t in merge.replaced if t.num_rows]
    if not history:
        return 0
    rows = pa.concat_tables(history)
    hist_path = out / HISTORY_FILE
    old = pq.read_table(hist_path).replace_schema_metadata(None) if hist_path.is_file() else None
    known = merge.keys | (_keys(old) if old is not None else set())
    mask, taken = [], set()
    for k in zip(*[rows.column(k).to_pylist() for k in ATTEMPT_KEY]):
        mask.append(k not in known and k not in taken)
        taken.add(k)
    rows = rows.filter(pa.array(mask))
    if rows.num_rows:
        merged = pa.concat_tables([conform(old), rows]) if old is not None else rows
        hist_path.parent.mkdir(exist_ok=True)
        atomic(hist_path, lambda p: pq.write_table(merged.replace_schema_metadata(schema.metadata), p,
                                                   **COMPACT_OPTIONS))
    return rows.num_rows


def _swap_in(out: Path, tmp: Path, absorbed: list[Path], crash_after: str | None) -> None:
    """The parts out of sight first (a glob of *.parquet sees a trial in a part or in the new file, never
    both), then the compacted file in place, and only then the parts go."""
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
    os.replace(tmp, out / COMPACT_FILE)
    fsync(out)
    if crash_after == "rename":
        raise SystemExit("crash after rename")
    for p in hidden:
        discard(p)
