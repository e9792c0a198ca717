"""Rows to disk off the scheduling loop: a thread that gathers them into batches, one part file each.

Why (BENCHMARKS.md, "Thousands of trials"): a one-row Parquet part costs the driver about 10 ms
of CPU, nearly all of it per file (the row to Arrow, 93 column chunks, the footer), so 64 trials/s
took 0.9 of a core, and each write held up the loop's next ``ray.wait``. Sixteen rows to a part
cost about 1 ms a row, 64 rows about 0.3 ms (measured on 200 rows of a 10,000-trial run). So the loop only hands each
row over (``put``), and this thread writes them, in as few files as the rate allows:

    a row that arrives when the last part was written BATCH_S or more ago is written at once
        (a run of slow trials writes each trial as it ends, as before);
    otherwise it waits for that moment (last part + BATCH_S), gathering the rows that come meanwhile,
        at most BATCH_ROWS to a part;
    ``flush()`` writes what is waiting now and returns once it is on disk.

So at most 1/BATCH_S parts a second whatever the rate, and a row waits in memory at most BATCH_S
(plus the write before it): a driver killed (SIGKILL) loses at most that much, and those trials
run again on ``--resume``. pyarrow releases the GIL while it encodes and writes, so the loop runs
meanwhile.

A write that raises: the error is kept, later rows are dropped (not written: they run again on
``--resume``), and the caller's next ``put`` or ``flush`` raises it, as the write would have in
the loop.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from typing import Any

#: The shortest time between two parts of a busy run; also the longest a row waits to be written.
BATCH_S = 0.5
#: The most rows in one part (rows may carry up to 2 x 20,000 samples a repeat).
BATCH_ROWS = 256


class _Stop:
    """Put last: the thread writes what is waiting and ends."""


class BatchWriter:
    """Calls ``write(items)`` on its own thread with the items ``put`` since the last call (see above)."""

    def __init__(self, write: Callable[[list[Any]], None], name: str = "infer-orch-writer",
                 batch_s: float = BATCH_S, batch_rows: int = BATCH_ROWS) -> None:
        self._write, self._name = write, name
        self.batch_s, self.batch_rows = batch_s, batch_rows
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self.error: BaseException | None = None

    def put(self, item: Any) -> None:
        """Hand ``item`` over; raises the error of an earlier write, if one failed."""
        self._raise()
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
            self._thread.start()
        self._queue.put(item)

    def flush(self) -> None:
        """Return once every item put so far is written; raises the error of a write that failed."""
        thread = self._thread
        if thread is not None:
            done = threading.Event()
            self._queue.put(done)
            while not done.wait(0.5) and thread.is_alive():  # (a close from another thread ends it first)
                pass
        self._raise()

    def close(self) -> None:
        """Write what is waiting and end the thread (raises as ``flush``). ``put`` starts a new one."""
        thread, self._thread = self._thread, None
        if thread is not None:
            self._queue.put(_Stop())
            thread.join()
        self._raise()

    def _raise(self) -> None:
        if self.error is not None:
            raise self.error

    def _run(self) -> None:
        last = float("-inf")  # when the last batch was written
        while True:
            batch, signals = self._gather(self._queue.get(), last + self.batch_s)
            if batch:
                if self.error is None:  # after a failed write, rows are dropped
                    try:
                        self._write(batch)
                    except BaseException as exc:  # kept, raised in the caller's thread
                        self.error = exc
                last = time.monotonic()
            for s in signals:
                if isinstance(s, threading.Event):
                    s.set()
            if any(isinstance(s, _Stop) for s in signals):
                return

    def _gather(self, first: Any, due: float) -> tuple[list[Any], list[Any]]:
        """The items to write now, from ``first`` on; stops early at a flush or a stop (``signals``)."""
        batch: list[Any] = []
        item = first
        while True:
            if isinstance(item, (threading.Event, _Stop)):
                return batch, [item]
            batch.append(item)
            if len(batch) >= self.batch_rows:
                return batch, []
            wait = due - time.monotonic()
            try:
                item = self._queue.get(timeout=wait) if wait > 0 else self._queue.get_nowait()
            except queue.Empty:
                return batch, []
