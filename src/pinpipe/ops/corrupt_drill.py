"""The corruption drill (``pinpipe drill --component corrupt``): flip a byte in the middle of the running log,
then walk the operator's way out.

Who calls what: :func:`pinpipe.ops.drill.run_drill` calls :func:`corrupt_and_repair` while the emulators send.
What it does, in order:

1. pauses the sink and the stream job (SIGSTOP), waits until the API has published new records, and flips one
   byte inside one of them — a record no reader has seen, acknowledged to a client, with more records after it;
2. resumes both (SIGCONT): each must stop with exit code 65 and an error naming that topic, partition and offset;
3. runs ``pinpipe log verify`` (must exit 65 and list the record), then ``pinpipe log repair`` for it (exit 0) and
   ``pinpipe log verify`` again (exit 0), as separate processes, as an operator would;
4. restarts the sink and the stream job; the drill then carries on (quiescence, batch, accounting, parity), and
   the accounting must report the record as skipped.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pinpipe.errors import FatalError
from pinpipe.log.embedded import EmbeddedLog
from pinpipe.log.segment import record_span
from pinpipe.tables import kind_of_topic

STOP_TIMEOUT_S = 30.0


@dataclass
class Corruption:
    """What the corruption drill did and saw."""

    topic: str = ""
    partition: int = 0
    offset: int = -1
    exits: dict[str, int | None] = field(default_factory=dict)
    """Exit code of the sink and the stream job after they met the record."""
    named: dict[str, bool] = field(default_factory=dict)
    """Whether each one's log names the topic, partition and offset."""
    verify_before: int | None = None
    repair: int | None = None
    verify_after: int | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def handled(self) -> bool:
        """True when both readers stopped with 65 naming the record, verify found it and repair fixed it."""
        return (
            self.offset >= 0
            and all(code == 65 for code in self.exits.values())
            and len(self.exits) == 2
            and all(self.named.values())
            and (self.verify_before, self.repair, self.verify_after) == (65, 0, 0)
        )


def _flip(log_dir: Path, topic: str, partition: int, offset: int) -> None:
    """Flip one byte in the middle of record ``offset`` (it lies between two index entries)."""
    data, start, end = record_span(log_dir / topic / str(partition), offset)
    at = start + (end - start) // 2
    fd = os.open(data, os.O_RDWR)
    try:
        byte = os.pread(fd, 1, at)
        os.pwrite(fd, bytes([byte[0] ^ 0x5A]), at)
        os.fsync(fd)
    finally:
        os.close(fd)


def _fresh_record(event_log: EmbeddedLog, prefix: str, timeout_s: float = 10.0) -> tuple[str, int, int]:
    """A record published after this call started (so no paused reader has read it), in the middle of its
    partition: records before it, and after it."""
    ends = {
        (t, p): event_log.end_offset(t, p)
        for t, n in event_log.topics().items()
        if kind_of_topic(prefix, t) is not None
        for p in range(n)
    }
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for (topic, partition), before in sorted(ends.items(), key=lambda item: -item[1]):
            offset = max(before, 1)  # published after the pause, with records before it and after it
            if event_log.end_offset(topic, partition) >= offset + 2:
                return topic, partition, offset
        time.sleep(0.01)
    raise FatalError(f"no new records were published within {timeout_s:.0f} s", hint="is the emulator sending?")


def _pinpipe(*args: str) -> int:
    return subprocess.run([sys.executable, "-m", "pinpipe", *args], capture_output=True, check=False).returncode


def corrupt_and_repair(
    event_log: EmbeddedLog,
    log_dir: Path,
    prefix: str,
    readers: dict[str, Any],
    restart: Callable[[str], object],
    say: Callable[[str], None],
) -> Corruption:
    """Steps 1–4 of the module docstring; ``readers`` are the sink's and the stream job's services (with
    ``.child``), ``restart(name)`` starts one again and waits until it is ready."""
    found = Corruption()
    for service in readers.values():
        os.kill(service.pid, signal.SIGSTOP)
    try:
        found.topic, found.partition, found.offset = _fresh_record(event_log, prefix)
        _flip(log_dir, found.topic, found.partition, found.offset)
    finally:
        for service in readers.values():
            os.kill(service.pid, signal.SIGCONT)
    where = f"record {found.offset} of topic {found.topic!r} partition {found.partition}"
    say(f"flipped a byte in {where}; waiting for the sink and the stream job to stop")
    for name, service in readers.items():
        try:
            found.exits[name] = service.child.proc.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            found.exits[name] = None
            found.notes.append(f"{name} did not stop within {STOP_TIMEOUT_S:.0f} s")
            service.kill()
        found.named[name] = where in service.child.log_path.read_text(errors="replace")
    say(f"exit codes: {found.exits}; error named the record: {found.named}")
    url = f"file://{log_dir}"
    found.verify_before = _pinpipe("log", "verify", "--log", url)
    repair = ["--topic", found.topic, "--partition", str(found.partition), "--offset", str(found.offset)]
    found.repair = _pinpipe("log", "repair", "--log", url, *repair)
    found.verify_after = _pinpipe("log", "verify", "--log", url)
    say(f"log verify: {found.verify_before}; log repair: {found.repair}; log verify again: {found.verify_after}")
    for name in readers:
        restart(name)
    return found
