"""``stacdrop collection push`` and ``stacdrop unpublish``: the catalog changed by hand. The rules (a
ledger job per run, what becomes unpublished) live in stacdrop/app/catalog_ops.py; these commands parse
the options, call it and print."""

from __future__ import annotations

import click

from stacdrop.app.cli.context import Context, failed, pass_ctx
from stacdrop.errors import StacdropError


@click.group()
def collection() -> None:
    """STAC collections in the configured catalog."""


@collection.command("push")
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
@pass_ctx
def collection_push(ctx: Context, file: str) -> None:
    """Create or update the collection in FILE (a STAC Collection JSON); recorded in the ledger."""
    from stacdrop.app.catalog_ops import NotACollection, push_collection, read_collection_file  # noqa: PLC0415

    try:
        found = read_collection_file(file)
    except NotACollection as exc:
        raise click.ClickException(str(exc)) from None
    try:
        pushed = push_collection(ctx.settings, ctx.ledger(), found)
    except StacdropError as exc:
        raise failed(exc) from None
    click.echo(f"collection {pushed.collection} {pushed.action} (job {pushed.job_id})")


@click.command()
@click.argument("item_id")
@click.option("--collection", "collection_id", required=True, help="The item's collection.")
@click.option("--delete-cog", is_flag=True, help="Also delete the item's COG from the store.")
@pass_ctx
def unpublish(ctx: Context, item_id: str, collection_id: str, delete_cog: bool) -> None:
    """Delete an item from the catalog (and its COG with --delete-cog); recorded in the ledger."""
    from stacdrop.app.catalog_ops import unpublish_item  # noqa: PLC0415 - loads the stages

    try:
        done = unpublish_item(ctx.settings, ctx.ledger(), collection_id, item_id, delete_cog=delete_cog)
    except StacdropError as exc:
        raise failed(exc) from None
    click.echo(f"{done.message} (job {done.job_id})")


COMMANDS = (collection, unpublish)
