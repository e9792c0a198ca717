"""`infer-orch report` on a run made here: every status shown, speedups right, an HTML page that
renders offline in headless Chromium."""

from __future__ import annotations

import re
import struct

import pytest
from headless import find_chromium, load
from helpers import cli

from orchestrator.answers.report import html_report, summarize
from orchestrator.results.read import load_results
from orchestrator.run.api import run_plan

# Real models on two CPU workers: eager and ORT run, the CUDA graph is skipped on CPU, a factory
# that returns no module fails, a model that outputs NaN is parity_failed. ORT exports with the
# TorchScript exporter (about 0.2 s here against about 10 s for a cold worker's first dynamo
# export): the export is not the point; the default (dynamo) export runs in plans/quickstart.yaml
# (tests/test_cli.py), test_parity.py and test_ort_options.py. The measurement is bounded so a
# busy machine can't stretch a trial.
PLAN = """\
name: rep
device: cpu
models:
  - {python: "tinynet:make", name: tiny, input_shape: [3, 16, 16]}
  - {python: "tinynet:not_a_module", name: broken, input_shape: [3, 16, 16]}
  - {python: "nannet:make", name: nan, input_shape: [3, 16, 16]}
matrix:
  batch_sizes: [1, 4]
  io: [host]
  backends: [torch-eager, {backend: ort, options: {exporter: torchscript}}, torch-cudagraph]
  exclude:
    - {model: [broken, nan], backend: [ort, torch-cudagraph]}
    - {model: [broken, nan], batch_size: 4}
measure: {warmup_iters: 1, iters: 8, warmup_max_s: 0.5, max_time_s: 1}
"""


@pytest.fixture(scope="module")
def run_result(ray_gpus, tmp_path_factory):
    d = tmp_path_factory.mktemp("rep")
    (d / "plan.yaml").write_text(PLAN)
    result = run_plan(d / "plan.yaml", out=d / "run", workers=2)
    assert sorted(result.counts.items()) == [("failed", 1), ("ok", 4), ("parity_failed", 1), ("skipped", 2)], \
        [(r["label"], r["model"], r.get("error")) for r in result.rows]
    return result, d / "run"


@pytest.fixture(scope="module")
def run_dir(run_result):
    return run_result[1]


@pytest.mark.slow
def test_cpu_plan_runs_real_models_on_cpu_workers(run_result):
    # (was in test_run.py with a plan of its own: this run is a superset of it)
    result, _ = run_result
    tiny = {(r["backend"], r["batch_size"]): r["status"] for r in result.rows if r["model"] == "tiny"}
    assert len(result.workers) == 2
    assert tiny == {(b, n): ("skipped" if b == "torch-cudagraph" else "ok")
                    for b in ("torch-eager", "ort", "torch-cudagraph") for n in (1, 4)}


@pytest.mark.slow
def test_summary_has_every_trial_with_speedup_against_the_baseline(run_dir):
    rows = summarize(load_results(run_dir).to_pylist())
    assert len(rows) == 8
    by = {(r["model"], r["label"], r["batch_size"]): r for r in rows}
    for bs in (1, 4):
        eager, ort = by[("tiny", "torch-eager", bs)], by[("tiny", "ort", bs)]
        assert eager["speedup"] == 1.0
        assert ort["speedup"] == pytest.approx(eager["latency_ms_median"] / ort["latency_ms_median"])
        assert by[("tiny", "torch-cudagraph", bs)]["speedup"] is None
    # the baseline comes first in its group, then the other labels
    assert [r["label"] for r in rows if r["model"] == "tiny" and r["batch_size"] == 1][0] == "torch-eager"
    # a baseline of another name: speedups follow it
    by_ort = {(r["model"], r["label"], r["batch_size"]): r for r in summarize(load_results(run_dir).to_pylist(), "ort")}
    assert by_ort[("tiny", "ort", 1)]["speedup"] == 1.0


