"""The gate's false alarms and detection power in both designs (BENCHMARKS.md, "Do two runs of the same plan agree?").

Two measurement designs answer "did this change make inference slower?" (docs/reports.md, "Which
design answers which question"):

- interleaved: the arms of a unit timed in alternating rounds in one worker process
  (``measure.interleave``), judged on the paired ratio of per-round medians;
- cross-run with process repeats: two runs, each trial measured in N fresh worker processes
  (``measure.process_repeats``), judged by ``infer-orch compare``.

For each this benchmark measures, on the plan's 40 configurations (plans/aa.yaml: two models,
batch 1 and 8, fp32 and fp16, five backend configurations; eager at batch 1 is launch-bound):

- false alarms: A/A (the same configuration twice) -> regressed/improved verdicts (goal: at most 1);
- detection power: a known slowdown injected (a backend entry's ``slowdown``: device work on a
  GPU-bound step, a host delay on a launch-bound one) of 1, 2, 3 and 5% interleaved, 2 and 5%
  cross-run (each of its sides is 25 fresh processes per slice, and a launch-bound row's
  between-process spread, 7-14%, leaves 1% out of its reach) -> the share of trials found
  ``regressed``, per row kind (launch-bound: ``slowdown_kind`` host; GPU-bound: device);
- the smallest injected change found in 95% of the trials, per row kind.

The whole takes more than half an hour of GPU time, so it runs in parts, each under 10 minutes on
one GPU, each writing OUT_DIR/<part>.json and printing a short table last::

    python bench/aa.py OUT_DIR --part list                 # the parts
    python bench/aa.py OUT_DIR --part interleaved-torch-resnet18-fp32-b1   # plans/aa-interleaved.yaml's
                                                           #   units of torch backends (base, twin) + 1/2/3/5%
                                                           #   slower arms; interleaved-ort-...: ORT's
    python bench/aa.py OUT_DIR --part cross-a-resnet18-fp32-b1    # cross-run side a (then b: A/A;
                                                           #   s2, s5: slowed candidates)
    python bench/aa.py OUT_DIR --part 'interleaved-*' --budget-s 540 --part-max-s 300
                                                           # the parts a pattern names, in order, while
                                                           #   the longest seen fits the time left;
                                                           #   those with a JSON in OUT_DIR skipped
    python bench/aa.py OUT_DIR --part summary              # every part's JSON -> aa-summary.json
    python bench/aa.py OUT_DIR --plan plans/quickstart.yaml       # the plain A/A: a plan run twice,
                                                           #   compared (no --part: runs anywhere)

Each run is ``infer-orch run`` in a fresh process, as a user or CI job runs it. A part's JSON holds
the device name and the date it ran: the summary refuses to mix devices in one table.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import shutil
import subprocess
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script: make the repository's packages importable
    sys.path.insert(0, str(REPO))

WITHIN = 0.02  # the plain A/A: medians within 2% ...
SHARE = 0.95  # ... for 95% of the rows both runs call valid
LEVELS = (0.01, 0.02, 0.03, 0.05)  # injected slowdowns
POWER = 0.95
PROCESS_REPEATS = 5
MODELS = ("resnet18", "mobilenet_v2")
DTYPES = ("fp32", "fp16")
BATCHES = (1, 8)  # a part per batch size: the interleaved units of a model and dtype took over 7 minutes
#: interleaved parts per backend family of a set's base (its backend's first word): with every runner
#: built 5 times, one slice's five units in one part would not fit a 10-minute call
GROUPS = ("torch", "ort")
CROSS_LEVELS = (0.02, 0.05)  # injected slowdowns, cross-run
SIDES = ("a", "b", *(f"s{round(f * 100)}" for f in CROSS_LEVELS))  # cross-run: base, A/A twin, slowed candidates


def parts() -> list[str]:
    slices = [f"{m}-{d}-b{b}" for m in MODELS for d in DTYPES for b in BATCHES]
    return ([f"interleaved-{g}-{s}" for s in slices for g in GROUPS]
            + [f"cross-{side}-{s}" for side in SIDES for s in slices])


def run(plan: Path, out: Path, log: Path) -> float:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    t0 = time.perf_counter()
    with open(log, "w") as f:
        proc = subprocess.run([sys.executable, "-m", "orchestrator.cli", "run", str(plan), "--out", str(out)],
                              cwd=REPO, env=env, stdout=f, stderr=subprocess.STDOUT)
    if proc.returncode not in (0, 1):  # 1: some trial failed (or a unit regressed), still a run to read
        raise SystemExit(f"infer-orch run failed (exit {proc.returncode}); see {log}")
    return time.perf_counter() - t0


def slice_of(name: str) -> tuple[str, str, int]:
    """(model, dtype, batch size) of a part's slice, e.g. ``mobilenet_v2-fp32-b1``."""
    model, dtype, batch = name.rsplit("-", 2)
    return model, dtype, int(batch.removeprefix("b"))


