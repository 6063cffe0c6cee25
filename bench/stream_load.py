"""The load side of ``bench/stream.py``: load-generator processes that send records through the Kinesis proxy
and note each acknowledgement, and the observer that notes when each ``ind`` becomes readable in silver.

Who calls what: ``run_phase`` in ``bench/stream.py`` starts two :func:`load` processes per phase and reads their
:data:`Sent` lists back; ``measure`` runs one :class:`SilverObserver` thread per silver size;
:func:`latencies` matches the two.
"""

from __future__ import annotations

import os
import random
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import httpx
import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pinpipe.config import DEFAULT_PREFIX
from pinpipe.tables import KINDS, stream_name

Sent = list[tuple[str, int, float, bool]]  # (kind, ind, acknowledged at, an update of an old ind)
KEY = {"pin": "index", "geo": "ind", "user": "ind"}


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def load(port: int, records: dict[str, list[dict[str, Any]]], job: dict[str, Any], out: Any) -> None:
    """One load generator: ``job["rate"]`` records/s for ``job["seconds"]``, ~100 requests/s, kinds in turn; a
    ``job["old"]`` share of records re-keyed to an old ``ind`` (uniform over [0, filled) and what it sent)."""
    rate, seconds, old, filled = job["rate"], job["seconds"], job["old"], job["filled"]
    rng = random.Random(job["seed"])
    sent: Sent = []
    mine: dict[str, list[int]] = {k: [] for k in KINDS}
    cursor = dict.fromkeys(KINDS, 0)
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
        start = time.monotonic()
        done = turn = 0
        while (elapsed := time.monotonic() - start) < seconds:
            due = int(rate * elapsed) - done
            if due <= 0:
                time.sleep(0.002)
                continue
            kind = KINDS[turn % 3]
            turn += 1
            chunk = records[kind][cursor[kind] : cursor[kind] + min(due, 500)]
            cursor[kind] += len(chunk)
            key = KEY[kind]
            batch, updates = [], []
            for r in chunk:
                if rng.random() < old and (filled or mine[kind]):
                    pick = rng.randrange(filled + len(mine[kind]))
                    r = {**r, key: pick if pick < filled else mine[kind][pick - filled]}
                    updates.append(True)
                else:
                    updates.append(False)
                batch.append(r)
            body = orjson.dumps({"Records": [{"Data": r, "PartitionKey": str(r[key])} for r in batch]})
            for _attempt in range(20):  # a 503 (log busy) or a timeout is retried, as a client would
                try:
                    resp = client.put(
                        f"/streams/{stream_name(DEFAULT_PREFIX, kind)}/records",
                        content=body,
                        headers={"Content-Type": "application/json"},
                    )
                except httpx.HTTPError:
                    continue
                if resp.status_code == 200 and not resp.json()["FailedRecordCount"]:
                    break
                time.sleep(0.05)
            else:
                continue  # given up: these records are not counted as sent
            acked = time.time()
            for r, update in zip(batch, updates, strict=True):
                sent.append((kind, int(r[key]), acked, update))
                if not update:
                    mine[kind].append(int(r[key]))
            done += len(batch)
            time.sleep(0.01)
    out.put(sent)


