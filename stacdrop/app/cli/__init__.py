"""The ``stacdrop`` command: a thin click layer over the application.

One module per command group (daemons, explain, jobs, catalog, queues, backup, s3), each listing its
``COMMANDS``; what they share (the settings, the bus and ledger, the table) is in ``context``. The commands
parse options, call the application and print: a rule the HTTP API could need too (replaying dead letters,
unpublishing, pushing a collection) lives in an app module (stacdrop/app/deadletters.py, catalog_ops.py).
``stacdrop.app.cli:main`` is the console script; ``python -m stacdrop.app.cli`` runs it too (__main__.py).
"""

from __future__ import annotations

import click

from stacdrop.app.cli import backup, catalog, daemons, explain, jobs, queues, s3
from stacdrop.app.cli.context import Context

__all__ = ["main"]


@click.group()
@click.option("--config", "config", type=click.Path(dir_okay=False), envvar="STACDROP_CONFIG",
              help="TOML config file (default ./stacdrop.toml when present).")
@click.version_option(package_name="stacdrop")
@click.pass_context
def main(ctx: click.Context, config: str | None) -> None:
    """stacdrop: rasters dropped into an inbox become COGs and STAC items."""
    ctx.obj = Context(config)


for _group in (daemons, explain, jobs, catalog, queues, backup, s3):
    for _command in _group.COMMANDS:
        main.add_command(_command)
