"""The lake: one object store (a path or ``file://``, ``s3://``; ``memory://`` for tests) holding landed JSON and Delta tables.

Who calls what: the sink writes landed objects with :meth:`Lake.put`; the batch job lists and reads them; the
Delta writers use :meth:`Lake.table_uri` and :attr:`Lake.storage_options` to hand the same location to
``deltalake``. Foreign errors are mapped here: a missing object is ``None``/``FileNotFoundError`` semantics
become :class:`~pinpipe.errors.InvalidInputError` only where the caller asks; an unreachable store raises
:class:`~pinpipe.errors.StoreUnavailableError`.

Locations (:mod:`pinpipe.locations`): opened for ``access="read"`` the lake must exist (NotFoundError); for
``"write"`` (the default) a missing ``file://`` directory is created only under an existing parent, and an empty
S3 prefix is only reported (its bucket must exist).

- a plain path (``./lake``, ``/srv/lake``) or ``file://DIR`` — a directory; relative paths
  (``file://pinpipe-data/lake``) resolve against the working directory, absolute ones are ``file:///abs/dir``.
  A put is atomic (temporary file + rename).
- ``s3://BUCKET[/PREFIX]`` — any S3-compatible store; endpoint, region and keys (with the session token of
  temporary keys) come from :class:`~pinpipe.config.LakeSettings` (or the standard ``AWS_*`` variables, read by
  the SDK itself).
- ``memory://`` — process-local, for tests (Delta tables are not supported there).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import obstore
from obstore.exceptions import AlreadyExistsError
from obstore.store import LocalStore, MemoryStore, S3Store

from pinpipe.config import LakeSettings
from pinpipe.errors import ConfigError, NotFoundError, PinpipeError, error_code, map_exceptions
from pinpipe.locations import LAKE_SCHEMES, Access, normalise, prepare_directory
from pinpipe.telemetry.logs import get_logger

_MISSING_HINT = (
    "check --lake (or lake.url) for a typo; `pinpipe sink` or `pinpipe stream` creates a lake when it first "
    "writes, `pinpipe batch` fills its tables"
)
log = get_logger("lake")
LAKE_CONTENT = ("topics", "silver", "quarantine", "gold", "_meta")
"""Top-level folders a pipeline writes in a lake (landed objects and tables): see :meth:`Lake.holds_objects`."""


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    key: str
    size: int
    modified: datetime | None = None
    """When the object was last written, as the store reports it (what landing expiry ages by)."""


class Lake:
    """An object store rooted at a lake URL. Keys are ``/``-separated paths relative to the root."""

    def __init__(self, url: str, settings: LakeSettings | None = None, access: Access = "write") -> None:
        settings = settings or LakeSettings()
        self.url = normalise(url, "lake", "--lake", LAKE_SCHEMES)
        scheme, _, rest = self.url.partition("://")
        self.scheme = scheme
        self.storage_options: dict[str, str] = {}
        self._store: Any
        if scheme == "file":
            root = Path(rest)
            prepare_directory(root, access, "lake", self.url, _MISSING_HINT)
            self.root = str(root)
            self._store = LocalStore(root)
        elif scheme == "memory":
            self.root = f"memory://{rest}"
            self._store = MemoryStore()
        elif scheme == "s3":
            bucket, _, prefix = rest.partition("/")
            if not bucket:
                raise ConfigError(f"lake URL {url!r} names no bucket", hint="use s3://BUCKET/PREFIX")
            self.root = f"s3://{bucket}/{prefix.strip('/')}".rstrip("/")
            keys = _credentials(settings)
            options: dict[str, Any] = {"region": settings.region, **{key: v for (key, _), v in keys}}
            if settings.endpoint:
                options["endpoint"] = settings.endpoint
            client_options: Any = {"allow_http": True} if (settings.endpoint or "").startswith("http://") else {}
            self._store = S3Store(
                bucket,
                prefix=prefix.strip("/") or None,
                virtual_hosted_style_request=False,
                client_options=client_options,
                **options,
            )
            self.storage_options = {"AWS_REGION": settings.region}
            if settings.endpoint:
                self.storage_options["AWS_ENDPOINT_URL"] = settings.endpoint
                if settings.endpoint.startswith("http://"):
                    self.storage_options["AWS_ALLOW_HTTP"] = "true"
            self.storage_options.update({delta: v for (_, delta), v in keys})
            self._check_prefix(access)

    def __repr__(self) -> str:
        return f"Lake({self.url!r})"

    def _check_prefix(self, access: Access) -> None:
        """An S3 lake: the bucket must answer (else ConfigError); for reading, the prefix must hold an object."""
        if self.holds_objects():
            return
        if access == "read":
            raise NotFoundError(f"the lake {self.url} holds no object", hint=_MISSING_HINT)
        log.info("the lake is empty; its first write creates it", extra={"fields": {"lake": self.url}})

    def holds_objects(self, prefixes: tuple[str, ...] = ("",)) -> bool:
        """True if at least one object lies under one of ``prefixes`` (reads one listing page per prefix)."""
        for prefix in prefixes:
            try:
                with _store_errors(f"could not list {self.url}"):
                    for batch in obstore.list(self._store, prefix=prefix or None, chunk_size=1):
                        if any(not is_temporary_key(str(meta["path"])) for meta in batch):
                            return True
            except NotFoundError:
                continue
        return False

    # -------------------------------------------------------------------------------- objects

    def put(self, key: str, data: bytes) -> None:
        """Write an object whole (atomically: readers see the old object or the new one, never a part)."""
        with _store_errors(f"could not write {key} to {self.url}", key=key):
            obstore.put(self._store, key, data)

    def put_new(self, key: str, data: bytes) -> None:
        """Write an object under a key no other writer uses (a Delta data file named by a fresh UUID), whole before
        it returns. On ``file://`` the file is written in place (an exclusive create, no temporary file and rename:
        nothing reads it until a commit names it, and a crash mid-write leaves an unreferenced file, as a lost
        commit race does), which costs a third of a :meth:`put`; elsewhere it is a :meth:`put`."""
        if self.scheme != "file":
            self.put(key, data)
            return
        path = os.path.join(self.root, key)
        with _store_errors(f"could not write {key} to {self.url}", key=key):
            try:
                fh = open(path, "xb")  # noqa: SIM115 - closed below, after the directory may be made
            except FileNotFoundError:
                os.makedirs(os.path.dirname(path), exist_ok=True)
                fh = open(path, "xb")  # noqa: SIM115
            with fh:
                fh.write(data)

    def create(self, key: str, data: bytes) -> bool:
        """Write a new object durably unless one with that key exists; True if written, False if it existed.

        ``file://``: temporary file in the target directory, fsync, hard link to the key (fails if the key
        exists), fsync the directory — a crash leaves the object whole or absent (plus, at worst, a hidden
        ``.<name>.<pid>.tmp`` file that :func:`is_temporary_key` recognises). ``s3://`` and ``memory://``: a
        conditional put (``If-None-Match: *``); S3 acknowledges a put only once it is durable.
        """
        with _store_errors(f"could not write {key} to {self.url}", key=key):
            if self.scheme == "file":
                return _create_file(Path(self.root), key, data)
            try:
                obstore.put(self._store, key, data, mode="create")
            except AlreadyExistsError:
                return False
        return True

    def get(self, key: str) -> bytes | None:
        """The object's bytes, or None if there is no such object."""
        with _store_errors(f"could not read {key} from {self.url}", key=key):
            try:
                return bytes(obstore.get(self._store, key).bytes())
            except FileNotFoundError:
                return None

    def list(self, prefix: str = "") -> list[ObjectInfo]:
        """Every object under ``prefix``, sorted by key."""
        return sorted(self.iter(prefix), key=lambda o: o.key)

    def iter(self, prefix: str = "") -> Iterator[ObjectInfo]:
        with _store_errors(f"could not list {prefix!r} in {self.url}"):
            try:
                for batch in obstore.list(self._store, prefix=prefix or None):
                    for meta in batch:
                        yield ObjectInfo(str(meta["path"]), int(meta["size"]), meta.get("last_modified"))
            except FileNotFoundError:
                return

    def delete(self, key: str) -> None:
        with _store_errors(f"could not delete {key} from {self.url}", key=key):
            try:
                obstore.delete(self._store, key)
            except FileNotFoundError:
                return

    # -------------------------------------------------------------------------------- tables

    def table_uri(self, *parts: str) -> str:
        """Location of a Delta table under the lake (``silver``, ``pin`` → ``<root>/silver/pin``) for deltalake."""
        if self.scheme == "memory":
            raise ConfigError("Delta tables need a file:// or s3:// lake", hint="use --lake file://DIR")
        return "/".join([self.root, *parts])


