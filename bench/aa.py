"""A/A: one plan run twice, then compared (BENCHMARKS.md, "Do two runs of the same plan agree?").

A gate that compares runs must stay quiet here: 0 regressed/improved verdicts, and on a GPU, among
the rows both runs call valid, 95% of medians within 2% of each other (on a CPU that share is
printed, not a goal).

Usage::

    python bench/aa.py OUT_DIR                         # plans/aa.yaml (GPU: 40 trials, < 5 min on an H100)
    python bench/aa.py OUT_DIR --plan plans/quickstart.yaml   # any plan; quickstart runs on a CPU

Each run is ``infer-orch run PLAN --out OUT_DIR/a`` (then ``/b``) in a fresh process, as a user
or CI job runs it; the comparison is ``infer-orch compare``'s (``orchestrator.answers.compare``), at its
default threshold and noise floors. Writes OUT_DIR/aa.json and prints a short table last. Exit 0
when both goals are met, 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script: make the repository's packages importable
    sys.path.insert(0, str(REPO))

WITHIN = 0.02  # medians within 2% ...
SHARE = 0.95  # ... for 95% of the rows both runs call valid


def run(plan: Path, out: Path, log: Path) -> float:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    t0 = time.perf_counter()
    with open(log, "w") as f:
        proc = subprocess.run([sys.executable, "-m", "orchestrator.cli", "run", str(plan), "--out", str(out)],
                              cwd=REPO, env=env, stdout=f, stderr=subprocess.STDOUT)
    if proc.returncode not in (0, 1):  # 1: some trial failed, still a run to compare
        raise SystemExit(f"infer-orch run failed (exit {proc.returncode}); see {log}")
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out", type=Path, help="output directory (runs a/ and b/, aa.json)")
    ap.add_argument("--plan", type=Path, default=REPO / "plans" / "aa.yaml")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    walls = {side: run(args.plan, args.out / side, args.out / f"{side}.log") for side in ("a", "b")}

    from orchestrator.answers.compare import compare
    from orchestrator.results.read import load_results

    items = compare(load_results(args.out / "a"), load_results(args.out / "b"))
    rows = {side: {r["trial_id"]: r for r in load_results(args.out / side).to_pylist()} for side in ("a", "b")}
    both_valid = [i for i in items if i["ratio"] is not None
                  and rows["a"].get(i["trial_id"], {}).get("valid") and rows["b"].get(i["trial_id"], {}).get("valid")]
    within = [i for i in both_valid if abs(i["ratio"] - 1) <= WITHIN]
    verdicts = Counter(i["verdict"] for i in items)
    share = len(within) / len(both_valid) if both_valid else None
    judged = verdicts["regressed"] + verdicts["improved"]
    on_gpu = any(r.get("device") == "cuda" for side in rows.values() for r in side.values())
    ok = judged == 0 and (not on_gpu or (share is not None and share >= SHARE))
    worst = sorted(both_valid, key=lambda i: -abs(i["ratio"] - 1))[:5]
    reasons = Counter(r.split(":")[0] for side in rows.values() for row in side.values()
                      for r in row.get("invalid_reasons") or [])
    res = {"plan": str(args.plan), "wall_s": walls, "trials": len(items), "verdicts": dict(verdicts),
           "both_valid": len(both_valid), "within_2pct": len(within), "share_within_2pct": share,
           "invalid_reasons": dict(reasons), "goals_met": ok, "items": items}
    (args.out / "aa.json").write_text(json.dumps(res, indent=2, default=str))
    print(f"A/A of {args.plan} ({len(items)} trials): runs took {walls['a']:.0f} s and {walls['b']:.0f} s")
    for i in worst:
        print(f"  {i['label']:12s} {i['model']:14s} bs{i['batch_size']:<3} {i['dtype']:4s} ratio {i['ratio']:.4f} "
              f"({i['verdict']})")
    print(f"verdicts: {', '.join(f'{n} {v}' for v, n in verdicts.most_common())}")
    print(f"invalid reasons (rows of both runs): {dict(reasons) or 'none'}")
    print(f"regressed + improved: {judged} (goal 0)")
    print(f"valid in both runs: {len(both_valid)}; medians within {WITHIN:.0%}: {len(within)} = "
          f"{'-' if share is None else f'{share:.1%}'} ({f'goal >= {SHARE:.0%}' if on_gpu else 'no goal on a CPU'})")
    print("goals met" if ok else "GOALS NOT MET")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
