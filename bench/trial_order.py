"""One CUDA-graph trial three times in a process (BENCHMARKS.md, "A trial's place in its worker").

Found on an H200: the first torch-cudagraph trial of BERT-base b8 fp16 in a fresh process measured
0.914 ms, the next two 0.991 and 0.986 ms. A hand-written replay loop did the same: 0.915 ms until
the process had launched some 50 eager kernels, 0.98 ms ever after. Since then a process launches
tiny kernels before its first GPU trial (``workers.measure.timing.settle_launch_state``), so that every
trial runs in the same state. This prints the three medians and their spread, max / min
(``tests/test_hf.py`` runs it on a GPU).

    PYTHONPATH=$PWD python bench/trial_order.py          # on a GPU, about a minute
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    from bench import fidelity
    from workers.models.build import ModelStore
    from workers.trial import run_trial

    cfg = fidelity.config(False, True)  # BERT-base seq 128, as bench/fidelity.py --bert
    store = ModelStore(0)
    trial = fidelity.make_trial(cfg, "torch-cudagraph", 8, "fp16")
    medians = []
    for i in range(3):
        r = run_trial(trial, "cuda", store)
        medians.append(r["latency_ms_median"])
        print(f"trial {i + 1} torch-cudagraph BERT b8 fp16 in one process: {r['latency_ms_median']:.4f} ms "
              f"({r['status']})", flush=True)
    print(f"spread: {max(medians) / min(medians):.4f}")


if __name__ == "__main__":
    main()
