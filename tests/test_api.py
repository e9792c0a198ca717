"""The Python API: `from orchestrator import load_results` on runs made here, and the Python API
snippets of docs/results.md, extracted from it and run as they are written."""

from __future__ import annotations

import contextlib
import io
import math
import os
import re

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from helpers import REPO

import orchestrator
from orchestrator import load_results
from orchestrator.errors import InputError
from orchestrator.run.api import run_plan
from workers.schema import SCHEMA

PLAN = """\
name: api
device: cuda
models: [torchvision:resnet18]
matrix:
  batch_sizes: [1, 4]
  backends:
    - backend: sleep
      label: torch-eager
      options: {step_s: 0.004}
    - backend: sleep
      label: ort-tuned
      options: {step_s: STEP}
measure: {warmup_iters: 1, iters: 10, target_rel_ci: null}  # fixed: exactly 10 timed iterations
"""


@pytest.fixture(scope="module")
def results(ray_gpus, tmp_path_factory):
    """A directory like a user's: results/base and results/candidate, two runs of one plan."""
    root = tmp_path_factory.mktemp("api")
    for name, step in (("base", "0.002"), ("candidate", "0.003")):
        (root / f"{name}.yaml").write_text(PLAN.replace("STEP", step))
        assert run_plan(root / f"{name}.yaml", out=root / "results" / name, workers=1).counts == {"ok": 4}
    return root


def test_load_results_is_exported_from_the_package():
    from orchestrator.results import read as results

    star: dict = {}
    exec("from orchestrator import *", star)  # what __all__ promises, through the package's lazy attribute
    assert star["load_results"] is results.load_results and orchestrator.__all__ == ["load_results"]
    with pytest.raises(AttributeError, match="no attribute 'load_result'"):
        orchestrator.load_result  # noqa: B018 -- a typo is an AttributeError, not a silent None


def test_one_run_is_a_table_with_the_schema(results):
    t = load_results(results / "results/base")
    assert isinstance(t, pa.Table) and t.num_rows == 4
    assert t.schema.names == SCHEMA.names and len(set(t.column("run_id").to_pylist())) == 1


def test_many_runs_in_one_table_or_dataframe(results):
    runs = [results / "results/base", str(results / "results/candidate")]
    t = load_results(runs)
    assert t.num_rows == 8 and len(set(t.column("run_id").to_pylist())) == 2
    df = load_results(runs, pandas=True)
    assert isinstance(df, pd.DataFrame) and len(df) == 8
    assert len(df.loc[0, "samples_ms"]) == 10  # every timed iteration, per trial


def test_runs_with_different_columns_load_together(results, tmp_path):
    # an older run lacks a column, a newer one has an extra one: both load, the gaps are null
    row = load_results(results / "results/base").slice(0, 1)
    (tmp_path / "old").mkdir()
    (tmp_path / "new").mkdir()
    pq.write_table(row.drop_columns(["traceback"]), tmp_path / "old/part-a.parquet")
    pq.write_table(row.append_column("future_column", pa.array([0.5])), tmp_path / "new/part-b.parquet")
    t = load_results([tmp_path / "old", tmp_path / "new"])
    assert t.num_rows == 2 and t.column("future_column").to_pylist() == [None, 0.5]
    assert "traceback" in t.schema.names


def test_bad_paths_name_the_path(tmp_path):
    with pytest.raises(InputError, match="nope: no such run directory"):
        load_results(tmp_path / "nope")
    with pytest.raises(InputError, match="not a run directory"):
        load_results(tmp_path)
    (tmp_path / "part-x.parquet").write_text("not parquet")
    with pytest.raises(InputError, match="part-x.parquet: can't read this part file"):
        load_results(tmp_path)


API_DOC = "docs/results.md"


def readme_snippets() -> list[str]:
    """The ```python blocks of the "Python API" section of docs/results.md."""
    text = (REPO / API_DOC).read_text()
    section = re.split(r"^#{2,3} Python API\n", text, maxsplit=1, flags=re.M)[1]
    section = re.split(r"\n#{1,3} ", section, maxsplit=1)[0]
    return re.findall(r"```python\n(.*?)```", section, re.S)


def test_readme_has_snippets_for_pandas_polars_and_duckdb():
    joined = "\n".join(readme_snippets())
    assert all(f"import {lib}" in joined for lib in ("duckdb", "polars")) and "pandas=True" in joined


@pytest.mark.parametrize("index", range(len(readme_snippets())))
def test_readme_python_api_snippet_runs(results, index):
    snippet = readme_snippets()[index]
    out = io.StringIO()
    cwd = os.getcwd()
    os.chdir(results)  # the snippets read results/base and results/candidate, as a user's would
    try:
        with contextlib.redirect_stdout(out):
            exec(compile(snippet, f"{API_DOC}:python-api[{index}]", "exec"), {"__name__": "__readme__"})
    finally:
        os.chdir(cwd)
    assert "ort-tuned" in out.getvalue(), out.getvalue()  # each snippet prints a result
    # ... and its numbers are the stored ones, computed here without the snippet's library
    printed = [float(x) for x in re.findall(r"\d+(?:\.\d+)?", out.getvalue())]
    missing = [x for x in snippet_numbers(snippet, results)
               if not any(math.isclose(x, p, rel_tol=1e-6) for p in printed)]
    assert not missing, (missing, out.getvalue())


def snippet_numbers(snippet: str, results) -> list[float]:
    """The figures a snippet of docs/results.md prints for the runs of ``results``, from the stored rows."""
    runs = {name: [r for r in load_results(results / "results" / name).to_pylist() if r["status"] == "ok"]
            for name in ("base", "candidate")}
    both = runs["base"] + runs["candidate"]
    if "pivot_table(" in snippet:  # pandas: every run's median latencies
        return [r["latency_ms_median"] for r in both]
    if ".group_by(" in snippet:  # polars: the base run's best throughput of each label
        return [max(r["throughput"] for r in runs["base"] if r["label"] == label)
                for label in ("ort-tuned", "torch-eager")]
    if "unnest(samples_ms)" in snippet:  # DuckDB: every timed iteration of both runs, by label and batch size
        pooled: dict[tuple, list[float]] = {}
        for r in both:
            pooled.setdefault((r["label"], r["batch_size"]), []).extend(r["samples_ms"])
        return [x for ms in pooled.values() for x in (len(ms), float(np.median(ms)))]
    return []  # a new snippet: its result names a label (above); add its figures here
