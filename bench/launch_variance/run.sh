#!/usr/bin/env bash
# Launch-bound trials through infer-orch vs hand-written loops vs the runner in a plain process,
# twice, on one GPU (see BENCHMARKS.md). Run from the repository root with Ray and onnxruntime-gpu
# importable; writes the runs under $OUT (default /tmp/launch_variance).
set -euo pipefail
out=${OUT:-/tmp/launch_variance}
here=bench/launch_variance
for i in 1 2; do
  python3 -m orchestrator.cli run $here/bs1.yaml --out "$out/r$i" 2>&1 | grep -E "resnet50"
  python3 $here/hand_loops.py 2>&1 | grep -E "^(eager|ort|run_trial)"
done
