"""Several requests in flight on one GPU (BENCHMARKS.md, "Several requests in flight", "How much traffic ...").

infer-orch's offline scenario against a hand-written loop, then server runs and find-peak. One
process, no Ray: the trials go through ``workers.trial.run_trial`` (the worker's own code path),
the hand loops are written out here.

1. Offline, ResNet-50 (random weights), batch 1 and 8, fp16 channels_last and fp32 (ORT: fp16 and
   fp32; ``ort`` binds device buffers, ``ort-graph`` adds ORT's CUDA graph, fp16 only), concurrency
   1, 2, 4, 8: samples/s of a hand-written k-stream loop (torch: CUDA-graph replay on k streams, one
   host thread each; ORT: k sessions with IO binding on k threads, a CUDA-graph session's first
   runs one at a time) and of infer-orch's offline trial, and their ratio (infer-orch / hand).
2. Server at 50%, 80% and 95% of the best offline throughput at batch 1 fp16 (Poisson arrivals,
   the concurrency that gave that best), then find-peak for p99 <= 5 ms.

Durations are short to fit about 6 minutes on an H100: each offline point runs ``--seconds``
(default 1 s) in each harness; each server run at least 2 s and 500 requests; find-peak has 25 s.
A point's ratio is as steady as a 1 s window allows (a few %); raise ``--seconds`` to tighten it.

    PYTHONPATH=$PWD python bench/scenarios_gpu.py --out /tmp/scen           # the whole thing
    PYTHONPATH=$PWD python bench/scenarios_gpu.py --out /tmp/scen --batches 1 --concurrency 1,4

Writes ``<out>/rows.parquet`` (every infer-orch row), ``<out>/offline.json`` and prints the tables
last (Markdown).
"""

from __future__ import annotations

import argparse
import json
import threading
import time
from pathlib import Path
from typing import Any

from orchestrator.plan.expand import expand
from orchestrator.plan.load import parse_plan
from workers.context import TrialContext
from workers.models.build import ModelStore
from workers.trial import run_trial

#: label -> (backend, options, dtypes it runs here)
CONFIGS = {
    "torch-cudagraph": ("torch-cudagraph", {}, ("fp16", "fp32")),
    "ort": ("ort", {"io_binding": True, "exporter": "torchscript"}, ("fp16", "fp32")),
    "ort-graph": ("ort", {"io_binding": True, "cuda_graph": True, "exporter": "torchscript"}, ("fp16",)),
}


def trial(label: str, batch: int, dtype: str, scenario: dict[str, Any], max_time_s: float = 30) -> Any:
    backend, options, _ = CONFIGS[label]
    if backend.startswith("torch") and dtype == "fp16":
        options = {**options, "channels_last": True}
    plan = {"name": "scenarios-gpu", "device": "cuda", "models": ["torchvision:resnet50"],
            "matrix": {"batch_sizes": [batch], "dtypes": [dtype], "io": ["device"],
                       "backends": [{"backend": backend, "label": label, "options": options}]},
            "measure": {"warmup_iters": 20, "max_time_s": max_time_s}, "timeout_s": 900,
            "scenario": scenario}
    (t,) = expand(parse_plan(plan))
    return t


def hand_torch(store: ModelStore, t: Any, ks: list[int], seconds: float) -> dict[int, float]:
    """CUDA-graph replay on k streams, one host thread each: samples/s per k."""
    import torch

    ctx = TrialContext(trial=t, device="cuda", store=store)
    model = ctx.torch_model()
    x = ctx.input()
    if t.options.get("channels_last"):
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side), torch.inference_mode():
        for _ in range(3):
            model(x)
    torch.cuda.current_stream().wait_stream(side)
    torch.cuda.synchronize()
    lanes = []
    for _ in range(max(ks)):
        sx = x.clone()
        g = torch.cuda.CUDAGraph()
        with torch.inference_mode(), torch.cuda.graph(g):
            sy = model(sx)
        lanes.append((g, torch.cuda.Stream(), sx, sy))
    torch.cuda.synchronize()

    def replay(lane: Any) -> None:
        g, s, _, _ = lane
        with torch.cuda.stream(s):
            g.replay()
        s.synchronize()

    out = {k: _loop([lambda lane=lane: replay(lane) for lane in lanes[:k]], seconds, t.batch_size) for k in ks}
    del lanes, model
    torch.cuda.synchronize()
    torch.cuda.empty_cache()
    return out


