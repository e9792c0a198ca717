"""The fastest backend per model, batch size and dtype (BENCHMARKS.md, "Which backend is fastest ...").

Runs a plan (default ``plans/h100.yaml``) through the real CLI (``python -m orchestrator.cli
run``: embedded Ray, one worker per GPU, Parquet), then reads the Parquet rows and prints, last,
a Markdown table: the fastest label by median latency, the runner-up and the margin, and the
speed-up over torch-eager. Also writes it to ``<out>/fastest.md``.

    PYTHONPATH=$PWD python bench/h100_fastest.py --out $OUT/h100
    python bench/h100_fastest.py --batch-sizes 1,8,32 --out $OUT/a     # a subset of the plan's batch sizes
    python bench/h100_fastest.py --report $OUT/a/results $OUT/b/results   # only the table, from earlier runs

``--batch-sizes`` and ``--labels`` write a copy of the plan with only those batch sizes or backend
entries (trial ids don't change: they don't depend on the plan's name) so a long plan can be run in
parts, or one configuration measured again.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
COLUMNS = ["device_name", "model", "axes", "label", "backend", "batch_size", "dtype", "io", "status", "error",
           "latency_ms_median", "throughput", "compile_time_s", "compile_cache_warm", "setup_s",
           "energy_j_per_sample", "gpu_power_w_avg", "energy_method", "valid", "invalid_reasons"]
HEADER = ("| model | batch | dtype | fastest | median ms | samples/s | runner-up | its ms | margin | vs torch-eager |\n"
          "| --- | ---: | --- | --- | ---: | ---: | --- | ---: | ---: | ---: |")


def _name(r: dict[str, Any]) -> str:
    return r["label"] + (f" ({r['io']} io)" if r["io"] != "device" else "")


def run(plan: Path, out: Path, batch_sizes: list[int] | None, labels: list[str] | None = None) -> Path:
    """Run ``plan`` (or its subset) with the CLI; returns the results directory."""
    out.mkdir(parents=True, exist_ok=True)
    if batch_sizes or labels:
        data = yaml.safe_load(plan.read_text())
        suffix = ""
        if batch_sizes:
            data["matrix"]["batch_sizes"] = batch_sizes
            suffix += f"-bs{'-'.join(map(str, batch_sizes))}"
        if labels:
            def label(e: Any) -> str:
                return e if isinstance(e, str) else e.get("label", e["backend"])
            known = [label(e) for e in data["matrix"]["backends"]]
            unknown = [x for x in labels if x not in known]
            if unknown:
                sys.exit(f"--labels: {', '.join(unknown)} not in {plan} (its labels: {', '.join(known)})")
            data["matrix"]["backends"] = [e for e in data["matrix"]["backends"] if label(e) in labels]
            # rules naming a label that is left out would name nothing; the others still apply
            data["matrix"]["exclude"] = [r for r in data["matrix"].get("exclude", [])
                                         if "label" not in r or r["label"] in labels]
            suffix += "-" + "-".join(labels)
        plan = out / f"{plan.stem}{suffix}.yaml"
        plan.write_text(yaml.safe_dump(data, sort_keys=False))
    results = out / "results"
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "orchestrator.cli", "run", str(plan), "--out", str(results)],
                          cwd=REPO, env={**os.environ, "COLUMNS": "160"})
    print(f"infer-orch run {plan} -> exit {proc.returncode} in {time.perf_counter() - t0:.0f} s", flush=True)
    if proc.returncode not in (0, 1):  # 1: some trials failed; their rows say why
        sys.exit(proc.returncode)
    return results


def load(dirs: list[Path]) -> list[dict[str, Any]]:
    from orchestrator.results.read import load_results

    return load_results(dirs, columns=COLUMNS).to_pylist()  # compacted runs and runs of parts alike


def fastest_table(rows: list[dict[str, Any]]) -> str:
    """Markdown: per (model, batch, dtype), the fastest ok label, the runner-up, the speed-up over eager."""
    groups: dict[tuple[Any, ...], list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        if r["status"] == "ok":
            groups[(r["model"], r["axes"] or "", r["batch_size"], r["dtype"])].append(r)
    lines = [HEADER]
    for (model, axes, bs, dtype), rs in sorted(groups.items()):
        rs.sort(key=lambda r: r["latency_ms_median"])
        best, ms = rs[0], rs[0]["latency_ms_median"]
        shape = " ".join(f"{k}={v}" for k, v in json.loads(axes).items()) if axes else ""
        cells = [f"{model} {shape}".strip(), str(bs), dtype, _name(best), f"{ms:.3f}", f"{best['throughput']:,.0f}"]
        if len(rs) > 1:
            second = rs[1]
            cells += [_name(second), f"{second['latency_ms_median']:.3f}", f"{second['latency_ms_median'] / ms:.2f}x"]
        else:
            cells += ["-", "-", "-"]
        eager = next((r for r in rs if r["label"] == "torch-eager"), None)
        cells.append(f"{eager['latency_ms_median'] / ms:.2f}x" if eager else "-")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def energy_table(rows: list[dict[str, Any]]) -> str:
    """Markdown: every ok row with an energy figure, J per sample and samples per J, and per (model,
    batch, dtype) whether the fastest label is also the most frugal."""
    groups: dict[tuple[Any, ...], list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        if r["status"] == "ok" and r["energy_j_per_sample"]:
            groups[(r["model"], r["axes"] or "", r["batch_size"], r["dtype"])].append(r)
    if not groups:
        return ""
    lines = ["| model | batch | dtype | label | median ms | J / sample | samples / J | avg W | |",
             "| --- | ---: | --- | --- | ---: | ---: | ---: | ---: | --- |"]
    verdicts = []
    for (model, _axes, bs, dtype), rs in sorted(groups.items()):
        rs.sort(key=lambda r: r["energy_j_per_sample"])
        fastest = min(rs, key=lambda r: r["latency_ms_median"])
        for r in rs:
            mark = ", ".join(m for m, x in (("most frugal", rs[0]), ("fastest", fastest)) if x is r)
            lines.append(f"| {model} | {bs} | {dtype} | {_name(r)} | {r['latency_ms_median']:.3f} | "
                         f"{r['energy_j_per_sample']:.4f} | {1 / r['energy_j_per_sample']:,.1f} | "
                         f"{r['gpu_power_w_avg'] or 0:.0f} | {mark} |")
        if rs[0] is not fastest:
            verdicts.append(f"- {model} bs {bs} {dtype}: the most frugal ({_name(rs[0])}, "
                            f"{rs[0]['energy_j_per_sample']:.4f} J) is not the fastest ({_name(fastest)}, "
                            f"{fastest['energy_j_per_sample']:.4f} J, "
                            f"{fastest['energy_j_per_sample'] / rs[0]['energy_j_per_sample']:.2f}x the energy)")
    return "\n".join(lines + [""] + (verdicts or ["- the fastest label is the most frugal at every point"]))


def notes(rows: list[dict[str, Any]]) -> str:
    out = []
    compiled = [r for r in rows if r["backend"] == "torch-compile" and r["compile_time_s"] is not None]
    if compiled:
        times = ", ".join(f"bs {r['batch_size']} {r['dtype']}: {r['compile_time_s']:.0f} s"
                          f"{' (warm cache)' if r['compile_cache_warm'] else ''}"
                          for r in sorted(compiled, key=lambda r: (r["dtype"], r["batch_size"])))
        out.append(f"torch-compile compile time (setup, not timed): {times}")
    for r in rows:
        if r["status"] not in ("ok",):
            out.append(f"{r['status']}: {r['label']} bs {r['batch_size']} {r['dtype']} {r['io']}: "
                       f"{(r['error'] or '').splitlines()[0][:160] if r['error'] else ''}")
    return "\n".join(f"- {line}" for line in out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--plan", type=Path, default=REPO / "plans/h100.yaml")
    ap.add_argument("--out", type=Path, default=None, help="default: $OUT/h100, else results/h100-fastest-<time>")
    ap.add_argument("--batch-sizes", default=None, help="comma-separated subset of the plan's batch sizes")
    ap.add_argument("--labels", default=None, help="comma-separated subset of the plan's backend labels")
    ap.add_argument("--report", type=Path, nargs="+", default=None, help="results directories to report on; "
                                                                         "runs nothing")
    args = ap.parse_args()
    if args.report:
        dirs, out = args.report, args.report[0].parent
    else:
        out = args.out or (Path(os.environ["OUT"]) / "h100" if os.environ.get("OUT") else
                           REPO / "results" / f"h100-fastest-{dt.datetime.now():%Y%m%d-%H%M%S}")
        bs = [int(b) for b in args.batch_sizes.split(",")] if args.batch_sizes else None
        labels = args.labels.split(",") if args.labels else None
        dirs = [run(args.plan, out, bs, labels)]
    rows = load(dirs)
    devices = ", ".join(sorted({r["device_name"] or "?" for r in rows}))
    text = (f"{len(rows)} rows on {devices}\n{notes(rows)}\n\n{fastest_table(rows)}\n\n{energy_table(rows)}\n"
            if rows else "no rows\n")
    try:
        (out / "fastest.md").write_text(text)
    except OSError:  # a read-only --report directory: the table is printed anyway
        pass
    print(text)


if __name__ == "__main__":
    main()
