"""A run's stops: SIGTERM (what schedulers and CI runners send) routed to Ctrl-C's path while a run
is on, Ctrl-C noted while Ray starts, and the one line of a run stopped before any trial ran."""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
from collections.abc import Iterator
from typing import Any

from orchestrator.errors import Interrupted, Terminated


@contextlib.contextmanager
def noting_stops() -> Iterator[list[int]]:
    """Within it (Ray starting), Ctrl-C is noted as well as raised, and a KeyboardInterrupt that lands
    in a callback (an at-fork handler of ``logging`` as Ray starts a process) is not reported as an
    "Exception ignored" traceback: Python swallows those, so the caller checks the list (SIGTERM: the
    ``SIGTERM_SEEN`` flag) once Ray is up. Outside the main thread: nothing changes."""
    stops: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield stops
        return

    def on_sigint(signum: int, frame: Any) -> None:
        stops.append(signum)
        raise KeyboardInterrupt

    def unraisable(info: Any) -> None:
        if not isinstance(info.exc_value, KeyboardInterrupt):
            previous_hook(info)

    previous_int, previous_hook = signal.signal(signal.SIGINT, on_sigint), sys.unraisablehook
    sys.unraisablehook = unraisable
    try:
        yield stops
    finally:
        signal.signal(signal.SIGINT, previous_int)
        sys.unraisablehook = previous_hook


def stopped_while_starting(stop: BaseException) -> Interrupted:
    """The one line of a run stopped (Ctrl-C, SIGTERM) before any trial ran: Ray starting, its
    workers starting. Nothing of the run was stored; the same command starts it again."""
    term = isinstance(stop, Terminated) or SIGTERM_SEEN.is_set()
    stopped = Interrupted(f"{'terminated (SIGTERM)' if term else 'interrupted'} while starting, before any trial "
                          "ran: nothing was stored; the same command starts the run again",
                          exit_code=Terminated.exit_code if term else Interrupted.exit_code)
    stopped.starting = True
    return stopped


#: Set by the handler ``catch_sigterm`` installs: Ray turns what a handler raises inside its blocking
#: calls into a plain KeyboardInterrupt, so this flag says which signal it was.
SIGTERM_SEEN = threading.Event()


def _on_sigterm(signum: int, frame: Any) -> None:
    SIGTERM_SEEN.set()
    raise Terminated()


def catch_sigterm() -> Any:
    """Route SIGTERM (what schedulers and CI runners send) to Ctrl-C's path; the previous handler.

    Only the main thread can set handlers: elsewhere (``run_plan`` called from a thread) this does
    nothing and returns None.
    """
    if threading.current_thread() is not threading.main_thread():
        return None
    SIGTERM_SEEN.clear()
    return signal.signal(signal.SIGTERM, _on_sigterm)


def release_sigterm(previous: Any) -> None:
    if previous is not None and threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, previous)
