"""Where a worker's first model trial's setup goes, phase by phase, in a fresh process.

    python3 bench/first_trial.py [--model resnet50] [--dtype fp16] [--runs 3]

Each run is a new Python process (as a fresh worker is) that has already imported torch and made
its CUDA context (a warm worker does both as it starts), then: imports torchvision, builds the model
with seeded random weights, re-estimates BatchNorm statistics (as ``workers.models`` does), copies it to the
GPU in the trial's dtype, and runs the first two forwards (cuDNN/cuBLAS handles and kernel loading
happen in the first). Prints the median of each phase over the runs.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys

CHILD = r"""
import json, sys, time
t = time.perf_counter()
phases = {}
def mark(name):
    global t
    now = time.perf_counter(); phases[name] = now - t; t = now
import torch; mark("import torch")
torch.set_num_threads(int(sys.argv[3])); torch.zeros(1, device="cuda"); torch.cuda.synchronize(); mark("CUDA context")
import torchvision; mark("import torchvision")
dtype = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[sys.argv[2]]
torch.manual_seed(0)
m = torchvision.models.get_model(sys.argv[1], weights=None); mark("build (random init)")
# what workers.models.calibrate_batchnorm does (imported here, it would need pydantic on the GPU image)
bns = [b for b in m.modules() if isinstance(b, torch.nn.modules.batchnorm._BatchNorm)]
for b in bns:
    b.reset_running_stats(); b.momentum = None
m.train()
with torch.no_grad():
    m(torch.randn(8, 3, 224, 224, generator=torch.Generator().manual_seed(2)))
m.eval(); mark("BatchNorm calibration")
m = m.to("cuda", dtype); torch.cuda.synchronize(); mark("copy to GPU")
x = torch.randn(1, 3, 224, 224, device="cuda", dtype=dtype)
with torch.inference_mode():
    m(x); torch.cuda.synchronize(); mark("first forward")
    m(x); torch.cuda.synchronize(); mark("second forward")
print(json.dumps(phases))
"""


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="resnet50")
    ap.add_argument("--dtype", default="fp16")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--threads", type=int, default=16, help="torch threads (a worker gets its CPU share)")
    args = ap.parse_args()
    runs = []
    for _ in range(args.runs):
        out = subprocess.run([sys.executable, "-c", CHILD, args.model, args.dtype, str(args.threads)],
                             capture_output=True, text=True, check=True)
        runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
    print(f"{args.model} {args.dtype}, {args.threads} torch threads, median of {args.runs} fresh processes:")
    for phase in runs[0]:
        print(f"  {phase:24s} {statistics.median(r[phase] for r in runs):7.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
