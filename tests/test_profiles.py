"""Profiles on request: ``profile: true`` on a backend entry or ``infer-orch run --profile LABEL``.

Through a real embedded Ray on this CPU (the ``ray_gpus`` fixture): the traces travel back with
the rows, land in the run directory, parse as Chrome traces, the rows name them and the HTML
report links them; the profiled iterations are not among the timed ones.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import pytest
from helpers import GPU_BACKEND_IDS, GPU_BACKENDS, cli, run_all, trials_for

from orchestrator.answers.report import html_report
from orchestrator.plan.expand import expand
from orchestrator.plan.load import parse_plan
from orchestrator.results.read import load_results
from workers.contract import FILES_KEY, PROFILE_ITERS

ITERS = 10
PLAN = f"""
name: prof
device: cpu
models:
  - {{python: "tinynet:make", input_shape: [3, 8, 8]}}
matrix:
  batch_sizes: [2]
  io: [host]
  backends:
    - {{backend: torch-eager, profile: true}}
    - {{backend: ort}}
    - {{backend: sleep, label: idle, profile: true, options: {{step_s: 0.001}}}}
measure: {{warmup_iters: 1, iters: {ITERS}, warmup_max_s: 0.5, target_rel_ci: null}}
"""


def chrome_events(path: Path) -> list[dict]:
    """The events of a Chrome trace file: torch writes {"traceEvents": [...]}, ORT a bare array."""
    data = json.loads(path.read_text())
    events = data["traceEvents"] if isinstance(data, dict) else data
    assert isinstance(events, list) and events
    assert all("name" in e and "ph" in e for e in events)
    return events


@pytest.fixture(scope="module")
def run_dir(ray_gpus, tmp_path_factory):
    """One run: torch-eager profiled by its plan entry, ort by --profile, sleep asks but has no profiler."""
    root = tmp_path_factory.mktemp("prof")
    (root / "plan.yaml").write_text(PLAN)
    t0 = time.perf_counter()
    r = cli("run", root / "plan.yaml", "--out", root / "run", "--workers", "1", "--profile", "ort")
    print(f"profiled run: {time.perf_counter() - t0:.1f} s")
    assert r.returncode == 0, r.stdout + r.stderr
    return root / "run"


@pytest.fixture(scope="module")
def rows(run_dir):
    return {r["label"]: r for r in load_results(run_dir).to_pylist()}


@pytest.mark.parametrize("label", ["torch-eager", "ort"])
def test_profile_lands_in_the_run_directory_named_by_its_row(rows, run_dir, label):
    r = rows[label]
    assert r["status"] == "ok", r["error"]
    assert r["profile_file"] == f"_profiles/{r['trial_id']}.{r['backend']}.json"
    path = run_dir / r["profile_file"]
    assert path.stat().st_size == r["profile_bytes"] > 0
    events = chrome_events(path)
    assert r["profile_iters"] == PROFILE_ITERS and r["profile_error"] is None and r["profile_s"] > 0
    if label == "ort":  # its own profiling session: one warm run and the profiled ones
        assert sum(e["name"] == "model_run" for e in events) == PROFILE_ITERS + 1
    else:
        assert any(e.get("cat") == "cpu_op" for e in events)


def test_unprofiled_trials_and_backends_without_a_profiler(rows, run_dir):
    idle = rows["idle"]  # asked for one; sleep has no profiler: said, and the trial is still ok
    assert idle["status"] == "ok" and idle["profile_file"] is None
    assert idle["profile_error"] == "backend sleep has no profiler"
    assert sorted(p.name for p in (run_dir / "_profiles").iterdir()) == sorted(
        Path(rows[k]["profile_file"]).name for k in ("torch-eager", "ort"))


def test_profiled_iterations_are_not_timed(rows):
    for r in rows.values():
        assert r["iters"] == len(r["samples_ms"]) == ITERS, r["label"]


def test_latency_comes_from_the_unprofiled_iterations(monkeypatch):
    """Every profiled step made 50 ms slower: no timed sample sees it, and the row counts them apart."""
    from workers.backends import base

    real = base.torch_profile
    profiled = []  # one entry per profiled step

    def slow_profile(step, iters, on_gpu):
        def slow():
            profiled.append(1)
            time.sleep(0.05)
            step()
        return real(slow, iters, on_gpu)

    monkeypatch.setattr(base, "torch_profile", slow_profile)
    (trial,) = trials_for(["torch-eager"], io=("host",),
                          measure={"warmup_iters": 1, "iters": ITERS, "warmup_max_s": 0.5, "target_rel_ci": None})
    (row,) = run_all([dataclasses.replace(trial, profile=True)])
    assert row["status"] == "ok", row.get("error")
    assert row["iters"] == len(row["samples_ms"]) == ITERS and row["profile_iters"] == PROFILE_ITERS
    assert len(profiled) == PROFILE_ITERS and row["profile_s"] >= PROFILE_ITERS * 0.05
    # had the profiled steps been timed, PROFILE_ITERS samples would take 50 ms or more; a busy machine
    # may stall one tinynet step that long, never five
    slow = [s for s in row["samples_ms"] if s >= 50]
    assert len(slow) <= 1 and row["latency_ms_median"] < 50, row["samples_ms"]
    trace = json.loads(row[FILES_KEY][row["profile_file"]])
    assert trace["traceEvents"]


def test_report_links_profiles_relative_to_the_report(rows, run_dir, tmp_path):
    for where in (run_dir / "_report.html", tmp_path / "elsewhere" / "report.html"):
        r = cli("report", run_dir, "--html", where)
        assert r.returncode == 0, r.stdout + r.stderr
        page = where.read_text()
        for label in ("torch-eager", "ort"):
            target = run_dir / rows[label]["profile_file"]
            hrefs = [h for h in _hrefs(page) if h.endswith(target.name)]
            assert len(hrefs) == 1, hrefs
            assert not hrefs[0].startswith("/") and (where.parent / hrefs[0]).resolve() == target.resolve()
    assert 'href="_profiles/' in html_report(run_dir)  # default: a page in the run directory


def _hrefs(page: str) -> list[str]:
    import re

    return re.findall(r'href="([^"]+)"', page)


def test_profile_is_not_part_of_the_trial_id():
    data = parse_plan_data()
    plain = expand(parse_plan(data))
    for b in data["matrix"]["backends"]:
        b["profile"] = True
    profiled = expand(parse_plan(data))
    assert [t.trial_id for t in plain] == [t.trial_id for t in profiled]
    assert all(t.profile for t in profiled) and not any(t.profile for t in plain)


def parse_plan_data() -> dict:
    import yaml

    data = yaml.safe_load(PLAN)
    for b in data["matrix"]["backends"]:
        b.pop("profile", None)
    return data


@pytest.mark.parametrize("dry", [True, False])
def test_profile_of_a_label_the_plan_lacks_is_refused(write_plan, tmp_path, dry):
    path = write_plan(PLAN)
    r = cli("run", path, "--profile", "ort", "--profile", "tensorrt", *(["--dry-run"] if dry else
                                                                         ["--out", tmp_path / "out"]))
    assert r.returncode == 2, r.stdout + r.stderr
    out = " ".join((r.stdout + r.stderr).split())
    assert f"{path}: --profile tensorrt: no matrix.backends entry has that label" in out
    assert "idle, ort, torch-eager" in out
    assert not (tmp_path / "out").exists()


@pytest.mark.gpu
@pytest.mark.parametrize("backend", GPU_BACKENDS, ids=GPU_BACKEND_IDS)
def test_gpu_profile_shows_the_gpus_work(backend):
    """On a GPU: torch's trace has CUDA kernels (graph replays included), ORT's has its nodes on the
    CUDA provider; the timed samples are the unprofiled ones."""
    import torch

    from workers.models.build import ModelStore
    from workers.trial import run_trial

    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    (trial,) = trials_for([{**backend, "profile": True}], models=("torchvision:resnet18",), io=("device",),
                          device="cuda", measure={"warmup_iters": 2, "iters": ITERS, "target_rel_ci": None})
    row = run_trial(trial, "cuda", ModelStore(), cpus=1)
    assert row["status"] == "ok", row["error"]
    assert row["iters"] == len(row["samples_ms"]) == ITERS and row["profile_iters"] == PROFILE_ITERS
    data = json.loads(row[FILES_KEY][row["profile_file"]])
    events = data["traceEvents"] if isinstance(data, dict) else data
    if backend["backend"] == "ort":
        providers = {e.get("args", {}).get("provider") for e in events if e.get("cat") == "Node"}
        assert "CUDAExecutionProvider" in providers, providers
    else:  # a CUDA graph's replays: its kernels where CUPTI traces inside graphs, else the launches
        kernels = any(e.get("cat") == "kernel" for e in events)
        launches = any("cudaGraphLaunch" in str(e.get("name")) for e in events)
        assert kernels or (backend["backend"] == "torch-cudagraph" and launches), sorted({e.get("cat") for e in events})


def test_the_resume_command_keeps_the_profile_labels(tmp_path):
    import shlex

    from orchestrator.results.resume import resume_command

    line = resume_command(tmp_path / "p.yaml", tmp_path / "out", None, 2, profile=("ort-tuned", "my label"))
    assert shlex.split(line) == ["infer-orch", "run", str(tmp_path / "p.yaml"), "--resume", str(tmp_path / "out"),
                                 "--workers", "2", "--profile", "ort-tuned", "--profile", "my label"]


def test_a_profile_that_cannot_be_written_stops_the_run_like_its_part_would_leaving_nothing_torn(tmp_path):
    """The profile is written before the row that names it, through the same whole-or-nothing writer:
    when it can't be written (here: `_profiles` is a file, not a directory) the run stops with the
    one-line write error, and neither the profile nor the part is there."""
    from orchestrator.errors import ResultWriteError
    from orchestrator.results.sink import ResultSink
    from workers.contract import FILES_KEY

    (t,) = trials_for([{"backend": "torch-eager", "profile": True}], io=("host",))
    (row,) = run_all([t])
    assert row["status"] == "ok" and row[FILES_KEY], row.get("error")
    out = tmp_path / "out"
    out.mkdir()
    (out / "_profiles").write_text("in the way")
    with pytest.raises(ResultWriteError, match=f"could not write results in {out}"):
        ResultSink(out, "r", None, metadata={}).write(row)
    assert sorted(p.name for p in out.iterdir()) == ["_profiles"]


def test_a_profile_flag_that_is_not_a_boolean_is_a_located_error(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text(json.dumps({"name": "p", "device": "cpu",
                                "models": [{"python": "tinynet:make", "input_shape": [3, 8, 8]}],
                                "matrix": {"batch_sizes": [1],
                                           "backends": [{"backend": "torch-eager", "profile": "maybe"}]}}))
    r = cli("validate", path)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert f"{path}: matrix.backends[0].profile: Input should be a valid boolean" in " ".join(r.stderr.split())


EVERY_FEATURE = """
name: every
device: cpu
models:
  - {python: "tinynet:make", input_shape: [3, 8, 8]}
