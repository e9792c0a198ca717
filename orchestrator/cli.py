"""The ``infer-orch`` command line.

Exit codes: 0 every trial ran (ok or skipped); 1 some trial failed; 2 bad input (plan, output
directory, cluster) and nothing was run or written. User errors print one line, no traceback.
"""

from __future__ import annotations

import os
import signal
import sys
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

#: Signals that arrived while this module was still importing (see ``_note_early_stop``).
_EARLY_STOPS: list[int] = []


def _note_early_stop(signum: int, frame: Any) -> None:
    _EARLY_STOPS.append(signum)


# Run as the command (``infer-orch``, ``python -m orchestrator.cli``): a SIGTERM or Ctrl-C that comes
# while the libraries below import is noted, and ``main`` ends with its one line, instead of a silent
# death by SIGTERM or a KeyboardInterrupt traceback. Imported as a library, nothing is touched.
if __name__ == "__main__" or Path(sys.argv[0] if sys.argv else "").name == "infer-orch":
    signal.signal(signal.SIGTERM, _note_early_stop)
    signal.signal(signal.SIGINT, _note_early_stop)

import typer  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.markup import escape  # noqa: E402
from rich.table import Table  # noqa: E402

from orchestrator.errors import InferOrchError, InputError, Interrupted, Terminated  # noqa: E402
from workers.contract import Status, Trial, spec_columns, succeeded  # noqa: E402
from workers.row import Row  # noqa: E402
from workers.scenarios import DEFAULT as DEFAULT_SCENARIO  # noqa: E402
from workers.scenarios import label as scenario_label  # noqa: E402
from workers.scenarios import tag as scenario_tag  # noqa: E402

if TYPE_CHECKING:
    from orchestrator.answers.compare import Verdict

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Ray-based, parallel, multi-GPU benchmark orchestrator for deep-learning inference.")
# Piped output (CI logs, files) gets a wide table rather than Rich's 80-column default.
console = Console(width=None if sys.stdout.isatty() else 200)
err_console = Console(stderr=True)

PlanArg = Annotated[Path, typer.Argument(help="YAML plan file.", show_default=False)]


#: Set when a run was stopped while Ray was starting: the command then ends without the interpreter's
#: clean-up (see ``main``).
_END_NOW: list[bool] = []


def _fail(exc: InferOrchError) -> typer.Exit:
    if getattr(exc, "starting", False):
        _END_NOW.append(True)
    prefix = "" if isinstance(exc, Interrupted) else "[bold red]error:[/] "
    for line in str(exc).splitlines():
        err_console.print(f"{prefix}{escape(line)}", highlight=False, soft_wrap=True)
    return typer.Exit(code=exc.exit_code)


def _fmt(v: Any, spec: str = ".3f") -> str:
    return "-" if v is None else format(v, spec)


def trial_table(trials: list[Trial], title: str) -> Table:
    t = Table(title=title, title_justify="left")
    t.add_column("trial_id", no_wrap=True, min_width=16)
    tags = [scenario_tag(spec_columns(tr)) for tr in trials]
    for col in ("model", "backend", "label", "batch", "dtype", "io", *(["scenario"] if any(tags) else [])):
        t.add_column(col)
    for tr, tag in zip(trials, tags):
        t.add_row(tr.trial_id, tr.model.name, tr.backend, tr.label, str(tr.batch_size), tr.dtype, tr.io,
                  *([tag or DEFAULT_SCENARIO] if any(tags) else []))
    return t


def _status(row: Row) -> str:
    """The status as the tables show it: an ok row that is not valid (workers/measure/validity.py) says so."""
    s = row["status"]
    if s == Status.OK and row.get("valid") is False:
        return "[yellow]ok, invalid[/]"
    color = {Status.OK: "green", Status.SKIPPED: "yellow"}.get(s, "red")
    return f"[{color}]{s}[/]"


def _note(row: Row) -> str:
    """The error of a row that failed, or why an ok row is not valid (not converged, noisy, contended...)."""
    return escape((row.get("error") or "; ".join(row.get("invalid_reasons") or []))[:100])


