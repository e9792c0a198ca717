"""Reading runs back: one Arrow table of one or many run directories.

A run directory holds its rows in ``results.parquet`` once the run has ended (compacted), and
``part-<trial_id>.parquet`` files while it runs (one per trial in runs of older versions); see
``orchestrator.results.sink`` for the layout and which file wins when a trial is in several. Runs written
by different versions of infer-orch may have different columns: tables are unified by name, and
a column one run lacks is null in its rows, so readers can use a newer column where it exists
and degrade where it doesn't.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, TypedDict

import pyarrow as pa
import pyarrow.parquet as pq

from orchestrator.errors import InputError
from orchestrator.results.rundir import COMPACT_FILE, PLAN_FILE, RUN_FILE, Environments, layout, stored_table

PathLike = str | os.PathLike[str]


def read_run(path: PathLike, columns: Sequence[str] | None = None) -> pa.Table:
    """One run directory's rows (each trial once), or one Parquet file's; InputError when there are none."""
    p = Path(path)
    if p.is_file():
        try:
            t = pq.read_table(p, columns=_present(p, columns))
        except (OSError, pa.ArrowException) as exc:
            raise InputError(f"{p}: can't read this part file: {exc}") from None
        return t.replace_schema_metadata(None)
    if not p.exists():
        raise InputError(f"{p}: no such run directory")
    table = stored_table(p, columns=columns)
    if table is None:
        raise InputError(f"{p}: not a run directory (no part-*.parquet files nor {COMPACT_FILE} in it)")
    return table


def _present(path: Path, columns: Sequence[str] | None) -> list[str] | None:
    if columns is None:
        return None
    names = set(pq.read_schema(path).names)
    return [c for c in columns if c in names]


def load_results(paths: PathLike | Iterable[PathLike], pandas: bool = False,
                 columns: Sequence[str] | None = None) -> Any:
    """Every row of one or many runs as a pyarrow Table (a pandas DataFrame with ``pandas=True``).

    ``paths`` is a run directory (what ``infer-orch run --out`` wrote), a results or part file, or
    a list of them. Rows keep their ``run_id``, so several runs can be told apart after loading.
    ``columns``: only these (e.g. leave out ``samples_ms`` to read a big run fast).
    """
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    tables = [read_run(path, columns) for path in paths]
    if not tables:
        raise InputError("load_results: no run directories given")
    table = pa.concat_tables(tables, promote_options="permissive")
    return table.to_pandas() if pandas else table


def is_compacted(path: PathLike) -> bool:
    """Whether a run directory's rows are all in its compacted file (no parts left)."""
    lay = layout(Path(path))
    return lay.compacted is not None and not lay.pending


class RunInfo(TypedDict, total=False):
    """What a run directory says about itself (``_run.json``, as ``orchestrator.run.api`` writes it, and
    ``_plan.yaml``); a run that was interrupted early may lack any of it."""

    run_id: str
    plan: str
    device: str
    workers: list[str]
    started_at: str
    state: str  # finished, interrupted
    counts: dict[str, int]  # status -> trials
    environment: Environments
    head_lost: bool  # the cluster's head stopped answering mid-run
    lost_workers: dict[str, str]  # worker name -> why it was given up
    requeued: list[str]  # trial ids put back after their node died
    compacted: bool  # results.parquet holds every row
    plan_yaml: str  # the resolved plan's text


def run_info(path: PathLike) -> RunInfo:
    """What a run directory says about itself: ``_run.json``'s summary and ``_plan.yaml``'s text."""
    p = Path(path)
    info = RunInfo()
    if (p / RUN_FILE).is_file():
        try:
            info.update(json.loads((p / RUN_FILE).read_text()))
        except (OSError, ValueError):
            pass  # a run that was interrupted may lack its summary: the rows still stand
    if (p / PLAN_FILE).is_file():
        info["plan_yaml"] = (p / PLAN_FILE).read_text()
    return info
