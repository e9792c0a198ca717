"""A watchdog that removes an embedded Ray's processes once its driver is gone, however it ended.

Ray ties only some of an embedded node's processes to the driver: the GCS and the raylet die with
it (``PR_SET_PDEATHSIG``), but the raylet's agents (``ray::DashboardAgent``,
``ray::RuntimeEnvAgent``) watch the raylet and, once it is gone, try to report its death through
the GCS, which is gone too: after ``kill -9`` of the driver they lingered about 60-85 s, parented
to init. Ray has no setting for this, so :func:`start` launches this small process right after an
embedded ``ray.init``. It holds the read end of a pipe whose only write end is the driver's: the
pipe reads EOF the moment the driver closes it (:meth:`Reaper.stop`, after ``ray.shutdown``) or
dies (SIGKILL included). Meanwhile it records, once a second, the node's own processes (the
pids Ray recorded as it started them: GCS, raylet, ...) and every process below them; at EOF it
kills the ones still alive of those (pid and start time must match: pids are reused),
those whose command line or open files are in the node's session directory, and their children,
then exits. A driver that died (EOF with no ``stop`` line before it) is followed by ``SETTLE_S`` more
seconds of looking, since on a loaded machine an agent forked just before can show up late. Only
ever started for a node this driver started: never for a cluster it joined.

It is started *before* ``ray.init``, so that a driver stopped or killed while Ray is still starting
leaves nothing either: then its root is the driver itself (every process below the driver is the
node's: the GCS, the raylet, and the agents below the raylet), and the session directory is not
known yet: it is read from the command lines it records (the GCS's ``--log_dir``), or sent by the
driver through the pipe once ``ray.init`` returns (a line ``session PATH``). A driver that turns
out to have joined a cluster sends ``release``: the watchdog then exits without touching anything.
While Ray starts (the session unknown, or the first ``STARTING_S``) it looks every ``FAST_POLL_S``:
an agent the raylet forks just before a ``kill -9`` is orphaned at once, titled ``ray::DashboardAgent``
(its command line no longer names the session), and only its having been seen finds it; after,
every ``POLL_S``.

Standard library only: it runs as ``python reaper.py DRIVER_PID SESSION_DIR PID...`` in its own session
(Ctrl-C in the terminal doesn't reach it); SESSION_DIR may be empty.
"""

from __future__ import annotations

import os
import re
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

POLL_S = 1.0
FAST_POLL_S = 0.2  # while Ray is starting: the session directory not known, or its agents being forked
STARTING_S = 20.0  # how long after the watchdog starts Ray counts as starting
GRACE_S = 3.0  # after SIGTERM, before SIGKILL
SETTLE_S = 1.0  # after a driver died (not stopped): how long to keep looking for the node's processes
#: Set in the driver's environment while its node starts (``start`` to ``Reaper.unmark``), so that every
#: process of the node inherits it: the mark finds an agent orphaned before it was ever seen.
MARK = "INFER_ORCH_NODE"
#: A Ray session directory in a command line: ``/tmp/ray/session_2026-12-06_15-22-02_830209_26641``.
SESSION = re.compile(rb"(/[^\0 =]+/session_\d{4}-\d\d-\d\d_\d\d-\d\d-\d\d_\d+_\d+)")