def summary_table(rows: list[Row]) -> Table:
    """One line per trial; an ``axes`` column when some model has named axes (seq=128)."""
    from orchestrator.answers.report import axes_text

    with_axes = any(r.get("axes") for r in rows)
    t = Table(title="Results", title_justify="left")
    scenarios = any(scenario_tag(r) for r in rows)  # the column only where some trial has one
    for col, just in (("model", "left"), ("label", "left"), ("batch", "right"), *([("axes", "left")] * with_axes),
                      ("dtype", "left"), ("io", "left"), *([("scenario", "left")] if scenarios else []),
                      ("status", "left"), ("median ms", "right"), ("p99 ms", "right"), ("samples/s", "right"),
                      ("note", "left")):
        t.add_column(col, justify=just)
    key = lambda r: (r["model"], r["batch_size"], r.get("axes") or "", r["dtype"], r["io"], r["label"],  # noqa: E731
                     scenario_tag(r))
    for r in sorted(rows, key=key):
        t.add_row(r["model"], r["label"], str(r["batch_size"]), *([axes_text(r)] * with_axes), r["dtype"], r["io"],
                  *([escape(scenario_label(r))] if scenarios else []),
                  _status(r), _fmt(r.get("latency_ms_median")), _fmt(r.get("latency_ms_p99")),
                  _fmt(r.get("throughput"), ".1f"), _note(r))
    return t


#: How many rows the results table may take when the output is not a terminal (CI logs, files).
PIPED_ROWS = 40
#: The most not-ok rows a summary lists (the rest are counted).
SUMMARY_PROBLEMS = 20
TABLE_MODES = ("auto", "full", "summary")
#: The most trials ``report`` lists one per line in the terminal (the HTML page lists them all).
REPORT_ROWS = 500


def _config(r: Row) -> str:
    from orchestrator.answers.report import axes_text

    return " ".join(filter(None, [axes_text(r), f"bs{r['batch_size']} {r['dtype']} {r['io']}", scenario_tag(r)]))


def grouped_table(rows: list[Row]) -> Table:
    """One line per label x model: its trials by status, and its fastest and slowest ok ones.

    "failed" counts every status but ok and skipped (failed, timeout, oom, parity_failed); "invalid"
    the ok ones that are not numbers to act on (workers/measure/validity.py), also counted in "ok"."""
    t = Table(title="Results by label and model", title_justify="left")
    for col, just in (("label", "left"), ("model", "left"), ("trials", "right"), ("ok", "right"),
                      ("invalid", "right"), ("skipped", "right"), ("failed", "right"), ("fastest median ms", "right"),
                      ("slowest median ms", "right"), ("best samples/s", "right")):
        t.add_column(col, justify=just)
    groups: dict[tuple[str, str], list[Row]] = {}
    for r in rows:
        groups.setdefault((r["label"], r["model"]), []).append(r)
    for (label, model), rs in sorted(groups.items()):
        ok = [r for r in rs if r["status"] == Status.OK and r.get("latency_ms_median") is not None]
        fast = min(ok, key=lambda r: r["latency_ms_median"], default=None)
        slow = max(ok, key=lambda r: r["latency_ms_median"], default=None)
        best = max(ok, key=lambda r: r.get("throughput") or 0, default=None)
        skipped = sum(r["status"] == Status.SKIPPED for r in rs)
        bad = sum(not succeeded(r["status"]) for r in rs)  # failed, timeout, oom, parity_failed
        invalid = sum(r.get("valid") is False for r in ok)
        t.add_row(escape(label), escape(model), str(len(rs)), str(len(ok)),
                  f"[yellow]{invalid}[/]" if invalid else "0", str(skipped),
                  f"[red]{bad}[/]" if bad else "0",
                  f"{_fmt(fast['latency_ms_median'])} ({_config(fast)})" if fast else "-",
                  f"{_fmt(slow['latency_ms_median'])} ({_config(slow)})" if slow else "-",
                  f"{_fmt(best.get('throughput'), '.1f')} ({_config(best)})" if best else "-")
    return t