matrix:
  batch_sizes: [2]
  io: [host]
  backends:
    - {backend: torch-eager}
    - {backend: fault, label: broken, options: {mode: raise}}
measure: {warmup_iters: 1, iters: 5, warmup_max_s: 0.5, target_rel_ci: null}
"""


def test_a_run_directory_that_used_every_feature_reads_in_pandas_polars_and_duckdb(ray_gpus, tmp_path):
    """Profiles, JUnit and the HTML report written into the run directory, a resume that retried a
    failed trial (its old row to the history), Ray's log: pandas reads the directory as it is, polars
    and DuckDB its *.parquet, and every file infer-orch left there that is not Parquet is one a
    dataset reader skips."""
    import duckdb
    import pandas as pd
    import polars as pl

    plan, out = tmp_path / "plan.yaml", tmp_path / "run"
    plan.write_text(EVERY_FEATURE)
    first = cli("run", plan, "--out", out, "--workers", "1", "--profile", "torch-eager", "--junit", out / "_junit.xml")
    assert first.returncode == 1, first.stdout + first.stderr  # the fault trial failed, on purpose
    again = cli("run", plan, "--resume", out, "--retry-failed", "--workers", "1", "--profile", "torch-eager",
                "--junit", out / "_junit.xml")
    assert again.returncode == 1, again.stdout + again.stderr
    report = cli("report", out, "--html", out / "_report.html")
    assert report.returncode == 0, report.stdout + report.stderr
    left = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()}
    assert {"_junit.xml", "_report.html", "_plan.yaml", "_run.json", "_history/history.parquet"} <= left, left
    assert any(p.startswith("_profiles/") for p in left), left
    assert all(p.endswith(".parquet") for p in left if not p.startswith(("_", "."))), left

    df = pd.read_parquet(out)
    assert sorted(df.label) == ["broken", "torch-eager"]
    assert df.set_index("label").profile_file["torch-eager"].startswith("_profiles/")
    assert pl.read_parquet(f"{out}/*.parquet").height == 2
    assert duckdb.sql(f"select count(*) from read_parquet('{out}/*.parquet')").fetchall() == [(2,)]


def test_a_file_written_into_the_run_directory_must_be_hidden_from_readers(ray_gpus, tmp_path):
    """`--junit RUN/junit.xml` or `report RUN --html RUN/report.html` would make pandas.read_parquet(RUN)
    fail: refused with the name to use instead, exit 2, before anything is run or written."""
    plan, out = tmp_path / "plan.yaml", tmp_path / "run"
    plan.write_text(EVERY_FEATURE)
    r = cli("run", plan, "--out", out, "--junit", out / "junit.xml")
    assert r.returncode == 2 and not out.exists(), r.stdout + r.stderr
    assert f"--junit {out / 'junit.xml'}: a file in the run directory {out} must have a name starting with '_' " \
           f"(e.g. {out / '_junit.xml'})" in " ".join(r.stderr.split())
    r = cli("report", tmp_path, "--html", tmp_path / "sub" / "report.html")
    assert r.returncode == 2 and not (tmp_path / "sub").exists()
    assert "--html" in r.stderr and f"(e.g. {tmp_path / '_sub'})" in " ".join(r.stderr.split())


def test_a_run_directory_of_an_earlier_version_with_profiles_reads_as_docs_say(run_dir, tmp_path):
    """Runs of earlier versions kept profiles in profiles/ (not skipped by Arrow): infer-orch's readers
    take them as they are; pandas with the ignore_prefixes docs/results.md gives."""
    import shutil

    import pandas as pd

    old = tmp_path / "old"
    shutil.copytree(run_dir, old)
    (old / "_profiles").rename(old / "profiles")
    assert len(load_results(old)) == 3
    assert len(pd.read_parquet(old, ignore_prefixes=["_", ".", "profiles"])) == 3
