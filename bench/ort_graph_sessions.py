"""Does ORT's CUDA graph give right answers when a process holds or held other sessions?

Each sequence of trials runs through infer-orch's own path (``run_trial``) in a fresh process, so
a sequence that crashes its process is recorded and the rest go on. Trials are ``G`` (ORT IO
binding + CUDA graph), ``R`` (ORT session.run), ``E`` (torch eager), ``TC`` (torch CUDA graph);
``G*2`` is one trial with two repeats (two sessions, one after the other); ``H+`` first makes a
hand-written ORT CUDA-graph session of the same model that stays alive during the trial.
Prints, last, a table: sequence, batch, dtype, then each trial's status and parity error.

    python3 bench/ort_graph_sessions.py [--model mobilenet_v3_large] [--batches 8,256] [--dtypes fp32]

``--steps`` instead follows one runner (no trial around it): the parity error of its output after
each of its first steps, with and without CUDA events around the steps.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

SEQUENCES = ["G", "G G", "G*2", "TC G", "R G", "G R", "E TC R G*2", "H+G", "G*3"]
ENTRIES = {
    "G": {"backend": "ort", "label": "G", "options": {"io_binding": True, "cuda_graph": True}},
    "R": {"backend": "ort", "label": "R", "io": ["host"]},
    "E": {"backend": "torch-eager", "label": "E"},
    "TC": {"backend": "torch-cudagraph", "label": "TC"},
}


def _trial(model: str, batch: int, dtype: str, token: str) -> dict[str, Any]:
    from orchestrator.expand import expand
    from orchestrator.plan import parse_plan

    name, _, reps = token.partition("*")
    data = {"name": "ogs", "device": "cuda", "models": [f"torchvision:{model}"],
            "matrix": {"batch_sizes": [batch], "dtypes": [dtype], "io": ["device"], "backends": [ENTRIES[name]]},
            "measure": {"warmup_iters": 5, "iters": 20, "warmup_max_s": 1, "max_time_s": 1,
                        "repeats": int(reps or 1)}}
    (t,) = expand(parse_plan(data))
    return t


def child(arg: str) -> None:
    from bench import hand
    from workers.models import ModelStore
    from workers.trial import run_trial

    spec = json.loads(arg)
    store = ModelStore()
    keep: Any = None
    for token in spec["seq"].split():
        hand_first = token.startswith("H+")
        token = token.removeprefix("H+")
        t = _trial(spec["model"], spec["batch"], spec["dtype"], token)
        if hand_first:
            step, cleanup = hand.make_step("ort-iobind-graph", store, t.model, spec["batch"], spec["dtype"], "cuda")
            for _ in range(5):
                step()
            keep = (step, cleanup)
        row = run_trial(t, "cuda", store)
        print("TRIAL " + json.dumps({"token": token, "status": row["status"],
                                     "err": row.get("parity_max_rel_err"),
                                     "error": (row.get("error") or "")[:160]}), flush=True)
    del keep


def _report(model: str, batch: int, dtype: str, session: str, timing: str, errs: list[float]) -> None:
    """One table line: the error after each step, the first step over the dtype's parity tolerance."""
    from workers.contract import DEFAULT_TOLERANCE

    bad = [i + 1 for i, e in enumerate(errs) if e > DEFAULT_TOLERANCE[dtype]]
    print(f"| {model} | {batch} | {dtype} | {session} | {timing} | {' '.join(f'{e:.3g}' for e in errs[:12])} | "
          f"{bad[:1] or '-'} | {len(bad)} of {len(errs)} |", flush=True)


def steps(model: str, batch: int, dtype: str, n: int) -> None:
    import torch

    from workers.backends import get
    from workers.context import TrialContext
    from workers.models import ModelStore
    from workers.parity import compare, reference_output

    store = ModelStore()
    base = _trial(model, batch, dtype, "G")
    ref = reference_output(base, "cuda", store)
    cls = get("ort")
    variants = {"graph": {"io_binding": True, "cuda_graph": True}, "bind": {"io_binding": True}}
    for name, opts in variants.items():
        for events in (False, True):
            t = {**base, "options": opts}
            errs = []
            with cls(TrialContext(t, "cuda", store), cls.Options.model_validate(opts)) as r:
                for _ in range(n):
                    if events:
                        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                        a.record()
                        r.step()
                        b.record()
                        b.synchronize()
                    else:
                        r.step()
                    y = r.output()
                    errs.append(compare(y, ref)["parity_max_rel_err"])
            _report(model, batch, dtype, name, "events" if events else "plain", errs)


