"""Child processes for ``pinpipe demo``: start ``pinpipe`` services, watch them, stop them all cleanly.

Who calls what: :mod:`pinpipe.ops.demo` opens a :class:`Supervisor` as a context manager, calls :meth:`Supervisor.start`
for each service (``pinpipe api``, ``pinpipe sink``, ``pinpipe stream``) and :meth:`Child.check` while it waits on
them; leaving the ``with`` block — normally, on an error or on Ctrl-C — calls :meth:`Supervisor.stop_all`.

Stopping: every child gets SIGTERM (pinpipe's services finish the batch in flight, commit and exit), then
SIGKILL whatever still runs after ``timeout`` seconds. Children run in their own session, so a Ctrl-C in the
terminal reaches only the supervising process, which then stops them in order (the API first: nothing new is
acknowledged while the sink and the stream worker finish). On Linux each child also asks the kernel for SIGTERM
if its parent dies (``PR_SET_PDEATHSIG``), so even a SIGKILLed demo leaves no service behind.
"""

from __future__ import annotations

import contextlib
import ctypes
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import IO

from pinpipe.errors import FatalError
from pinpipe.telemetry.logs import get_logger

log = get_logger("supervise")

_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Child:
    """One started service: its name, command line, log file and process."""

    name: str
    argv: list[str]
    log_path: Path
    proc: subprocess.Popen[bytes]
    _log_file: IO[bytes] = field(repr=False)

    @property
    def running(self) -> bool:
        return self.proc.poll() is None

    def tail(self, lines: int = 15) -> str:
        """The last lines of the child's log (for error messages)."""
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def check(self) -> None:
        """Raise :class:`~pinpipe.errors.FatalError` with the log's tail if the child has exited."""
        if not self.running:
            raise FatalError(
                f"`{self.name}` exited with code {self.proc.returncode}; its log ({self.log_path}) ends with:\n"
                f"{self.tail()}",
                hint=f"read {self.log_path}, fix the cause and run again (the demo continues where it stopped)",
                child=self.name,
            )


class Supervisor:
    """Starts children and stops every one of them on exit (SIGTERM, then SIGKILL after ``timeout``)."""

    def __init__(self, log_dir: Path, timeout: float = 10.0) -> None:
        self.log_dir = log_dir
        self.timeout = timeout
        self.children: list[Child] = []

    def start(self, name: str, argv: list[str], cwd: Path | None = None) -> Child:
        """Start ``argv`` with its output appended to ``<log_dir>/<name>.log``."""
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log_path = self.log_dir / f"{name}.log"
        log_file = log_path.open("ab")
        try:
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                cwd=cwd,
                start_new_session=True,
                preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,
            )
        except OSError as exc:
            log_file.close()
            raise FatalError(f"cannot start {name}: {exc}", hint=f"check that {argv[0]} exists") from exc
        child = Child(name, argv, log_path, proc, log_file)
        self.children.append(child)
        log.info("started %s", name, extra={"fields": {"pid": proc.pid, "log": str(log_path)}})
        return child

    def stop_all(self) -> dict[str, int | None]:
        """Stop every child: SIGTERM to each in start order, wait up to ``timeout`` in all, SIGKILL the rest.
        Returns each child's exit code. Safe to call twice."""
        for child in self.children:
            if child.running:
                with contextlib.suppress(ProcessLookupError):
                    child.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + self.timeout
        for child in self.children:
            try:
                child.proc.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("%s did not stop in %.0f s; killing it", child.name, self.timeout)
                with contextlib.suppress(ProcessLookupError):
                    child.proc.kill()
                child.proc.wait()
        codes = {child.name: child.proc.returncode for child in self.children}
        for child in self.children:
            child._log_file.close()
        self.children = []
        return codes

    def __enter__(self) -> Supervisor:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        # A second Ctrl-C while stopping must not leave children behind: shield the stop from it.
        try:
            previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
        except ValueError:  # not the main thread: signals cannot be redirected here
            self.stop_all()
            return
        try:
            self.stop_all()
        finally:
            signal.signal(signal.SIGINT, previous)
