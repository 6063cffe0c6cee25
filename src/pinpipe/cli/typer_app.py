"""The Typer application class every ``pinpipe`` command group is built from.

Used by :mod:`pinpipe.cli` (the root app) and by the command modules that add a sub-group (``source``, ``log``):
``PinpipeTyper`` is :class:`typer.Typer` whose commands and groups show no value type after ``--help`` — like every
other switch of the CLI (declared with ``metavar=""``), ``--help`` takes no value, so ``<bool>`` would mislead.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import typer
from typer.core import TyperCommand, TyperGroup

_F = TypeVar("_F", bound=Callable[..., Any])


def _switch(option: Any) -> Any:
    if option is not None:
        option.metavar = ""
    return option


class _Command(TyperCommand):
    def get_help_option(self, ctx: Any) -> Any:
        return _switch(super().get_help_option(ctx))


class _Group(TyperGroup):
    def get_help_option(self, ctx: Any) -> Any:
        return _switch(super().get_help_option(ctx))


class PinpipeTyper(typer.Typer):
    """:class:`typer.Typer` with the help switch shown as a switch (see the module docstring)."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("cls", _Group)
        super().__init__(**kwargs)

    def command(self, *args: Any, **kwargs: Any) -> Callable[[_F], _F]:
        kwargs.setdefault("cls", _Command)
        decorator: Callable[[_F], _F] = super().command(*args, **kwargs)
        return decorator
