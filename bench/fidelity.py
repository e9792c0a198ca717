"""Do infer-orch's numbers match a hand-written loop? (BENCHMARKS.md, "One request at a time").

Three measurements, in this order:

1. Ratios. For each variant (torch eager, torch CUDA graph, ORT ``run`` with numpy, ORT IO binding,
   ORT IO binding + CUDA graph) x batch x dtype, in one process on the GPU (one process per batch
   and dtype; a case that crashes its process is recorded and the rest go on in a fresh one): a hand-written loop
   (``bench/hand.py``) and infer-orch's own path (``workers.trial.run_trial``: runner, adaptive
   sampling, statistics, parity) time the same model, weights, input and ONNX file, interleaved
   (hand, infer-orch, hand). Ratio = infer-orch median / mean of the two hand medians, all from
   CUDA events around each inference. Goal 1.00 +- 0.02.
2. Harness overhead per iteration: a tiny model under CUDA-graph replay (a few us of GPU work),
   N iterations of the hand loop vs N of ``workers.measure.timing.measure`` (with its CI checks), wall
   time difference / N. Goal <= 5 us. On a GPU also the cost of the sampler thread that reads the
   GPU's process list during timing (``workers.measure.sampler``, for ``contended``): the same loop with it
   running at ``SAMPLER_STRESS_PERIOD_S`` (1 ms, 500x its real rate), difference / N; and one NVML
   read's time. At the real 0.5 s period the cost is that over 500.
3. Reproducibility: one trial measured in 5 fresh processes; CV of their medians. Goal <= 1%.

Usage::

    python bench/fidelity.py OUT_DIR            # on a GPU: ResNet-50, batch 1 and 256, fp32 and fp16
    python bench/fidelity.py OUT_DIR --quick    # on a CPU: a tiny model, few iterations (a smoke test)
    python bench/fidelity.py OUT_DIR --bert     # on a GPU: the ratios only, BERT-base seq 128 batch 8 fp16
    python bench/fidelity.py OUT_DIR --overhead # measurement 2 only: the harness's and the sampler's cost

Writes OUT_DIR/fidelity.json and OUT_DIR/fidelity.csv, and prints a short table last.
"""

from __future__ import annotations

import argparse
import base64
import csv
import json
import os
import pickle
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script: make the repository's packages importable
    sys.path.insert(0, str(REPO))

from bench import hand  # noqa: E402

GPU_VARIANTS = ["torch-eager", "torch-cudagraph", "ort-run", "ort-iobind", "ort-iobind-graph"]
CPU_VARIANTS = ["torch-eager", "ort-run", "ort-iobind"]
ENTRIES = {
    "torch-eager": {"backend": "torch-eager", "io": ["device"]},
    "torch-cudagraph": {"backend": "torch-cudagraph", "io": ["device"]},
    "ort-run": {"backend": "ort", "label": "ort-run", "io": ["host"]},
    "ort-iobind": {"backend": "ort", "label": "ort-iobind", "io": ["device"], "options": {"io_binding": True}},
    "ort-iobind-graph": {"backend": "ort", "label": "ort-iobind-graph", "io": ["device"],
                         "options": {"io_binding": True, "cuda_graph": True}},
}
GPU_MEASURE = {"warmup_iters": 10, "iters": 50, "min_time_s": 1.0, "max_time_s": 5.0, "warmup_max_s": 2.0}
#: Seconds after which the ratio section stops starting new cases (the whole script must stay < 8 min).
RATIO_BUDGET_S = 330
#: The sampler's period in the overhead section: far faster than its real one, so its cost shows.
SAMPLER_STRESS_PERIOD_S = 0.001
CPU_MEASURE = {"warmup_iters": 2, "iters": 10, "min_time_s": 0.0, "max_time_s": 1.0, "warmup_max_s": 0.5}


#: ``--bert``: the transformer fidelity point: BERT-base, seq 128, batch 8, fp16.
BERT = {"model": {"hf": "bert-base", "axes": {"seq": 128}}, "batches": [8], "dtypes": ["fp16"],
        "variants": ["torch-cudagraph", "ort-iobind"]}