@pytest.mark.slow
def test_cli_report_shows_failed_skipped_and_parity_failed_trials(run_dir, tmp_path):
    proc = cli("report", run_dir, "--html", tmp_path / "r.html")
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    for status in ("ok", "skipped", "failed", "parity_failed"):
        assert re.search(rf"│ {status}[\s,]", out), status  # "ok, invalid": an ok row that is not valid
    # each trial that did not run says why
    assert "NaN/Inf values" in out and "returned int, not an nn.Module" in out and "needs a CUDA device" in out
    assert "1.00x" in out and "speedup vs torch-eager" in out
    assert (tmp_path / "r.html").is_file() and "HTML report:" in out


def test_cli_report_of_a_missing_or_empty_directory_is_one_clear_line(tmp_path):
    proc = cli("report", tmp_path / "nope")
    assert proc.returncode == 2 and "no such run directory" in proc.stderr and "Traceback" not in proc.stderr
    proc = cli("report", tmp_path)
    assert proc.returncode == 2 and "no part-*.parquet files" in proc.stderr


def test_speedup_falls_back_to_the_baseline_with_the_other_io():
    # plans/t4.yaml: ort-default runs with io host, the baseline with io device
    rows = [{"model": "m", "batch_size": 1, "dtype": "fp32", "io": "device", "label": "torch-eager",
             "backend": "torch-eager", "status": "ok", "latency_ms_median": 2.0},
            {"model": "m", "batch_size": 1, "dtype": "fp32", "io": "host", "label": "ort-default",
             "backend": "ort", "status": "ok", "latency_ms_median": 4.0}]
    ort = next(r for r in summarize(rows) if r["label"] == "ort-default")
    assert ort["speedup"] == 0.5 and ort["speedup_vs"] == "vs io=device"


@pytest.mark.slow
def test_html_is_self_contained(run_dir):
    page = html_report(run_dir)
    assert page.count("<svg") >= 3  # latency vs batch, throughput, distributions
    # nothing to fetch: no scripts, links, images, frames; SVG references stay inside the page (#id)
    assert not re.search(r"<script|<link|<img|<iframe|@import|url\((?!#)", page, re.I)
    assert not re.search(r"(src|href)=\"(?!#)", page)
    for heading in ("Results", "Latency vs batch size", "Throughput", "Latency distributions", "Environment"):
        assert f"<h2>{heading}</h2>" in page
    assert "parity_failed" in page and "torch_version" in page


def _png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", data[16:24])


@pytest.mark.slow
@pytest.mark.skipif(find_chromium() is None, reason="headless Chromium not installed (apt-get install chromium)")
def test_html_renders_in_headless_chromium_offline(run_dir, tmp_path):
    page = tmp_path / "report.html"
    page.write_text(html_report(run_dir))
    loaded = load(page.as_uri(), width=1400, expression=SMALLEST_TEXT)  # a laptop's width
    (tmp_path / "report.png").write_bytes(loaded.screenshot)
    assert loaded.title.startswith("infer-orch report")
    assert loaded.console_errors == []
    assert loaded.requests == [page.as_uri()]  # the page itself and nothing else
    width, height = _png_size(loaded.screenshot)
    assert width == 1400 and height > 1500  # the table, three kinds of plot, the environment
    assert loaded.value >= 8, f"the smallest chart text renders {loaded.value:.1f} px tall"
    assert len(loaded.screenshot) > 50_000  # not a blank page


@pytest.mark.slow
def test_html_without_matplotlib_keeps_the_table_and_says_why(run_dir, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "matplotlib", None)  # `import matplotlib` now fails
    page = html_report(run_dir)
    assert "<svg" not in page and "matplotlib is not installed" in page
    assert "<h2>Results</h2>" in page and "parity_failed" in page


def test_terminal_table_keeps_brackets_in_errors_and_labels():
    from rich.console import Console

    from orchestrator.answers.report import terminal_table

    rows = [{"model": "m", "batch_size": 1, "dtype": "fp16", "io": "device", "label": "ort[trt]", "backend": "ort",
             "status": "skipped", "error": "providers [tensorrt] are not available here"}]
    console = Console(record=True, width=200)
    console.print(terminal_table(summarize(rows)))
    text = console.export_text()
    assert "providers [tensorrt] are not available" in text and "ort[trt]" in text