def _table_fits(n_rows: int) -> bool:
    """Whether a full table of ``n_rows`` fits the screen (PIPED_ROWS when not a terminal)."""
    if not console.is_terminal:
        return n_rows <= PIPED_ROWS
    return n_rows + 8 <= console.size.height  # title, header, rules and the lines printed after it


def print_results(rows: list[Row], mode: str, out: Path) -> None:
    """The results of a run: every row (``full``), or a summary that stays readable at any size:
    one line per label x model, then the rows that are not ok (failures first), up to a limit."""
    if mode == "full" or (mode == "auto" and _table_fits(len(rows))):
        console.print(summary_table(rows))
        return
    console.print(grouped_table(rows))
    problems = sorted((r for r in rows if r["status"] != Status.OK), key=lambda r: (
        r["status"] == Status.SKIPPED, r["model"], r["label"], r["batch_size"], r["dtype"], r["io"]))
    if problems:
        t = summary_table(problems[:SUMMARY_PROBLEMS])
        t.title = f"Not ok: {len(problems)} trial(s)"
        console.print(t)
    more = len(problems) - SUMMARY_PROBLEMS
    if more > 0:
        console.print(f"... and {more} more not ok (--table full lists every row; the rows are in {out})",
                      highlight=False)


@app.command()
def run(
    plan: PlanArg,
    out: Annotated[Path | None, typer.Option(help="Output directory [default: results/<plan>-<time>].")] = None,
    address: Annotated[str | None, typer.Option(
        help="Ray cluster to join: 'auto' or ray://host:10001. Default: start an embedded local Ray.")] = None,
    workers: Annotated[int | None, typer.Option(
        min=1, help="Number of workers: at most this many GPUs; CPU workers for a cpu plan (default 1).")] = None,
    cpus_per_worker: Annotated[float | None, typer.Option(
        min=0.01, help="CPUs per worker actor [default: the plan's, else an even split of its node].")] = None,
    builders: Annotated[int | None, typer.Option(
        min=0, help="Build-ahead tasks per node (ONNX exports on spare CPUs). Default: the plan's, else the "
                    "node's spare CPUs; 0: none.")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the expanded trials; run nothing.")] = False,
    resume: Annotated[Path | None, typer.Option(
        help="Continue the run in this directory: run only the trials not stored there yet.")] = None,
    retry_failed: Annotated[bool, typer.Option(
        "--retry-failed", help="With --resume: also run again the trials stored as failed, timeout, oom "
                               "or parity_failed (their rows are replaced).")] = False,
    retry_invalid: Annotated[bool, typer.Option(
        "--retry-invalid", help="With --resume: also run again the trials stored ok but not valid (not converged, "
                                "noisy, contended, ...: their rows are replaced).")] = False,
    junit: Annotated[Path | None, typer.Option(
        help="Also write JUnit XML here: one test case per trial; failures and missed budgets fail.")] = None,
    table: Annotated[str, typer.Option(
        help="Results table: full (every row), summary (per label and model, and the rows not ok), or auto: "
             f"full when it fits the screen ({PIPED_ROWS} rows when piped), else summary.")] = "auto",
    profile: Annotated[list[str] | None, typer.Option(
        "--profile", metavar="LABEL", help="Also record a profile (Chrome trace) of a few iterations after the "
                                           "timed ones for the trials of this backend label; repeatable.")] = None,
) -> None:
    """Run every trial of PLAN and write one Parquet row per trial."""
    if table not in TABLE_MODES:
        err_console.print(f"[bold red]error:[/] --table must be one of {', '.join(TABLE_MODES)}, got "
                          f"{escape(repr(table))}", highlight=False)
        raise typer.Exit(code=2)
    from orchestrator.plan.expand import expand, with_profiles
    from orchestrator.plan.schema import load_plan

    try:
        if dry_run:
            from orchestrator.run.shipping import check_factories

            plan_obj = load_plan(plan)
            trials = with_profiles(expand(plan_obj, source=str(plan)), tuple(profile or ()), str(plan))
            check_factories(plan_obj.models, str(plan), address, _warn)
            console.print(trial_table(trials, f"{len(trials)} trials (dry run: nothing was run)"))
            return
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        from orchestrator.results.sink import check_hidden
        from orchestrator.run.api import run_plan  # Ray, the scheduler, Parquet: not needed for a dry run

        if junit is not None:
            from orchestrator.answers.junit import check_junit_path

            check_junit_path(junit)
            if out or resume:
                check_hidden(junit, out or resume, "--junit")
        progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                            TimeElapsedColumn(), console=err_console, transient=False)
        task: list[Any] = []

        def on_start(n: int, names: list[str], device: str) -> None:
            err_console.print(f"running {n} trials on {len(names)} {device} worker(s)")
            progress.start()
            task.append(progress.add_task("trials", total=n))

        def on_row(row: Row) -> None:
            progress.advance(task[0])
            if not succeeded(row["status"]):
                progress.console.print(f"[red]{row['status']}[/] {row['label']} {row['model']} bs={row['batch_size']} "
                                       f"{row['dtype']} {row['io']}: {escape(str(row.get('error')))}",
                                       highlight=False)

        try:
            if retry_failed and resume is None:
                raise InputError("--retry-failed needs --resume DIR: it re-runs the failed trials of that run")
            if retry_invalid and resume is None:
                raise InputError("--retry-invalid needs --resume DIR: it re-runs the invalid trials of that run")
            result = run_plan(plan, out=out, address=address, workers=workers, cpus_per_worker=cpus_per_worker,
                              builders=builders, on_start=on_start, on_row=on_row, resume=resume,
                              retry_failed=retry_failed,
                              profile=tuple(profile or ()), retry_invalid=retry_invalid, on_warning=_warn,
                              command_options=_command_options(junit, table, builders))
        finally:
            progress.stop()
    except InferOrchError as exc:
        raise _fail(exc) from None
    except KeyboardInterrupt as stop:  # before run_plan had Ray to start (reading the plan, checks)
        from orchestrator.run.api import stopped_while_starting

        raise _fail(stopped_while_starting(stop)) from None
    try:
        _print_run(result, table, junit)
    except KeyboardInterrupt as stop:  # every trial is stored by now: the stop costs only the summary
        term = isinstance(stop, Terminated)
        raise _fail(Interrupted(f"{'terminated (SIGTERM)' if term else 'interrupted'} after the run: its trials "
                                f"are stored in {result.out}", exit_code=143 if term else 130)) from None


