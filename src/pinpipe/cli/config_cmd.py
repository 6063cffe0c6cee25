"""``pinpipe config``: print the effective settings, secrets masked."""

from __future__ import annotations

from typing import Annotated

import orjson
import typer

from pinpipe.config import config_file, describe, load_settings


def register(app: typer.Typer) -> None:
    @app.command("config")
    def config_command(
        as_json: Annotated[bool, typer.Option("--json", metavar="", help="Print JSON instead of a table.")] = False,
    ) -> None:
        """Print the effective settings (flags > PINPIPE__* env > pinpipe.toml > defaults), secrets masked."""
        from rich.table import Table

        from pinpipe.cli import console

        settings = describe(load_settings())
        if as_json:
            typer.echo(orjson.dumps(settings, option=orjson.OPT_INDENT_2).decode())
            return
        path = config_file()
        table = Table(title=f"pinpipe settings (file: {path or 'none'})")
        table.add_column("setting")
        table.add_column("value")
        for section, values in settings.items():
            if isinstance(values, dict):
                for key, value in values.items():
                    table.add_row(f"{section}.{key}", str(value))
            else:
                table.add_row(section, str(values))
        console.print(table)
