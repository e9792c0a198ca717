"""``infer-orch run``: run every trial of a plan (or print them: ``--dry-run``), then its results."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape

from orchestrator.cli.console import console, err_console, fail, warn
from orchestrator.cli.tables import PIPED_ROWS, TABLE_MODES, print_answer, print_results, trial_table
from orchestrator.errors import InferOrchError, InputError, Interrupted, Terminated
from workers.contract import succeeded
from workers.row import Row

if TYPE_CHECKING:
    from rich.progress import TaskID

    from orchestrator.run.api import RunResult

PlanArg = Annotated[Path, typer.Argument(help="YAML plan file.", show_default=False)]


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
    try:
        if dry_run:
            _dry_run(plan, address, tuple(profile or ()))
            return
        result = _run(plan, junit, table, out=out, address=address, workers=workers, cpus_per_worker=cpus_per_worker,
                      builders=builders, resume=resume, retry_failed=retry_failed, profile=tuple(profile or ()),
                      retry_invalid=retry_invalid)
    except InferOrchError as exc:
        raise fail(exc) from None
    except KeyboardInterrupt as stop:  # before run_plan had Ray to start (reading the plan, checks)
        from orchestrator.run.stops import stopped_while_starting

        raise fail(stopped_while_starting(stop)) from None
    try:
        _print_run(result, table, junit)
    except KeyboardInterrupt as stop:  # every trial is stored by now: the stop costs only the summary
        term = isinstance(stop, Terminated)
        raise fail(Interrupted(f"{'terminated (SIGTERM)' if term else 'interrupted'} after the run: its trials "
                               f"are stored in {result.out}", exit_code=143 if term else 130)) from None


def _dry_run(plan: Path, address: str | None, profile: tuple[str, ...]) -> None:
    """``--dry-run``: the plan's trials as a table; nothing is run."""
    from orchestrator.plan.expand import expand, with_profiles
    from orchestrator.plan.load import load_plan
    from orchestrator.run.shipping import check_factories

    plan_obj = load_plan(plan)
    trials = with_profiles(expand(plan_obj, source=str(plan)), profile, str(plan))
    check_factories(plan_obj.models, str(plan), address, warn)
    console.print(trial_table(trials, f"{len(trials)} trials (dry run: nothing was run)"))


def _run(plan: Path, junit: Path | None, table: str, **options: Any) -> RunResult:
    """The options ``run_plan`` doesn't check (the JUnit path, ``--retry-*`` without ``--resume``),
    then ``run_plan(plan, **options)`` with a progress bar on stderr and a line for each trial not ok."""
    from orchestrator.results.sink import check_hidden
    from orchestrator.run.api import run_plan  # Ray, the scheduler, Parquet: not needed for a dry run

    if junit is not None:
        from orchestrator.answers.junit import check_junit_path

        check_junit_path(junit)
        if options["out"] or options["resume"]:
            check_hidden(junit, options["out"] or options["resume"], "--junit")
    if options["retry_failed"] and options["resume"] is None:
        raise InputError("--retry-failed needs --resume DIR: it re-runs the failed trials of that run")
    if options["retry_invalid"] and options["resume"] is None:
        raise InputError("--retry-invalid needs --resume DIR: it re-runs the invalid trials of that run")
    progress = _Progress()
    try:
        return run_plan(plan, on_start=progress.on_start, on_row=progress.on_row, on_warning=warn,
                        command_options=_command_options(junit, table, options["builders"]), **options)
    finally:
        progress.bar.stop()


class _Progress:
    """The run's progress bar on stderr, started once its workers are up."""

    def __init__(self) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                            TimeElapsedColumn(), console=err_console, transient=False)
        self.task: TaskID | None = None

    def on_start(self, n: int, names: list[str], device: str) -> None:
        err_console.print(f"running {n} trials on {len(names)} {device} worker(s)")
        self.bar.start()
        self.task = self.bar.add_task("trials", total=n)

    def on_row(self, row: Row) -> None:
        if self.task is not None:
            self.bar.advance(self.task)
        if not succeeded(row["status"]):
            self.bar.console.print(f"[red]{row['status']}[/] {row['label']} {row['model']} bs={row['batch_size']} "
                                   f"{row['dtype']} {row['io']}: {escape(str(row.get('error')))}", highlight=False)


def _print_run(result: RunResult, table: str, junit: Path | None) -> None:
    """What ``run`` prints once the run has ended (its results table, counts, budgets), the JUnit file;
    exits 1 when the run failed."""
    from orchestrator.answers import paired

    print_results(result.rows, table, result.out)
    print_answer(paired.table(result.rows), paired.lines, result.rows)  # an interleaved run's answer
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


def _command_options(junit: Path | None, table: str, builders: int | None = None) -> list[str]:
    """The options of ``run`` that a resume command repeats besides those ``resume_command`` knows."""
    return [*(["--junit", str(junit.absolute())] if junit is not None else []),
            *(["--table", table] if table != "auto" else []),
            *(["--builders", str(builders)] if builders is not None else [])]


def _budgets_and_junit(result: RunResult, junit: Path | None) -> None:
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