def plain_first(model: str, batch: int, dtype: str, n: int) -> None:
    """ORT by hand: a CUDA-graph session whose first run is a plain session.run, then bound runs."""
    import onnxruntime as ort
    import torch

    from workers.models import ModelStore, make_input, onnx_export
    from workers.parity import compare, reference_output

    store = ModelStore()
    t = _trial(model, batch, dtype, "G")
    ref = reference_output(t, "cuda", store)
    path, _ = onnx_export(store, t.model, batch, dtype)
    for first_plain in (True, False):
        sess = ort.InferenceSession(str(path), providers=[("CUDAExecutionProvider", {"enable_cuda_graph": "1"})])
        x = make_input(t.model, batch, dtype, "cpu", t.seed).numpy()
        name, out = sess.get_inputs()[0].name, sess.get_outputs()[0]
        if first_plain:
            sess.run(None, {name: x})
        dx = torch.from_numpy(x).cuda()
        dy = torch.full(tuple(out.shape), -7.0, dtype=dx.dtype, device="cuda")
        b = sess.io_binding()
        b.bind_input(name, "cuda", 0, x.dtype, tuple(x.shape), dx.data_ptr())
        b.bind_output(out.name, "cuda", 0, x.dtype, tuple(out.shape), dy.data_ptr())
        errs = []
        for _ in range(n):
            sess.run_with_iobinding(b)
            errs.append(compare(dy.float().cpu().numpy(), ref)["parity_max_rel_err"])
        _report(model, batch, dtype, f"by hand, {'plain run first' if first_plain else 'bound runs only'}", "-", errs)
        del b, sess


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="mobilenet_v3_large")
    ap.add_argument("--batches", default="8,256")
    ap.add_argument("--dtypes", default="fp32")
    ap.add_argument("--sequences", default=",".join(SEQUENCES))
    ap.add_argument("--child")
    ap.add_argument("--steps", type=int, default=0)
    args = ap.parse_args()
    if args.steps:
        print("| model | batch | dtype | runner | timing | rel err after steps 1..12 | first bad step | bad |")
        print("| --- | ---: | --- | --- | --- | --- | ---: | --- |")
        for batch in [int(b) for b in args.batches.split(",")]:
            for dtype in args.dtypes.split(","):
                plain_first(args.model, batch, dtype, args.steps)
                steps(args.model, batch, dtype, args.steps)
        return 0
    if args.child:
        child(args.child)
        return 0
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    table = []
    for batch in [int(b) for b in args.batches.split(",")]:
        for dtype in args.dtypes.split(","):
            for seq in args.sequences.split(","):
                spec = {"model": args.model, "batch": batch, "dtype": dtype, "seq": seq}
                proc = subprocess.run([sys.executable, __file__, "--child", json.dumps(spec)], env=env,
                                      capture_output=True, text=True, timeout=300)
                trials = [json.loads(x[6:]) for x in proc.stdout.splitlines() if x.startswith("TRIAL ")]
                cells = [f"{t['token']}: {t['status']} {t['err'] if t['err'] is None else round(t['err'], 4)}"
                         + (f" ({t['error']})" if t["status"] != "ok" else "") for t in trials]
                if proc.returncode:
                    cells.append(f"process died (exit {proc.returncode}): {proc.stderr.strip()[-200:]}")
                line = f"| {seq} | {batch} | {dtype} | {'; '.join(cells)} |"
                print(line, flush=True)
                table.append(line)
    print("\n| sequence | batch | dtype | trials: status, parity max rel err |\n| --- | ---: | --- | --- |")
    print("\n".join(table))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
