"""`report`'s deployment answers on hand-made rows in a real run directory: GPUs needed, cost and energy
per million requests, which figure sizing uses, the Pareto front (dominated points out, ties kept),
the JSON and HTML forms (the page checked in headless Chromium), and bad input refused."""

from __future__ import annotations

import hashlib
import json

import pytest
from headless import find_chromium, load
from helpers import cli

from orchestrator.answers import pareto, sizing
from orchestrator.answers.deploy import Ask, as_json
from orchestrator.answers.report import html_report
from orchestrator.errors import InputError
from orchestrator.results.read import load_results

H100, H200 = "NVIDIA H100 80GB HBM3", "NVIDIA H200"


def peak(tid, label, gpu, rate, fail, p99, bs=1, c=4, joules=None, busy=None, valid=True, model="resnet50", **more):
    return {"trial_id": tid, "plan": "hand", "model": model, "backend": label.split("-tuned")[0], "label": label,
            "batch_size": bs, "dtype": "fp16", "io": "device", "scenario": "find-peak", "concurrency": c,
            "latency_bound_ms": 5.0, "status": "ok", "valid": valid, "peak_rate": rate, "peak_rate_fail": fail,
            "latency_ms_p99": p99, "throughput": rate * bs, "device_name": gpu, "energy_j_per_request": joules,
            "node_trials_busy_max": busy, **more}


ROWS = [
    peak("a", "torch-cudagraph", H100, 2800.0, 2850.0, 4.1, joules=0.1, busy=1),
    peak("b", "ort-tuned", H200, 3500.0, 3560.0, 4.5, bs=8, c=2, joules=0.08, busy=1),
    peak("c1", "torch-eager", H100, 1000.0, 1020.0, 3.0, c=1, busy=1),   # alone ...
    peak("c2", "torch-eager", H100, 900.0, 920.0, 3.2, c=1, busy=4),     # ... and with 3 neighbours busy
    peak("d", "torch-compile", H100, 5000.0, 5100.0, 4.9, valid=False),  # not a figure to act on
    {**peak("e", "torch-eager", H100, 1.0, 1.0, 1.0), "scenario": "offline", "peak_rate": None,
     "throughput": 3000.0, "latency_ms_p99": 2.0, "concurrency": 8, "latency_bound_ms": None},
    {**peak("f", "torch-eager", H100, 1.0, 1.0, 1.0), "scenario": "server", "peak_rate": None,
     "throughput": 500.0, "latency_ms_p99": 2.5, "target_rate": 500.0, "latency_bound_ms": None},
]


def write_run(tmp_path, rows, plan_yaml=None):
    from orchestrator.results.sink import ResultSink

    out = tmp_path / "run"
    sink = ResultSink(out, "hand-1", plan_yaml, metadata={"device": "cuda"})
    for row in rows:
        sink.write({**row, "trial_id": hashlib.sha256(row["trial_id"].encode()).hexdigest()[:16]})
    sink.flush()
    sink.compact()
    return out


@pytest.fixture
def run_dir(tmp_path):
    return write_run(tmp_path, ROWS)


def test_prices_match_a_word_of_the_gpu_name():
    prices = {"H100": 3.5, "h200": 5.0}
    assert sizing.price_for(H100, prices) == ("H100", 3.5)
    assert sizing.price_for("NVIDIA H100-SXM", prices) == ("H100", 3.5)
    assert sizing.price_for(H200, prices) == ("h200", 5.0)  # the key's case doesn't matter
    assert sizing.price_for("NVIDIA H1000", prices) is None and sizing.price_for(None, prices) is None
    assert sizing.price_for("NVIDIA H100 NVL", {"H100": 3.5, "H100 NVL": 4.0}) == ("H100 NVL", 4.0)


