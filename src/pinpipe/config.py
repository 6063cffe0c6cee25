"""Effective settings: command-line flags > environment (``PINPIPE__SECTION__KEY``) > ``pinpipe.toml`` > defaults.

This is the only module that reads ``os.environ``. Settings are frozen, built once at the edge (the CLI, the
DAG, the API factory) with :func:`load_settings`, and passed down. Secrets are ``SecretStr``: they are masked
by :func:`describe` and never logged; so is a password embedded in a URL (``mysql://user:PASSWORD@host/db``,
``?password=...``): :func:`mask_secrets` masks it wherever a URL is printed or logged (both live in
:mod:`pinpipe.masking` and are re-exported here).

``pinpipe.toml`` is looked up in the working directory (or at ``PINPIPE_CONFIG``) and has the same sections::

    [log]
    url = "kafka://127.0.0.1:9092"
    [lake]
    url = "s3://my-bucket/lake"
"""

from __future__ import annotations

import logging
import os
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, PydanticBaseSettingsSource, SettingsConfigDict

from pinpipe.errors import ConfigError
from pinpipe.masking import MASK as MASK
from pinpipe.masking import describe as describe
from pinpipe.masking import mask_secrets as mask_secrets
from pinpipe.tables import check_prefix

log = logging.getLogger(__name__)

DEFAULT_PREFIX = "0affea73130b"
"""The original project's user id: its clients post to ``0affea73130b.pin`` and ``streaming-0affea73130b-pin``."""


class _Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class SourceSettings(_Section):
    url: str = Field("sqlite:///pinpipe-data/source.db", description="SQLAlchemy URL of the source database")
    password: SecretStr | None = Field(None, description="database password, if not in the URL")


class ApiSettings(_Section):
    host: str = Field("127.0.0.1", description="bind address of `pinpipe api`")
    port: int = Field(8082, ge=0, le=65535, description="port of `pinpipe api` (8082 as the REST proxy)")
    root_path: str = Field("", description="optional stage prefix, e.g. /test")
    api_key: SecretStr | None = Field(None, description="required header X-API-Key; mandatory off loopback")
    max_request_bytes: int = Field(5 * 1024 * 1024, gt=0, description="largest accepted request body")
    body_timeout_s: float = Field(
        10.0, gt=0, le=3600, description="seconds a client may take to send a request; then 408 and close"
    )
    max_connections: int = Field(
        512, ge=1, le=100_000, description="open client connections at most; more are refused at once (503)"
    )


class LogSettings(_Section):
    url: str = Field(
        "file://pinpipe-data/log",
        description="event log: a path, file://DIR, kafka://HOST:PORT, kinesis://REGION[?endpoint=URL]",
    )
    partitions: int = Field(1, ge=1, le=1024, description="partitions per topic when creating topics")
    segment_bytes: int = Field(
        128 << 20,
        ge=4096,
        description="embedded log: a partition's active segment rolls once its data and index hold this many "
        "bytes (Kafka's segment.bytes)",
    )
    segment_ms: int = Field(
        7 * 24 * 3600 * 1000,
        ge=-1,
        description="embedded log: the active segment also rolls once its first record is this old, in ms "
        "(Kafka's segment.ms; -1: only by size)",
    )
    retention_ms: int = Field(
        7 * 24 * 3600 * 1000,
        ge=-1,
        description="embedded log: delete closed segments whose newest record is older than this, in ms "
        "(Kafka's retention.ms; -1: never by age)",
    )
    retention_bytes: int = Field(
        -1,
        ge=-1,
        description="embedded log: bytes a partition may hold on disk (data and index, at least twice "
        "segment_bytes); its oldest segments are deleted to stay under it once every consumer group has committed "
        "them (Kafka's retention.bytes; -1: unlimited)",
    )
    retention_check_ms: int = Field(
        300_000,
        ge=10,
        description="embedded log: how often the writer (`pinpipe api`) runs a retention pass, in ms; it also runs "
        "one at start and whenever a segment rolls (Kafka's log.retention.check.interval.ms)",
    )
    group_expiry_ms: int = Field(
        7 * 24 * 3600 * 1000,
        ge=-1,
        description="embedded log: a consumer group that has not committed for this long, in ms, no longer holds "
        "retention back (Kafka's offsets.retention.minutes; -1: groups never expire)",
    )

    retention_groups: Annotated[tuple[str, ...], NoDecode] = Field(
        ("pinpipe-sink", "pinpipe-stream"),
        description="embedded log: consumer groups retention waits for even before they first commit (name the "
        "sink.group and stream.group in use; in the environment: comma-separated); one that never commits stops "
        "holding records back once they are group_expiry_ms old",
    )

    @field_validator("retention_groups", mode="before")
    @classmethod
    def _groups(cls, value: Any) -> Any:
        if isinstance(value, str):
            return tuple(g.strip() for g in value.split(",") if g.strip())
        return value

    @model_validator(mode="after")
    def _retention_fits_segments(self) -> LogSettings:
        if 0 <= self.retention_bytes < 2 * self.segment_bytes:
            raise ValueError(
                f"retention_bytes ({self.retention_bytes}) is less than twice segment_bytes ({self.segment_bytes}):"
                " a partition holds its active segment and the one a roll just closed; raise retention_bytes or "
                "lower segment_bytes"
            )
        return self


