"""The writer thread that takes the part files off the scheduling loop (orchestrator/results/partwriter.py).

Its ``write`` here records the batches it is given (and, for the fault cases, blocks or raises);
the sink's real Parquet parts are tested through it in test_compaction.py and test_resume.py.
"""

from __future__ import annotations

import threading
import time

import pytest

from orchestrator.results.partwriter import BatchWriter


def recorder(batches: list[list[int]], hold: threading.Event | None = None):
    def write(items: list[int]) -> None:
        if hold is not None:
            hold.wait()
        batches.append(list(items))
    return write


def test_a_row_after_a_quiet_spell_is_written_at_once_without_a_flush():
    batches: list[list[int]] = []
    w = BatchWriter(recorder(batches), batch_s=0.2)
    w.put(1)
    deadline = time.monotonic() + 2
    while not batches and time.monotonic() < deadline:
        time.sleep(0.005)
    assert batches == [[1]]
    time.sleep(0.3)  # longer than batch_s: the next row is not held either
    w.put(2)
    w.close()
    assert batches == [[1], [2]]


def test_rows_that_come_fast_share_few_writes_and_none_is_lost_or_repeated():
    batches: list[list[int]] = []
    w = BatchWriter(recorder(batches), batch_s=0.2, batch_rows=1000)
    started = time.monotonic()
    for i in range(500):
        w.put(i)
        if i % 50 == 0:
            time.sleep(0.02)
    w.close()
    took_s = time.monotonic() - started  # about 0.2 s; longer where the machine is busy
    assert [i for b in batches for i in b] == list(range(500))  # every row once, in order
    # the first row alone, then a write per batch_s at most, and the rest at close: however long it took
    assert len(batches) <= 2 + took_s / 0.2, (len(batches), took_s)


def test_a_batch_is_written_at_batch_rows_and_flush_writes_what_waits_now():
    batches: list[list[int]] = []
    w = BatchWriter(recorder(batches), batch_s=60, batch_rows=3)
    w.put(0)
    w.flush()  # the first: written at once
    for i in range(1, 5):
        w.put(i)
    w.flush()  # without it, 4 would wait a minute
    assert batches == [[0], [1, 2, 3], [4]]
    w.close()


def test_put_never_waits_for_a_write_in_progress():
    batches: list[list[int]] = []
    hold = threading.Event()
    w = BatchWriter(recorder(batches, hold), batch_s=0.01)
    w.put(0)  # its write blocks (a disk that does not answer)
    t = time.monotonic()
    for i in range(1, 100):
        w.put(i)
    took = time.monotonic() - t
    assert took < 0.5 and batches == []
    hold.set()
    w.close()
    assert [i for b in batches for i in b] == list(range(100))


def test_a_failed_write_is_raised_to_the_caller_and_later_rows_are_dropped():
    written: list[list[int]] = []

    def write(items: list[int]) -> None:
        if 1 in items:
            raise OSError(28, "No space left on device")
        written.append(items)

    w = BatchWriter(write, batch_s=0.01)
    w.put(0)
    w.flush()
    w.put(1)
    with pytest.raises(OSError, match="No space left"):
        w.flush()
    with pytest.raises(OSError):
        w.put(2)  # the run stops here: the caller sees it at its next row
    with pytest.raises(OSError):
        w.close()
    assert written == [[0]]


def test_a_flush_from_another_thread_returns_when_the_writer_was_closed_meanwhile():
    # the head watch flushes from its own thread; the main thread may be closing the writer then
    batches: list[list[int]] = []
    hold = threading.Event()
    w = BatchWriter(recorder(batches, hold), batch_s=0.01)
    w.put(0)
    thread = w._thread
    closer = threading.Thread(target=w.close)
    closer.start()
    deadline = time.monotonic() + 2
    while w._thread is not None and time.monotonic() < deadline:
        time.sleep(0.005)
    w._thread = thread  # as the flushing thread saw it before the close took it
    flusher = threading.Thread(target=w.flush)
    flusher.start()
    hold.set()
    closer.join(5)
    flusher.join(5)
    assert not flusher.is_alive() and batches == [[0]]