def _print_run(result: Any, table: str, junit: Path | None) -> None:
    """What ``run`` prints once the run has ended (its results table, counts, budgets), the JUnit file;
    exits 1 when the run failed."""
    print_results(result.rows, table, result.out)
    counts = ", ".join(f"{n} {s}" for s, n in sorted(result.counts.items()))
    invalid = f" ({len(result.invalid)} of the ok not valid: see note)" if result.invalid else ""
    console.print(f"{len(result.rows)} trials: {counts}{invalid}. Results: {result.out}", highlight=False)
    if result.lost_workers:
        lost = "; ".join(f"{w} ({cause})" for w, cause in result.lost_workers.items())
        console.print(f"[yellow]lost {len(result.lost_workers)} worker(s)[/]: {escape(lost)}. "
                      f"{len(result.requeued)} in-flight trial(s) re-run on other workers.", highlight=False)
    if result.compact_error:
        console.print(f"[yellow]not compacted[/]: {escape(result.compact_error)} (`--resume` compacts it)",
                      highlight=False)
    if result.kept:
        kept = ", ".join(f"{n} {s}" for s, n in sorted(Counter(result.kept.values()).items()))
        console.print(f"{len(result.kept)} trials already stored there were kept: {kept}", highlight=False)
    _budgets_and_junit(result, junit)
    if result.exit_code:
        raise typer.Exit(code=result.exit_code)


