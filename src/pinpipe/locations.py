"""Where a lake or an event log lives, and what opening it may do (SPEC §8 "Locations").

Who calls what: :func:`pinpipe.lake.store.open_lake` and :func:`pinpipe.log.open_log` pass every location through
:func:`normalise`, then (for ``file://``) through :func:`prepare_directory` with the command's :data:`Access`:

- ``"read"`` — the location must exist: a reading command (``results``, ``report``, ``quality``,
  ``accounting``, ``parity``; ``sink`` and ``stream`` for their log, ``batch`` for its lake) never creates
  anything and raises :class:`~pinpipe.errors.NotFoundError` (exit 2) when what it reads is absent, so a typo'd
  ``--lake`` cannot read as an empty, successful run;
- ``"write"`` — a missing directory is created only when its parent exists (a typo in a parent is an error,
  not a new tree), and one log line says so.

Plain paths are accepted wherever ``file://`` is: ``./lake``, ``lake`` and ``/srv/lake`` mean ``file://`` + the
absolute path. A string that starts like a URL but is not one (``s3:/bucket``, ``file:lake``) is refused with what
is wrong with it rather than read as a path.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

from pinpipe.config import mask_secrets
from pinpipe.errors import ConfigError, NotFoundError
from pinpipe.telemetry.logs import get_logger

Access = Literal["read", "write"]
"""``read``: must exist, create nothing; ``write``: may create the last directory under an existing parent."""

LAKE_SCHEMES: Mapping[str, str] = {"file": "file://DIR", "s3": "s3://BUCKET/PREFIX"}
LOG_SCHEMES: Mapping[str, str] = {"file": "file://DIR", "kafka": "kafka://HOST:PORT", "kinesis": "kinesis://REGION"}
"""The schemes users are told about, with their shape. ``memory://`` (process-local, for tests) is accepted too."""

HIDDEN_SCHEMES = frozenset({"memory"})

_URL = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://(.*)$", re.DOTALL)
_SCHEME_LIKE = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*):(.*)$", re.DOTALL)

log = get_logger("locations")

_CREDENTIALS = {
    "s3": "S3 keys go in lake.access_key_id/lake.secret_access_key (and lake.session_token for temporary keys) or the AWS_* variables",
    "kinesis": "Kinesis takes AWS credentials from the AWS_* variables",
    "kafka": "the Kafka backend takes no user and password in the broker address",
}


def _shapes(schemes: Mapping[str, str]) -> str:
    return "a path (./dir or /abs/dir), " + ", ".join(schemes.values())


def normalise(location: str, what: str, flag: str, schemes: Mapping[str, str]) -> str:
    """``location`` as a URL: a plain path becomes ``file://`` + its absolute path, a ``file://`` URL's relative
    path is made absolute, other URLs are returned as given. Raises ConfigError saying what is wrong with an
    empty value, a malformed URL or an unknown scheme (``what`` is "lake" or "event log", ``flag`` the option)."""
    text = location.strip()
    valid = _shapes(schemes)
    if not text:
        raise ConfigError(f"the {what} location is empty", hint=f"give {flag} {valid}")
    url = _URL.match(text)
    if url is not None:
        scheme, rest = url.group(1).lower(), url.group(2)
        if scheme not in schemes and scheme not in HIDDEN_SCHEMES:
            raise ConfigError(
                f"unknown {what} URL scheme {scheme!r} in {location!r}",
                hint=f"use {valid}",
            )
        if scheme == "file":
            if not rest:
                raise ConfigError(
                    f"{what} URL {location!r} names no directory", hint=f"use {flag} file://DIR or a path"
                )
            return f"file://{Path(rest).expanduser().resolve()}"
        authority = re.split(r"[/?#]", rest, maxsplit=1)[0]
        if "@" in authority:
            raise ConfigError(
                f"the {what} URL {mask_secrets(location)!r} carries credentials, which pinpipe never reads from "
                "a URL (they would be sent and logged as part of the address)",
                hint=f"remove 'user:password@' from {flag}; " + _CREDENTIALS.get(scheme, "it takes no credentials"),
            )
        return f"{scheme}://{rest}"
    like = _SCHEME_LIKE.match(text)
    if like is not None:
        scheme, rest = like.group(1).lower(), like.group(2)
        if scheme in schemes or scheme in HIDDEN_SCHEMES:
            example = schemes.get(scheme, f"{scheme}://...")
            raise ConfigError(
                f"{what} URL {location!r} is malformed: after {scheme + ':'!r} a URL needs '//' (got {rest[:40]!r})",
                hint=f"write {example}" + (" or a plain path" if scheme == "file" else ""),
            )
        raise ConfigError(
            f"{what} location {location!r} looks like a URL, but {scheme!r} is not a scheme pinpipe knows",
            hint=f"use {valid}; for a path that contains ':', write ./{text}",
        )
    return f"file://{Path(text).expanduser().resolve()}"


def prepare_directory(path: Path, access: Access, what: str, url: str, hint: str) -> None:
    """Make sure the directory of a ``file://`` location is usable for ``access`` (see the module docstring).

    ``hint`` says how the location normally comes to exist (for the "read" error)."""
    if path.is_dir():
        return
    if path.exists():
        raise ConfigError(f"the {what} {url} is not a directory", hint="point the option at a directory")
    if access == "read":
        raise NotFoundError(f"the {what} {url} does not exist", hint=hint, path=str(path))
    parent = path.parent
    if not parent.is_dir():
        raise NotFoundError(
            f"cannot create the {what} {url}: its parent directory {parent} does not exist",
            hint=f"check the path for a typo, or create the parent first (mkdir -p {parent})",
            path=str(path),
        )
    try:
        path.mkdir()
    except FileExistsError:
        return  # another process created it meanwhile
    except OSError as exc:
        raise ConfigError(f"cannot create the {what} {url}: {exc}", hint="check the path and its permissions") from exc
    log.info(f"created the {what} directory", extra={"fields": {"path": str(path)}})


def send_log_path(location: str) -> Path:
    """The emulator's send log as a local path: a plain path or a ``file://`` URL (ConfigError for another URL)."""
    return Path(normalise(location, "send log", "--send-log", {"file": "file:///PATH"}).partition("://")[2])
