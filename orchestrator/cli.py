"""The ``infer-orch`` command line.

Exit codes: 0 every trial ran (ok or skipped); 1 some trial failed; 2 bad input (plan, output
directory, cluster) and nothing was run or written. User errors print one line, no traceback.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from orchestrator.errors import InferOrchError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Ray-based, parallel, multi-GPU benchmark orchestrator for deep-learning inference.")
console = Console()
err_console = Console(stderr=True)

PlanArg = Annotated[Path, typer.Argument(help="YAML plan file.", show_default=False)]


def _fail(exc: InferOrchError) -> typer.Exit:
    for line in str(exc).splitlines():
        err_console.print(f"[bold red]error:[/] {line}", highlight=False, soft_wrap=True)
    return typer.Exit(code=exc.exit_code)


def _fmt(v: Any, spec: str = ".3f") -> str:
    return "-" if v is None else format(v, spec)


def trial_table(trials: list[dict[str, Any]], title: str) -> Table:
    t = Table(title=title, title_justify="left")
    t.add_column("trial_id", no_wrap=True, min_width=16)
    for col in ("model", "backend", "label", "batch", "dtype", "io"):
        t.add_column(col)
    for tr in trials:
        t.add_row(tr["trial_id"], tr["model"]["name"], tr["backend"], tr["label"],
                  str(tr["batch_size"]), tr["dtype"], tr["io"])
    return t


def summary_table(rows: list[dict[str, Any]]) -> Table:
    t = Table(title="Results", title_justify="left")
    for col, just in (("model", "left"), ("label", "left"), ("batch", "right"), ("dtype", "left"),
                      ("io", "left"), ("status", "left"), ("median ms", "right"), ("p99 ms", "right"),
                      ("samples/s", "right"), ("note", "left")):
        t.add_column(col, justify=just)
    style = {"ok": "green", "skipped": "yellow"}
    key = lambda r: (r["model"], r["batch_size"], r["dtype"], r["io"], r["label"])  # noqa: E731
    for r in sorted(rows, key=key):
        s = r["status"]
        note = (r.get("error") or "")[:80]
        t.add_row(r["model"], r["label"], str(r["batch_size"]), r["dtype"], r["io"],
                  f"[{style.get(s, 'red')}]{s}[/]", _fmt(r.get("latency_ms_median")),
                  _fmt(r.get("latency_ms_p99")), _fmt(r.get("throughput"), ".1f"), note)
    return t


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
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the expanded trials; run nothing.")] = False,
) -> None:
    """Run every trial of PLAN and write one Parquet row per trial."""
    from orchestrator.expand import expand
    from orchestrator.plan import load_plan
    from orchestrator.run import run_plan

    try:
        if dry_run:
            trials = expand(load_plan(plan), source=str(plan))
            console.print(trial_table(trials, f"{len(trials)} trials (dry run: nothing was run)"))
            return
        progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                            TimeElapsedColumn(), console=err_console, transient=False)
        task: list[Any] = []

        def on_start(n: int, names: list[str], device: str) -> None:
            err_console.print(f"running {n} trials on {len(names)} {device} worker(s)")
            progress.start()
            task.append(progress.add_task("trials", total=n))

        def on_row(row: dict[str, Any]) -> None:
            progress.advance(task[0])
            if row["status"] == "failed":
                progress.console.print(f"[red]failed[/] {row['label']} {row['model']} bs={row['batch_size']} "
                                       f"{row['dtype']} {row['io']}: {row.get('error')}", highlight=False)

        try:
            result = run_plan(plan, out=out, address=address, workers=workers, cpus_per_worker=cpus_per_worker,
                              on_start=on_start, on_row=on_row)
        finally:
            progress.stop()
    except InferOrchError as exc:
        raise _fail(exc) from None
    console.print(summary_table(result.rows))
    counts = ", ".join(f"{n} {s}" for s, n in sorted(result.counts.items()))
    console.print(f"{len(result.rows)} trials: {counts}. Results: {result.out}", highlight=False)
    if result.lost_workers:
        lost = "; ".join(f"{w} ({cause})" for w, cause in result.lost_workers.items())
        console.print(f"[yellow]lost {len(result.lost_workers)} worker(s)[/]: {lost}. "
                      f"{len(result.requeued)} in-flight trial(s) re-run on other workers.", highlight=False)
    if result.failed:
        raise typer.Exit(code=1)


@app.command()
def validate(plan: PlanArg) -> None:
    """Check PLAN and print how many trials it expands to. Touches no device."""
    from orchestrator.expand import expand
    from orchestrator.plan import load_plan

    try:
        trials = expand(load_plan(plan), source=str(plan))
    except InferOrchError as exc:
        raise _fail(exc) from None
    console.print(f"{plan}: valid, {len(trials)} trials", highlight=False)


@app.command()
def backends(
    address: Annotated[str | None, typer.Option(help="Ray cluster to inspect (default: this machine).")] = None,
) -> None:
    """What this machine (or cluster) can run: GPUs, ORT providers, backends, versions."""
    from orchestrator.inspect import describe

    try:
        info = describe(address)
    except InferOrchError as exc:
        raise _fail(exc) from None
    t = Table(title="Backends", title_justify="left")
    t.add_column("backend")
    t.add_column("available")
    t.add_column("dtypes (cuda / cpu)")
    t.add_column("note")
    for b in info["backends"]:
        t.add_row(b["name"], "yes" if b["available"] else "[red]no[/]", b["dtypes"], b["note"])
    console.print(t)
    n = Table(title="Nodes", title_justify="left")
    for col in ("node", "CPUs", "GPUs", "GPU models"):
        n.add_column(col)
    for node in info["nodes"]:
        n.add_row(node["host"], str(node["cpus"]), str(node["gpus"]), ", ".join(node["gpu_models"]) or "-")
    console.print(n)
    for k, v in info["versions"].items():
        console.print(f"{k}: {v}", highlight=False)


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        err_console.print("interrupted")
        sys.exit(130)


if __name__ == "__main__":
    main()