def _warn(message: str) -> None:
    err_console.print(f"[yellow]warning:[/] {escape(message)}", highlight=False, soft_wrap=True)


def _command_options(junit: Path | None, table: str, builders: int | None = None) -> list[str]:
    """The options of ``run`` that a resume command repeats besides those ``resume_command`` knows."""
    return [*(["--junit", str(junit.absolute())] if junit is not None else []),
            *(["--table", table] if table != "auto" else []),
            *(["--builders", str(builders)] if builders is not None else [])]


def _budgets_and_junit(result: Any, junit: Path | None) -> None:
    """Print the budgets the run missed, write the JUnit file if asked."""
    from orchestrator.answers.junit import write_junit

    for row, messages in result.budget_misses:
        for m in messages:
            console.print("[red]over budget[/] " + escape(f"{row['label']} {row['model']} bs={row['batch_size']} "
                                                          f"{row['dtype']} {row['io']}: {m}"),
                          highlight=False, soft_wrap=True)
    for row, message in result.budget_invalid:
        console.print("[yellow]budget on an invalid row[/] " + escape(
            f"{row['label']} {row['model']} bs={row['batch_size']} {row['dtype']} {row['io']}: {message}"),
            highlight=False, soft_wrap=True)
    if junit is not None:
        try:
            c = write_junit(junit, result.trials, result.report_rows(), suite=result.run_id)
        except OSError as exc:
            err_console.print(f"[bold red]error:[/] can't write {junit}: {exc}", highlight=False)
            raise typer.Exit(code=2) from None
        console.print(f"JUnit: {junit.absolute()} ({c['tests']} tests, {c['failures']} failures, {c['errors']} errors, "
                      f"{c['skipped']} skipped)", highlight=False)


@app.command()
def report(
    run_dir: Annotated[Path, typer.Argument(help="A run directory (what `run --out` wrote).", show_default=False)],
    baseline: Annotated[str | None, typer.Option(
        help="Label (or backend) the speedups are against [default: torch-eager; without it in the run, the label "
             "with the most ok trials].")] = None,
    html: Annotated[Path | None, typer.Option(
        help="Also write a self-contained HTML page with plots (works offline).")] = None,
) -> None:
    """Every trial of RUN_DIR side by side: median, p99, throughput, speedup vs the baseline."""
    from orchestrator.answers.report import (
        counts_text,
        html_report,
        peak_table,
        resolve_baseline,
        serving_answers,
        summarize,
        terminal_table,
    )
    from orchestrator.results.read import load_results
    from orchestrator.results.sink import SAMPLE_COLUMNS, check_hidden
    from workers.schema import SCHEMA

    try:
        if html is not None:
            check_hidden(html, run_dir, "--html")
        rows = load_results(run_dir, columns=[n for n in SCHEMA.names if n not in SAMPLE_COLUMNS]).to_pylist()
        baseline, baseline_note = resolve_baseline(rows, baseline)
        if len(rows) <= REPORT_ROWS:
            console.print(terminal_table(summarize(rows, baseline), baseline))
            console.print(f"{len(rows)} trials: {counts_text(rows)}", highlight=False)
            if baseline_note:
                console.print(f"[yellow]{escape(baseline_note)}[/]", highlight=False)
        else:  # thousands of trials: per label and model, and the ones not ok
            print_results(rows, "summary", run_dir)
            console.print(f"{len(rows)} trials: one line each with --html, or read {run_dir} (docs/results.md)",
                          highlight=False)
        peaks = peak_table(rows)
        if peaks is not None:
            console.print(peaks)
            for line in serving_answers(rows):
                console.print(escape(line), highlight=False)
        if html is not None:
            page = html_report(run_dir, baseline, report_path=html)
            try:
                html.parent.mkdir(parents=True, exist_ok=True)
                html.write_text(page, encoding="utf-8")
            except OSError as exc:
                raise InputError(f"{html}: can't write the report: {exc.strerror or exc}") from None
            console.print(f"HTML report: {html.absolute()}", highlight=False)
    except InferOrchError as exc:
        raise _fail(exc) from None


