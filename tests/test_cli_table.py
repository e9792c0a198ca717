"""The results table after `infer-orch run`: every row when it fits, a summary when it wouldn't."""

from __future__ import annotations

from typer.testing import CliRunner

from orchestrator.cli import app, tables

# 48 trials (more than the 40 rows a piped table may take): half of them fail on purpose.
MANY = """\
name: many
device: cuda
models: [torchvision:resnet18, torchvision:resnet50, torchvision:mobilenet_v2, torchvision:alexnet]
matrix:
  batch_sizes: [1, 2, 4]
  dtypes: [fp32, fp16]
  backends:
    - {backend: sleep, label: quick, options: {step_s: 0}}
    - {backend: fault, label: broken, options: {mode: raise}}
measure: {warmup_iters: 0, warmup_max_iters: 0, iters: 2, target_rel_ci: null}
"""


def invoke(*args):
    """`infer-orch run ARGS --workers 1`: the trials take no time and the table is the point, so one worker
    runs them (four would each start a Ray worker process for a dozen instant trials)."""
    return CliRunner().invoke(app, ["run", *map(str, args), "--workers", "1"])


def rows(output: str) -> list[list[str]]:
    """The cells of every table row in ``output`` (the progress lines on stderr are not in a table)."""
    return [[c.strip() for c in ln.split("│")[1:-1]] for ln in output.splitlines() if ln.startswith("│")]


def test_a_run_too_long_for_the_screen_prints_a_summary_with_every_failure_counted(ray_gpus, write_plan, tmp_path):
    res = invoke(write_plan(MANY), "--out", tmp_path / "out")  # not a terminal: at most 40 rows
    assert res.exit_code == 1, res.output  # some trials failed
    out = res.output
    assert "Results by label and model" in out
    # one line per label x model, with its counts: 6 trials each, all ok or all failed; the ok ones, of 2
    # samples each, are not valid (too few samples for an interval)
    for model in ("resnet18", "resnet50", "mobilenet_v2", "alexnet"):
        quick = [c for c in rows(out) if c[:2] == ["quick", model]]
        broken = [c for c in rows(out) if c[:2] == ["broken", model]]
        # trials ok invalid skipped failed
        assert len(quick) == 1 and quick[0][2:7] == ["6", "6", "6", "0", "0"], quick
        assert len(broken) == 1 and broken[0][2:7] == ["6", "0", "0", "0", "6"], broken
    # the failed rows are listed up to the limit, and the rest counted
    assert "Not ok: 24 trial(s)" in out
    assert sum("injected error" in " ".join(c) for c in rows(out)) == tables.SUMMARY_PROBLEMS
    assert f"and {24 - tables.SUMMARY_PROBLEMS} more not ok" in out
    assert "48 trials: 24 failed, 24 ok (24 of the ok not valid: see note)" in out
    assert len(rows(out)) < 48  # table lines: fewer than the full table's rows


def test_table_full_prints_every_row(ray_gpus, write_plan, tmp_path):
    res = invoke(write_plan(MANY), "--out", tmp_path / "out", "--table", "full")
    assert res.exit_code == 1, res.output
    assert "Results by label and model" not in res.output
    table = rows(res.output)  # model, label, batch, dtype, io, status, median, p99, samples/s, note
    labels = [c[1] for c in table]
    assert labels.count("quick") == 24 and labels.count("broken") == 24
    # each row's own verdict: the ok rows of 2 samples say they are not numbers to act on, and why
    for c in table:
        status, note = ("ok, invalid", "too few samples: 2 < 6") if c[1] == "quick" else ("failed", "injected error")
        assert c[5] == status and note in c[9], c


def test_table_summary_prints_the_summary_even_when_every_row_would_fit(ray_gpus, write_plan, tmp_path):
    few = (MANY.replace("resnet18, torchvision:resnet50, torchvision:mobilenet_v2, torchvision:alexnet", "resnet18")
           .replace("[1, 2, 4]", "[1]").replace("[fp32, fp16]", "[fp32]"))  # 2 trials: one ok, one failed
    res = invoke(write_plan(few), "--out", tmp_path / "out", "--table", "summary")
    assert res.exit_code == 1, res.output
    assert "Results by label and model" in res.output
    assert sorted(c[:7] for c in rows(res.output) if c[0] in ("quick", "broken")) == [
        ["broken", "resnet18", "1", "0", "0", "0", "1"], ["quick", "resnet18", "1", "1", "1", "0", "0"]]


def test_a_bad_table_mode_exits_2_before_anything_runs(write_plan, tmp_path):
    res = invoke(write_plan(MANY), "--out", tmp_path / "out", "--table", "wide")
    assert res.exit_code == 2
    assert "--table must be one of auto, full, summary, got 'wide'" in res.output
    assert "Traceback" not in res.output and not (tmp_path / "out").exists()
