"""The driver's cost of storing one trial: a row to Arrow, and its part file in a few encodings.

    python bench/part_cost.py RUN_DIR [--rows 200] [--per-part 1 8 64]

Takes ``--rows`` rows of a stored run (e.g. the 10,000-trial run of ``bench/scale.py``) with that
run's metadata, and writes them as the driver does, ``--per-part`` rows to a file (1: a file per
trial); prints the CPU time a row (best of 3 passes) for each way. Needs no Ray and no GPU.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from orchestrator.sink import PART_OPTIONS, stored_metadata
from workers.schema import SCHEMA_VERSION, to_batch

Rows = list[dict[str, Any]]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("run", type=Path)
    ap.add_argument("--rows", type=int, default=200)
    ap.add_argument("--per-part", type=int, nargs="+", default=[1])
    a = ap.parse_args()
    meta = stored_metadata(a.run)
    env = meta.get("environment") or {}
    rows = pq.read_table(a.run).slice(0, a.rows).to_pylist()
    workers = env.get("workers") or {}
    md = {"infer_orch.schema_version": SCHEMA_VERSION, "infer_orch.run_id": "r", "infer_orch.device": '"cuda"',
          "infer_orch.environment": json.dumps({"driver": env.get("driver"),
                                                "worker": workers.get(rows[0].get("worker"))})}
    out = Path(tempfile.mkdtemp())

    def table(rs: Rows) -> pa.Table:
        return pa.Table.from_batches([to_batch(rs)]).replace_schema_metadata(md)

    def ipc(rs: Rows, p: Path) -> None:
        b = to_batch(rs).replace_schema_metadata(md)
        with pa.OSFile(str(p), "wb") as f, pa.ipc.new_file(f, b.schema) as w:
            w.write_batch(b)

    ways: list[tuple[str, Callable[[Rows, Path], None]]] = [
        ("row to Arrow only (to_batch)", lambda rs, p: to_batch(rs) and None),
        ("Parquet part, pyarrow defaults", lambda rs, p: pq.write_table(table(rs), p)),
        ("Parquet part, PART_OPTIONS (as now)", lambda rs, p: pq.write_table(table(rs), p, **PART_OPTIONS)),
        ("Arrow IPC part", ipc),
    ]
    print(f"{len(rows)} rows of {a.run}; CPU ms a row, best of 3")
    for n in a.per_part:
        for name, fn in ways:
            best = float("inf")
            for _ in range(3):
                t = time.process_time()
                for i in range(0, len(rows), n):
                    fn(rows[i:i + n], out / f"p{i}")
                best = min(best, (time.process_time() - t) / len(rows) * 1e3)
            size = sum(p.stat().st_size for p in out.iterdir()) / len(rows) if name != ways[0][0] else 0
            print(f"{n:3d} a part  {name:40s} {best:6.2f} ms  {size:8.0f} bytes a row")
            for p in out.iterdir():
                p.unlink()


if __name__ == "__main__":
    main()