def test_gpus_needed_cost_and_energy_per_million_requests(run_dir):
    rows = load_results(run_dir).to_pylist()
    lines = sizing.size(rows, target=10_000, headroom=0.2, prices={"H100": 3.5, "H200": 5.0})
    by = {s.label: s for s in lines}
    assert set(by) == {"torch-cudagraph", "ort-tuned", "torch-eager"}  # the invalid row is left out
    a, b, eager = by["torch-cudagraph"], by["ort-tuned"], by["torch-eager"]
    assert a.gpus == 5 and b.gpus == 4  # ceil(12,000 / 2,800), ceil(12,000 / 3,500)
    assert a.usd_per_m == pytest.approx(3.5 / (2800 * 3600) * 1e6)  # 0.347 USD per million requests
    assert b.usd_per_m == pytest.approx(5.0 / (3500 * 3600) * 1e6)
    assert a.kwh_per_m == pytest.approx(0.1 * 1e6 / 3.6e6) and eager.kwh_per_m is None
    assert (a.rate, a.rate_high) == (2800.0, 2850.0)
    # the busy-node figure is the one used, and the line says so
    assert (eager.rate, eager.measured) == (900.0, "4 GPUs busy") and a.measured == "alone"
    assert [s.best for s in lines].count(True) == 1 and b.best  # the most requests/s per GPU
    assert [s.label for s in lines] == ["ort-tuned", "torch-cudagraph", "torch-eager"]  # fewest GPUs first
    by_cost = sizing.size(rows, 10_000, 0.2, {"H100": 3.5, "H200": 5.0}, sort="cost")
    assert [s.label for s in by_cost] == ["torch-cudagraph", "ort-tuned", "torch-eager"]
    (note,) = sizing.differences(by_cost)
    assert "fastest per GPU is ort-tuned bs=8 c=2" in note and "cheapest per million requests is " \
        "torch-cudagraph bs=1 c=4 (0.3472 USD on NVIDIA H100 80GB HBM3)" in note


def test_the_pareto_front_leaves_out_dominated_points_and_keeps_ties():
    def pt(config, tp, p99, model="m", dtype="fp16"):
        return pareto.Point(model, dtype, config, tp, p99)

    pts = [pt("fast", 200, 2.0), pt("fast-twin", 200, 2.0), pt("low-latency", 50, 0.5), pt("middle", 100, 1.0),
           pt("slower-and-later", 150, 3.0), pt("same-rate-later", 200, 2.5), pt("more-latency-no-gain", 100, 1.5),
           pt("other-dtype", 10, 9.0, dtype="fp32")]
    on = {p.config for p in pareto.mark(pts) if p.front}
    assert on == {"fast", "fast-twin", "low-latency", "middle", "other-dtype"}


def test_the_front_of_a_run_takes_every_load_row_and_its_json_says_both(run_dir):
    rows = load_results(run_dir).to_pylist()
    front = {(p.config, p.throughput) for p in pareto.front(rows)}
    # offline c=8 serves 3,000 samples/s at 2 ms: it dominates the eager peaks and the server point
    assert ("torch-eager bs=1 c=8 offline on NVIDIA H100 80GB HBM3", 3000.0) in front
    assert ("ort-tuned bs=8 c=2 find-peak on NVIDIA H200", 28000.0) in front
    assert not any(c.startswith("torch-eager bs=1 c=1") for c, _ in front)
    assert not any("torch-compile" in c for c, _ in front)  # invalid: not a point
    doc = as_json(rows, Ask(target=10_000, prices={"H100": 3.5}))
    assert {p["config"] for p in doc["pareto"]} == {c for c, _ in front}
    assert {s["label"]: s["gpus"] for s in doc["sizing"]}["torch-cudagraph"] == 4


def test_cli_report_json_and_table_with_the_plan_s_prices(tmp_path):
    out = write_run(tmp_path, ROWS, plan_yaml="name: hand\nprices: {H200: 5.0}\n")
    proc = cli("report", out, "--format", "json", "--target-rate", "10000", "--price", "H100=3.50")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["ask"]["prices"] == {"H200": 5.0, "H100": 3.5}
    cost = {s["label"]: s["usd_per_m"] for s in doc["sizing"]}
    assert cost["ort-tuned"] == pytest.approx(0.3968, rel=1e-3) and doc["pareto"]
    proc = cli("report", out, "--target-rate", "10000", "--price", "H100=3.50", "--sort", "cost")
    assert proc.returncode == 0, proc.stderr
    text = " ".join(proc.stdout.split())
    assert "Sizing" in text and "Pareto front" in text and "the cheapest per million requests is" in text


@pytest.mark.parametrize(("args", "message"), [
    (["--price", "H100"], "--price 'H100': expected ACCELERATOR=USD per GPU-hour, e.g. --price H100=3.50"),
    (["--price", "H100=abc"], "--price 'H100=abc': expected ACCELERATOR=USD per GPU-hour"),
    (["--price", "H100=-1"], "--price 'H100=-1': the price must be more than 0 USD per GPU-hour"),
    (["--target-rate", "0"], "--target-rate 0: must be more than 0 requests/s"),
    (["--headroom", "-0.1"], "--headroom -0.1: must be at least 0"),
    (["--price", "B200=4"], "price 'B200' matches no GPU of the run (the key must be a word of device_name; its GPUs: "
                            "NVIDIA H100 80GB HBM3, NVIDIA H200)"),
])
def test_bad_sizing_input_is_one_located_line_and_exit_2(run_dir, args, message):
    proc = cli("report", run_dir, *args)
    assert proc.returncode == 2, proc.stdout
    assert message in " ".join(proc.stderr.split()) and "Traceback" not in proc.stderr
    assert proc.stdout == ""  # nothing printed before the refusal


