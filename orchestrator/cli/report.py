"""``infer-orch report``: every trial of a run side by side, in the terminal and as an HTML page."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from orchestrator.cli.console import console, fail
from orchestrator.cli.tables import print_answer, print_results
from orchestrator.errors import InferOrchError, InputError
from workers.row import Row

#: The most trials ``report`` lists one per line in the terminal (the HTML page lists them all).
REPORT_ROWS = 500


def report(
    run_dir: Annotated[Path, typer.Argument(help="A run directory (what `run --out` wrote).", show_default=False)],
    baseline: Annotated[str | None, typer.Option(
        help="Label (or backend) the speedups are against [default: torch-eager; without it in the run, the label "
             "with the most ok trials].")] = None,
    html: Annotated[Path | None, typer.Option(
        help="Also write a self-contained HTML page with plots (works offline).")] = None,
    target_rate: Annotated[float | None, typer.Option(help="Requests/s to serve: GPUs per configuration.")] = None,
    target_tokens: Annotated[float | None, typer.Option(
        help="Output tokens/s to serve: GPUs per generation configuration (instead of --target-rate).")] = None,
    headroom: Annotated[float, typer.Option(help="Size for the target times 1 + this (0.2 = 20%).")] = 0.0,
    price: Annotated[list[str] | None, typer.Option(
        help="USD per GPU-hour of an accelerator, a word of device_name, e.g. H100=3.50 (repeatable).")] = None,
    sort: Annotated[str, typer.Option(help="Order of the sizing table: gpus, cost or energy.")] = "gpus",
    fmt: Annotated[str, typer.Option("--format", help="table, or json (the report as data, on stdout).")] = "table",
) -> None:
    """Every trial of RUN_DIR side by side: median, p99, throughput, speedup vs the baseline; sizing and
    the Pareto front of its load rows."""
    from orchestrator.answers import deploy
    from orchestrator.answers.report import html_report, resolve_baseline
    from orchestrator.results.read import load_results
    from orchestrator.results.sink import SAMPLE_COLUMNS, check_hidden
    from workers.schema import SCHEMA

    try:
        if fmt not in ("table", "json"):
            raise InputError(f"--format {fmt}: expected table or json")
        ask = deploy.Ask.from_options(target_rate, headroom, price, sort, target_tokens)
        if html is not None:
            check_hidden(html, run_dir, "--html")
        rows = load_results(run_dir, columns=[n for n in SCHEMA.names if n not in SAMPLE_COLUMNS]).to_pylist()
        ask.with_plan(run_dir)
        deploy.answers(rows, ask)  # a price that matches no GPU, a target without peaks: said before any output
        if fmt == "json":
            print(deploy.json_text(rows, ask))
            return
        baseline, baseline_note = resolve_baseline(rows, baseline)
        _print_trials(rows, baseline, baseline_note, run_dir)
        _print_answers(rows, ask)
        if html is not None:
            page = html_report(run_dir, baseline, report_path=html, ask=ask)
            try:
                html.parent.mkdir(parents=True, exist_ok=True)
                html.write_text(page, encoding="utf-8")
            except OSError as exc:
                raise InputError(f"{html}: can't write the report: {exc.strerror or exc}") from None
            console.print(f"HTML report: {html.absolute()}", highlight=False)
    except InferOrchError as exc:
        raise fail(exc) from None


def _print_trials(rows: list[Row], baseline: str, baseline_note: str | None, run_dir: Path) -> None:
    """Every trial side by side (a summary past ``REPORT_ROWS``), the counts and what the table's
    comparisons had in common."""
    from orchestrator.answers.report import counts_text, fairness_lines, summarize, terminal_table, unregistered_note

    if len(rows) > REPORT_ROWS:  # thousands of trials: per label and model, and the ones not ok
        print_results(rows, "summary", run_dir)
        console.print(f"{len(rows)} trials: one line each with --html, or read {run_dir} (docs/results.md)",
                      highlight=False)
        return
    console.print(terminal_table(summarize(rows, baseline), baseline))
    console.print(f"{len(rows)} trials: {counts_text(rows)}", highlight=False)
    for line in fairness_lines(rows):  # what each compared group had in common (answers/fairness.py)
        console.print(escape(line), highlight=False)
    for note in (baseline_note, unregistered_note(rows)):
        if note:
            console.print(f"[yellow]{escape(note)}[/]", highlight=False)


def _print_answers(rows: list[Row], ask: Any) -> None:
    """The generation table, the peaks, the sizing and the Pareto front, where the run has their rows."""
    from orchestrator.answers import deploy, paired
    from orchestrator.answers.generation import answers, generation_table
    from orchestrator.answers.report import peak_table, serving_answers

    for table, lines in ((generation_table(rows), answers), (peak_table(rows), serving_answers),
                         (paired.table(rows), paired.lines)):
        print_answer(table, lines, rows)
    tables, notes = deploy.terminal(rows, ask)
    for item in [*tables, *map(escape, notes)]:
        console.print(item, highlight=False)