def config(quick: bool, bert: bool = False) -> dict[str, Any]:
    if bert:
        return {**config(False), **BERT, "bert": True}
    if quick:
        return {"device": "cpu", "model": {"python": "bench.tiny:make", "input_shape": [3, 32, 32]},
                "batches": [1, 8], "dtypes": ["fp32"], "variants": CPU_VARIANTS, "measure": CPU_MEASURE,
                "hand": {"warmup": 5, "min_iters": 20, "min_time_s": 0.2, "max_iters": 200}, "settle_s": 0.0,
                "overhead_iters": 2000, "repro": {"runs": 3, "variant": "torch-eager", "batch": 8, "dtype": "fp32"}}
    return {"device": "cuda", "model": "torchvision:resnet50", "batches": [1, 256], "dtypes": ["fp32", "fp16"],
            "variants": GPU_VARIANTS, "measure": GPU_MEASURE,
            "hand": {"warmup": 20, "min_iters": 50, "min_time_s": 1.0, "max_iters": 400}, "settle_s": 3.0,
            "overhead_iters": 5000,
            "repro": {"runs": 5, "variant": "torch-cudagraph", "batch": 256, "dtype": "fp16"}}


def make_trial(cfg: dict[str, Any], variant: str, batch: int, dtype: str) -> dict[str, Any]:
    from orchestrator.plan.expand import expand
    from orchestrator.plan.load import parse_plan

    entry = {k: v for k, v in ENTRIES[variant].items() if k != "options"}
    entry["options"] = dict(ENTRIES[variant].get("options", {}))
    if entry["backend"] == "ort" and cfg["device"] == "cuda":
        entry["options"]["providers"] = ["cuda"]
    data = {"name": "fidelity", "device": cfg["device"], "models": [cfg["model"]],
            "matrix": {"batch_sizes": [batch], "dtypes": [dtype], "backends": [entry]}, "measure": cfg["measure"]}
    (trial,) = expand(parse_plan(data, base_dir=str(REPO)))
    return trial


def ratios(cfg: dict[str, Any], log: Any) -> list[dict[str, Any]]:
    """Every (batch, dtype) group's cases in one child process (hand loop and runner share it).

    A case that kills its process (a segfault in a provider) is recorded as ``crashed`` with the
    signal, and the group's remaining cases go on in a fresh process.
    """
    out: list[dict[str, Any]] = []
    deadline = time.time() + RATIO_BUDGET_S
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    for batch in cfg["batches"]:
        for dtype in cfg["dtypes"]:
            todo = list(cfg["variants"])
            while todo:
                arg = json.dumps({"quick": cfg["device"] == "cpu", "bert": cfg.get("bert", False),
                                  "batch": batch, "dtype": dtype,
                                  "variants": todo, "deadline": deadline})
                proc = subprocess.Popen([sys.executable, __file__, "--ratio-child", arg], stdout=subprocess.PIPE,
                                        text=True, env=env)
                assert proc.stdout is not None
                for line in proc.stdout:
                    if line.startswith("RATIO "):
                        rec = json.loads(line[6:])
                        out.append(rec)
                        todo.remove(rec["variant"])
                        _log_case(log, rec)
                    else:
                        print(line, end="", flush=True)
                rc = proc.wait()
                if todo and rc != 0:  # the case in progress took its process down
                    rec = {"variant": todo.pop(0), "batch": batch, "dtype": dtype, "status": "crashed",
                           "hand_ms": None, "infer_orch_ms": None, "ratio": None,
                           "error": f"the process died (exit {rc}{', signal ' + str(-rc) if rc < 0 else ''})"}
                    out.append(rec)
                    _log_case(log, rec)
                elif todo:  # past the deadline: the child left these out
                    for v in todo:
                        log(f"{v} b{batch} {dtype}: not run, past the {RATIO_BUDGET_S} s budget")
                    todo = []
    return out


def _log_case(log: Any, rec: dict[str, Any]) -> None:
    log(f"{rec['variant']:17s} b{rec['batch']:<4d} {rec['dtype']}: hand {_fmt(rec['hand_ms'], '.4f')} ms  "
        f"infer-orch {_fmt(rec['infer_orch_ms'], '.4f')} ms  ratio {_fmt(rec['ratio'])}  {rec['status']}"
        + (f"  {rec['error']}" if rec.get("error") else ""))