class LakeSettings(_Section):
    url: str = Field("file://pinpipe-data/lake", description="lake root: a path, file://DIR or s3://BUCKET/PREFIX")
    endpoint: str | None = Field(None, description="S3 endpoint URL (for S3-compatible stores)")
    region: str = Field("us-east-1", description="S3 region")
    access_key_id: SecretStr | None = Field(None, description="S3 access key id (else the SDK's AWS_* chain)")
    secret_access_key: SecretStr | None = Field(None, description="S3 secret access key, with access_key_id")
    session_token: SecretStr | None = Field(
        None, description="session token of temporary keys (an assumed role, STS), with the two keys above"
    )

    @model_validator(mode="after")
    def _token_needs_keys(self) -> LakeSettings:
        if self.session_token and not (self.access_key_id and self.secret_access_key):
            raise ValueError(
                "lake.session_token is set without lake.access_key_id and lake.secret_access_key: a session "
                "token belongs to the temporary keys it was issued with — set all three, or none"
            )
        return self


class SinkSettings(_Section):
    flush_records: int = Field(10_000, ge=1, description="records per landed object at most")
    flush_seconds: float = Field(5.0, gt=0, description="seconds before a partial object is written")
    group: str = Field("pinpipe-sink", description="consumer group of the sink")


class LandingSettings(_Section):
    """Expiry of landed objects (``pinpipe landing expire``; :mod:`pinpipe.lake.expiry`). Off by default: the
    landing is the only copy from which silver can be rebuilt once the log's retention has deleted the records."""

    retention_ms: int = Field(
        -1,
        ge=-1,
        description="delete landed objects older than this, in ms, once the batch has committed every record in "
        "them (S3 lifecycle expiration / Kafka's retention.ms; -1: keep forever)",
    )
    retention_bytes: int = Field(
        -1,
        ge=-1,
        description="bytes of landed objects a topic-partition may keep; its oldest objects the batch has committed "
        "are deleted to stay under it (Kafka's retention.bytes; -1: unlimited)",
    )
    expire_with_batch: bool = Field(
        True, description="`pinpipe batch` runs an expiry pass after its run when a retention above is set"
    )


class VacuumSettings(_Section):
    """VACUUM of the lake's Delta tables (``pinpipe vacuum``; :mod:`pinpipe.ops.vacuum`)."""

    retention_hours: int = Field(
        168, ge=0, description="delete data files that left their table's version over this many hours ago"
    )
    with_batch: bool = Field(True, description="`pinpipe batch` runs a pass when the last is every_hours old")
    every_hours: float = Field(24.0, ge=0, description="hours between the passes `pinpipe batch` runs")


def _default_sql_cache() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "pinpipe" / "sql"


class BatchSettings(_Section):
    engine: Literal["duckdb", "spark"] = Field("duckdb", description="DataFrame engine for batch cleaning")
    sql_cache: Path = Field(
        default_factory=_default_sql_cache,
        description="where DuckDB keeps the SQL generated for the cleaning and gold programs (reused by later "
        "processes; keyed by the code's and the libraries' versions)",
    )
    chunk_records: int = Field(
        500_000,
        ge=1,
        description="records of one kind the DuckDB batch cleans and commits at a time (each chunk commits its "
        "progress: memory stays bounded whatever the backlog, and a crash resumes after the last chunk)",
    )


