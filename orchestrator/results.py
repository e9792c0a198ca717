"""Reading runs back: one Arrow table of one or many run directories.

A run directory holds one ``part-<trial_id>.parquet`` per trial (see ``orchestrator.sink``).
Runs written by different versions of infer-orch may have different columns: tables are
unified by name, and a column one run lacks is null in its rows, so readers can use a newer
column where it exists and degrade where it doesn't.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from orchestrator.errors import InputError
from orchestrator.sink import PLAN_FILE, RUN_FILE

PathLike = str | os.PathLike[str]


def part_files(path: PathLike) -> list[Path]:
    """The part files of a run directory (or the file itself); InputError when there are none."""
    p = Path(path)
    if p.is_file():
        return [p]
    if not p.exists():
        raise InputError(f"{p}: no such run directory")
    parts = sorted(p.glob("part-*.parquet"))
    if not parts:
        raise InputError(f"{p}: not a run directory (no part-*.parquet files in it)")
    return parts


def load_results(paths: PathLike | Iterable[PathLike], pandas: bool = False) -> Any:
    """Every row of one or many runs as a pyarrow Table (a pandas DataFrame with ``pandas=True``).

    ``paths`` is a run directory (what ``infer-orch run --out`` wrote), a part file, or a list
    of them. Rows keep their ``run_id``, so several runs can be told apart after loading.
    """
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    tables = []
    for path in paths:
        for part in part_files(path):
            try:
                tables.append(pq.read_table(part).replace_schema_metadata(None))
            except (OSError, pa.ArrowException) as exc:
                raise InputError(f"{part}: can't read this part file: {exc}") from None
    if not tables:
        raise InputError("load_results: no run directories given")
    table = pa.concat_tables(tables, promote_options="permissive")
    return table.to_pandas() if pandas else table


def run_info(path: PathLike) -> dict[str, Any]:
    """What a run directory says about itself: ``_run.json``'s summary and ``_plan.yaml``'s text."""
    p = Path(path)
    info: dict[str, Any] = {}
    if (p / RUN_FILE).is_file():
        try:
            info.update(json.loads((p / RUN_FILE).read_text()))
        except (OSError, ValueError):
            pass  # a run that was interrupted may lack its summary: the rows still stand
    if (p / PLAN_FILE).is_file():
        info["plan_yaml"] = (p / PLAN_FILE).read_text()
    return info