class SilverObserver(threading.Thread):
    """Notes every data file added to ``<lake>/silver/<kind>`` (when, which ``ind``) and the worker's RSS.

    It reads the log as a tailing reader would, one commit file at a time: every 10 ms it checks whether each
    table's next ``_delta_log/<version>.json`` exists (one ``stat``), notes the time, then reads that commit's
    ``add`` actions and the ``ind`` column of the files they name. Its cost per commit is the commit's, not the
    table's: reloading the table (delta-rs's ``update_incremental``) and diffing its file list, as it once did,
    took tens of milliseconds per commit at 10M rows per kind — on the worker's two cores, and inside every
    measured latency. Compaction's adds (``dataChange: false``) rewrite rows already seen and are skipped."""

    def __init__(self, lake_dir: Path, worker_pid: int, metrics_port: int | None = None) -> None:
        super().__init__(daemon=True)
        self.lake_dir = lake_dir
        self.pid = worker_pid
        self.metrics_port = metrics_port
        self.added: dict[str, list[tuple[float, np.ndarray]]] = {k: [] for k in KINDS}
        self.rss: list[tuple[float, float]] = []
        self.arrow: list[tuple[float, float]] = []  # MB held by the worker's Arrow pool, from its /metrics
        self.stop = threading.Event()
        self.ready = threading.Event()

    def run(self) -> None:
        logs = {kind: self.lake_dir / "silver" / kind / "_delta_log" for kind in KINDS}
        # the commits there when the observer starts are the fill's: tail from the version after them
        following = {kind: _next_version(log) for kind, log in logs.items()}
        # memory on a thread of its own: a /metrics scrape waits on the busy worker, and must not delay the
        # moment a commit is seen
        threading.Thread(target=self._sample_memory, daemon=True).start()
        self.ready.set()
        while not self.stop.is_set():
            for kind, log in logs.items():
                while (commit := log / f"{following[kind]:020d}.json").exists():
                    now = time.time()
                    following[kind] += 1
                    for path in _added_files(commit):
                        inds = pq.read_table(log.parent / path, columns=["ind"]).column("ind")
                        self.added[kind].append((now, inds.to_numpy()))
            time.sleep(0.01)

    def _sample_memory(self) -> None:
        """Once a second: the worker's RSS and, with its metrics port, what its Arrow pool holds."""
        while not self.stop.is_set():
            self.rss.append((time.time(), rss_mb(self.pid)))
            if self.metrics_port is not None:
                self.arrow.append((time.time(), arrow_mb(self.metrics_port)))
            self.stop.wait(1.0)


def arrow_mb(port: int) -> float:
    """``pinpipe_arrow_allocated_bytes`` in MB from the worker's ``/metrics`` (0 when it does not answer)."""
    try:
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=1).text
    except httpx.HTTPError:
        return 0.0
    for line in text.splitlines():
        if line.startswith("pinpipe_arrow_allocated_bytes "):
            return float(line.split()[1]) / 2**20
    return 0.0


def _next_version(log_dir: Path) -> int:
    """The version after the newest commit in ``log_dir`` (0 when there is none yet)."""
    try:
        versions = [int(e.name[:-5]) for e in os.scandir(log_dir) if e.name.endswith(".json") and e.name[:-5].isdigit()]
    except FileNotFoundError:
        return 0
    return max(versions, default=-1) + 1


def _added_files(commit: Path) -> list[str]:
    """The data files (paths relative to the table) a commit file adds with new data."""
    out = []
    for line in commit.read_bytes().splitlines():
        action = orjson.loads(line).get("add") if line.strip() else None
        if action is not None and action.get("dataChange", True):
            out.append(unquote(action["path"]))
    return out


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def latencies(sent: Sent, observer: SilverObserver) -> tuple[list[float], list[float], int, int]:
    """(new-record latencies, update latencies, records never seen, updates seen only in files added before their
    acknowledgement reached the load generator: the worker merged them before a loaded client noted the answer)."""
    new: list[float] = []
    upd: list[float] = []
    missing = early = 0
    for kind in KINDS:
        want = [(i, t, u) for k, i, t, u in sent if k == kind]
        if not want:
            continue
        wanted = pa.array(sorted({i for i, _, _ in want}), pa.int64())
        seen: dict[int, list[float]] = {}
        for at, inds in list(observer.added[kind]):
            hits = pa.array(inds).filter(pc.is_in(pa.array(inds), value_set=wanted))
            for ind in hits.to_pylist():
                seen.setdefault(ind, []).append(at)
        for ind, acked, update in want:
            times = seen.get(ind, [])
            # a new ind: its first appearance; an update: the first file holding it added after the ack
            at = next((t for t in times if t >= acked - 0.005), None) if update else (times[0] if times else None)
            if at is None and update and times:
                early += 1
            elif at is None:
                missing += 1
            else:
                (upd if update else new).append(max(0.0, at - acked))
    return new, upd, missing, early