# A run drawn as a user's sweep would be: ten batch sizes and two sequence lengths (twenty panels of
# distributions), two labels, neither of them torch-eager, and server runs asked for twice what the
# sleep backend can serve (invalid: they can't keep their schedule). Model-less trials run in this
# process (the sleep backend's real runner) and are stored by the real sink.
LOOK = {
    "name": "look", "device": "cpu",
    "models": [{"python": "textnet:two_inputs", "name": "enc",
                "inputs": [{"name": "input_ids", "dtype": "int64", "shape": ["batch", "seq"], "high": 50},
                           {"name": "attention_mask", "shape": ["batch", "seq"]}]}],
    "matrix": {"batch_sizes": list(range(1, 11)), "seq_lens": [128, 384], "io": ["host"],
               "backends": [{"backend": "sleep", "label": "quick", "options": {"step_s": 0.001}},
                            {"backend": "sleep", "label": "slower", "options": {"step_s": 0.002}}]},
    "measure": {"warmup_iters": 1, "warmup_max_iters": 1, "iters": 6, "target_rel_ci": None, "max_time_s": 1},
}


@pytest.fixture(scope="module")
def look_dir(tmp_path_factory):
    from helpers import run_all

    from orchestrator.plan.expand import expand
    from orchestrator.plan.load import parse_plan
    from orchestrator.results.sink import ResultSink

    server = {**LOOK, "name": "look", "matrix": {**LOOK["matrix"], "seq_lens": [128], "scenarios": ["server"],
                                                 "concurrency": [1], "rates": [1500]},
              "scenario": {"latency_bound_ms": 50, "min_requests": 20, "min_duration_s": 0.05}}
    trials = expand(parse_plan(LOOK)) + expand(parse_plan(server))
    out = tmp_path_factory.mktemp("look") / "run"
    sink = ResultSink(out, "look-1", None, metadata={"device": "cpu"})
    for row in run_all(trials):
        sink.write(row)
    sink.flush()
    sink.compact()
    return out


def test_every_view_shows_the_verdict_and_plots_group_by_axes(look_dir):
    """Invalid rows are `ok, invalid` with their reasons in the terminal and the page, counted apart
    in both headers and marked in the plots; the lines are per label and seq; the latency charts
    say they are single-stream; no parity_s in notes; the speedups are against a label the run has."""
    rows = load_results(look_dir).to_pylist()
    server = [r for r in rows if r["scenario"] == "server"]
    assert server and all(r["status"] == "ok" and r["valid"] is False for r in server), server[0]
    bad = [r for r in rows if r["valid"] is False]  # the server rows (and any a loaded machine made noisy)
    proc = cli("report", look_dir)
    assert proc.returncode == 0, proc.stderr
    out = " ".join(proc.stdout.split())
    assert "ok, invalid" in out and "invalid: schedule not kept" in out
    assert f"{len(bad)} ok but invalid" in out and "parity_s" not in out
    assert "no torch-eager trial in this run: speedups are against quick" in out and "1.00x" in out
    page = html_report(look_dir)
    assert f"{len(bad)} ok but invalid" in page and 'class="invalid">ok, invalid<' in page
    assert "parity_s" not in page and "speedups are against quick" in page
    assert "quick (seq=128)" in page and "quick (seq=384)" in page
    assert page.count("single-stream trials only") == 2 and "a red cross marks an invalid row" in page


#: The height of the smallest rendered text of every chart (SVG <text>, matplotlib writes real text), CSS px.
SMALLEST_TEXT = """
Math.min(...Array.from(document.querySelectorAll('svg text'))
  .filter(t => t.textContent.trim()).map(t => t.getBoundingClientRect().height))
"""


@pytest.mark.slow
@pytest.mark.skipif(find_chromium() is None, reason="headless Chromium not installed (apt-get install chromium)")
def test_every_chart_s_text_is_readable_at_a_laptop_s_width(look_dir, tmp_path):
    page = tmp_path / "report.html"
    page.write_text(html_report(look_dir))
    loaded = load(page.as_uri(), width=1400, expression=SMALLEST_TEXT)
    (tmp_path / "report.png").write_bytes(loaded.screenshot)
    assert loaded.console_errors == []
    assert loaded.value >= 8, f"the smallest chart text renders {loaded.value:.1f} px tall"
