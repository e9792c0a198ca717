"""``infer-orch compare``: the trials of two runs matched by spec, each judged on its figures."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Annotated

import typer

from orchestrator.cli.console import console, err_console, fail
from orchestrator.cli.tables import compare_table, print_answer
from orchestrator.errors import InferOrchError


def compare(
    base_dir: Annotated[Path, typer.Argument(help="The base run directory.", show_default=False)],
    cand_dir: Annotated[Path, typer.Argument(help="The candidate run directory.", show_default=False)],
    threshold: Annotated[float, typer.Option(
        min=0, help="Smallest slowdown that counts (0.03 = 3%), when also significant.")] = 0.03,
    confidence: Annotated[float, typer.Option(min=0.5, max=0.999, help="Confidence of the intervals.")] = 0.95,
    noise_floor: Annotated[float | None, typer.Option(
        min=0, help="Between-run noise assumed of every row (relative SD of a run's median; its repeats' CV "
                    "when larger; a row of several processes uses their spread) [default: 0.01 on a GPU, "
                    "0.03 on a CPU].")] = None,
    fmt: Annotated[str, typer.Option(
        "--format", help="table (for people) or json (for machines).")] = "table",
) -> None:
    """Match the trials of two runs by spec; exit 1 when any got significantly slower or broke."""
    import json

    from orchestrator.answers import paired
    from orchestrator.answers.compare import compare as compare_runs
    from orchestrator.answers.compare import regressions
    from orchestrator.results.read import load_results

    if fmt not in ("table", "json"):
        err_console.print(f"[bold red]error:[/] --format must be table or json, got '{fmt}'", highlight=False)
        raise typer.Exit(code=2)
    try:
        base_rows, cand_rows = load_results(base_dir), load_results(cand_dir)
        items = compare_runs(base_rows, cand_rows, threshold, confidence, noise_floor=noise_floor)
    except InferOrchError as exc:
        raise fail(exc) from None
    arms = paired.items(cand_rows.to_pylist())  # the candidate's interleaved units, judged within it
    bad = regressions(items)
    bad_arms = paired.regressions(arms)
    if fmt == "json":
        print(json.dumps({"base": str(base_dir), "candidate": str(cand_dir), "threshold": threshold,
                          "confidence": confidence, "noise_floor": noise_floor, "regressions": len(bad) + len(bad_arms),
                          "verdicts": dict(Counter(i["verdict"] for i in items)), "trials": items,
                          "paired": arms}, indent=2))
    else:
        console.print(compare_table(items, confidence))
        invalid = sum(i["verdict"] == "invalid" for i in items)
        console.print(f"{len(items)} trials compared, {len(bad)} regressed (threshold {threshold:.1%}, "
                      f"{confidence:.0%} confidence, between-run noise included)"
                      + (f"; {invalid} not judged: invalid rows (see note)" if invalid else ""), highlight=False)
        if arms:
            cand = cand_rows.to_pylist()
            print_answer(paired.table(cand, f"Candidate run: {paired.TITLE}"), paired.lines, cand)
    if bad or bad_arms:  # a regressed interleaved arm fails the gate as a regressed trial does
        raise typer.Exit(code=1)
