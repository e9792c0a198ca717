"""The head of a cluster the driver joined (``--address``) dying mid-run.

Ray's driver notices a dead GCS (the head's) only when its own reconnect timer runs out: 60 s later
it prints "Failed to connect to GCS within 60 seconds ... The program will terminate." and exits,
from C++, past every Python handler: no word of what was stored or how to resume. So a driver
that joined a cluster watches the head itself: a TCP connection to the GCS port every
``PERIOD_S``; no answer for ``HEAD_TIMEOUT_S`` (30 s) in a row means the head is gone. The main thread
can't be told then: it is blocked inside Ray's C++ calls, which don't return while the GCS is
down (an interrupt would wait for Ray's 60 s). So the watch itself ends the run: the caller's
``on_lost`` records the run's state (the parts written so far are whole: each is renamed into
place only once complete) and returns the one line to print (``error: ...``, how to resume);
then the process leaves at once with exit code 1, skipping Ray's clean-up, which would wait for
the dead head.

A driver that started its own embedded Ray needs none of this: its head is its own child.
"""

from __future__ import annotations

import os
import socket
import sys
import threading
from collections.abc import Callable

from orchestrator.errors import RunError, env_seconds

PERIOD_S = 2.0
#: How long the head may not answer before the run stops: well inside Ray's own 60 s, but long
#: enough that a blip of the network is not taken for a dead head. ``INFER_ORCH_HEAD_TIMEOUT_S``.
HEAD_TIMEOUT_S = 30.0


def failures_allowed() -> int:
    """Probes in a row that may fail before the head counts as gone: ``INFER_ORCH_HEAD_TIMEOUT_S``
    (default ``HEAD_TIMEOUT_S``) over ``PERIOD_S``. A value that is not a positive number of seconds
    is refused with a line that names it (InputError, exit 2), before anything runs."""
    return max(1, round(env_seconds("INFER_ORCH_HEAD_TIMEOUT_S", HEAD_TIMEOUT_S) / PERIOD_S))


class HeadLost(RunError):
    """The cluster's head stopped answering mid-run (its exit code: 1)."""


class HeadWatch:
    """Probes ``host:port`` (the GCS) from a daemon thread until stopped; ``lost`` once it is gone."""

    def __init__(self, gcs_address: str, on_lost: Callable[[], str], period_s: float = PERIOD_S,
                 failures: int | None = None) -> None:
        host, _, port = gcs_address.rpartition(":")
        self.on_lost = on_lost
        self.address, self.host, self.port = gcs_address, host, int(port)
        self.period_s, self.failures = period_s, failures_allowed() if failures is None else failures
        self.lost = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="infer-orch-headwatch", daemon=True)

    def start(self) -> HeadWatch:
        global ACTIVE
        ACTIVE = self
        self._thread.start()
        return self

    def stop(self) -> None:
        global ACTIVE
        self._stop.set()
        if ACTIVE is self:
            ACTIVE = None

    def _give_up(self) -> None:
        self.lost.set()
        try:
            message = self.on_lost()
        except Exception as exc:  # still leave with a line that says what happened
            message = f"the cluster's head ({self.address}) stopped answering mid-run ({exc})"
        print(f"error: {message}", file=sys.stderr, flush=True)
        exit_now(HeadLost.exit_code)

    def _answers(self) -> bool:
        try:
            with socket.create_connection((self.host, self.port), timeout=min(1.0, self.period_s)):
                return True
        except OSError:
            return False

    def _run(self) -> None:
        missed = 0
        while not self._stop.wait(self.period_s):
            missed = 0 if self._answers() else missed + 1
            if missed >= self.failures:
                self._give_up()


#: ``before_asking_the_head``'s second look at the head, this long after the first, s.
CONFIRM_S = 1.0

#: The watch of the run in progress, if it joined a cluster.
ACTIVE: HeadWatch | None = None


def before_asking_the_head() -> None:
    """Call before asking the GCS itself (``ray.nodes()``): with the head gone, Ray's client aborts
    the process from C++ ("Check failed ... RpcError"). If the head doesn't answer, wait for it as
    the watch does; gone for good, the run stops as the watch stops it (this call doesn't return)."""
    watch = ACTIVE
    if watch is None:
        return
    # twice, CONFIRM_S apart: a worker on the head dies as the head's processes are being killed, and
    # the GCS's port may still take a connection for a moment before Ray's client aborts on it
    if watch._answers() and not watch._stop.wait(CONFIRM_S) and watch._answers():
        return
    for _ in range(watch.failures):
        if watch._stop.wait(watch.period_s) or watch._answers():
            return
    watch._give_up()


def gcs_address() -> str | None:
    """The GCS address of the cluster this process is connected to, or None."""
    import ray

    try:
        return ray.get_runtime_context().gcs_address
    except Exception:
        return None


def exit_now(code: int) -> None:
    """Leave at once: Ray's shutdown would wait for the dead head (and then exit from C++)."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