@app.command()
def compare(
    base_dir: Annotated[Path, typer.Argument(help="The base run directory.", show_default=False)],
    cand_dir: Annotated[Path, typer.Argument(help="The candidate run directory.", show_default=False)],
    threshold: Annotated[float, typer.Option(
        min=0, help="Smallest slowdown that counts (0.03 = 3%), when also significant.")] = 0.03,
    confidence: Annotated[float, typer.Option(min=0.5, max=0.999, help="Confidence of the intervals.")] = 0.95,
    noise_floor: Annotated[float | None, typer.Option(
        min=0, help="Between-run noise assumed of every row (relative SD of a run's median; its repeats' CV "
                    "when larger) [default: 0.01 on a GPU, 0.03 on a CPU].")] = None,
    fmt: Annotated[str, typer.Option(
        "--format", help="table (for people) or json (for machines).")] = "table",
) -> None:
    """Match the trials of two runs by spec; exit 1 when any got significantly slower or broke."""
    import json

    from orchestrator.answers.compare import compare as compare_runs
    from orchestrator.answers.compare import regressions
    from orchestrator.results.read import load_results

    if fmt not in ("table", "json"):
        err_console.print(f"[bold red]error:[/] --format must be table or json, got '{fmt}'", highlight=False)
        raise typer.Exit(code=2)
    try:
        items = compare_runs(load_results(base_dir), load_results(cand_dir), threshold, confidence,
                             noise_floor=noise_floor)
    except InferOrchError as exc:
        raise _fail(exc) from None
    bad = regressions(items)
    if fmt == "json":
        print(json.dumps({"base": str(base_dir), "candidate": str(cand_dir), "threshold": threshold,
                          "confidence": confidence, "noise_floor": noise_floor, "regressions": len(bad),
                          "verdicts": dict(Counter(i["verdict"] for i in items)), "trials": items}, indent=2))
    else:
        console.print(compare_table(items, confidence))
        invalid = sum(i["verdict"] == "invalid" for i in items)
        console.print(f"{len(items)} trials compared, {len(bad)} regressed (threshold {threshold:.1%}, "
                      f"{confidence:.0%} confidence, between-run noise included)"
                      + (f"; {invalid} not judged: invalid rows (see note)" if invalid else ""), highlight=False)
    if bad:
        raise typer.Exit(code=1)


def compare_table(items: list[Verdict], confidence: float) -> Table:
    scenarios = any(scenario_tag(r) for r in items)  # the columns only where some trial has one
    title = ("Candidate vs base (each scenario on its metric; ratio > 1 is worse)" if scenarios
             else "Candidate vs base (ratio of medians: > 1 is slower)")
    t = Table(title=title, title_justify="left")
    for col, just in (("model", "left"), ("label", "left"), ("batch", "right"), ("dtype", "left"), ("io", "left"),
                      *([("scenario", "left"), ("metric", "left")] if scenarios else []),
                      *([("base", "right"), ("cand", "right")] if scenarios else [("base ms", "right"),
                                                                                  ("cand ms", "right")]),
                      ("ratio", "right"),
                      (f"{confidence:.0%} CI", "right"), ("verdict", "left"), ("note", "left")):
        t.add_column(col, justify=just)
    style = {"regressed": "bold red", "broken": "bold red", "improved": "green", "fixed": "green",
             "invalid": "yellow"}
    for r in items:
        ci = "-" if r["ci_low"] is None else f"{r['ci_low']:.3f}-{r['ci_high']:.3f}"
        v = r["verdict"]
        t.add_row(*(escape(str(r[k])) for k in ("model", "label", "batch_size", "dtype", "io")),
                  *([escape(scenario_label(r)), r.get("metric") or ""] if scenarios else []),
                  *([_fmt(r.get("base_value")), _fmt(r.get("cand_value"))] if scenarios
                    else [_fmt(r["base_median_ms"]), _fmt(r["cand_median_ms"])]),
                  _fmt(r["ratio"]), ci,
                  f"[{style[v]}]{v}[/]" if v in style else v,
                  escape("; ".join(r["invalid_reasons"])[:100]) if r.get("invalid_reasons")
                  else "matched by label: options changed" if "cand_options" in r
                  else "matched by label" if r["matched_by"] == "label" else "")
    return t


