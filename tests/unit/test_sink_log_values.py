"""The sink's read path (:mod:`pinpipe.log.values_read`): the bulk-checked values equal the records read one by
one, and a record damaged in any field of its format raises the same CorruptStateError as the record-by-record
walk (and as :meth:`EmbeddedLog.read`), naming topic, partition, offset and reason."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest

from pinpipe.errors import CorruptStateError
from pinpipe.log import open_log, segment, values_read

TOPIC = "t"
VALUES = [b'{"n":%d,"pad":"%s"}' % (i, b"x" * (i % 37)) for i in range(60)]
KEYS = [None if i % 3 == 0 else str(i * 7919).encode() for i in range(60)]
DAMAGED = 23


def _log(tmp_path: Path) -> tuple[str, Path]:
    url = f"file://{tmp_path / 'log'}"
    log = open_log(url)
    log.ensure_topics([TOPIC])
    log.append(TOPIC, VALUES[:30], KEYS[:30])
    log.append(TOPIC, VALUES[30:], KEYS[30:])
    log.close()
    return url, tmp_path / "log" / TOPIC / "0"


def _start(pdir: Path, offset: int) -> int:
    return int(struct.unpack_from("<Q", segment.segment_paths(pdir, 0)[1].read_bytes(), 8 * offset)[0])


def _files(pdir: Path) -> tuple[bytes, np.ndarray]:
    return segment.segment_paths(pdir, 0)[0].read_bytes(), np.frombuffer(
        segment.segment_paths(pdir, 0)[1].read_bytes(), dtype="<u8"
    )


def _rewrite_body(raw: bytearray, at: int, field: int, fmt: str, value: int) -> None:
    """Change a body field and recompute the record's CRC, so only that field's own check can find it."""
    length = struct.unpack_from("<I", raw, at)[0]
    struct.pack_into(fmt, raw, at + segment.HEADER.size + field, value)
    struct.pack_into("<I", raw, at + 4, zlib.crc32(raw[at + 8 : at + 8 + length]))


def test_values_equal_the_records_read_one_by_one(tmp_path: Path) -> None:
    url, pdir = _log(tmp_path)
    reader = open_log(url)
    block = reader.read_values(TOPIC, 0, 5, max_records=40)
    assert (block.start, block.end, block.count) == (5, 45, 40)
    assert block.data == b"".join(v + b"\n" for v in VALUES[5:45])
    assert block.data == b"".join(r.value + b"\n" for r in reader.read(TOPIC, 0, 5, max_records=40))
    data, positions = _files(pdir)
    fast = values_read.check_values(data, positions, 60, 0, TOPIC, 0, lambda _: False)
    walked = values_read._walk(data, positions, 60, 0, TOPIC, 0, lambda _: False)
    assert fast == walked == (0, 60, 60, b"".join(v + b"\n" for v in VALUES))


def _damage(kind: str, raw: bytearray, at: int) -> None:
    if kind == "length":
        raw[at] ^= 0x01
    elif kind == "crc":
        raw[at + 4] ^= 0x10
    elif kind == "offset":
        raw[at + 8] ^= 0x02
    elif kind == "key_length":
        raw[at + 24] ^= 0x04
    elif kind == "body":
        raw[at + segment.RECORD_HEAD.size + 3] ^= 0x20
    elif kind == "offset_rechecked":
        _rewrite_body(raw, at, 0, "<q", DAMAGED + 1000)
    elif kind == "key_length_rechecked":
        _rewrite_body(raw, at, 16, "<i", 1 << 20)


EXPECTED_REASON = {
    "length": "its length (",
    "crc": "checksum mismatch",
    "offset": "checksum mismatch",
    "key_length": "checksum mismatch",
    "body": "checksum mismatch",
    "offset_rechecked": f"it holds offset {DAMAGED + 1000}",
    "key_length_rechecked": f"impossible key length {1 << 20}",
}


@pytest.mark.parametrize("kind", sorted(EXPECTED_REASON))
def test_a_damaged_field_raises_what_the_record_walk_raises(tmp_path: Path, kind: str) -> None:
    url, pdir = _log(tmp_path)
    raw = bytearray(segment.segment_paths(pdir, 0)[0].read_bytes())
    _damage(kind, raw, _start(pdir, DAMAGED))
    segment.segment_paths(pdir, 0)[0].write_bytes(bytes(raw))

    data, positions = _files(pdir)
    with pytest.raises(CorruptStateError) as fast:
        values_read.check_values(data, positions, 60, 0, TOPIC, 0, lambda _: False)
    with pytest.raises(CorruptStateError) as walked:
        values_read._walk(data, positions, 60, 0, TOPIC, 0, lambda _: False)
    assert (fast.value.message, fast.value.facts, fast.value.hint) == (
        walked.value.message,
        walked.value.facts,
        walked.value.hint,
    )
    assert (fast.value.facts["topic"], fast.value.facts["partition"], fast.value.facts["offset"]) == (
        TOPIC,
        0,
        DAMAGED,
    )
    assert fast.value.facts["reason"].startswith(EXPECTED_REASON[kind])

    reader = open_log(url)
    before = reader.read_values(TOPIC, 0, 0, max_records=DAMAGED)  # the records before it are served
    assert (before.start, before.end, before.data) == (0, DAMAGED, b"".join(v + b"\n" for v in VALUES[:DAMAGED]))
    with pytest.raises(CorruptStateError) as through_log:  # a block that holds it is never served in part
        reader.read_values(TOPIC, 0, 0)
    with pytest.raises(CorruptStateError) as one_by_one:
        reader.read(TOPIC, 0, 0)
    assert through_log.value.message == one_by_one.value.message
    assert through_log.value.facts == one_by_one.value.facts
    assert through_log.value.facts["reason"] == fast.value.facts["reason"]


def test_a_skipped_damaged_record_is_stepped_over(tmp_path: Path) -> None:
    _, pdir = _log(tmp_path)
    raw = bytearray(segment.segment_paths(pdir, 0)[0].read_bytes())
    _damage("body", raw, _start(pdir, DAMAGED))
    data, positions = _files(pdir)
    data = bytes(raw)
    skipped = {DAMAGED}.__contains__
    head = values_read.check_values(data, positions, 60, 0, TOPIC, 0, skipped)
    assert head == (0, DAMAGED, DAMAGED, b"".join(v + b"\n" for v in VALUES[:DAMAGED]))
    rest = positions[DAMAGED:]
    tail = values_read.check_values(data[int(rest[0]) :], rest, 60 - DAMAGED, DAMAGED, TOPIC, 0, skipped)
    assert tail == (DAMAGED + 1, 60, 60 - DAMAGED - 1, b"".join(v + b"\n" for v in VALUES[DAMAGED + 1 :]))


def test_an_index_that_disagrees_with_the_data_is_read_as_the_walk_reads_it(tmp_path: Path) -> None:
    _, pdir = _log(tmp_path)
    data, positions = _files(pdir)
    moved = positions.copy()
    moved[DAMAGED] += 1  # an index entry off by one: the data itself is intact
    assert values_read.check_values(data, moved, 60, 0, TOPIC, 0, lambda _: False) == values_read._walk(
        data, moved, 60, 0, TOPIC, 0, lambda _: False
    )
