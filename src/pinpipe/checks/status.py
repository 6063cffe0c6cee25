"""The running pipeline at a glance: how far each stage got, per topic and partition, and whether one is stuck.

Who calls what: ``pinpipe status`` (:mod:`pinpipe.cli.status_cmd`) opens the log and the lake(s) with
:func:`open_existing_log` / :func:`open_existing_lake` (which never create anything), calls :func:`take_look`
once per refresh and :meth:`Progress.judge` on each look to tell a stage that is stuck. The Python API's
``pinpipe.status`` calls :func:`take_look` too.

What one look reads — nothing is written:

- **log end**: ``EventLog.end_offset`` per partition of every topic in the log, and for the embedded log its
  **log start** (the first offset retention kept) and the records retired below it (``retired.json``);
- **sink committed**: the sink group's committed position (``EventLog.committed``);
- **sink landed**: the end of the partition's last landed object (its start offset + its line count, exact
  unless the log has offset gaps, as Kafka transaction markers leave). The sink resumes from the larger of the
  two (:mod:`pinpipe.lake.sink`), so its *position* is that maximum and its **lag** ``log end − position``;
- **stream position**: the Delta application-transaction version ``pinpipe-stream:<topic>:<p>`` on
  ``silver/<kind>`` of the stream's lake (the next offset the stream worker will read), and its lag. Judged only
  when the stream has written at least one partition there (a batch-only deployment shows no stream);
- **silver freshness** per kind: now − the time of the newest commit that wrote rows or progress to
  ``silver/<kind>`` (compactions do not count) — how long ago the newest record became readable in silver;
- **last batch run**: the latest ``batch`` run in ``<lake>/_meta/runs`` and the quality gate's verdict on it
  (:func:`pinpipe.checks.quality.check_run`).

Stuck: a stage of a partition is stuck when its lag is above ``max_lag``, or when its lag is above 0 and its
position has not moved for ``stuck_after_s`` seconds over the looks taken (a single look cannot tell that).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from deltalake import DeltaTable
from deltalake.exceptions import DeltaError, TableNotFoundError

from pinpipe.checks.quality import check_run
from pinpipe.config import LakeSettings
from pinpipe.errors import InvalidInputError, NotFoundError, StoreUnavailableError
from pinpipe.lake import delta
from pinpipe.lake.data_files import commit_operation
from pinpipe.lake.runs import RUNS_TABLE
from pinpipe.lake.store import Lake, is_temporary_key, parse_landed_key
from pinpipe.log import EventLog, open_log
from pinpipe.log.retired import NOTHING_RETIRED, RetiresRecords
from pinpipe.tables import KINDS, Kind, kind_of_topic, stream_app_id

STUCK_EXIT_CODE = 4
"""``pinpipe status`` exits with this code when a stage is stuck (SPEC §8 leaves 4 free)."""

Stage = Literal["sink", "stream"]
STAGES: tuple[Stage, ...] = ("sink", "stream")
_SILVER_WRITES = ("MERGE", "WRITE", "CREATE TABLE", "CREATE OR REPLACE TABLE")
"""Delta operations that add rows or progress to silver (``OPTIMIZE`` only rewrites files)."""


def as_url(location: str) -> str:
    """A plain path (``./lake``) as ``file://`` + its absolute path; a URL unchanged."""
    if "://" in location:
        return location
    return "file://" + str(Path(location).expanduser().resolve())


def open_existing_log(url: str) -> EventLog:
    """The event log at ``url``; a ``file://`` log directory must exist (NotFoundError, never created)."""
    url = as_url(url)
    if url.startswith("file://"):
        path = Path(url.partition("://")[2]).expanduser()
        if not path.is_dir():
            raise NotFoundError(
                f"there is no event log at {url} ({path} does not exist)",
                hint="point --log at the directory `pinpipe api` writes (its --log)",
                log=url,
            )
    return open_log(url)


def open_existing_lake(url: str, settings: LakeSettings) -> Lake:
    """The lake at ``url``; it must exist (a ``file://`` directory, or an ``s3://`` prefix holding objects)."""
    url = as_url(url)
    if url.startswith("file://"):
        path = Path(url.partition("://")[2]).expanduser()
        if not path.is_dir():
            raise NotFoundError(
                f"there is no lake at {url} ({path} does not exist)",
                hint="point --lake at the lake `pinpipe sink` writes (its --lake)",
                lake=url,
            )
    lake = Lake(url, settings)
    if lake.scheme == "s3" and next(lake.iter(), None) is None:
        raise NotFoundError(
            f"the lake {url} holds no object", hint="point --lake at the lake `pinpipe sink` writes", lake=url
        )
    return lake