def ratio_child(arg: str) -> None:
    from workers.models.build import ModelStore, onnx_artifact
    from workers.trial import run_trial

    spec = json.loads(arg)
    cfg = config(spec["quick"], spec.get("bert", False))
    _threads(cfg["device"])
    store = ModelStore(0)
    for variant in spec["variants"]:
        if time.time() > spec["deadline"]:
            return
        try:
            rec = _case(cfg, store, variant, spec["batch"], spec["dtype"], onnx_artifact, run_trial)
        except Exception as exc:  # a broken case is a result too; the others still run
            rec = {"variant": variant, "batch": spec["batch"], "dtype": spec["dtype"], "status": "bench_error",
                   "hand_ms": None, "infer_orch_ms": None, "ratio": None, "error": f"{type(exc).__name__}: {exc}"}
            _free(cfg["device"])
        print("RATIO " + json.dumps(rec, default=str), flush=True)


def _case(cfg: dict[str, Any], store: Any, variant: str, batch: int, dtype: str, onnx_artifact: Any,
          run_trial: Any) -> dict[str, Any]:
    device = cfg["device"]
    trial = make_trial(cfg, variant, batch, dtype)
    t0 = time.perf_counter()
    if variant.startswith("ort"):
        onnx_artifact(store, trial.model, batch, dtype, axes=trial.axes)  # the export is neither side's time
    step, cleanup = hand.make_step(variant, store, trial.model, batch, dtype, device, trial.seed, trial.axes)
    # the GPU busy for settle_s first: its first second of load after an idle setup ran faster than the
    # rest (BERT-base b8 on an H200: 0.915 ms, then 0.98 ms in both harnesses), which no side should get
    hand.time_loop(step, device, warmup=0, min_iters=1, min_time_s=cfg["settle_s"], max_iters=10**7)
    # hand, infer-orch, hand: drift within the process (clocks, the VM's neighbours) hits both alike
    before = hand.median(hand.time_loop(step, device, **cfg["hand"]))
    t1 = time.perf_counter()
    row = run_trial(trial, device, store)
    t2 = time.perf_counter()
    after = hand.median(hand.time_loop(step, device, **cfg["hand"]))
    hand_ms = (before + after) / 2
    cleanup()
    del step
    _free(device)
    ours = row.get("latency_ms_median")
    return {"variant": variant, "batch": batch, "dtype": dtype, "status": row["status"],
            "hand_ms": hand_ms, "infer_orch_ms": ours, "ratio": ours / hand_ms if ours else None,
            "iters": row.get("iters"), "converged": row.get("converged"),
            "ci_rel": _ci_rel(row), "parity_max_rel_err": row.get("parity_max_rel_err"),
            "hand_ms_before": before, "hand_ms_after": after, "error": row.get("error"),
            "trial_s": t2 - t1, "case_s": time.perf_counter() - t0}


def _ci_rel(row: dict[str, Any]) -> float | None:
    med, lo, hi = row.get("latency_ms_median"), row.get("latency_ms_ci_low"), row.get("latency_ms_ci_high")
    return max(med - lo, hi - med) / med if med and lo is not None else None


def _free(device: str) -> None:
    import gc

    gc.collect()
    if device == "cuda":
        import torch

        torch.cuda.synchronize()
        torch.cuda.empty_cache()


