"""Retention benchmark: a day of appends at 1,000 records/s to the embedded log, in compressed time, with the
sink's and the stream's groups committing as they go; the log's disk use over time against its bound.

    python bench/retention.py [--hours 24] [--rate 1000] [--segment-mib 8] [--retention-mib 128]
                              [--retention-hours 2] [--step-s 10] [--baseline-hours 1]

The writer's clock is injected: each step appends ``rate × step_s`` small records (a 40-byte JSON value and its
key) stamped with the simulated time, so 86.4M records (24 h) take minutes, not a day. The retention runner is the
one ``pinpipe api`` runs (the size rule in every roll, on the writer thread; summaries and a full pass on its
thread after every roll; its periodic pass is wall-clock, so in compressed time the roll-triggered passes are the
ones that run). The sink group reads every record (``read_values``, from its committed position, across segments)
and commits after each step; the stream group commits a minute of simulated time behind the end.

Figures, every simulated hour: records appended, the log's bytes on disk (``du`` of the partition's segment
files), the bound (``retention_bytes`` per partition), the log start offset and what the same appends take without
retention. Two peaks: over the samples taken after each step (every 10 simulated seconds), and over the moments
the writer reads the clock — before each batch and at the start of each roll's size pass, after the batch that
rolled is written and before anything is deleted: the largest the partition ever gets. Baselines measured in the same run: (1) the no-retention disk use, from the retired manifest's bytes
plus the live bytes (exact: it is what every segment weighed when it was deleted); (2) for ``--baseline-hours`` a
second log with retention off, fed the same appends, its real ``du`` compared with (1). Ends with one JSON line.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

from pinpipe.log.embedded import EmbeddedLog
from pinpipe.log.retention import RetentionPolicy
from pinpipe.log.retired import read_retired

TOPIC = "bench.geo"
SINK, STREAM = "pinpipe-sink", "pinpipe-stream"
START_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z


class SimClock:
    """The simulated time; each reading also measures the partition in ``probe`` (the writer reads the clock
    before each batch and when a roll's pass starts: the moments the partition is largest)."""

    def __init__(self) -> None:
        self.now = START_MS
        self.probe: Path | None = None
        self.peak = 0

    def __call__(self) -> int:
        if self.probe is not None:
            self.peak = max(self.peak, disk_bytes(self.probe))
        return self.now


def disk_bytes(pdir: Path) -> int:
    """Bytes of the partition's segment files now (a file the retention thread unlinks meanwhile counts 0)."""
    total = 0
    for f in pdir.iterdir() if pdir.is_dir() else ():
        if f.suffix in (".data", ".index"):
            with contextlib.suppress(FileNotFoundError):
                total += f.stat().st_size
    return total


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--hours", type=float, default=24.0)
    ap.add_argument("--rate", type=int, default=1000, help="records per simulated second")
    ap.add_argument("--segment-mib", type=float, default=8.0)
    ap.add_argument("--retention-mib", type=float, default=128.0, help="retention_bytes per partition")
    ap.add_argument("--retention-hours", type=float, default=2.0, help="retention_ms, in simulated hours")
    ap.add_argument("--step-s", type=int, default=10, help="simulated seconds per append (one fsync)")
    ap.add_argument("--baseline-hours", type=float, default=1.0, help="hours fed to a second log without retention")
    args = ap.parse_args()

    root = Path(tempfile.mkdtemp(prefix="pinpipe-retention-"))
    clock = SimClock()
    segment_bytes = int(args.segment_mib * (1 << 20))
    bound = int(args.retention_mib * (1 << 20))
    policy = RetentionPolicy(
        segment_bytes=segment_bytes,
        segment_ms=None,
        retention_ms=int(args.retention_hours * 3600_000),
        retention_bytes=bound,
        groups=(SINK, STREAM),
    )
    log = EmbeddedLog(root / "log", policy, clock)
    log.ensure_topics([TOPIC])
    plain = EmbeddedLog(root / "plain", RetentionPolicy(segment_bytes=segment_bytes, retention_ms=-1), clock)
    plain.ensure_topics([TOPIC])
    pdir, plain_dir = root / "log" / TOPIC / "0", root / "plain" / TOPIC / "0"
    clock.probe = pdir
    per_step = args.rate * args.step_s
    steps = int(args.hours * 3600 / args.step_s)
    baseline_steps = int(args.baseline_hours * 3600 / args.step_s)
    keys = [str(i % 100_000).encode() for i in range(per_step)]
    sink_at = 0
    appended = 0
    peak = 0
    peak_after_first_bound = 0
    samples: list[dict[str, float]] = []
    baseline_check: dict[str, int] = {}
    started = time.perf_counter()
    cpu0 = time.process_time()
    print(f"{'sim h':>6} {'records':>12} {'disk MiB':>9} {'bound MiB':>9} {'no-ret MiB':>10} {'log start':>12}")
    for step in range(1, steps + 1):
        clock.now += args.step_s * 1000
        values = [b'{"ind":%d,"country":"Aruba","n":%d}' % (appended + i, i) for i in range(per_step)]
        log.append(TOPIC, values, keys)
        if step <= baseline_steps:
            plain.append(TOPIC, values, keys)
        appended += per_step
        while (block := log.read_values(TOPIC, 0, sink_at, 100_000)).count:  # the sink reads everything, then commits
            sink_at = block.end
        log.commit(SINK, TOPIC, {0: sink_at})
        log.commit(STREAM, TOPIC, {0: max(0, appended - 60 * args.rate)})  # a simulated minute behind
        used = disk_bytes(pdir)
        peak = max(peak, used)
        if step == baseline_steps:
            retired = read_retired(pdir)
            baseline_check = {"computed": retired.bytes + used, "measured": disk_bytes(plain_dir)}
            clock.probe = None  # the plain log's writer reads the clock too: measure the retained log only
            plain.close()
            clock.probe = pdir
            shutil.rmtree(root / "plain")
        if step * args.step_s % 3600 == 0 or step == steps:
            retired = read_retired(pdir)
            no_retention = retired.bytes + used
            if no_retention > bound:
                peak_after_first_bound = max(peak_after_first_bound, used)
            hour = step * args.step_s / 3600
            samples.append({"hour": hour, "records": appended, "disk_bytes": used, "no_retention_bytes": no_retention})
            print(
                f"{hour:6.1f} {appended:12,} {used / 2**20:9.1f} {bound / 2**20:9.1f} {no_retention / 2**20:10.1f} "
                f"{log.log_start(TOPIC, 0):12,}",
                flush=True,
            )
    wall = time.perf_counter() - started
    cpu = time.process_time() - cpu0
    assert log.retention is not None
    passes, roll_passes, summarised = log.retention.passes, log.retention.roll_passes, log.retention.summarised
    read_by_passes = log.retention.read_by_passes
    retired = read_retired(pdir)
    final = disk_bytes(pdir)
    log.close()
    load = os.getloadavg()
    shutil.rmtree(root)
    no_retention = retired.bytes + final
    print(
        f"\n{appended:,} records in {wall:.1f} s wall ({appended / wall:,.0f} records/s, {cpu:.1f} s CPU); "
        f"{passes} retention passes ({roll_passes} in rolls), {len(retired.segments)} segments retired, "
        f"{summarised} summarised after closing, {read_by_passes} read by the pass deleting them"
    )
    print(
        f"disk use: peak {peak / 2**20:.1f} MiB over the step samples, {clock.peak / 2**20:.1f} MiB at the writer's "
        f"instants (max {max(peak, clock.peak):,} bytes), final {final / 2**20:.1f} MiB, bound {bound / 2**20:.1f} MiB; "
        f"without retention {no_retention / 2**20:,.1f} MiB ({no_retention / max(final, 1):.0f}× the final use)"
    )
    if baseline_check:
        print(
            f"baseline check at {args.baseline_hours:g} h: no-retention bytes computed {baseline_check['computed']:,}"
            f", measured on a log without retention {baseline_check['measured']:,}"
        )
    print(f"load average: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    print(
        json.dumps(
            {
                "bench": "retention",
                "simulated_hours": args.hours,
                "rate_per_s": args.rate,
                "records": appended,
                "segment_bytes": segment_bytes,
                "retention_bytes": bound,
                "retention_ms": policy.retention_ms,
                "peak_disk_bytes": peak,
                "peak_disk_bytes_writer_instants": clock.peak,
                "final_disk_bytes": final,
                "under_bound": max(peak, clock.peak) <= bound,
                "no_retention_bytes": no_retention,
                "baseline_check": baseline_check,
                "retired_segments": len(retired.segments),
                "retired_records": retired.records,
                "retention_passes": passes,
                "roll_passes": roll_passes,
                "segments_summarised": summarised,
                "segments_read_by_passes": read_by_passes,
                "wall_s": round(wall, 1),
                "cpu_s": round(cpu, 1),
                "records_per_wall_s": round(appended / wall),
                "loadavg_1m": round(load[0], 2),
            }
        )
    )


if __name__ == "__main__":
    main()
