"""The sink's read path over the embedded log's files: the values of a run of records, newline-joined, with every
record's CRC, offset and length checked — the header checks in bulk (numpy), the CRCs in one tight loop.

Who calls what: :func:`pinpipe.log.segment.read_values` delegates to :func:`read_values` here (file descriptors
in, ``(first offset, position after, count, values)`` out); :func:`check_values` is the same over bytes already
read (the data from the first record's position, the index positions as a ``u64`` array), for callers that
hold them. The record format is :mod:`pinpipe.log.segment`'s.

How it stays exact: the index gives every record's position, so the fixed head of every record (length, CRC,
offset, timestamp, key length) is gathered from the data in one numpy operation and compared in bulk — offsets
consecutive from the expected first one, lengths possible and each record ending where the next one starts,
key lengths inside their body. Only the CRC needs one call per record (``zlib.crc32`` over a memoryview slice,
no copy). When anything in the block does not check out — a corrupt record, one an operator skipped, an index
that disagrees with the data — the block is read again by :func:`_walk`, the record-by-record walk the log has
always used, so what is returned or raised (the same :class:`~pinpipe.errors.CorruptStateError`, naming topic,
partition, offset and reason) is exactly what that walk gives.
"""

from __future__ import annotations

import os
import zlib

import numpy as np
import numpy.typing as npt

from pinpipe.log import segment

_HEAD = np.dtype([("length", "<u4"), ("crc", "<u4"), ("offset", "<i8"), ("ts", "<i8"), ("klen", "<i4")])
"""The fixed head of a record (segment.RECORD_HEAD) as a numpy record: 28 bytes, unaligned."""
_HEAD_SPAN = np.arange(_HEAD.itemsize, dtype=np.int64)
Positions = npt.NDArray[np.uint64]


def read_values(
    data_fd: int,
    index_fd: int,
    topic: str,
    partition: int,
    offset: int,
    max_records: int,
    skipped: segment.Skipped,
    base: int = 0,
) -> tuple[int, int, int, bytes]:
    """``(first offset, position after, count, values)`` of consecutive published records of the segment of
    ``base`` from ``offset`` on, each value followed by ``\\n``; what :func:`pinpipe.log.segment.read_values`
    promises (stops at a chunk boundary and before a skipped record; skipped records at the start are stepped
    over)."""
    entry = offset - base
    count = segment.indexed_count(index_fd)
    if entry >= count or max_records <= 0:
        return offset, offset, 0, b""
    want = min(max_records, count - entry)
    raw = os.pread(index_fd, segment.ENTRY.size * (want + 1), segment.ENTRY.size * entry)
    positions: Positions = np.frombuffer(raw, dtype="<u8", count=len(raw) // segment.ENTRY.size)
    start = int(positions[0])
    end = int(positions[want]) if len(positions) > want else None
    size = (end - start) if end is not None else os.fstat(data_fd).st_size - start
    limit = segment.VALUES_CHUNK
    if size > limit and want > 1:  # stay bounded: whole records up to about ``limit`` bytes
        cut = 1 + int(np.searchsorted(positions[1:want], start + limit, side="right"))
        want = max(1, cut - 1)
        size = int(positions[want]) - start
    buf = os.pread(data_fd, size, start) if size > 0 else b""
    return check_values(buf, positions, want, offset, topic, partition, skipped)


def check_values(
    buf: bytes,
    positions: Positions,
    want: int,
    offset: int,
    topic: str,
    partition: int,
    skipped: segment.Skipped,
) -> tuple[int, int, int, bytes]:
    """The values of the ``want`` records from ``offset`` whose index entries are ``positions`` (from ``offset``
    on; one more entry when there is one), ``buf`` holding the data from ``positions[0]`` on. Returns what
    :func:`read_values` returns; raises CorruptStateError for an indexed record that does not check out and was
    not skipped."""
    size = len(buf)
    rel = positions[:want].astype(np.int64) - np.int64(positions[0])
    if want and rel[0] == 0 and (np.diff(rel) >= segment.RECORD_HEAD.size).all() and rel[-1] + _HEAD.itemsize <= size:
        head = np.frombuffer(buf, dtype=np.uint8)[rel[:, None] + _HEAD_SPAN].view(_HEAD)[:, 0]
        length = head["length"].astype(np.int64)
        ends = rel + segment.HEADER.size + length
        klen = head["klen"].astype(np.int64)
        fixed = segment.BODY.size
        if (
            ends[-1] <= size
            and (length >= fixed).all()
            and (ends[:-1] == rel[1:]).all()
            and (head["offset"] == np.arange(offset, offset + want, dtype=np.int64)).all()
            and ((klen == -1) | ((klen >= 0) & (klen <= length - fixed))).all()
        ):
            view, crc32 = memoryview(buf), zlib.crc32
            bodies = (rel + segment.HEADER.size).tolist()
            stops = ends.tolist()
            crcs = np.fromiter(
                [crc32(view[a:b]) for a, b in zip(bodies, stops, strict=True)], dtype=np.uint32, count=want
            )
            if (crcs == head["crc"]).all():
                starts = (rel + segment.RECORD_HEAD.size + np.maximum(klen, 0)).tolist()
                values = [buf[a:b] for a, b in zip(starts, stops, strict=True)]
                values.append(b"")
                return offset, offset + want, want, b"\n".join(values)
    return _walk(buf, positions, want, offset, topic, partition, skipped)


def _walk(
    buf: bytes,
    positions: Positions,
    want: int,
    offset: int,
    topic: str,
    partition: int,
    skipped: segment.Skipped,
) -> tuple[int, int, int, bytes]:
    """The record-by-record walk (each record found from the one before by its length): used when the bulk
    checks fail, so errors and skipped records are handled exactly as the log always did."""
    if not want:
        return offset, offset, 0, b""
    head, crc32, size = segment.RECORD_HEAD.unpack_from, zlib.crc32, len(buf)
    fixed, skip, body_fixed = segment.RECORD_HEAD.size, segment.HEADER.size, segment.BODY.size
    base, entries = int(positions[0]), len(positions)
    values: list[bytes] = []
    add = values.append
    pos = 0
    first = expected = offset
    stop = offset + want
    while expected < stop:
        if pos + fixed <= size:
            length, crc, record_offset, _, klen = head(buf, pos)
            end = pos + skip + length
            if record_offset == expected and body_fixed <= length and end <= size:
                body = buf[pos + skip : end]
                if crc32(body) == crc:
                    if klen == -1:
                        add(body[body_fixed:])
                        expected += 1
                        pos = end
                        continue
                    if 0 <= klen <= length - body_fixed:
                        add(body[body_fixed + klen :])
                        expected += 1
                        pos = end
                        continue
        i = expected - offset
        if not skipped(expected):
            nxt = int(positions[i + 1]) - base if i + 1 < entries else None
            reason = segment._problem(buf, int(positions[i]) - base, expected, nxt) or "unreadable"
            raise segment.corrupt_error(topic, partition, expected, reason)
        if values:
            break  # the block ends before the gap; the next read steps over it
        expected += 1
        first = expected
        if i + 1 >= entries:
            break
        pos = int(positions[i + 1]) - base
    n = len(values)
    if n:
        add(b"")
    return first, expected, n, b"\n".join(values)