def sliced(plan: dict, slice_name: str) -> dict:
    """``plan`` (plans/aa.yaml's form) cut to one model, dtype and batch size."""
    model, dtype, batch = slice_of(slice_name)
    out = json.loads(json.dumps(plan))
    out["matrix"]["batch_sizes"] = [batch]
    out["models"] = [m for m in plan["models"] if str(m).endswith(model) or (isinstance(m, dict)
                                                                             and model in m.values())]
    out["matrix"]["dtypes"] = [dtype]
    return out


def entries(plan: dict) -> list[dict]:
    return [e if isinstance(e, dict) else {"backend": e} for e in plan["matrix"]["backends"]]


def label(e: dict) -> str:
    return e.get("label") or e["backend"]


def interleaved_plan(plan: dict, group: str | None = None) -> dict:
    """plans/aa-interleaved.yaml's form (each set a base and its twin) with, in every set, the base
    slowed by each of LEVELS as more arms: a unit of six per configuration; with ``group``, only the
    sets whose base's backend starts with it (``GROUPS``)."""
    out = json.loads(json.dumps(plan))
    spec = out["measure"]["interleave"]
    by_label = {label(e): e for e in entries(plan)}
    sets, kept = [], []
    for names in spec["sets"]:
        base = by_label[names[0]]
        if group is not None and base["backend"].split("-")[0] != group:
            continue
        slowed = [{**base, "label": f"{names[0]}~s{round(f * 100)}", "slowdown": f} for f in LEVELS]
        kept += [by_label[n] for n in names] + slowed
        sets.append([*names, *(e["label"] for e in slowed)])
    out["matrix"]["backends"] = kept
    spec["sets"] = sets
    return out


def cross_plan(plan: dict, side: str, repeats: int) -> dict:
    """One side of the cross-run design: the plan with process repeats, slowed on the s* sides."""
    out = json.loads(json.dumps(plan))
    out["name"] = f"{plan['name']}-cross-{side}"
    out["measure"] = {**plan.get("measure", {}), **({"process_repeats": repeats} if repeats > 1 else {})}
    if side.startswith("s"):
        out["matrix"]["backends"] = [{**e, "slowdown": int(side[1:]) / 100} for e in entries(plan)]
    return out


def kind(row: dict) -> str:
    """A row's kind for the power figures: launch-bound where its slowdown went in as a host delay on a
    GPU, GPU-bound where as device work; a CPU's rows are their own kind."""
    if row.get("device") != "cuda":
        return "cpu"
    return {"host": "launch-bound", "device": "gpu-bound"}.get(row.get("slowdown_kind") or "", "unknown")


def facts(rows: list[dict]) -> dict:
    names = Counter(r.get("device_name") for r in rows if r.get("device_name"))
    return {"device_name": names.most_common(1)[0][0] if names else None,
            "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")}


