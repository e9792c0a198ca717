"""The ``infer-orch`` command line: one module per command (``run``, ``validate``, ``report``,
``compare``, ``backends``, ``cache``), the tables they print (``tables``), the consoles and the error boundary
they share (``console``); here the Typer app that joins them and ``main``, the entry point.

Exit codes: 0 every trial ran (ok or skipped); 1 some trial failed; 2 bad input (plan, output
directory, cluster) and nothing was run or written. User errors print one line, no traceback.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path
from typing import Any

#: Signals that arrived while this module was still importing (see ``_note_early_stop``).
_EARLY_STOPS: list[int] = []


def _note_early_stop(signum: int, frame: Any) -> None:
    _EARLY_STOPS.append(signum)


# Run as the command (``infer-orch``, ``python -m orchestrator.cli``: this package is imported while
# Python finds its ``__main__``, with ``sys.argv[0]`` still "-m"): a SIGTERM or Ctrl-C that comes
# while the libraries below import is noted, and ``main`` ends with its one line, instead of a silent
# death by SIGTERM or a KeyboardInterrupt traceback. Imported as a library, nothing is touched.
if sys.argv[:1] == ["-m"] or Path(sys.argv[0] if sys.argv else "").name == "infer-orch":
    signal.signal(signal.SIGTERM, _note_early_stop)
    signal.signal(signal.SIGINT, _note_early_stop)

import typer  # noqa: E402

from orchestrator.cli import backends, cache, compare, report, run, validate  # noqa: E402
from orchestrator.cli.console import END_NOW, err_console  # noqa: E402
from orchestrator.errors import Interrupted, Terminated  # noqa: E402

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Ray-based, parallel, multi-GPU benchmark orchestrator for deep-learning inference.")
for command in (run.run, report.report, compare.compare, validate.validate, backends.backends, cache.cache):
    app.command()(command)


def _on_sigterm(signum: int, frame: Any) -> None:
    raise Terminated()


def main() -> None:
    signal.signal(signal.SIGTERM, _on_sigterm)  # Ctrl-C's way out, until a run installs its own
    signal.signal(signal.SIGINT, signal.default_int_handler)
    if _EARLY_STOPS:  # stopped while starting up: nothing was done
        term = signal.SIGTERM in _EARLY_STOPS
        err_console.print("terminated (SIGTERM)" if term else "interrupted", highlight=False)
        sys.exit(Terminated.exit_code if term else Interrupted.exit_code)
    try:
        app()
    except SystemExit as done:
        if END_NOW:  # a Ray stopped half-started (Ctrl-C reaches its GCS and raylet too) could crash the
            # interpreter's own clean-up (SIGSEGV at exit, 1 time in 3 on 2 vCPUs): its line is said,
            # what Ray started is gone (the watchdog), nothing was stored; nothing is left to clean
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(done.code if isinstance(done.code, int) else 1)
        raise
    except KeyboardInterrupt as stop:  # before a run had anything to keep (a Terminated: SIGTERM)
        err_console.print("terminated (SIGTERM)" if isinstance(stop, Terminated) else "interrupted")
        sys.exit(getattr(stop, "exit_code", 130))