def _stat(pid: int) -> tuple[int, str, int] | None:
    """(parent pid, state, start time) of ``pid``, or None when it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return int(fields[1]), fields[0], int(fields[19])


def _table() -> dict[int, tuple[int, str, int]]:
    out = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (st := _stat(int(entry.name))) is not None:
            out[int(entry.name)] = st
    return out


def _below(root: int, table: dict[int, tuple[int, str, int]], skip: frozenset[int] = frozenset()) -> set[int]:
    """Every process below ``root``, leaving out the ones in ``skip`` and everything below them."""
    children: dict[int, list[int]] = {}
    for pid, (ppid, _, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    found, todo = set(), [root]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found and child not in skip:
                found.add(child)
                todo.append(child)
    return found


def _in_session(pid: int, session: bytes) -> bool:
    """Whether ``pid``'s command line or one of its open files names the session directory
    (Ray's processes retitle themselves, ``ray::IDLE``, but keep their log files open there)."""
    try:
        if session in Path(f"/proc/{pid}/cmdline").read_bytes():
            return True
        for fd in os.scandir(f"/proc/{pid}/fd"):
            try:
                if os.readlink(fd.path).encode().startswith(session):
                    return True
            except OSError:
                continue
    except OSError:
        pass
    return False


def targets(seen: dict[int, int], session: str, spare: set[int], mark: str = "") -> set[int]:
    """The processes to end: those ``seen`` (pid -> start time) still alive, the session's, those
    with the node's ``mark`` in their environment, and every process below them. Never those in
    ``spare`` (this watchdog, and the driver: it has files of the session open too, and lives on
    after a normal ``ray.shutdown``), nor a process of another user."""
    table = _table()
    uid = os.getuid()
    found = {p for p, start in seen.items() if p in table and table[p][2] == start}
    sess = session.rstrip("/").encode() + b"/" if session else b""
    marked = f"{MARK}={mark}".encode() if mark else b""
    if sess or marked:
        for pid in table:
            if pid not in found and pid not in spare and _owned(pid, uid) and (
                    (sess and _in_session(pid, sess)) or (marked and _marked(pid, marked))):
                found.add(pid)
    for pid in list(found):
        found |= _below(pid, table)
    found -= spare
    return {p for p in found if table.get(p, (0, "Z", 0))[1] != "Z"}


def _marked(pid: int, marked: bytes) -> bool:
    try:
        return marked in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return False


def _owned(pid: int, uid: int) -> bool:
    try:
        return os.stat(f"/proc/{pid}").st_uid == uid
    except OSError:
        return False


def _alive(pids: set[int]) -> set[int]:
    return {p for p in pids if (st := _stat(p)) is not None and st[1] != "Z"}


def reap(seen: dict[int, int], session: str, driver: int, rounds: int = 3, settle_s: float = SETTLE_S,
         mark: str = "") -> None:
    """End the targets: SIGTERM, then SIGKILL after ``GRACE_S``. Again while new ones appear (up to
    ``rounds``), and looking again for ``settle_s`` after none is left: a raylet still starting may
    fork its agents between the look and the kill, and on a loaded machine an agent forked just
    before the driver died can take a moment to show the session in its command line."""
    settled = time.monotonic() + settle_s
    done = 0
    while done < rounds:
        pids = targets(seen, session, {os.getpid(), driver}, mark)
        if not pids:
            if time.monotonic() >= settled:
                return
            time.sleep(0.25)
            continue
        done += 1
        for sig, wait in ((signal.SIGTERM, GRACE_S), (signal.SIGKILL, 1.0)):
            for p in pids:
                try:
                    os.kill(p, sig)
                except OSError:
                    pass
            deadline = time.monotonic() + wait
            while (pids := _alive(pids)) and time.monotonic() < deadline:
                time.sleep(0.1)
            if not pids:
                break


def session_of(pids: set[int]) -> str:
    """The Ray session directory named in the command line of one of ``pids``; "" when none does."""
    for pid in sorted(pids):
        try:
            found = SESSION.search(Path(f"/proc/{pid}/cmdline").read_bytes())
        except OSError:
            continue
        if found:
            return found.group(1).decode(errors="replace")
    return ""


def _record(roots: list[int], seen: dict[int, int], table: dict[int, tuple[int, str, int]],
            before: frozenset[int] = frozenset()) -> set[int]:
    """Add every process below the roots still alive to ``seen``; the ones new to it. ``before``: the
    driver's children from before the watchdog started (not Ray's: a caller's own), never recorded."""
    me, new = os.getpid(), set()
    for root in roots:
        if root in table and table[root][2] == seen[root]:
            below = {p for p in _below(root, table, before) if p != me and p not in seen}
            seen.update({p: table[p][2] for p in below})
            new |= below
    return new


def main(argv: list[str]) -> None:
    driver, session, roots = int(argv[1]), argv[2], [int(p) for p in argv[3:]]
    seen: dict[int, int] = {}
    table = _table()
    roots = [p for p in roots if p in table]
    seen.update({p: table[p][2] for p in roots})
    # Watching the driver itself (Ray not started yet): what was below it before is not Ray's
    before = frozenset(p for p in _below(driver, table) if p != os.getpid()) if driver in roots else frozenset()
    buffered, released, stopped = b"", False, False
    # an agent the raylet forks just before the driver dies is orphaned with the raylet, under a
    # process title (ray::DashboardAgent) that no longer names the session: it has to be seen alive
    starting_until = time.monotonic() + STARTING_S
    while driver in table:  # belt and braces: the pipe says it first
        _record(roots, seen, table, before)
        if not session:  # every time: a process seen between fork and exec had the driver's command line
            session = session_of({p for p in seen if p in table and p not in roots})
        fast = not session or time.monotonic() < starting_until
        ready, _, _ = select.select([sys.stdin], [], [], FAST_POLL_S if fast else POLL_S)
        if ready:
            data = os.read(sys.stdin.fileno(), 4096)
            if not data:
                break
            buffered += data
            *lines, buffered = buffered.split(b"\n")
            for line in lines:
                if line.startswith(b"session "):
                    session = line[len(b"session "):].decode(errors="replace")
                released = released or line == b"release"
                stopped = stopped or line == b"stop"
        table = _table()
    if released:
        return
    _record(roots, seen, _table(), before)  # the driver closed the pipe and waits: its children are still below it
    seen.pop(driver, None)  # a root, when watched from before Ray: what is below it is recorded, ``before`` not
    # a driver that said "stop" shut Ray down first; one that died may have left an agent being born
    reap(seen, session, driver, settle_s=0.0 if stopped else SETTLE_S, mark=os.environ.get(MARK, ""))


class Reaper:
    """The driver's handle on the watchdog: :meth:`stop` once Ray is shut down."""

    def __init__(self, proc: subprocess.Popen[bytes], write_fd: int) -> None:
        self.proc, self._fd = proc, write_fd

    def tell(self, line: str) -> None:
        """Send the watchdog one line (``session PATH``); lost if it is gone (it can only have reaped)."""
        if self._fd >= 0:
            try:
                os.write(self._fd, line.encode() + b"\n")
            except OSError:
                pass

    def release(self) -> None:
        """Let the watchdog go without touching anything (the driver joined a cluster)."""
        self.tell("release")
        self.stop()

    def unmark(self) -> None:
        """The node has started: this driver's later children are not the node's."""
        os.environ.pop(MARK, None)

    def stop(self, clean: bool = True) -> None:
        """Close the pipe: the watchdog removes whatever Ray left and exits. Waits a little for it.
        ``clean``: Ray was shut down (not a start abandoned: there an agent may still be being born)."""
        self.unmark()
        if self._fd < 0:
            return
        if clean:
            self.tell("stop")
        os.close(self._fd)
        self._fd = -1
        try:
            self.proc.wait(timeout=GRACE_S + 3)
        except subprocess.TimeoutExpired:
            pass


def start(session_dir: str, pids: list[int]) -> Reaper | None:
    """Start the watchdog for this driver's embedded node (``session_dir``: its session directory;
    ``pids``: the processes Ray started for it).

    None where there is no ``/proc`` (not Linux) or the watchdog can't start: Ray's own clean-up
    then is all there is.
    """
    if not Path("/proc/self/stat").exists():
        return None
    os.environ[MARK] = f"{os.getpid()}-{os.urandom(6).hex()}"  # inherited by the watchdog and the node
    read_fd, write_fd = os.pipe()  # both close-on-exec: no other child of the driver holds them
    try:
        proc = subprocess.Popen([sys.executable, "-S", __file__, str(os.getpid()), session_dir,
                                 *map(str, pids)],
                                stdin=read_fd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                start_new_session=True, close_fds=True)
    except OSError:
        os.close(write_fd)
        os.environ.pop(MARK, None)
        return None
    finally:
        os.close(read_fd)
    return Reaper(proc, write_fd)


if __name__ == "__main__":
    main(sys.argv)