CREDENTIAL_OPTIONS = {
    "access_key_id": ("access_key_id", "AWS_ACCESS_KEY_ID"),
    "secret_access_key": ("secret_access_key", "AWS_SECRET_ACCESS_KEY"),
    "session_token": ("session_token", "AWS_SESSION_TOKEN"),
}
"""Each :class:`~pinpipe.config.LakeSettings` credential → (its obstore ``S3Store`` key, its delta-rs storage
option). :meth:`Lake.__init__` hands both the same keys; Spark executors get them back from
:attr:`Lake.storage_options` (``engine.spark_io.LakeRef``)."""


def _credentials(settings: LakeSettings) -> list[tuple[tuple[str, str], str]]:
    """The lake's explicit credentials as ``((obstore key, delta-rs option), value)``: the key pair and, for
    temporary keys, the session token; nothing when no key pair is set (the SDK's own ``AWS_*`` chain then)."""
    if not (settings.access_key_id and settings.secret_access_key):
        return []
    found = [(name, getattr(settings, name)) for name in CREDENTIAL_OPTIONS]
    return [(CREDENTIAL_OPTIONS[name], secret.get_secret_value()) for name, secret in found if secret]


def open_lake(url: str | Lake, settings: LakeSettings | None = None, access: Access = "write") -> Lake:
    """The lake at ``url`` (a URL or a plain path; or ``url`` itself if it is already a :class:`Lake`: tests
    inject one). ``access="read"``: it must exist (:class:`~pinpipe.errors.NotFoundError`) and nothing is
    created; ``"write"``: a missing directory is created under an existing parent (see :mod:`pinpipe.locations`)."""
    return url if isinstance(url, Lake) else Lake(url, settings, access)


