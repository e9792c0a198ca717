"""Sizing on an H100 (BENCHMARKS.md, "How many GPUs, at what cost and energy, for a request rate?").

``plans/h100-serving.yaml`` cut to fit a 10-minute GPU session (batch 1 and 8, fp16, single-stream
and find-peak at 1 and 4 requests in flight, ``max_time_s`` 20: 24 trials), run through infer-orch,
then ``report --target-rate 10000 --price H100=3.50`` (3.50 USD per GPU-hour is an example price,
not a quote). Prints the report (the sizing table, the Pareto front), writes its JSON, and for
every configuration with a peak the energy per sample at the peak against single-stream's for the
same label, batch size and dtype.

    PYTHONPATH=$PWD python bench/sizing.py --out /tmp/sizing                 # the cut
    PYTHONPATH=$PWD python bench/sizing.py --out /tmp/sizing --confident     # probes judged on the p99 bound
    PYTHONPATH=$PWD python bench/sizing.py --out /tmp/sizing --whole         # the whole plan (15-20 minutes)
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import yaml

from orchestrator.results.read import load_results
from orchestrator.run.api import run_plan

PLAN = Path(__file__).resolve().parent.parent / "plans" / "h100-serving.yaml"
REPORT = ["--target-rate", "10000", "--price", "H100=3.50"]


def cut(plan: dict, confident: bool) -> dict:
    plan = {**plan, "name": "h100-sizing"}
    plan["matrix"] = {**plan["matrix"], "dtypes": ["fp16"], "scenarios": ["single-stream", "find-peak"],
                      "concurrency": [1, 4]}
    plan["matrix"].pop("exclude", None)
    plan["measure"] = {**plan["measure"], "max_time_s": 20 if not confident else 40}
    if confident:
        plan["scenario"] = {**plan["scenario"], "confident": True}
    return plan


def energy_at_peak(rows: list[dict]) -> list[str]:
    """Markdown lines: J per sample at the peak against single-stream's, per configuration."""
    single = {(r["label"], r["batch_size"], r["dtype"]): r.get("energy_j_per_sample") for r in rows
              if r.get("scenario") == "single-stream" and r.get("status") == "ok"}
    out = ["| label | batch | c | peak req/s | J/sample at the peak | J/sample single-stream | ratio |",
           "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in sorted(rows, key=lambda r: (r["label"], r["batch_size"], r.get("concurrency") or 0)):
        if r.get("scenario") != "find-peak" or not r.get("peak_rate"):
            continue
        at, one = r.get("energy_j_per_sample"), single.get((r["label"], r["batch_size"], r["dtype"]))
        ratio = f"{at / one:.2f}" if at and one else "-"
        out.append(f"| {r['label']} | {r['batch_size']} | {r['concurrency']} | {r['peak_rate']:,.0f} | "
                   f"{at if at is None else f'{at:.4f}'} | {one if one is None else f'{one:.4f}'} | {ratio} |")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--whole", action="store_true", help="the whole plan, not the cut")
    ap.add_argument("--confident", action="store_true", help="find-peak judged on the p99's upper bound")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    plan = yaml.safe_load(PLAN.read_text())
    path = args.out / "plan.yaml"
    path.write_text(yaml.safe_dump(plan if args.whole else cut(plan, args.confident), sort_keys=False))
    run = args.out / "run"
    run_plan(path, out=run)
    cli = [sys.executable, "-m", "orchestrator.cli", "report", str(run), *REPORT]
    subprocess.run([*cli, "--html", str(args.out / "report.html")], check=True)
    doc = subprocess.run([*cli, "--format", "json"], check=True, capture_output=True, text=True).stdout
    (args.out / "report.json").write_text(doc)
    print("\n".join(energy_at_peak(load_results(run).to_pylist())))
    print(f"sizing lines: {len(json.loads(doc)['sizing'])}; JSON: {args.out / 'report.json'}")


if __name__ == "__main__":
    main()