def interleaved_part(args: Any, name: str) -> dict:
    from orchestrator.results.read import load_results

    group, slice_name = name.removeprefix("interleaved-").split("-", 1)
    plan = interleaved_plan(sliced(yaml.safe_load(args.interleaved_plan.read_text()), slice_name), group)
    path = args.out / "plans" / f"{name}.yaml"
    path.write_text(yaml.safe_dump(plan, sort_keys=False))
    wall = run(path, args.out / "runs" / name, args.out / f"{name}.log")
    rows = load_results(args.out / "runs" / name).to_pylist()
    units: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        if r.get("ab_group"):
            units[r["ab_group"]].append(r)
    found = []
    for unit in units.values():
        slowed = next((r for r in unit if r.get("slowdown_kind")), {})  # the unit's kind: how its slowdown went in
        for r in unit:
            if r["arm"] == r["ab_base"]:
                continue
            found.append({"label": r["label"], "model": r["model"], "batch_size": r["batch_size"],
                          "dtype": r["dtype"], "ratio": r.get("ab_ratio"), "ci_low": r.get("ab_ratio_low"),
                          "ci_high": r.get("ab_ratio_high"), "verdict": r.get("ab_verdict") or r["status"],
                          "slowdown": r.get("slowdown") or 0.0, "kind": kind({**r, **slowed}),
                          "valid": r.get("valid"), "runners_kept": r.get("ab_runners_kept")})
    return {"part": name, "design": "interleaved", **facts(rows), "wall_s": wall,
            "interleave": plan["measure"]["interleave"],
            "arms": found, "statuses": dict(Counter(r["status"] for r in rows))}


def cross_part(args: Any, name: str) -> dict:
    from orchestrator.results.read import load_results

    side, rest = name.removeprefix("cross-").split("-", 1)
    plan = cross_plan(sliced(yaml.safe_load(args.plan.read_text()), rest), side, args.process_repeats)
    path = args.out / "plans" / f"{name}.yaml"
    path.write_text(yaml.safe_dump(plan, sort_keys=False))
    wall = run(path, args.out / "runs" / name, args.out / f"{name}.log")
    rows = load_results(args.out / "runs" / name).to_pylist()
    return {"part": name, "design": "cross-run", "side": side, **facts(rows), "wall_s": wall,
            "process_repeats": args.process_repeats, "statuses": dict(Counter(r["status"] for r in rows)),
            "items": cross_items(args.out, name)}


def cross_items(out: Path, name: str) -> list[dict]:
    """A cross-run part's trials judged by ``compare`` against side a of its slice (matched by label
    where a slowdown changed the ids); none for side a itself, or before side a has run."""
    from orchestrator.answers.compare import compare
    from orchestrator.results.read import load_results

    side, rest = name.removeprefix("cross-").split("-", 1)
    base, cand_dir = out / "runs" / f"cross-a-{rest}", out / "runs" / name
    if side == "a" or not base.exists() or not cand_dir.exists():
        return []
    cand = {(r["label"], r["batch_size"]): r for r in load_results(cand_dir).to_pylist()}
    items = compare(load_results(base), load_results(cand_dir))
    return [{**i, "slowdown": (cand.get((i["label"], i["batch_size"])) or {}).get("slowdown") or 0.0,
             "kind": kind(cand.get((i["label"], i["batch_size"])) or {})} for i in items]


def smallest(detected: dict[float, list[bool]]) -> float | None:
    """The smallest injected change found in at least POWER of its trials (None: none was)."""
    return next((f for f in sorted(detected) if detected[f] and sum(detected[f]) / len(detected[f]) >= POWER), None)


def summary(args: Any) -> dict:
    """Every part's JSON in OUT_DIR, as the benchmark's answers (per device: never mixed)."""
    found = [json.loads(p.read_text()) for p in sorted(args.out.glob("*.json")) if p.stem in parts()]
    out: dict[str, Any] = {}
    for device in sorted({str(p.get("device_name")) for p in found}):
        mine = [p for p in found if str(p.get("device_name")) == device]
        # parts measured with another number of builds answer another design: never pooled
        by_builds: dict[int, list[dict]] = defaultdict(list)
        for p in mine:
            if p["design"] == "interleaved":
                by_builds[int(p["interleave"].get("builds", 1))] += p["arms"]
        # judged again here: side a may have run after the others
        cross = [i for p in mine if p["design"] == "cross-run" for i in cross_items(args.out, p["part"])]
        out[device] = {"parts": {p["part"]: p["date"] for p in mine},
                       **{f"interleaved, builds {k}": _design(v, lambda a: a["verdict"], lambda a: a["ratio"])
                          for k, v in sorted(by_builds.items())},
                       "cross-run": _design(cross, lambda i: i["verdict"], lambda i: i["ratio"])}
    return out