_STORE_HINTS: dict[type[PinpipeError], str] = {
    ConfigError: "check lake.url (the bucket must exist), lake.endpoint and the access keys",
}


def _store_errors(what: str, **facts: str) -> AbstractContextManager[None]:
    """The store boundary: obstore's and the OS's errors become pinpipe's (rules in ``errors.FOREIGN_ERRORS``)."""
    return map_exceptions("store", what, hint=_STORE_HINTS, detail=_first_line, **facts)


def _first_line(exc: BaseException) -> str:
    """The foreign message's first line, with the S3 error code when the store sent one."""
    text = str(exc).strip()
    line = text.splitlines()[0] if text else type(exc).__name__
    code = error_code(exc)
    return f"the store answered {code}: {line}" if code else line


def _create_file(root: Path, key: str, data: bytes) -> bool:
    path = root / key
    folder = path.parent
    if not folder.is_dir():
        folder.mkdir(parents=True, exist_ok=True)
        _fsync_dir(folder.parent)
    tmp = folder / f".{path.name}.{os.getpid()}.tmp"
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        try:
            os.link(tmp, path)
        except FileExistsError:
            return False
    finally:
        tmp.unlink(missing_ok=True)
    _fsync_dir(folder)
    return True


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def is_temporary_key(key: str) -> bool:
    """True for the hidden ``.<name>.<pid>.tmp`` file a crashed :meth:`Lake.create` may leave on ``file://``."""
    name = key.rsplit("/", 1)[-1]
    return name.startswith(".") and name.endswith(".tmp")


def landed_key(topic: str, partition: int, start_offset: int) -> str:
    """Confluent S3-sink object key: ``topics/<topic>/partition=<p>/<topic>+<p>+<start:010d>.json``."""
    return f"topics/{topic}/partition={partition}/{topic}+{partition}+{start_offset:010d}.json"


def parse_landed_key(key: str) -> tuple[str, int, int] | None:
    """``(topic, partition, start_offset)`` of a landed object key, or None if the key is not one."""
    name = key.rsplit("/", 1)[-1]
    if not name.endswith(".json"):
        return None
    try:
        topic, partition, start = name[: -len(".json")].rsplit("+", 2)
        return topic, int(partition), int(start)
    except ValueError:
        return None