def hand_ort(store: ModelStore, t: Any, ks: list[int], seconds: float) -> dict[int, float]:
    """k ORT sessions with IO binding on k threads (a CUDA-graph session's first 2 runs one at a time)."""
    import numpy as np
    import onnxruntime as ort
    import torch

    ctx = TrialContext(trial=t, device="cuda", store=store)
    path = ctx.onnx_path(t.options.get("exporter", "dynamo"))
    graph = bool(t.options.get("cuda_graph"))
    so = ort.SessionOptions()
    so.log_severity_level = 3
    x = ctx.input()
    out: dict[int, float] = {}
    for k in ks:  # fresh sessions per k: a CUDA graph lives with the thread that captured it
        lanes = []
        for _ in range(k):
            sess = ort.InferenceSession(path, sess_options=so, providers=[(
                "CUDAExecutionProvider", {"device_id": "0", "enable_cuda_graph": "1" if graph else "0"})])
            o = sess.get_outputs()[0]
            shape = tuple(o.shape)
            if not all(isinstance(d, int) for d in shape):  # a dynamic output: one plain run tells
                probe = ort.InferenceSession(path, sess_options=so, providers=["CUDAExecutionProvider"])
                shape = probe.run(None, {probe.get_inputs()[0].name: x.cpu().numpy()})[0].shape
                del probe
            xi = x.clone()
            y = torch.empty(shape, dtype=x.dtype, device="cuda")
            b = sess.io_binding()
            np_dt = np.float16 if t.dtype == "fp16" else np.float32
            b.bind_input(sess.get_inputs()[0].name, "cuda", 0, np_dt, tuple(xi.shape), xi.data_ptr())
            b.bind_output(o.name, "cuda", 0, np_dt, tuple(shape), y.data_ptr())
            lanes.append((sess, b, xi, y))
        torch.cuda.synchronize()
        def first_runs(lane: Any, lock: threading.Lock = threading.Lock()) -> None:  # noqa: B008 - one lock per k
            with lock:  # captures one at a time
                for _ in range(2):
                    lane[0].run_with_iobinding(lane[1])

        # the thread that captures a session's graph must be the one that replays it: ``first`` runs
        # inside each lane's timing thread, one lane at a time, before any lane warms up
        out[k] = _loop([lambda lane=lane: lane[0].run_with_iobinding(lane[1]) for lane in lanes], seconds,
                       t.batch_size, first=first_runs if graph else None, lanes=lanes)
        del lanes
        torch.cuda.synchronize()
    return out


def _loop(bodies: list[Any], seconds: float, batch: int, first: Any = None, lanes: Any = None) -> float:
    """Every body on its own thread: warm-up 20 runs, then as many as fit in ``seconds``; samples/s.
    With ``first``, each thread first runs ``first(lane)`` itself (captures on the replaying thread)."""
    counts = [0] * len(bodies)
    barrier = threading.Barrier(len(bodies) + 1)
    captured = threading.Barrier(len(bodies))
    stop = [0.0]

    def run(i: int, body: Any) -> None:
        if first is not None:
            first(lanes[i])
        captured.wait()  # no lane warms up while another captures
        for _ in range(20):
            body()
        barrier.wait()
        barrier.wait()
        end = stop[0]
        n = 0
        while time.perf_counter() < end:
            body()
            n += 1
        counts[i] = n

    ts = [threading.Thread(target=run, args=(i, b)) for i, b in enumerate(bodies)]
    for t in ts:
        t.start()
    barrier.wait()
    t0 = time.perf_counter()
    stop[0] = t0 + seconds
    barrier.wait()
    for t in ts:
        t.join()
    return sum(counts) * batch / (time.perf_counter() - t0)