@dataclass(frozen=True)
class PartitionStatus:
    """One topic-partition: the log's end and how far the sink and the stream got."""

    topic: str
    partition: int
    kind: Kind | None
    log_end: int
    sink_committed: int | None
    sink_landed: int | None
    stream_position: int | None
    """None when the stream is not part of this deployment (it never wrote this lake) or the topic is not ours."""
    log_start: int = 0
    """The first offset the log still holds (retention deleted the records below it)."""
    retired: int = 0
    """Records retention deleted (from the partition's retired manifest)."""

    @property
    def sink_position(self) -> int:
        return max(self.sink_committed or 0, self.sink_landed or 0)

    @property
    def sink_lag(self) -> int:
        return max(self.log_end - self.sink_position, 0)

    @property
    def stream_lag(self) -> int | None:
        return None if self.stream_position is None else max(self.log_end - self.stream_position, 0)

    def position(self, stage: Stage) -> int | None:
        return self.sink_position if stage == "sink" else self.stream_position

    def lag(self, stage: Stage) -> int | None:
        return self.sink_lag if stage == "sink" else self.stream_lag


@dataclass(frozen=True)
class SilverStatus:
    """One silver table: when it was last written (None: no table) and how long ago."""

    lake: str
    kind: Kind
    last_write: datetime | None
    age_s: float | None


@dataclass(frozen=True)
class RunStatus:
    """The latest batch run and the quality gate's verdict on it."""

    run_id: str
    finished_at: datetime
    read: int
    quarantined: int
    verdict: Literal["passed", "failed"]


@dataclass(frozen=True)
class Stuck:
    """A stage of a partition that is stuck, and why."""

    stage: Stage
    topic: str
    partition: int
    lag: int
    reason: str