def _design(items: list[dict], verdict: Any, ratio: Any) -> dict:
    aa = [i for i in items if not i["slowdown"]]
    judged = [i for i in aa if verdict(i) in ("regressed", "improved")]
    logs = sorted(abs(math.log(ratio(i))) for i in aa if ratio(i))
    detected: dict[str, dict[float, list[bool]]] = defaultdict(lambda: defaultdict(list))
    for i in items:
        if i["slowdown"]:
            detected[i["kind"]][i["slowdown"]].append(verdict(i) == "regressed")
    return {"aa_trials": len(aa), "aa_verdicts": dict(Counter(verdict(i) for i in aa)), "aa_false_alarms": len(judged),
            "aa_within_1pct": sum(x <= math.log(1.01) for x in logs), "aa_within_2pct": sum(x <= math.log(1.02)
                                                                                            for x in logs),
            "aa_abs_log_ratio_p95": logs[int(0.95 * (len(logs) - 1))] if logs else None,
            "power": {k: {f"{f:.0%}": [sum(v), len(v)] for f, v in sorted(d.items())} for k, d in detected.items()},
            "smallest_at_95pct_power": {k: smallest(d) for k, d in detected.items()}}


def plain(args: Any) -> dict:
    """The plain A/A: the plan run twice, compared at compare's defaults (its goals in the JSON)."""
    from orchestrator.answers.compare import compare
    from orchestrator.results.read import load_results

    walls = {side: run(args.plan, args.out / side, args.out / f"{side}.log") for side in ("a", "b")}
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
    return {"part": "plain", "plan": str(args.plan), "wall_s": walls, "trials": len(items),
            "verdicts": dict(verdicts), "both_valid": len(both_valid), "within_2pct": len(within),
            "share_within_2pct": share, "goals_met": ok, "on_gpu": on_gpu, "items": items}


def print_table(res: dict) -> None:
    """The part's short table, last."""
    if res["part"] == "plain":
        print(f"A/A of {res['plan']} ({res['trials']} trials): {dict(res['verdicts'])}; valid in both runs "
              f"{res['both_valid']}, within {WITHIN:.0%}: {res['within_2pct']}")
        print("goals met" if res["goals_met"] else "GOALS NOT MET")
        return
    if res["part"] == "summary":
        for device, designs in res["summary"].items():
            print(f"{device}")
            for design, d in designs.items():
                if design == "parts":
                    continue
                print(f"  {design:12s} A/A: {d['aa_false_alarms']} verdicts of {d['aa_trials']} "
                      f"(within 1%: {d['aa_within_1pct']}, 2%: {d['aa_within_2pct']})")
                for k, levels in d["power"].items():
                    cells = "  ".join(f"{f}: {n}/{m}" for f, (n, m) in levels.items())
                    best = d["smallest_at_95pct_power"].get(k)
                    print(f"    {k:13s} found {cells}   smallest at 95%: {'-' if best is None else f'{best:.0%}'}")
        return
    items = res.get("arms") or res.get("items") or []
    print(f"{res['part']} on {res.get('device_name')} ({res['date']}), {res['wall_s']:.0f} s, rows {res['statuses']}")
    groups: dict[tuple[str, float], Counter] = defaultdict(Counter)
    for i in items:
        groups[(i["kind"], i["slowdown"])][i["verdict"]] += 1
    for (k, f), c in sorted(groups.items()):
        print(f"  {k:13s} slowdown {f:4.0%}: {', '.join(f'{n} {v}' for v, n in c.most_common())}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out", type=Path, help="output directory (a JSON per part; runs/, plans/ and logs)")
    ap.add_argument("--plan", type=Path, default=REPO / "plans" / "aa.yaml", help="plain and cross-run parts")
    ap.add_argument("--interleaved-plan", type=Path, default=REPO / "plans" / "aa-interleaved.yaml",
                    help="interleaved parts: sets of a base and its twin (the slowed arms are added)")
    ap.add_argument("--part", default="plain",
                    help="a part's name or a pattern of names ('cross-a-*'), list, summary, or plain (the default)")
    ap.add_argument("--budget-s", type=float, default=None,
                    help="with a pattern: start no part once the time left is less than the longest part seen")
    ap.add_argument("--part-max-s", type=float, default=0.0,
                    help="with --budget-s: the longest a part may take, before any part was seen")
    ap.add_argument("--process-repeats", type=int, default=PROCESS_REPEATS, help="cross-run parts: N processes")
    args = ap.parse_args()
    if args.part == "list":
        print("\n".join(["plain", *parts(), "summary"]))
        return
    if any(c in args.part for c in "*?["):
        if args.budget_s is not None and args.budget_s <= 0:
            raise SystemExit(f"--budget-s {args.budget_s}: expected seconds > 0")
        return several(args)
    if args.budget_s is not None:
        raise SystemExit("--budget-s: only with a pattern of parts (--part 'interleaved-*')")
    if args.part not in ("plain", "summary", *parts()):
        raise SystemExit(f"--part {args.part}: not a part; `--part list` lists them")
    one(args)