def main() -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from workers.schema import SCHEMA

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--batches", default="1,8")
    ap.add_argument("--concurrency", default="1,2,4,8")
    ap.add_argument("--labels", default=",".join(CONFIGS))
    ap.add_argument("--seconds", type=float, default=1.0, help="each offline point, in each harness")
    ap.add_argument("--bound-ms", type=float, default=5.0)
    ap.add_argument("--skip-server", action="store_true")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    ks = [int(k) for k in args.concurrency.split(",")]
    store = ModelStore()
    rows: list[dict[str, Any]] = []
    table: list[dict[str, Any]] = []
    t_start = time.perf_counter()

    def log(msg: str) -> None:
        print(f"[{time.perf_counter() - t_start:6.1f}s] {msg}", flush=True)

    for label in args.labels.split(","):
        for batch in (int(b) for b in args.batches.split(",")):
            for dtype in CONFIGS[label][2]:
                base = trial(label, batch, dtype, {"name": "offline", "concurrency": 1})
                try:
                    hand = (hand_torch if label.startswith("torch") else hand_ort)(store, base, ks, args.seconds)
                except Exception as exc:  # a hand loop that can't run (ORT's graph on k threads): say so
                    log(f"hand loop {label} bs{batch} {dtype}: {type(exc).__name__}: {str(exc)[:200]}")
                    hand = {}
                for k in ks:
                    t = trial(label, batch, dtype, {"name": "offline", "concurrency": k,
                                                   "min_duration_s": args.seconds, "min_requests": 50})
                    row = run_trial(t, "cuda", store)
                    rows.append(row)
                    got = row.get("throughput") if row["status"] == "ok" else None
                    h = hand.get(k)
                    table.append({"label": label, "batch": batch, "dtype": dtype, "k": k, "hand": h,
                                  "infer_orch": got, "ratio": got / h if got and h else None,
                                  "status": row["status"], "error": (row.get("error") or "")[:120],
                                  "p99_ms": row.get("latency_ms_p99")})
                    log(f"{label} bs{batch} {dtype} c={k}: hand {h or 0:.0f}/s, infer-orch {got or 0:.0f}/s "
                        f"({row['status']}) {table[-1]['error']}")
    (args.out / "offline.json").write_text(json.dumps(table, indent=1))

    serving: list[dict[str, Any]] = []
    if not args.skip_server:
        for label in args.labels.split(","):
            pts = [r for r in table if r["label"] == label and r["batch"] == 1 and r["dtype"] == "fp16"
                   and r["infer_orch"]]
            if not pts:
                continue
            best = max(pts, key=lambda r: r["infer_orch"])
            for share in (0.5, 0.8, 0.95):
                rate = share * best["infer_orch"]  # batch 1: samples/s = requests/s
                t = trial(label, 1, "fp16", {"name": "server", "concurrency": best["k"], "rates": round(rate, 1),
                                             "min_duration_s": 2, "min_requests": 500,
                                             "latency_bound_ms": args.bound_ms})
                row = run_trial(t, "cuda", store)
                rows.append(row)
                serving.append({"label": label, "k": best["k"], "what": f"server {share:.0%}", "rate": rate, **{
                    c: row.get(c) for c in ("schedule_rate", "achieved_rate", "latency_ms_p50", "latency_ms_p99",
                                            "late_requests", "issue_lag_ms_p99", "valid", "invalid_reasons",
                                            "status", "error")}})
                log(f"{label} server {share:.0%} ({rate:.0f}/s, c={best['k']}): p99 {row.get('latency_ms_p99')} ms, "
                    f"valid {row.get('valid')} {row.get('invalid_reasons') or row.get('error') or ''}")
            t = trial(label, 1, "fp16", {"name": "find-peak", "concurrency": best["k"],
                                         "latency_bound_ms": args.bound_ms, "min_duration_s": 1, "min_requests": 300},
                      max_time_s=25)
            row = run_trial(t, "cuda", store)
            rows.append(row)
            serving.append({"label": label, "k": best["k"], "what": f"find-peak p99<={args.bound_ms:g}ms",
                            "rate": row.get("peak_rate"), "schedule_rate": row.get("peak_rate_fail"),
                            **{c: row.get(c) for c in ("achieved_rate", "latency_ms_p50", "latency_ms_p99",
                                                       "late_requests", "issue_lag_ms_p99", "valid",
                                                       "invalid_reasons", "status", "error")}})
            log(f"{label} find-peak: {row.get('peak_rate')} (fails at {row.get('peak_rate_fail')}) "
                f"{row.get('error') or ''}")
    clean = [{k: v for k, v in r.items() if k != "_files"} for r in rows]
    pq.write_table(pa.Table.from_pylist(clean, schema=SCHEMA), args.out / "rows.parquet")
    (args.out / "serving.json").write_text(json.dumps(serving, indent=1, default=str))

    print(f"\nOffline, ResNet-50 on {rows[0].get('device_name') if rows else '?'}: samples/s, hand-written "
          f"k-stream loop vs infer-orch offline ({args.seconds:g} s each)\n")
    print("| backend | batch | dtype | k | hand | infer-orch | ratio | note |\n"
          "| --- | ---: | --- | ---: | ---: | ---: | ---: | --- |")
    for r in table:
        note = r["status"] if r["status"] != "ok" else ""
        print(f"| {r['label']} | {r['batch']} | {r['dtype']} | {r['k']} | {r['hand'] or 0:,.0f} | "
              f"{r['infer_orch'] or 0:,.0f} | {r['ratio'] or 0:.3f} | {note} {r['error']} |")
    if serving:
        print("\nServing, batch 1 fp16 (rates in requests/s; find-peak: rate = the peak found, schedule = the "
              "lowest failing rate)\n")
        print("| backend | k | run | rate | schedule | achieved | p50 ms | p99 ms | late | valid |\n"
              "| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |")
        for s in serving:
            f = lambda v, spec=",.1f": "-" if v is None else format(v, spec)  # noqa: E731
            print(f"| {s['label']} | {s['k']} | {s['what']} | {f(s['rate'])} | {f(s['schedule_rate'])} | "
                  f"{f(s['achieved_rate'])} | {f(s['latency_ms_p50'], '.3f')} | {f(s['latency_ms_p99'], '.3f')} | "
                  f"{s['late_requests'] if s['late_requests'] is not None else '-'} | "
                  f"{s['valid'] if s['status'] == 'ok' else s['status']} {'; '.join(s['invalid_reasons'] or [])} |")
    print(f"\n({time.perf_counter() - t_start:.0f} s)")


if __name__ == "__main__":
    main()