def overhead(cfg: dict[str, Any], store: Any) -> dict[str, Any]:
    """Harness cost per iteration: infer-orch's measure loop vs the bare hand loop, same step."""
    import torch

    from workers.backends import get
    from workers.context import TrialContext
    from workers.contract import MeasureSpec
    from workers.measure.timing import CudaTimer, HostTimer, measure

    device = cfg["device"]
    variant = "torch-cudagraph" if device == "cuda" else "torch-eager"
    spec_model = {"python": "bench.tiny:make", "input_shape": [3, 32, 32]}
    trial = make_trial({**cfg, "model": spec_model}, variant, 1, "fp32")
    cls = get(variant)
    runner = cls(TrialContext(trial, device, store), cls.Options())
    runner.setup()
    n = cfg["overhead_iters"]
    timer = CudaTimer() if device == "cuda" else HostTimer()

    def hand_loop() -> float:
        # the minimal loop that keeps one sample per inference, as infer-orch does
        kept: list[float] = []
        t = time.perf_counter()
        if device == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            for _ in range(n):
                start.record()
                runner.step()
                end.record()
                end.synchronize()
                kept.append(start.elapsed_time(end))
        else:
            for _ in range(n):
                t0 = time.perf_counter()
                runner.step()
                kept.append(time.perf_counter() - t0)
        return time.perf_counter() - t

    from workers.measure import envinfo

    uuid = envinfo.device_facts(device)["gpu_uuid"] if device == "cuda" else None
    watched = device == "cuda" and envinfo.other_gpu_processes(uuid) is not None  # NVML answers

    def ours(sampled: bool = False) -> tuple[float, Any, int | None]:
        watch = envinfo.GpuWatch(uuid, period_s=SAMPLER_STRESS_PERIOD_S) if sampled else None
        t = time.perf_counter()
        # target never met: the loop runs to max_iters with its CI checks, the worst case
        s = measure(runner.step, timer, MeasureSpec(warmup_iters=0, warmup_max_iters=0, iters=min(200, n),
                                                    target_rel_ci=1e-9, max_iters=n, max_time_s=1e9),
                    on_timed=watch)
        elapsed = time.perf_counter() - t
        return elapsed, s, watch.finish()["contention_checks"] if watch is not None else None

    for _ in range(200):
        runner.step()
    timer.synchronize()
    diffs, sampler, samples, checks = [], [], None, None
    for _ in range(5):  # alternate, so drift hits all alike
        h = hand_loop()
        o, samples, _ = ours()
        diffs.append((o - h) / n * 1e6)
        if watched:
            w, _, checks = ours(sampled=True)
            sampler.append((w - o) / n * 1e6)
    runner.teardown()
    diffs.sort()
    sampler.sort()
    dev = hand.median(samples.device_ms)
    host = hand.median(samples.host_ms)
    out = {"variant": variant, "iters": n, "overhead_us": diffs[len(diffs) // 2], "overhead_us_all": diffs,
           "step_device_us": dev * 1e3, "step_host_us": host * 1e3}
    if watched:
        t = time.perf_counter()
        for _ in range(100):
            envinfo.other_gpu_processes(uuid)
        out.update(sampler_period_s=SAMPLER_STRESS_PERIOD_S, sampler_us=sampler[len(sampler) // 2],
                   sampler_us_all=sampler, sampler_checks=checks,
                   nvml_read_us=(time.perf_counter() - t) / 100 * 1e6)
    return out


def repro(cfg: dict[str, Any], log: Any) -> dict[str, Any]:
    """The same trial in fresh processes: the spread of its median between runs."""
    r = cfg["repro"]
    trial = make_trial(cfg, r["variant"], r["batch"], r["dtype"])
    medians = []
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    for i in range(r["runs"]):
        arg = json.dumps({"trial": base64.b64encode(pickle.dumps(trial)).decode(), "device": cfg["device"]})
        proc = subprocess.run([sys.executable, __file__, "--child", arg], capture_output=True, text=True, env=env,
                              timeout=300)
        if proc.returncode != 0:
            raise RuntimeError(f"child {i} failed:\n{proc.stderr[-2000:]}")
        res = json.loads(proc.stdout.strip().splitlines()[-1])
        if res["status"] != "ok":
            raise RuntimeError(f"child {i}: {res['status']}: {res['error']}")
        medians.append(res["median"])
        log(f"fresh process {i + 1}/{r['runs']}: median {res['median']:.4f} ms ({res['iters']} iters)")
    import numpy as np

    m = np.asarray(medians)
    return {**r, "medians_ms": medians, "cv": float(m.std(ddof=1) / m.mean())}


def child(arg: str) -> None:
    from workers.models.build import ModelStore
    from workers.trial import run_trial

    spec = json.loads(arg)
    _threads(spec["device"])
    trial = pickle.loads(base64.b64decode(spec["trial"]))
    row = run_trial(trial, spec["device"], ModelStore(trial.seed))
    print(json.dumps({"status": row["status"], "error": row.get("error"), "median": row.get("latency_ms_median"),
                      "iters": row.get("iters")}))


def _threads(device: str) -> None:
    """On a CPU, one intra-op thread, as an infer-orch worker with one CPU has (and both sides use)."""
    if device == "cpu":
        import torch

        torch.set_num_threads(1)


def _fmt(x: float | None, spec: str = ".3f") -> str:
    return "-" if x is None else format(x, spec)


def table(res: dict[str, Any]) -> str:
    lines = [f"fidelity on {res['device_name']} ({res['device']}), {res['total_s']:.0f} s",
             f"{'variant':17s} {'batch':>5s} {'dtype':5s} {'hand ms':>10s} {'ours ms':>10s} {'ratio':>6s}  ok?"]
    for r in res["ratios"]:
        ok = r["ratio"] is not None and abs(r["ratio"] - 1) <= 0.02
        lines.append(f"{r['variant']:17s} {r['batch']:5d} {r['dtype']:5s} {_fmt(r['hand_ms'], '10.4f'):>10s} "
                     f"{_fmt(r['infer_orch_ms'], '10.4f'):>10s} {_fmt(r['ratio']):>6s}  "
                     f"{'yes' if ok else 'NO ' + (r['status'] if r['status'] != 'ok' else '')}")
    if "overhead" not in res:  # --bert: the ratios only
        return "\n".join(lines)
    o = res["overhead"]
    if "error" in o:
        lines.append(f"harness overhead: failed: {o['error']}")
    else:
        lines.append(f"harness overhead ({o['variant']}, tiny model, step {o['step_device_us']:.1f} us device): "
                     f"{o['overhead_us']:.2f} us/iter (goal <= 5)")
        if "sampler_us" in o:
            lines.append(f"contention sampler at a {o['sampler_period_s'] * 1e3:g} ms period ({o['sampler_checks']} "
                         f"reads, {o['nvml_read_us']:.0f} us each): {o['sampler_us']:+.2f} us/iter; at its real "
                         f"0.5 s period ~{o['sampler_us'] * o['sampler_period_s'] / 0.5:+.3f} us/iter")
    p = res.get("repro", {"error": "not run (--overhead)"})
    if "error" in p:
        lines.append(f"reproducibility: failed: {p['error']}")
    else:
        lines.append(f"reproducibility ({p['variant']} b{p['batch']} {p['dtype']}, {p['runs']} fresh processes): "
                     f"CV of medians {100 * p['cv']:.2f}% (goal <= 1%)")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out", nargs="?", default=os.environ.get("OUT"), help="output directory (default: $OUT)")
    ap.add_argument("--quick", action="store_true", help="CPU smoke test: tiny model, few iterations")
    ap.add_argument("--bert", action="store_true", help="only the ratios, for BERT-base seq 128 batch 8 fp16 "
                                                        "(torch CUDA graph and ORT IO binding)")
    ap.add_argument("--overhead", action="store_true", help="only the harness overhead and the sampler's cost "
                                                            "(measurement 2)")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--ratio-child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return child(args.child)
    if args.ratio_child:
        return ratio_child(args.ratio_child)
    if not args.out:
        ap.error("give an output directory (or set $OUT)")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("INFER_ORCH_CACHE", str(out / "cache"))
    cfg = config(args.quick, args.bert)
    _threads(cfg["device"])

    def log(msg: str) -> None:
        print(msg, flush=True)

    from workers.measure import envinfo
    from workers.models.build import ModelStore

    t0 = time.perf_counter()
    store = ModelStore(0)
    env = envinfo.environment(cfg["device"])
    res: dict[str, Any] = {"device": cfg["device"], "device_name": env.get("device_name"), "environment": env,
                           "config": cfg}
    res["ratios"] = [] if args.overhead else ratios(cfg, log)
    more = (("overhead", lambda: overhead(cfg, store)), ("repro", lambda: repro(cfg, log)))
    for key, fn in () if args.bert else more[:1] if args.overhead else more:
        try:
            res[key] = fn()
        except Exception as exc:
            res[key] = {"error": f"{type(exc).__name__}: {exc}"}
            log(f"{key} failed: {res[key]['error']}")
    res["total_s"] = time.perf_counter() - t0
    (out / "fidelity.json").write_text(json.dumps(res, indent=2, default=str))
    if res["ratios"]:
        with open(out / "fidelity.csv", "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(max(res["ratios"], key=len)), extrasaction="ignore")
            w.writeheader()
            w.writerows(res["ratios"])
    print(table(res))


if __name__ == "__main__":
    main()
