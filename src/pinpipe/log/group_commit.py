"""One batch of the embedded log's writer thread: every pending append written, each touched partition fsynced
once, then published — concurrent appenders share fsyncs.

Called by :meth:`EmbeddedLog._write_batch <pinpipe.log.embedded.EmbeddedLog>` (its writer thread) with what it
took from the queue. Before a partition's first write of the batch its writer may roll to a new segment
(:meth:`~pinpipe.log.partition.PartitionWriter.roll_if_due`). A request that fails (disk full) is truncated
away, in every partition it wrote to, before its caller hears of it; a partition whose fsync or publish fails is
rolled back and closed (reopened, so recovered, on the next append), and nothing unpublished is acknowledged.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping, MutableMapping, Sequence
from concurrent.futures import Future

from pinpipe.errors import LogUnavailableError, PinpipeError
from pinpipe.log.base import partition_for
from pinpipe.log.partition import PartitionWriter

Pending = tuple[str, Sequence[bytes], Sequence[bytes | None] | None, "Future[list[tuple[int, int]]]"]
"""One append waiting for the writer thread: topic, values, keys and the future its caller waits on."""
TP = tuple[str, int]
Writers = MutableMapping[TP, PartitionWriter]


def _undo(writers: Writers, marks: Mapping[TP, tuple[int, int]]) -> None:
    """Truncate partitions back to ``marks``; a partition that cannot be truncated is closed (reopened, and so
    recovered, on the next append)."""
    for tp, mark in marks.items():
        try:
            writers[tp].reset(mark)
        except OSError:
            writers.pop(tp).close()


def write_batch(
    batch: list[Pending],
    now: int,
    partitions: Callable[[str], int],
    writer_for: Callable[[str, int], PartitionWriter],
    writers: Writers,
    rr: Iterator[int],
    url: str,
) -> bool:
    """Write, sync and publish ``batch`` at time ``now`` (ms), settling every future; True if a partition rolled.
    ``rr`` numbers unkeyed records for round-robin placement."""
    rolled = False
    touched: dict[TP, list[tuple[int, list[int]]]] = {}
    results: list[tuple[Future[list[tuple[int, int]]], list[tuple[int, int]], frozenset[TP]]] = []
    failed: list[tuple[Future[list[tuple[int, int]]], BaseException]] = []
    for topic, values, keys, fut in batch:
        marks: dict[TP, tuple[int, int]] = {}
        chunks: list[tuple[TP, int, list[int]]] = []
        try:
            n = partitions(topic)
            count = len(values)
            if n == 1:
                writer = writer_for(topic, 0)
                rolled = writer.roll_if_due(now) or rolled
                marks[(topic, 0)] = writer.mark()
                first, positions = writer.write(keys, values, now)
                chunks.append(((topic, 0), first, positions))
                out = [(0, o) for o in range(first, first + count)]
            else:
                all_keys: Sequence[bytes | None] = keys if keys is not None else [None] * count
                groups: dict[int, list[int]] = {}
                for i in range(count):
                    groups.setdefault(partition_for(all_keys[i], n, next(rr)), []).append(i)
                out = [(0, 0)] * count
                for p, idxs in groups.items():
                    writer = writer_for(topic, p)
                    rolled = writer.roll_if_due(now) or rolled
                    marks[(topic, p)] = writer.mark()
                    first, positions = writer.write([all_keys[i] for i in idxs], [values[i] for i in idxs], now)
                    chunks.append(((topic, p), first, positions))
                    for j, i in enumerate(idxs):
                        out[i] = (p, first + j)
        except (PinpipeError, OSError) as exc:
            _undo(writers, marks)  # this request's records already written to other partitions go too
            error = (
                exc
                if isinstance(exc, PinpipeError)
                else LogUnavailableError(f"cannot write to {url}: {exc}", backend="file")
            )
            failed.append((fut, error))
            continue
        for tp, first, positions in chunks:
            touched.setdefault(tp, []).append((first, positions))
        results.append((fut, out, frozenset(marks)))
    published: set[TP] = set()
    try:
        for tp in touched:
            writers[tp].sync()
        for tp, written in touched.items():
            for first, positions in written:
                writers[tp].publish(positions, first)
            published.add(tp)
    except OSError as exc:
        # Nothing unpublished is acknowledged: truncated now, and reopened (so recovered) on the next append.
        err = LogUnavailableError(f"cannot make records durable in {url}: {exc}", backend="file")
        for tp in set(touched) - published:
            writer = writers.pop(tp)
            with contextlib.suppress(OSError):
                writer.rollback()
            writer.close()
        failed.extend((fut, err) for fut, _, tps in results if not tps <= published)
        results = [r for r in results if r[2] <= published]
    for fut, out, _ in results:
        fut.set_result(out)
    for fut, problem in failed:
        fut.set_exception(problem)
    return rolled