def test_a_target_without_peak_rows_is_refused(tmp_path):
    out = write_run(tmp_path, ROWS[-2:])  # offline and server rows only
    proc = cli("report", out, "--target-rate", "100")
    assert proc.returncode == 2 and "--target-rate 100: the run has no peak rates to size with" in proc.stderr
    with pytest.raises(InputError, match="--sort cost: no prices"):
        sizing.size(load_results(write_run(tmp_path / "2", ROWS)).to_pylist(), sort="cost")


@pytest.mark.skipif(find_chromium() is None, reason="headless Chromium not installed (apt-get install chromium)")
def test_the_page_shows_sizing_and_the_front_offline_in_headless_chromium(tmp_path):
    from test_report import SMALLEST_TEXT

    page = tmp_path / "report.html"
    run_dir = write_run(tmp_path, ROWS + GEN)  # single-pass and generation rows: both fronts
    text = html_report(run_dir, ask=Ask(target=10_000, prices={"H100": 3.5, "H200": 5.0}))
    page.write_text(text)
    assert "<h2>Sizing</h2>" in text and "<h2 id=pareto>Pareto front</h2>" in text
    assert "resnet50 fp16: throughput per GPU against p99 latency" in text
    # one browser for both questions: the smallest text's height and every chart label
    loaded = load(page.as_uri(), width=1400, expression=f"({{smallest: {SMALLEST_TEXT}, labels: Array.from("
                  "document.querySelectorAll('svg text')).map(t => t.textContent).join('|')})")
    (tmp_path / "report.png").write_bytes(loaded.screenshot)
    assert loaded.console_errors == [] and loaded.requests == [page.as_uri()]
    smallest, labels = loaded.value["smallest"], loaded.value["labels"]
    assert smallest >= 8, f"the smallest chart text renders {smallest:.1f} px tall"
    assert "ort-tuned bs=8 c=2 find-peak on NVIDIA H200" in labels and "torch-eager bs=1 c=8 offline on" in labels
    assert "<h2 id=generation-sizing>Sizing generation</h2>" in text and "<h2 id=generation-pareto>" in text
    assert "tiny-llama 512+128 fp16: output tokens/s per GPU against p99 time per output token" in text
    assert "ort bs=32 c=4 offline on NVIDIA H200" in labels  # the generation front, labelled


def test_a_plan_s_prices_are_checked_where_the_plan_is():
    from orchestrator.errors import PlanError
    from orchestrator.plan.load import parse_plan

    plan = {"name": "p", "device": "cpu", "models": ["torchvision:resnet18"],
            "matrix": {"batch_sizes": [1], "backends": ["sleep"]}}
    assert parse_plan({**plan, "prices": {"H100": 3.5}}).prices == {"H100": 3.5}
    with pytest.raises(PlanError, match=r"prices\.H100: Input should be greater than 0 \(got -1\)"):
        parse_plan({**plan, "prices": {"H100": -1}})


# Generation: a request is one generation of batch x new tokens output tokens, sized in tokens.
def gen(tid, label, gpu, rate, fail, bs, joules=None, ttft_bound=200.0, tpot_bound=30.0, busy=2, **more):
    return {**peak(tid, label, gpu, rate, fail, 150.0, bs=bs, joules=joules, busy=busy, model="tiny-llama"),
            "prompt_len": 512, "new_tokens": 128, "latency_bound_ms": ttft_bound, "tpot_bound_ms": tpot_bound,
            "ttft_ms_p99": 150.0, "tpot_ms_p99": 25.0, "tokens_per_s": rate * bs * 128, **more}


