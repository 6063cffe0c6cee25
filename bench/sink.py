"""Sink throughput on ``file://``: records/s landed from the embedded log, against plain obstore puts of the same
bytes in the same run (target ratio >= 0.8), and against durable (fsync'd) creates of the same bytes.

    .venv/bin/python bench/sink.py [--records N] [--flush-records N] [--profile]

The log is filled first (not timed). The sink then lands everything (timed to its last commit: reads, joins,
durable writes with fsync, commits; reading overlaps writing). The baseline writes the very objects the sink
produced with ``obstore.put`` to a fresh ``LocalStore`` (no fsync, no reads) — a bound no durable sink reaches
while fsync costs more than the copy, so the run also reports the ratio to ``Lake.create`` of the same objects
(fsync'd, what the sink must do at least). For a breakdown it times the log reads alone (``read_values``, the
sink's path, and ``read``, one record object each), the values path over bytes in memory both ways (bulk-checked,
:func:`pinpipe.log.values_read.check_values`, and the record-by-record walk it replaced), and the sink once more
with one object written at a time (``writers=1``, as before objects of different partitions were written at
once). Not a test: it prints figures; the last line is one JSON object.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import pstats
import tempfile
import time
from pathlib import Path

import numpy as np
import obstore
import orjson
from obstore.store import LocalStore

from pinpipe.lake.sink import LakeSink
from pinpipe.lake.store import Lake
from pinpipe.log import segment, values_read
from pinpipe.log.embedded import EmbeddedLog

TOPICS = ("bench.pin", "bench.geo", "bench.user")


def _value(i: int, topic: str) -> bytes:
    if topic.endswith("pin"):
        row = {
            "index": i,
            "unique_id": f"{i:08x}-58f0-4b5c-8b8e-4bd2c0b1e5d{i % 10}",
            "title": "Every Thing You Need To Know About Decorating Your Home",
            "description": "Everything you need to know about decorating, from color palettes to layouts. 15.1k Likes",
            "poster_name": "Home Decor Ideas",
            "follower_count": "124k",
            "tag_list": "Home Decor,Living Room,Interior Design,Apartment",
            "is_image_or_video": "image",
            "image_src": "https://i.pinimg.com/originals/d4/12/78/d412789b1b8e3c4a5f6a7b8c9d0e1f2a.jpg",
            "downloaded": 1,
            "save_location": "Local save in /data/home-decor",
            "category": "home-decor",
        }
    elif topic.endswith("geo"):
        row = {
            "ind": i,
            "timestamp": "2020-08-28 03:52:47",
            "latitude": -89.9787,
            "longitude": -173.293,
            "country": "Albania",
        }
    else:
        row = {
            "ind": i,
            "first_name": "Alexandria",
            "last_name": "Alvarado",
            "age": 20,
            "date_joined": "2015-10-31 11:13:23",
        }
    return orjson.dumps(row)


def _never(offset: int) -> bool:
    return False


def _blocks(log_dir: Path, records: int) -> list[tuple[bytes, np.ndarray, int]]:
    """Every topic's segments' data and index in blocks of ``records`` (data from the block's first record on)."""
    out = []
    for topic in TOPICS:
        directory = log_dir / topic / "0"
        for base in segment.list_segments(directory):
            data_path, index_path = segment.segment_paths(directory, base)
            data = data_path.read_bytes()
            index = np.frombuffer(index_path.read_bytes(), dtype="<u8")
            for first in range(0, len(index), records):
                positions = index[first : first + records + 1]
                end = int(positions[-1]) if len(positions) > records else len(data)
                out.append(
                    (
                        data[int(positions[0]) : end],
                        positions if len(positions) > records else np.append(positions, np.uint64(end)),
                        base + first,
                    )
                )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=300_000)
    parser.add_argument("--flush-records", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=3, help="report the best of this many runs")
    parser.add_argument("--profile", action="store_true", help="print the first run's top functions (cumulative)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="pinpipe-bench-sink-") as tmp:
        root = Path(tmp)
        log = EmbeddedLog(root / "log")
        log.ensure_topics(list(TOPICS), 1)
        per_topic = args.records // len(TOPICS)
        started = time.perf_counter()
        for topic in TOPICS:
            for first in range(0, per_topic, 5_000):
                log.append(topic, [_value(i, topic) for i in range(first, min(first + 5_000, per_topic))])
        total = per_topic * len(TOPICS)
        print(f"filled the log: {total:,} records in {time.perf_counter() - started:.2f} s (not timed below)")

        sink_s = sink1_s = plain_s = durable_s = read_s = values_s = walk_s = bulk_s = float("inf")
        profile = cProfile.Profile() if args.profile else None
        for run in range(args.repeat):  # best of N: the machine may be shared
            lake = Lake(f"file://{root / f'lake{run}'}")
            sink = LakeSink(log, lake, group=f"bench{run}", flush_records=args.flush_records, flush_seconds=5.0)
            if profile and run == 0:
                profile.enable()
            stats = sink.run(until_idle=True)
            if profile and run == 0:
                profile.disable()
            assert stats.records == total, stats
            sink_s = min(sink_s, stats.busy_s)

            one = LakeSink(  # the same with one object written at a time (before: no overlapping fsyncs)
                log,
                Lake(f"file://{root / f'lake1w{run}'}"),
                group=f"bench1w{run}",
                flush_records=args.flush_records,
                flush_seconds=5.0,
                writers=1,
            )
            sink1_s = min(sink1_s, one.run(until_idle=True).busy_s)

            objects = {o.key: lake.get(o.key) or b"" for o in lake.list("topics/")}
            plain = LocalStore(root / f"plain{run}", mkdir=True)
            started = time.perf_counter()
            for key, data in objects.items():
                obstore.put(plain, key, data)
            plain_s = min(plain_s, time.perf_counter() - started)

            durable = Lake(f"file://{root / f'durable{run}'}")
            started = time.perf_counter()
            for key, data in objects.items():
                durable.create(key, data)
            durable_s = min(durable_s, time.perf_counter() - started)

            started = time.perf_counter()
            for topic in TOPICS:
                offset = 0
                while records := log.read(topic, 0, offset, args.flush_records):
                    offset = records[-1].offset + 1
            read_s = min(read_s, time.perf_counter() - started)

            started = time.perf_counter()
            for topic in TOPICS:
                offset = 0
                while (block := log.read_values(topic, 0, offset, args.flush_records)).count:
                    offset = block.end
            values_s = min(values_s, time.perf_counter() - started)

            blocks = _blocks(root / "log", args.flush_records)
            started = time.perf_counter()
            for data, positions, first in blocks:  # the record-by-record walk (the values path before)
                values_read._walk(data, positions, len(positions) - 1, first, "t", 0, _never)
            walk_s = min(walk_s, time.perf_counter() - started)
            started = time.perf_counter()
            for data, positions, first in blocks:
                values_read.check_values(data, positions, len(positions) - 1, first, "t", 0, _never)
            bulk_s = min(bulk_s, time.perf_counter() - started)

        size = sum(len(d) for d in objects.values())
        sink_rate, plain_rate, durable_rate = total / sink_s, total / plain_s, total / durable_s
        print(
            f"best of {args.repeat} runs; objects: {len(objects)} of <= {args.flush_records:,} records, {size / 1e6:.1f} MB"
        )
        print(f"sink (read log + join + fsync'd create + commit): {sink_s:.3f} s  {sink_rate:,.0f} records/s")
        print(f"plain obstore.put of the same bytes:              {plain_s:.3f} s  {plain_rate:,.0f} records/s")
        print(f"Lake.create (fsync) of the same bytes:            {durable_s:.3f} s  {durable_rate:,.0f} records/s")
        print(f"ratio sink/plain: {sink_rate / plain_rate:.2f}  (target >= 0.8)")
        print(f"ratio sink/durable creates: {sink_rate / durable_rate:.2f}")
        print(f"sink writing one object at a time:                {sink1_s:.3f} s  {total / sink1_s:,.0f} records/s")
        print("where the time goes (each alone):")
        print(f"  EventLog.read_values (the sink's read): {values_s:.3f} s  {total / values_s:,.0f} records/s")
        print(f"  EventLog.read (a LogRecord each):       {read_s:.3f} s  {total / read_s:,.0f} records/s")
        print(f"  read_values / sink:                     {values_s / sink_s:.2f}")
        print(f"  values path over bytes in memory: bulk-checked {bulk_s:.3f} s, record walk {walk_s:.3f} s")
        if profile:
            pstats.Stats(profile).sort_stats("cumulative").print_stats(18)
        log.close()
        load = os.getloadavg()
        print(f"load average: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
        print(
            json.dumps(
                {
                    "bench": "sink",
                    "records": total,
                    "sink_records_per_s": round(sink_rate),
                    "sink_one_writer_records_per_s": round(total / sink1_s),
                    "plain_put_records_per_s": round(plain_rate),
                    "durable_create_records_per_s": round(durable_rate),
                    "sink_to_plain": round(sink_rate / plain_rate, 3),
                    "sink_to_durable": round(sink_rate / durable_rate, 3),
                    "read_values_records_per_s": round(total / values_s),
                    "values_bulk_s": round(bulk_s, 4),
                    "values_walk_s": round(walk_s, 4),
                    "load_average": [round(x, 2) for x in load],
                }
            )
        )


if __name__ == "__main__":
    main()
