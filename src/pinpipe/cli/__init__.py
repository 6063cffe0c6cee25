"""The ``pinpipe`` command: a thin Typer shell over the library.

Each command group lives in its own module (``pinpipe.cli.<module>``) exposing ``register(app)``. A
:class:`~pinpipe.errors.PinpipeError` prints one clear line (what happened — what to do) and exits with the
error's code; ``--debug`` prints the traceback instead.
"""

from __future__ import annotations

import atexit
import importlib
import logging
import os
import sys
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape

from pinpipe.cli.typer_app import PinpipeTyper
from pinpipe.errors import PinpipeError

if TYPE_CHECKING:
    from pinpipe.telemetry.logs import LogFormat

COMMAND_MODULES = (
    "demo_cmd",
    "source_cmd",
    "ingest_cmd",
    "sink_cmd",
    "stream_cmd",
    "parity_cmd",
    "batch_cmd",
    "results_cmd",
    "quality_cmd",
    "accounting_cmd",
    "status_cmd",
    "log_cmd",
    "landing_cmd",
    "vacuum_cmd",
    "drill_cmd",
    "config_cmd",
)
"""Modules under ``pinpipe.cli`` that add commands, in ``--help`` order."""

console = Console()
err_console = Console(stderr=True, soft_wrap=True)
"""Errors and hints are never hard-wrapped: Airflow logs and ``grep`` see each on one line."""

app = PinpipeTyper(
    name="pinpipe",
    help="The Pinterest data pipeline: source DB → ingestion API → event log → lake → silver/gold Delta.",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode="rich",
    pretty_exceptions_enable=False,
)

_state = {"debug": False, "json": False}


@app.callback()
def _root(
    debug: Annotated[bool, typer.Option("--debug", metavar="", help="Show full tracebacks on errors.")] = False,
    log_format: Annotated[
        str, typer.Option("--log-format", help="Log line format: human or json.", case_sensitive=False)
    ] = "human",
) -> None:
    if log_format not in ("human", "json"):
        raise typer.BadParameter("must be 'human' or 'json'", param_hint="--log-format")
    from pinpipe.telemetry.logs import setup_logging

    fmt: LogFormat = "json" if log_format == "json" else "human"
    _state["debug"] = debug
    _state["json"] = fmt == "json"
    setup_logging(fmt)


for _module in COMMAND_MODULES:
    importlib.import_module(f"pinpipe.cli.{_module}").register(app)


def _usage_error(exc: BaseException) -> Any:
    """``exc`` if it is a Click usage error (bad flag values, in non-standalone mode), else None: Typer (>= 0.29)
    raises its vendored Click's; plain Click's counts only if some module imported Click (not imported here for
    the check alone: a fiftieth of a second of every command's start)."""
    types: list[type[Any]] = []
    try:
        from typer._click.exceptions import ClickException as TyperClickException

        types.append(TyperClickException)
    except ImportError:  # an older Typer raises plain Click's (and has imported it)
        pass
    click = sys.modules.get("click")
    if click is not None:
        types.append(click.ClickException)
    return exc if isinstance(exc, tuple(types)) else None


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``pinpipe`` script (``argv=None``) and of in-process callers (tests pass ``argv``).

    As the script, the process leaves with the command's own code through :func:`os._exit`, after Python's
    ``atexit`` handlers and a flush of every stream: Arrow's and delta-rs's native threads can otherwise abort
    interpreter finalisation (``terminate called without an active exception``, SIGABRT) after a command that
    succeeded, so the exit status would depend on how a library's threads shut down (SPEC §8).
    """
    code = _run(argv)
    if argv is None:
        _leave(code)
    if code != 0:
        sys.exit(code)


def _run(argv: list[str] | None, application: typer.Typer = app) -> int:
    """Run one command of ``application`` and return its exit code; errors become their ``error:``/``hint:``
    lines (tests pass an application of their own to reach every failure path)."""
    try:
        code = application(args=argv, standalone_mode=False)  # returns typer.Exit's code instead of raising it
    except PinpipeError as exc:
        if _state["debug"]:
            raise
        from pinpipe.config import mask_secrets

        if _state["json"]:  # one JSON log line, like every other line of the command
            _log_error(exc.message, exc.exit_code, type(exc).__name__, exc.hint, exc.facts)
            return exc.exit_code
        line = mask_secrets(f"{exc.message}{_facts(exc)}")
        err_console.print(f"[bold red]error:[/] {escape(line)}", highlight=False)
        if exc.hint:
            err_console.print(f"[yellow]hint:[/] {escape(mask_secrets(exc.hint))}", highlight=False)
        return exc.exit_code
    except KeyboardInterrupt:
        err_console.print("interrupted")
        return 130
    except typer.Exit as exc:
        return int(exc.exit_code)
    except typer.Abort:
        err_console.print("aborted")
        return 1
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except Exception as exc:  # a usage error (bad flag values) in non-standalone mode, or a bug: exit 1
        usage = _usage_error(exc)
        if usage is not None:
            usage.show()
            return int(usage.exit_code)
        if _state["debug"]:
            raise
        from pinpipe.config import mask_secrets

        detail = mask_secrets(f"{type(exc).__name__}: {exc}")
        if _state["json"]:
            _log_error(f"internal error: {detail}", 1, type(exc).__name__, _BUG_HINT, {})
            return 1
        err_console.print(f"[bold red]error:[/] internal error: {escape(detail)}", highlight=False)
        err_console.print(f"[yellow]hint:[/] {_BUG_HINT}")
        return 1
    return code if isinstance(code, int) else 0


_BUG_HINT = "this is a bug; run again with --debug for the traceback and report it"


def _log_error(message: str, code: int, kind: str, hint: str | None, facts: dict[str, Any]) -> None:
    """The error as a JSON log line (``--log-format json``): message, hint, exit code, error type and facts."""
    scalars = {k: v for k, v in facts.items() if v is None or isinstance(v, (str, int, float, bool))}
    fields = {**scalars, "error": kind, "exit_code": code, "hint": hint}
    from pinpipe.telemetry.logs import get_logger

    get_logger("cli").error(message, extra={"fields": fields})


def _facts(exc: PinpipeError) -> str:
    """`` (stage=sink, topic=…, partition=0, offset=12)`` — the error's facts, in the order they were given."""
    shown = {
        k: v
        for k, v in exc.facts.items()
        if v is not None and not isinstance(v, (dict, list, set, tuple)) and str(v) not in exc.message
    }
    return " (" + ", ".join(f"{k}={v}" for k, v in shown.items()) + ")" if shown else ""


def _leave(code: int) -> None:
    """Run ``atexit`` handlers, flush, and end the process with ``code`` without native finalisers."""
    try:
        atexit._run_exitfuncs()
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
    finally:
        os._exit(code)