class SparkSettings(_Section):
    """The Spark engine (``batch.engine = "spark"``); inside a running Spark application its session is used."""

    master: str = Field("local[*]", description="Spark master URL: local[N], spark://HOST:PORT, yarn, …")
    conf: Annotated[dict[str, str], NoDecode] = Field(
        default_factory=dict, description="extra Spark settings (in the environment: KEY=VALUE,KEY=VALUE)"
    )
    driver_host: str | None = Field(
        None, description="address executors reach the driver at (local masters: always 127.0.0.1)"
    )
    driver_memory: str = Field("4g", description="driver JVM heap (local masters run the tasks in it too)")
    python: str | None = Field(None, description="Python of the executors (default: PYSPARK_PYTHON, else this one)")
    connect_timeout_s: float = Field(
        15.0, gt=0, le=600, description="wait at most this long for a spark:// master to accept connections"
    )
    delta_writer: Literal["auto", "delta-rs", "delta-spark"] = Field(
        "auto",
        description="who merges silver: delta-rs (executors write, the driver commits) or Delta's own MERGE "
        "(delta-spark); auto = delta-spark on a Databricks or Delta-enabled session with delta.tables installed",
    )

    @field_validator("conf", mode="before")
    @classmethod
    def _conf(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = [item for item in value.split(",") if item.strip()]
        if isinstance(value, list | tuple):
            pairs: dict[str, str] = {}
            for item in value:
                key, sep, val = str(item).partition("=")
                if not sep or not key.strip():
                    raise ValueError(f"{item!r} is not KEY=VALUE")
                pairs[key.strip()] = val.strip()
            return pairs
        return value


class StreamSettings(_Section):
    max_batch: int = Field(5_000, ge=1, description="records per micro-batch at most")
    max_wait_ms: int = Field(200, ge=1, description="wait at most this long to fill a micro-batch")
    workers: int = Field(1, ge=1, le=64, description="worker processes")
    group: str = Field("pinpipe-stream", description="consumer group of the stream workers")
    leases: str | None = Field(
        None, description="share partitions through DynamoDB leases: dynamodb://TABLE[?region=R&endpoint=URL]"
    )
    lease_seconds: float = Field(10.0, gt=0, description="a lease not renewed for this long can be taken over")


class MetricsSettings(_Section):
    host: str = Field(
        "127.0.0.1", description="bind address of the sink's and stream's /metrics (0.0.0.0: any interface)"
    )


class Settings(BaseSettings):
    """All settings. Build with :func:`load_settings`; never instantiate in a default argument."""

    model_config = SettingsConfigDict(
        env_prefix="PINPIPE__", env_nested_delimiter="__", frozen=True, extra="forbid", case_sensitive=False
    )

    prefix: str = Field(DEFAULT_PREFIX, description="topic prefix: topics <prefix>.pin|geo|user")
    source: SourceSettings = SourceSettings()
    api: ApiSettings = ApiSettings()
    log: LogSettings = LogSettings()
    lake: LakeSettings = LakeSettings()
    sink: SinkSettings = SinkSettings()
    landing: LandingSettings = LandingSettings()
    vacuum: VacuumSettings = VacuumSettings()
    batch: BatchSettings = BatchSettings()
    spark: SparkSettings = SparkSettings()
    stream: StreamSettings = StreamSettings()
    metrics: MetricsSettings = MetricsSettings()

    @field_validator("prefix")
    @classmethod
    def _prefix(cls, value: str) -> str:
        return check_prefix(value)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings)


def _deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def _env_layer() -> dict[str, Any]:
    """``PINPIPE__SECTION__KEY=value`` variables as a nested dict (lower-cased keys)."""
    layer: dict[str, Any] = {}
    for name, value in os.environ.items():
        if not name.upper().startswith("PINPIPE__"):
            continue
        parts = [p.lower() for p in name[len("PINPIPE__") :].split("__") if p]
        node = layer
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        if parts:
            node[parts[-1]] = value
    return layer


READ_VARIABLES = frozenset({"PINPIPE_CONFIG"})
"""The single-underscore ``PINPIPE_`` variables pinpipe reads; settings take two (``PINPIPE__SECTION__KEY``)."""


def unread_variables() -> list[tuple[str, str | None]]:
    """The ``PINPIPE_…`` variables of the environment that pinpipe does not read (one underscore where settings
    take two, as in ``PINPIPE_API_PORT``), each with the variable it probably means (None when no section of the
    settings starts its name)."""
    out: list[tuple[str, str | None]] = []
    sections = sorted((name.upper() for name in Settings.model_fields), key=len, reverse=True)
    for name in os.environ:
        upper = name.upper()
        if not upper.startswith("PINPIPE_") or upper.startswith("PINPIPE__") or upper in READ_VARIABLES:
            continue
        rest = upper[len("PINPIPE_") :]
        section = next((s for s in sections if rest == s or rest.startswith(s + "_")), None)
        out.append((name, None if section is None else _meant(section, rest)))
    return sorted(out)


