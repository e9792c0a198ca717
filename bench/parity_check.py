"""GPU parity errors by backend and TF32 setting (BENCHMARKS.md, "How close are the backends' outputs?").

For each model and batch size (fp32 on the GPU), the max |y - ref| / max |ref| of:
torch eager with TF32 on (torch's default for cuDNN convolutions) and off; ORT ``run``; ORT IO
binding; ORT IO binding + CUDA graph through infer-orch's runner (several replays, then read);
each against the torch fp32 output with TF32 off. Prints a table last.

    python3 bench/parity_check.py [--models mobilenet_v3_large,resnet50] [--batch-sizes 1,8]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def main() -> int:
    import numpy as np
    import torch

    from orchestrator.plan.expand import expand
    from orchestrator.plan.load import parse_plan
    from workers.backends import get
    from workers.context import TrialContext
    from workers.measure.parity import _tf32_off, compare
    from workers.models.build import ModelStore

    ap = argparse.ArgumentParser()
    ap.add_argument("--models", default="mobilenet_v3_large,resnet50")
    ap.add_argument("--batch-sizes", default="1,8")
    ap.add_argument("--dtypes", default="fp32")
    args = ap.parse_args()
    store = ModelStore()
    entries = [
        {"backend": "torch-eager", "label": "eager"},
        {"backend": "ort", "label": "ort-run", "io": ["host"]},
        {"backend": "ort", "label": "ort-iobind", "options": {"io_binding": True}},
        {"backend": "ort", "label": "ort-iobind-graph", "options": {"io_binding": True, "cuda_graph": True}},
    ]
    data = {"name": "pc", "device": "cuda", "models": [f"torchvision:{m}" for m in args.models.split(",")],
            "matrix": {"batch_sizes": [int(b) for b in args.batch_sizes.split(",")],
                       "dtypes": args.dtypes.split(","), "io": ["device"], "backends": entries}}
    lines = []
    refs: dict = {}
    for t in expand(parse_plan(data)):
        key = (t.model.name, t.batch_size)
        if key not in refs:
            model = store.torch_model(t.model, "cuda", "fp32")
            ctx = TrialContext({**t, "dtype": "fp32"}, "cuda", store)
            x = ctx.input()
            with torch.inference_mode():
                with _tf32_off("cuda"):
                    ref = model(x).float().cpu().numpy()
                tf32 = model(x).float().cpu().numpy()
            refs[key] = ref
            lines.append((*key, "fp32", "torch eager, TF32 on (default)", compare(tf32, ref)["parity_max_rel_err"]))
        ref = refs[key]
        cls = get(t.backend)
        for variant in ("", "+sync"):
            with cls(TrialContext(t, "cuda", store), cls.Options.model_validate(t.options)) as r:
                for _ in range(5):
                    r.step()
                if variant:
                    torch.cuda.synchronize()
                y = r.output()
            lines.append((*key, t.dtype, t.label + variant, compare(y, ref)["parity_max_rel_err"]))
            if not np.all(np.isfinite(y)):
                lines[-1] = (*lines[-1][:4], float("nan"))
    print("| model | batch | dtype | variant | max rel err vs fp32 TF32-off |")
    print("| --- | ---: | --- | --- | ---: |")
    for m, b, d, v, e in lines:
        print(f"| {m} | {b} | {d} | {v} | {e:.4f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