GEN = [
    gen("g1", "torch-eager", H100, 4.0, 4.2, 8, joules=2000.0, probe_passed=[True, False, True, False],
        probe_p99_upper_ms=[50.0, 300.0, 120.0, 250.0], confident=True),  # 4,096 output tokens/s
    gen("g1-alone", "torch-eager", H100, 4.4, 4.6, 8, confident=True, busy=None),  # not the busy-node figure
    gen("g2", "ort", H200, 1.5, 1.6, 32, joules=5000.0, tpot_ms_p99=28.0),  # 6,144 output tokens/s
    gen("g3", "torch-cudagraph", H100, 10.0, None, 1, tpot_ms_p99=12.0),  # the most req/s, the fewest tokens
    gen("g4", "torch-eager", H100, 5.0, 5.5, 8, tpot_bound=50.0),  # another TPOT bound: its own group
    gen("g5", "torch-eager", H100, 3.0, 3.5, 8, ttft_bound=100.0),  # another TTFT bound: its own group
    gen("g6", "ort", H100, 9.0, 9.5, 32, valid=False),  # not a figure to act on
    {**gen("off", "ort", H200, 1.0, 1.0, 32, tokens_per_s=8000.0, tpot_ms_p99=40.0), "scenario": "offline",
     "peak_rate": None, "latency_bound_ms": None},
    {**gen("srv", "torch-eager", H100, 1.0, 1.0, 8, tokens_per_s=1000.0, tpot_ms_p99=35.0), "scenario": "server",
     "peak_rate": None, "latency_bound_ms": None},
]


def test_generation_rows_are_sized_in_output_tokens(tmp_path):
    from orchestrator.answers import tokens

    rows = load_results(write_run(tmp_path, ROWS + GEN)).to_pylist()
    lines = tokens.size(rows, target_tokens=100_000, headroom=0.2, prices={"H100": 3.5, "H200": 6.0})
    groups = {(s.ttft_bound_ms, s.tpot_bound_ms): [] for s in lines}
    for s in lines:
        groups[(s.ttft_bound_ms, s.tpot_bound_ms)].append(s.label)
    assert groups == {(200.0, 30.0): ["ort", "torch-eager", "torch-cudagraph"], (200.0, 50.0): ["torch-eager"],
                      (100.0, 30.0): ["torch-eager"]}  # grouped by both bounds; fewest GPUs first; g6 left out
    by = {s.label: s for s in lines if (s.ttft_bound_ms, s.tpot_bound_ms) == (200.0, 30.0)}
    g1, g2, g3 = by["torch-eager"], by["ort"], by["torch-cudagraph"]
    assert (g1.model, g1.tokens_per_s, g1.tokens_per_s_high, g1.measured) == (
        "tiny-llama 512+128", 4096.0, 4.2 * 8 * 128, "2 GPUs busy")  # 4.0 req/s x 8 sequences x 128 tokens
    assert (g2.tokens_per_s, g3.tokens_per_s, g3.rate) == (6144.0, 1280.0, 10.0)
    assert g2.best and not g3.best  # the most output tokens/s per GPU, not the most requests/s
    assert (g1.gpus, g2.gpus, g3.gpus) == (30, 20, 94)  # ceil(120,000 / 4,096), / 6,144, / 1,280
    assert g1.usd_per_m_tokens == pytest.approx(3.5 / (4096 * 3600) * 1e6)  # 0.2374 USD per M output tokens
    assert g2.usd_per_m_tokens == pytest.approx(6.0 / (6144 * 3600) * 1e6)
    assert g1.kwh_per_m_tokens == pytest.approx(2000 / (8 * 128) * 1e6 / 3.6e6) and g3.kwh_per_m_tokens is None
    assert (g1.ttft_p99_upper_ms, g1.confident) == (120.0, True)  # the peak's probe: the last that passed
    assert "150 (upper 120, judged)" in tokens.cells(g1)
    (note,) = [n for n in tokens.differences(lines) if "TPOT p99 <= 30 ms" in n and "TTFT p99 <= 200" in n]
    assert "fastest per GPU is ort bs=32 c=4 (6,144 output tokens/s on NVIDIA H200)" in note
    assert "cheapest per million output tokens is torch-eager bs=8 c=4 (0.2374 USD" in note
    # without a tokens target, --target-rate sizes generation rows in requests (generations) /s
    by_rate = {s.label: s.gpus for s in tokens.size(rows, target_rate=10) if s.tpot_bound_ms == 30.0
               and s.ttft_bound_ms == 200.0}
    assert by_rate == {"torch-eager": 3, "ort": 7, "torch-cudagraph": 1}  # ceil(10 / 4), / 1.5, / 10