@dataclass(frozen=True)
class Look:
    """Everything one look saw, at ``taken_at``."""

    taken_at: datetime
    log: str
    lake: str
    stream_lake: str
    partitions: tuple[PartitionStatus, ...]
    silver: tuple[SilverStatus, ...]
    last_run: RunStatus | None
    stuck: tuple[Stuck, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        """The look as JSON-ready data (what ``pinpipe status --json`` prints)."""
        return {
            "taken_at": self.taken_at.isoformat(),
            "log": self.log,
            "lake": self.lake,
            "stream_lake": self.stream_lake,
            "partitions": [
                {
                    "topic": p.topic,
                    "partition": p.partition,
                    "kind": p.kind,
                    "log_end": p.log_end,
                    "log_start": p.log_start,
                    "retired": p.retired,
                    "sink": {
                        "committed": p.sink_committed,
                        "landed": p.sink_landed,
                        "position": p.sink_position,
                        "lag": p.sink_lag,
                    },
                    "stream": None
                    if p.stream_position is None
                    else {"position": p.stream_position, "lag": p.stream_lag},
                }
                for p in self.partitions
            ],
            "silver": [
                {
                    "lake": s.lake,
                    "kind": s.kind,
                    "last_write": s.last_write.isoformat() if s.last_write else None,
                    "age_s": None if s.age_s is None else round(s.age_s, 3),
                }
                for s in self.silver
            ],
            "last_run": None
            if self.last_run is None
            else {**asdict(self.last_run), "finished_at": self.last_run.finished_at.isoformat()},
            "stuck": [asdict(s) for s in self.stuck],
        }


def take_look(
    log: EventLog,
    lake: Lake,
    *,
    prefix: str,
    sink_group: str,
    stream_lake: Lake | None = None,
    max_quarantine_share: float = 0.05,
    line_counts: dict[str, int] | None = None,
) -> Look:
    """One look at the pipeline (see the module docstring for what it reads). ``line_counts`` (landed key → its
    lines) is filled and reused across looks: landed objects never change, so each is read once."""
    counts = {} if line_counts is None else line_counts
    stream_lake = stream_lake or lake
    parts: list[PartitionStatus] = []
    topics = log.topics()
    versions = _stream_versions(stream_lake, prefix, topics)
    streaming = any(v is not None for v in versions.values())
    for topic, count in sorted(topics.items()):
        committed = log.committed(sink_group, topic)
        kind = kind_of_topic(prefix, topic)
        for p in range(count):
            stream: int | None = None
            if streaming and kind is not None:
                stream = versions.get((topic, p)) or 0
            gone = log.retired(topic, p) if isinstance(log, RetiresRecords) else NOTHING_RETIRED
            parts.append(
                PartitionStatus(
                    topic=topic,
                    partition=p,
                    kind=kind,
                    log_end=log.end_offset(topic, p),
                    sink_committed=committed.get(p),
                    sink_landed=_landed_end(lake, topic, p, counts),
                    stream_position=stream,
                    log_start=gone.log_start,
                    retired=gone.records,
                )
            )
    now = datetime.now(UTC)
    lakes = [lake] if stream_lake.url == lake.url else [lake, stream_lake]
    silver = tuple(_silver(one, kind, now) for one in lakes for kind in KINDS)
    return Look(now, log.url, lake.url, stream_lake.url, tuple(parts), silver, _last_run(lake, max_quarantine_share))


def _landed_end(lake: Lake, topic: str, partition: int, counts: dict[str, int]) -> int | None:
    """Offset after the last landed object of a partition (start + its lines), None if nothing landed."""
    last: tuple[int, str] | None = None
    for obj in lake.iter(f"topics/{topic}/partition={partition}/"):
        parsed = None if is_temporary_key(obj.key) else parse_landed_key(obj.key)
        if parsed and parsed[:2] == (topic, partition) and (last is None or parsed[2] > last[0]):
            last = (parsed[2], obj.key)
    if last is None:
        return None
    start, key = last
    if key not in counts:
        data = lake.get(key)
        if data is None:  # listed, then gone (the lake was edited): report what was found
            return None
        counts[key] = data.count(b"\n")
    return start + counts[key]


def _stream_versions(lake: Lake, prefix: str, topics: dict[str, int]) -> dict[tuple[str, int], int | None]:
    out: dict[tuple[str, int], int | None] = {}
    by_kind: dict[Kind, list[tuple[str, int]]] = {}
    for topic, count in topics.items():
        kind = kind_of_topic(prefix, topic)
        if kind is not None:
            by_kind.setdefault(kind, []).extend((topic, p) for p in range(count))
    for kind, tps in by_kind.items():
        versions = delta.txn_versions(lake, kind, [stream_app_id(*tp) for tp in tps])
        out.update({tp: versions[stream_app_id(*tp)] for tp in tps})
    return out


def _silver(lake: Lake, kind: Kind, now: datetime) -> SilverStatus:
    uri = lake.table_uri("silver", kind)
    try:
        history = DeltaTable(uri, storage_options=lake.storage_options or None).history(50)
    except TableNotFoundError:
        return SilverStatus(lake.url, kind, None, None)
    except (DeltaError, OSError) as exc:
        raise StoreUnavailableError(f"could not read the history of {uri}: {exc}", table=uri) from exc
    stamps = [int(h["timestamp"]) for h in history if commit_operation(h).upper() in _SILVER_WRITES]
    if not stamps:
        return SilverStatus(lake.url, kind, None, None)
    last = datetime.fromtimestamp(max(stamps) / 1000, UTC)
    return SilverStatus(lake.url, kind, last, max((now - last).total_seconds(), 0.0))


def _last_run(lake: Lake, max_quarantine_share: float) -> RunStatus | None:
    if delta.table_version(lake, *RUNS_TABLE) is None:
        return None
    try:
        verdict = check_run(lake, max_quarantine_share)
    except InvalidInputError:  # the table holds no batch run
        return None
    return RunStatus(
        run_id=verdict.run_id,
        finished_at=verdict.finished_at,
        read=sum(k.read for k in verdict.kinds),
        quarantined=sum(k.quarantined for k in verdict.kinds),
        verdict="passed" if verdict.ok else "failed",
    )


@dataclass
class Progress:
    """Positions seen over successive looks, to tell a stage that is catching up from one that is stuck."""

    max_lag: int | None = None
    stuck_after_s: float = 30.0
    _since: dict[tuple[Stage, str, int], tuple[int, float]] = field(default_factory=dict)
    """(stage, topic, partition) → (position, monotonic time it was first seen at)."""

    def judge(self, look: Look, now: float | None = None) -> Look:
        """``look`` with its :attr:`Look.stuck` filled in; remembers its positions for the next look."""
        now = time.monotonic() if now is None else now
        stuck: list[Stuck] = []
        for p in look.partitions:
            for stage in STAGES:
                position, lag = p.position(stage), p.lag(stage)
                if position is None or lag is None:
                    continue
                key = (stage, p.topic, p.partition)
                seen = self._since.get(key)
                if seen is None or seen[0] != position:
                    seen = self._since[key] = (position, now)
                still = now - seen[1]
                if self.max_lag is not None and lag > self.max_lag:
                    stuck.append(
                        Stuck(stage, p.topic, p.partition, lag, f"lag {lag} is above --max-lag {self.max_lag}")
                    )
                elif lag > 0 and still >= self.stuck_after_s:
                    reason = f"lag {lag} and no progress from position {position} for {still:.0f} s"
                    stuck.append(Stuck(stage, p.topic, p.partition, lag, reason))
        return replace(look, stuck=tuple(stuck))