def _meant(section: str, rest: str) -> str | None:
    """The variable ``PINPIPE_<rest>`` probably means, ``rest`` starting with the settings field ``section``."""
    kind = Settings.model_fields[section.lower()].annotation
    if not (isinstance(kind, type) and issubclass(kind, BaseModel)):
        return f"PINPIPE__{rest}"  # a top-level setting (PINPIPE_PREFIX)
    if rest == section:  # the section alone (PINPIPE_LAKE): its url, if it has one
        return f"PINPIPE__{section}__URL" if "url" in kind.model_fields else None
    return f"PINPIPE__{section}__{rest[len(section) + 1 :]}"


def config_file() -> Path | None:
    """The ``pinpipe.toml`` in effect: ``$PINPIPE_CONFIG`` or ``./pinpipe.toml`` if it exists."""
    explicit = os.environ.get("PINPIPE_CONFIG")
    if explicit:
        path = Path(explicit)
        if not path.is_file():
            raise ConfigError(
                f"PINPIPE_CONFIG points to {path}, which is not a file",
                hint="fix the path or unset PINPIPE_CONFIG",
            )
        return path
    local = Path("pinpipe.toml")
    return local if local.is_file() else None


def load_settings(overrides: dict[str, Any] | None = None) -> Settings:
    """Build the effective settings. ``overrides`` are command-line values as ``{"section": {"key": v}}``;
    None values are ignored so unset flags fall through to the environment, the file and the defaults."""
    for name, guess in unread_variables():
        log.warning(
            f"{name} is not read: settings come from PINPIPE__SECTION__KEY variables"
            + (f" (did you mean {guess}?)" if guess else ""),
            extra={"fields": {"variable": name}},
        )
    from_file: dict[str, Any] = {}
    path = config_file()
    if path is not None:
        try:
            from_file = tomllib.loads(path.read_text())
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path} is not valid TOML: {exc}", hint="fix the file") from exc
    from_env, from_flags = _env_layer(), _drop_none(overrides or {})
    layers = _deep_merge(_deep_merge(from_file, from_env), from_flags)
    try:
        return Settings.model_validate(layers)
    except ValidationError as exc:
        sources = ((from_flags, "flag"), (from_env, "environment"), (from_file, str(path)))
        problems = "; ".join(f"{_origin(err['loc'], sources)}: {err['msg']}" for err in exc.errors())
        raise ConfigError(
            f"invalid settings: {problems}",
            hint="fix that value (`pinpipe config` shows the effective settings and `--help` the flags)",
        ) from exc


_FLAGS = {"log.url": "--log", "lake.url": "--lake", "source.url": "--db", "prefix": "--prefix"}
"""Settings whose flag is not ``--<key>`` (the key with ``-`` for ``_``)."""


def _origin(loc: tuple[int | str, ...], sources: tuple[tuple[dict[str, Any], str], ...]) -> str:
    """Where the bad value at ``loc`` came from, named the way its user wrote it: ``--port 99999``,
    ``PINPIPE__API__PORT='abc' (environment)`` or ``api.port = 'x' in pinpipe.toml``; else the setting's name."""
    keys = [str(part) for part in loc]
    name = ".".join(keys) or "settings"
    for layer, kind in sources:
        node: Any = layer
        for key in keys:
            node = node.get(key) if isinstance(node, dict) else None
        if node is None or isinstance(node, dict):
            continue
        shown = mask_secrets(str(node)) if not any(w in name for w in ("key", "password", "secret", "token")) else "***"
        if kind == "flag":
            return f"{_FLAGS.get(name, '--' + keys[-1].replace('_', '-'))} {shown}"
        if kind == "environment":
            return f"PINPIPE__{'__'.join(k.upper() for k in keys)}={shown!r} (environment)"
        return f"{name} = {shown!r} in {kind}"
    return name


def _drop_none(tree: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            nested = _drop_none(value)
            if nested:
                out[key] = nested
        elif value is not None:
            out[key] = value
    return out


def spark_submitted() -> bool:
    """True when ``spark-submit`` started this process (its JVM waits for us: ``PYSPARK_GATEWAY_PORT`` is set)."""
    return "PYSPARK_GATEWAY_PORT" in os.environ


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and localhost."""
    return host == "localhost" or host.startswith("127.") or host in ("::1", "[::1]")
