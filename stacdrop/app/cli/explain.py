"""``stacdrop config`` and ``stacdrop explain``: what the settings are, and what item a file would get."""

from __future__ import annotations

import json

import click

from stacdrop.app.cli.context import Context, failed, pass_ctx
from stacdrop.errors import StacdropError


@click.command("config")
@pass_ctx
def show_config(ctx: Context) -> None:
    """Print the effective settings, secrets masked."""
    click.echo(json.dumps(ctx.settings.masked(), indent=2))


@click.command()
@click.argument("path", type=click.Path(exists=True, dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print the item only, as JSON.")
@pass_ctx
def explain(ctx: Context, path: str, as_json: bool) -> None:
    """Print the item PATH would get and which rule produced each field; processes nothing."""
    from stacdrop.app.explain import explain_file  # noqa: PLC0415

    try:
        derived = explain_file(path, ctx.settings)
    except StacdropError as exc:
        raise failed(exc) from None
    if as_json:
        click.echo(json.dumps(derived.item, indent=2))
        return
    click.echo(json.dumps(derived.item, indent=2))
    click.echo("\nfield provenance:")
    for field, rule in sorted(derived.provenance.items()):
        click.echo(f"  {field:<32} {rule}")


COMMANDS = (show_config, explain)