def several(args: argparse.Namespace) -> None:
    """The parts ``args.part`` names, in order, skipping those with a JSON in OUT_DIR, while the time
    left (``--budget-s``) is at least the longest part seen (this call's, the JSONs' ``part_s``, or
    ``--part-max-s``); says which are left, and exits 1 if a part failed."""
    from fnmatch import fnmatchcase

    names = [p for p in parts() if fnmatchcase(p, args.part)]
    if not names:
        raise SystemExit(f"--part {args.part}: names no part; `--part list` lists them")
    todo = [p for p in names if not (args.out / f"{p}.json").exists()]
    seen = [json.loads(f.read_text()).get("part_s") or 0 for f in args.out.glob("*.json")] if args.out.is_dir() else []
    t0, longest, done, failed = time.perf_counter(), max([args.part_max_s, *seen]), [], []
    for name in todo:
        if args.budget_s is not None and args.budget_s - (time.perf_counter() - t0) < longest:
            break
        t = time.perf_counter()
        try:
            one(argparse.Namespace(**{**vars(args), "part": name}))
        except SystemExit as exc:  # this part's run failed: its log says why; the others go on
            failed.append(f"{name} ({exc})")
        longest, done = max(longest, time.perf_counter() - t), [*done, name]
    rest = [p for p in todo if p not in done]
    print(f"parts: {len(names) - len(todo)} there before, {len(done)} run now ({longest:.0f} s the longest), "
          f"{len(rest)} left{': ' + ' '.join(rest) if rest else ''}")
    if failed:
        raise SystemExit("failed: " + "; ".join(failed))


def one(args: argparse.Namespace) -> None:
    for sub in ("plans", "runs"):
        (args.out / sub).mkdir(parents=True, exist_ok=True)
    shutil.rmtree(args.out / "runs" / args.part, ignore_errors=True)  # a part stopped midway: run it again
    t0 = time.perf_counter()
    if args.part == "plain":
        res = plain(args)
    elif args.part == "summary":
        res = {"part": "summary", "summary": summary(args)}
    elif args.part.startswith("interleaved-"):
        res = interleaved_part(args, args.part)
    else:
        res = cross_part(args, args.part)
    name = "aa" if args.part == "plain" else "aa-summary" if args.part == "summary" else args.part
    res["part_s"] = time.perf_counter() - t0
    (args.out / f"{name}.json").write_text(json.dumps(res, indent=2, default=str))
    print_table(res)
    if args.part == "plain":
        sys.exit(0 if res["goals_met"] else 1)


if __name__ == "__main__":
    main()
