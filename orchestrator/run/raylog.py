"""Ray's own messages go to the run's log (``_ray.log`` in the run directory), not the terminal.

Ray prints two kinds of messages in the driver: its logger's (``ray`` logger, a handler on
stderr; e.g. "Token authentication is enabled..." at ``ray.init``), and the errors the cluster
publishes to the driver (``ray._private.worker.listen_error_messages``, a thread), printed to
*stdout* with a "(raylet)" prefix: "A worker died or was killed while executing a task..." next
to infer-orch's own line about the same worker. Ray has no switch for the second (``log_to_driver``
covers only the workers' output), so while a run is on, ``print_to_stdstream`` (which that thread
looks up as a module global at each message) is replaced by a function that writes the raylet's
messages to the log and hands everything else to Ray's own; the workers' output streamed with
``INFER_ORCH_WORKER_LOGS=1`` doesn't go through it (Ray binds that handler at ``ray.init``). A Ray
whose internals differ keeps its default behaviour. With ``INFER_ORCH_WORKER_LOGS=1`` Ray's
messages reach the terminal as well, as before.

The log is opened once the run directory exists (the result sink creates it with the first
trial): until then messages wait in memory, so a run that stops before anything was written
(an input error) writes nothing; it shows them on stderr instead.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from pathlib import Path
from typing import Any

LOG_FILE = "_ray.log"


class RayLog:
    def __init__(self, out: Path) -> None:
        self.path = out / LOG_FILE
        self.echo = os.environ.get("INFER_ORCH_WORKER_LOGS") == "1"
        self._lock = threading.Lock()
        self._pending: list[str] = []
        self._file: Any = None
        self._worker: Any = None
        self._original: Any = None
        self._handler: logging.Handler | None = None
        self._saved_handlers: list[logging.Handler] = []

    # -- writing

    def write(self, text: str) -> None:
        with self._lock:
            self._pending.append(text if text.endswith("\n") else text + "\n")
            self._flush()

    def _flush(self) -> None:
        if self._file is None:
            if not self.path.parent.is_dir():
                return
            try:
                self._file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 (closed in close())
            except OSError:
                return
        try:
            self._file.write("".join(self._pending))
            self._file.flush()
        except OSError:  # a full disk: the run itself says so; Ray's messages are not worth more
            pass
        self._pending.clear()

    # -- installing

    def install(self) -> RayLog:
        try:
            from ray._private import worker as ray_worker

            if callable(ray_worker.print_to_stdstream) and callable(ray_worker.listen_error_messages):
                self._worker, self._original = ray_worker, ray_worker.print_to_stdstream
                ray_worker.print_to_stdstream = self._print_to_stdstream
        except Exception:  # a Ray without these internals: its messages go where it puts them
            self._worker = None
        logger = logging.getLogger("ray")
        self._handler = _Handler(self)
        self._handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        logger.addHandler(self._handler)
        if not self.echo:
            self._saved_handlers = [h for h in logger.handlers if _is_terminal(h)]
            for h in self._saved_handlers:
                logger.removeHandler(h)
        return self

    def _print_to_stdstream(self, data: dict[str, Any], ignore_prefix: bool) -> None:
        if data.get("pid") != "raylet" or self._original is None:
            self._original(data, ignore_prefix)
            return
        self.write("".join(f"(raylet) {line}\n" for line in data.get("lines", [])))
        if self.echo:
            self._original(data, ignore_prefix)

    def close(self, show_pending: bool = True) -> None:
        """Put Ray's behaviour back; messages that never found the run directory go to stderr
        (``show_pending``; not for a run the user stopped, which says one line)."""
        if self._worker is not None and self._worker.print_to_stdstream == self._print_to_stdstream:
            self._worker.print_to_stdstream = self._original
        logger = logging.getLogger("ray")
        if self._handler is not None:
            logger.removeHandler(self._handler)
        for h in self._saved_handlers:
            logger.addHandler(h)
        with self._lock:
            self._flush()
            if self._pending and not self.echo and show_pending:
                sys.stderr.write("".join(self._pending))
            self._pending.clear()
            if self._file is not None:
                self._file.close()
                self._file = None


class _Handler(logging.Handler):
    def __init__(self, log: RayLog) -> None:
        super().__init__()
        self.log = log

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.log.write(self.format(record))
        except Exception:
            self.handleError(record)


def _is_terminal(handler: logging.Handler) -> bool:
    return (isinstance(handler, logging.StreamHandler) and not isinstance(handler, logging.FileHandler)
            and getattr(handler, "stream", None) in (sys.stderr, sys.stdout, sys.__stderr__, sys.__stdout__))