@app.command()
def validate(
    plans: Annotated[list[Path], typer.Argument(help="YAML plan files.", show_default=False)],
    address: Annotated[str | None, typer.Option(
        help="The plans are for this Ray cluster (contacted: no): a python: model's module missing here is a "
             "warning, not an error, since the cluster's nodes may have it.")] = None,
) -> None:
    """Check each PLAN and print how many trials it expands to. Touches no device.

    Every plan is checked, also after a bad one; the exit code is that of the first bad plan.
    """
    from orchestrator.plan.expand import expand
    from orchestrator.plan.schema import load_plan
    from orchestrator.run.shipping import check_factories

    first_error: InferOrchError | None = None
    for plan in plans:
        try:
            plan_obj = load_plan(plan)
            trials = expand(plan_obj, source=str(plan))
            check_factories(plan_obj.models, str(plan), address, _warn)
        except InferOrchError as exc:
            _fail(exc)
            first_error = first_error or exc
            continue
        console.print(f"{plan}: valid, {len(trials)} trials", highlight=False)
    if first_error is not None:
        raise typer.Exit(code=first_error.exit_code)


@app.command()
def backends(
    address: Annotated[str | None, typer.Option(help="Ray cluster to inspect (default: this machine).")] = None,
) -> None:
    """What this machine (or cluster) can run: GPUs, ORT providers, backends, versions."""
    from orchestrator.run.inspect import describe

    try:
        info = describe(address)
    except InferOrchError as exc:
        raise _fail(exc) from None
    t = Table(title="Backends", title_justify="left")
    t.add_column("backend")
    t.add_column("available")
    t.add_column("dtypes (cuda / cpu)")
    t.add_column("scenarios")
    t.add_column("note")
    for b in info["backends"]:
        t.add_row(b["name"], "yes" if b["available"] else "[red]no[/]", b["dtypes"], b["scenarios"],
                  escape(b["note"]))
    console.print(t)
    n = Table(title="Nodes", title_justify="left")
    for col in ("node", "CPUs", "GPUs", "GPU models"):
        n.add_column(col)
    for node in info["nodes"]:
        n.add_row(node["host"], str(node["cpus"]), str(node["gpus"]), ", ".join(node["gpu_models"]) or "-")
    console.print(n)
    for k, v in info["versions"].items():
        console.print(f"{k}: {v}", highlight=False)


def _on_sigterm(signum: int, frame: Any) -> None:
    raise Terminated()


def main() -> None:
    signal.signal(signal.SIGTERM, _on_sigterm)  # Ctrl-C's way out, until a run installs its own
    signal.signal(signal.SIGINT, signal.default_int_handler)
    if _EARLY_STOPS:  # stopped while starting up: nothing was done
        term = signal.SIGTERM in _EARLY_STOPS
        err_console.print("terminated (SIGTERM)" if term else "interrupted", highlight=False)
        sys.exit(Terminated.exit_code if term else Interrupted.exit_code)
    try:
        app()
    except SystemExit as done:
        if _END_NOW:  # a Ray stopped half-started (Ctrl-C reaches its GCS and raylet too) could crash the
            # interpreter's own clean-up (SIGSEGV at exit, 1 time in 3 on 2 vCPUs): its line is said,
            # what Ray started is gone (the watchdog), nothing was stored; nothing is left to clean
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(done.code if isinstance(done.code, int) else 1)
        raise
    except KeyboardInterrupt as stop:  # before a run had anything to keep (a Terminated: SIGTERM)
        err_console.print("terminated (SIGTERM)" if isinstance(stop, Terminated) else "interrupted")
        sys.exit(getattr(stop, "exit_code", 130))


if __name__ == "__main__":
    main()
