"""The CLI as a user runs it: a real subprocess, a real embedded Ray, Parquet read three ways."""

from __future__ import annotations

import pytest
import yaml
from helpers import REPO, infer_orch


@pytest.fixture(scope="module")
def quickstart(tmp_path_factory):
    """The shipped quickstart plan, run as `make run` runs it, but measuring each trial for at most
    0.5 s (0.25 s of warm-up) instead of 5 s (2 s): its models, backends, batch sizes and options as
    shipped. The 4 trials' timed loops ran to their time limits on the loaded test machine, on both
    cores (at 1 s and 0.5 s: about 6 CPU-s of the suite, at the shipped limits about 50); what is
    asserted here is that every trial runs and is stored, not its figures. That loop's limits are
    tested with the measurement (test_stats, test_backends)."""
    data = yaml.safe_load((REPO / "plans/quickstart.yaml").read_text())
    assert data["measure"]["max_time_s"] > 0.5 and data["measure"]["warmup_max_s"] > 0.25  # shortened, not lengthened
    data["measure"].update(max_time_s=0.5, warmup_max_s=0.25)
    base = tmp_path_factory.mktemp("qs")
    plan, out = base / "quickstart.yaml", base / "run"
    plan.write_text(yaml.safe_dump(data, sort_keys=False))
    proc = infer_orch("run", plan, "--out", out)
    return proc, out


@pytest.mark.slow
def test_quickstart_runs_and_every_row_is_ok(quickstart):
    proc, out = quickstart
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "4 trials: 4 ok" in proc.stdout and str(out) in proc.stdout


@pytest.mark.slow
def test_results_read_in_pandas_polars_and_duckdb(quickstart):
    import duckdb
    import pandas as pd
    import polars as pl

    _, out = quickstart
    df = pd.read_parquet(out)
    assert len(df) == 4 and set(df["status"]) == {"ok"} and set(df["backend"]) == {"torch-eager", "ort"}
    assert (df["latency_ms_median"] > 0).all()
    assert pl.read_parquet(f"{out}/*.parquet").height == 4
    [(n,)] = duckdb.sql(f"select count(*) from read_parquet('{out}/*.parquet') where status = 'ok'").fetchall()
    assert n == 4


def test_dry_run_lists_trials_and_writes_nothing(tmp_path):
    proc = infer_orch("run", "plans/quickstart.yaml", "--dry-run", "--out", tmp_path / "o")
    assert proc.returncode == 0 and "4 trials (dry run" in proc.stdout
    assert not (tmp_path / "o").exists()


def test_bad_plan_exits_2_with_located_message_and_no_traceback(tmp_path):
    plan = tmp_path / "bad.yaml"
    plan.write_text((REPO / "plans/quickstart.yaml").read_text().replace("iters: 10", "iterz: 10"))
    proc = infer_orch("run", plan, "--out", tmp_path / "o")
    assert proc.returncode == 2
    assert "measure: unknown key 'iterz' (did you mean 'iters'?)" in proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout and not (tmp_path / "o").exists()


def test_shipped_plans_validate():
    plans = sorted(str(p.relative_to(REPO)) for p in (REPO / "plans").glob("*.yaml"))
    assert "plans/quickstart.yaml" in plans and "plans/t4.yaml" in plans
    proc = infer_orch("validate", *plans)
    assert proc.returncode == 0, proc.stderr
    assert [line.split(":")[0] for line in proc.stdout.splitlines() if ": valid, " in line] == plans


def test_validate_checks_every_plan_and_fails_on_the_bad_one(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text((REPO / "plans/quickstart.yaml").read_text().replace("\n  iters:", "\n  iterz:", 1))
    proc = infer_orch("validate", str(bad), "plans/quickstart.yaml")
    assert proc.returncode == 2
    assert "unknown key 'iterz'" in proc.stderr and "Traceback" not in proc.stderr
    assert "plans/quickstart.yaml: valid" in proc.stdout


def test_backends_lists_registry_and_versions():
    import platform

    import onnxruntime
    import ray
    import torch

    proc = infer_orch("backends")
    assert proc.returncode == 0, proc.stderr
    cells = {c[0]: c[1:] for c in ([x.strip() for x in line.split("│")[1:-1]] for line in proc.stdout.splitlines())
             if c and c[0]}
    assert cells["torch-eager"][0] == cells["ort"][0] == "yes", cells
    assert cells["torch-cudagraph"][0] == "no" and "needs a CUDA GPU" in cells["torch-cudagraph"][-1], cells
    # the versions of what is installed here, each on its own line
    facts = dict(line.split(": ", 1) for line in proc.stdout.splitlines() if ": " in line and "│" not in line)
    assert facts["torch"] == torch.__version__ and facts["onnxruntime"] == onnxruntime.__version__, facts
    assert facts["ray"] == ray.__version__ and facts["python"] == platform.python_version(), facts
