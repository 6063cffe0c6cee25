"""Effective settings: command-line flags > environment (``PINPIPE__SECTION__KEY``) > ``pinpipe.toml`` > defaults.

This is the only module that reads ``os.environ``. Settings are frozen, built once at the edge (the CLI, the
DAG, the API factory) with :func:`load_settings`, and passed down. Secrets are ``SecretStr``: they are masked
by :func:`describe` and never logged.

``pinpipe.toml`` is looked up in the working directory (or at ``PINPIPE_CONFIG``) and has the same sections::

    [log]
    url = "kafka://127.0.0.1:9092"
    [lake]
    url = "s3://my-bucket/lake"
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, PydanticBaseSettingsSource, SettingsConfigDict

from pinpipe.errors import ConfigError
from pinpipe.tables import check_prefix

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


class LogSettings(_Section):
    url: str = Field(
        "file://pinpipe-data/log",
        description="event log: file://DIR, memory://, kafka://HOST:PORT, kinesis://REGION[?endpoint=URL]",
    )
    partitions: int = Field(1, ge=1, le=1024, description="partitions per topic when creating topics")


class LakeSettings(_Section):
    url: str = Field("file://pinpipe-data/lake", description="lake root: file://DIR, s3://BUCKET/PREFIX, memory://")
    endpoint: str | None = Field(None, description="S3 endpoint URL (for S3-compatible stores)")
    region: str = Field("us-east-1", description="S3 region")
    access_key_id: SecretStr | None = None
    secret_access_key: SecretStr | None = None


class SinkSettings(_Section):
    flush_records: int = Field(10_000, ge=1, description="records per landed object at most")
    flush_seconds: float = Field(5.0, gt=0, description="seconds before a partial object is written")
    group: str = Field("pinpipe-sink", description="consumer group of the sink")


class BatchSettings(_Section):
    engine: Literal["duckdb", "spark"] = Field("duckdb", description="DataFrame engine for batch cleaning")


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
    batch: BatchSettings = BatchSettings()
    spark: SparkSettings = SparkSettings()
    stream: StreamSettings = StreamSettings()

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
    layers: dict[str, Any] = {}
    path = config_file()
    if path is not None:
        try:
            layers = tomllib.loads(path.read_text())
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path} is not valid TOML: {exc}", hint="fix the file") from exc
    layers = _deep_merge(layers, _env_layer())
    layers = _deep_merge(layers, _drop_none(overrides or {}))
    try:
        return Settings.model_validate(layers)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'settings'}: {err['msg']}" for err in exc.errors()
        )
        raise ConfigError(
            f"invalid settings: {problems}",
            hint="check flags, PINPIPE__SECTION__KEY variables and pinpipe.toml "
            "(`pinpipe config` shows the effective values)",
        ) from exc


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


def describe(settings: Settings) -> dict[str, Any]:
    """The settings as a plain dict with every secret masked as ``'**********'``."""
    return settings.model_dump(mode="json")


def spark_submitted() -> bool:
    """True when ``spark-submit`` started this process (its JVM waits for us: ``PYSPARK_GATEWAY_PORT`` is set)."""
    return "PYSPARK_GATEWAY_PORT" in os.environ


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and localhost."""
    return host == "localhost" or host.startswith("127.") or host in ("::1", "[::1]")
