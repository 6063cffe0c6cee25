"""``pinpipe config``: print the effective settings, secrets masked (a password inside a URL too)."""

from __future__ import annotations

from typing import Annotated

import orjson
import typer


def register(app: typer.Typer) -> None:
    @app.command("config")
    def config_command(
        as_json: Annotated[bool, typer.Option("--json", metavar="", help="Print JSON instead of a table.")] = False,
    ) -> None:
        """Print the effective settings (flags > PINPIPE__* env > pinpipe.toml > defaults), secrets masked."""
        from rich.console import Console
        from rich.table import Table

        from pinpipe.cli import console as terminal

        console = terminal if terminal.is_terminal else Console(width=240)  # values are never wrapped in a pipe

        from pinpipe.config import describe, load_settings

        settings = describe(load_settings())
        if as_json:
            typer.echo(orjson.dumps(settings, option=orjson.OPT_INDENT_2).decode())
            return
        from pinpipe.config import config_file

        path = config_file()
        table = Table(title=f"pinpipe settings (file: {path or 'none'})")
        table.add_column("setting", no_wrap=True)
        table.add_column("value", no_wrap=True)
        for section, values in settings.items():
            if isinstance(values, dict):
                for key, value in values.items():
                    table.add_row(f"{section}.{key}", str(value))
            else:
                table.add_row(section, str(values))
        console.print(table)
