"""One of the fresh processes a trial is measured in (``measure.process_repeats``), started by
``workers.processes`` as ``python -m workers.trial_process PAYLOAD ROW``: a worker made of the settings
it is given measures the trial in this process and writes the row whole or not at all. The process
exits when the worker that started it is gone."""

from __future__ import annotations

import os
import pickle
import sys
import threading
import time
from pathlib import Path
from typing import Any

from workers.actor import Worker
from workers.processes import WATCH_S


def _watch_parent(parent: int) -> None:
    """Exit when the worker that started this process is gone (killed at a timeout): no orphan keeps the GPU."""
    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(WATCH_S)
        os._exit(3)

    if os.getppid() != parent:
        os._exit(3)
    threading.Thread(target=watch, daemon=True, name="parent-watch").start()


def main(argv: list[str]) -> int:
    """One process of a trial: ``python -m workers.trial_process PAYLOAD ROW``."""
    args: dict[str, Any] = pickle.loads(Path(argv[0]).read_bytes())
    _watch_parent(args["parent"])
    worker = Worker(args["name"], args["device"], args["cpus"], seed=args["seed"])
    row = worker.run_here(args["trial"], args["spec"], warm=args["cuda_ok"])
    tmp = Path(argv[1] + ".tmp")
    tmp.write_bytes(pickle.dumps(row))
    tmp.replace(argv[1])  # whole or not at all: a process killed while writing leaves no row
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