def test_single_pass_answers_are_unchanged_by_generation_rows(tmp_path):
    from rich.console import Console

    from orchestrator.answers import deploy

    def rendered(rows, ask):
        console = Console(width=250, record=True, file=open("/dev/null", "w"))  # noqa: SIM115
        tables, notes = deploy.terminal(rows, ask)
        for t in tables:
            console.print(t)
        return console.export_text(), notes

    ask = Ask(target=10_000, headroom=0.2, prices={"H100": 3.5, "H200": 5.0})
    alone = load_results(write_run(tmp_path / "a", ROWS)).to_pylist()
    mixed = load_results(write_run(tmp_path / "b", ROWS + GEN)).to_pylist()
    (text, notes), (mixed_text, mixed_notes) = rendered(alone, ask), rendered(mixed, ask)
    assert mixed_text.startswith(text) and "Sizing generation" in mixed_text[len(text):]
    assert mixed_notes[:len(notes)] == notes and "tiny-llama" not in text
    doc, mixed_doc = as_json(alone, ask), as_json(mixed, ask)
    assert (doc["sizing"], doc["pareto"]) == (mixed_doc["sizing"], mixed_doc["pareto"])
    assert doc["generation_sizing"] == [] and mixed_doc["generation_sizing"]


def test_the_generation_front_is_tokens_per_gpu_against_tpot_p99(tmp_path):
    from orchestrator.answers import tokens

    rows = load_results(write_run(tmp_path, GEN)).to_pylist()
    front = {p.config.split(" on ")[0]: (p.throughput, p.p99_ms) for p in tokens.front(rows)
             if p.model == "tiny-llama 512+128"}
    # offline 8,000 tokens/s at 40 ms; ort's peak 6,144 at 28 ms; eager's peak 5,120 (TPOT bound 50) at 25 ms;
    # cudagraph 1,280 at 12 ms; the server row (1,000 at 35 ms) and the lower eager peaks are dominated
    assert front == {"ort bs=32 c=4 offline": (8000.0, 40.0), "ort bs=32 c=4 find-peak": (6144.0, 28.0),
                     "torch-eager bs=8 c=4 find-peak": (5120.0, 25.0), "torch-cudagraph bs=1 c=4 find-peak":
                     (1280.0, 12.0)}
    assert pareto.points(rows) == []  # the single-pass front leaves generation rows out


def test_cli_report_sizes_generation_for_a_tokens_target(tmp_path):
    out = write_run(tmp_path, ROWS + GEN)
    proc = cli("report", out, "--format", "json", "--target-tokens", "100000", "--headroom", "0.2",
               "--price", "H100=3.50", "--price", "H200=6")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["ask"]["target_tokens"] == 100_000
    assert {s["config"]: s["gpus"] for s in doc["generation_sizing"] if s["tpot_bound_ms"] == 30.0} == {
        "ort bs=32 c=4": 20, "torch-eager bs=8 c=4": 30, "torch-cudagraph bs=1 c=4": 94}
    assert {p["config"] for p in doc["generation_pareto"]} >= {"ort bs=32 c=4 offline on NVIDIA H200"}
    assert doc["generation_sizing_notes"] and doc["sizing"] and doc["pareto"]
    proc = cli("report", write_run(tmp_path / "2", GEN), "--target-rate", "10", "--sort", "energy")
    assert proc.returncode == 0, proc.stderr  # a request-rate target sizes a generation-only run too
    text = " ".join(proc.stdout.split())
    assert "Sizing generation: the most output tokens/s per GPU within the TTFT and TPOT p99 bounds; GPUs for 10 " \
           "requests/s" in text and "Pareto front of generation" in text


@pytest.mark.parametrize(("args", "message"), [
    (["--target-tokens", "0"], "--target-tokens 0: must be more than 0 output tokens/s"),
    (["--target-tokens", "-5"], "--target-tokens -5: must be more than 0 output tokens/s"),
    (["--target-tokens", "inf"], "--target-tokens inf: must be more than 0 output tokens/s (and finite)"),
    (["--target-tokens", "abc"], "Invalid value for '--target-tokens'"),  # Typer's own message
    (["--target-tokens", "1000"], "--target-tokens 1000: the run has no generation peak rates to size with "
                                  "(no ok find-peak generation rows: docs/reports.md#sizing)"),
])
def test_a_bad_tokens_target_is_one_line_and_exit_2(run_dir, args, message):
    proc = cli("report", run_dir, *args)  # run_dir: single-pass rows only
    assert proc.returncode == 2, proc.stdout
    assert message in " ".join(proc.stderr.replace("│", " ").split()) and "Traceback" not in proc.stderr
    assert proc.stdout == ""
