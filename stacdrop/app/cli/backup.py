"""``stacdrop backup [list]`` and ``stacdrop restore``: the pgstac catalog dumped, listed and restored
(the work is stacdrop/app/backup.py's; docs/operations-backup.md)."""

from __future__ import annotations

import json

import click

from stacdrop.app.cli.context import Context, pass_ctx, table
from stacdrop.errors import StacdropError


@click.group(invoke_without_command=True)
@click.option("--to", "dest", default=None, help="Directory or s3://bucket/prefix (default: settings.backup.dir).")
@click.option("--keep", type=click.IntRange(min=1), default=None,
              help="Archives kept (default: settings.backup.keep, 30).")
@click.pass_context
def backup(click_ctx: click.Context, dest: str | None, keep: int | None) -> None:
    """Dump the pgstac catalog (settings.backup.catalog_dsn) and prune old archives; `backup list` shows them."""
    if click_ctx.invoked_subcommand is not None:
        return
    from stacdrop.app.backup import backup as run_backup, human_size  # noqa: PLC0415

    ctx: Context = click_ctx.obj
    try:
        result = run_backup(ctx.settings.backup, ctx.settings.s3, dest, keep)
    except StacdropError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"wrote {result.archive.location} ({human_size(result.archive.size)}, {result.seconds:.1f} s)")
    for name in result.pruned:
        click.echo(f"pruned {name}")


@backup.command("list")
@click.option("--to", "dest", default=None, help="Directory or s3://bucket/prefix (default: settings.backup.dir).")
@click.option("--json", "as_json", is_flag=True)
@pass_ctx
def backup_list(ctx: Context, dest: str | None, as_json: bool) -> None:
    """The archives, oldest first: name, size, date (UTC, when the dump was taken)."""
    from stacdrop.app.backup import human_size, list_archives  # noqa: PLC0415

    try:
        archives = list_archives(ctx.settings.backup, ctx.settings.s3, dest)
    except StacdropError as exc:
        raise click.ClickException(str(exc)) from None
    if as_json:
        click.echo(json.dumps([{"name": a.name, "location": a.location, "size": a.size,
                                "date": a.taken_at.isoformat()} for a in archives], indent=2))
        return
    rows = [[a.name, human_size(a.size), a.taken_at.strftime("%Y-%m-%d %H:%M:%S UTC")] for a in archives]
    click.echo(table(rows, ["NAME", "SIZE", "DATE"]) if rows else f"no backups in {dest or ctx.settings.backup.dir}")


@click.command()
@click.argument("archive", required=False)
@click.option("--database", default=None, help="Live database to replace (default: the catalog_dsn's).")
@click.option("--drop-old", "drop_old", metavar="NAME", default=None,
              help="Instead of restoring: drop NAME, a previous catalog a restore kept (<live>_old_<ts>).")
@click.option("--list-old", is_flag=True, help="Instead of restoring: list the previous catalogs kept.")
@pass_ctx
def restore(ctx: Context, archive: str | None, database: str | None, drop_old: str | None, list_old: bool) -> None:
    """Restore ARCHIVE (path, s3:// URL or a name from `backup list`) into a new database, check it, then
    swap it in place of the live catalog, keeping the old one. Needs a superuser catalog_dsn. Stop the
    publisher first; stac-fastapi-pgstac reconnects by itself (docs/operations-backup.md)."""
    from stacdrop.app import backup as lib  # noqa: PLC0415

    if sum(bool(x) for x in (archive, drop_old, list_old)) != 1:
        raise click.UsageError("give one of ARCHIVE, --drop-old NAME or --list-old")
    try:
        if list_old:
            for name in lib.kept_databases(ctx.settings.backup, database):
                click.echo(name)
        elif drop_old:
            lib.drop_old(ctx.settings.backup, drop_old, database)
            click.echo(f"dropped database {drop_old}")
        else:
            assert archive is not None  # one of the three was given (checked above)
            result = lib.restore(ctx.settings.backup, ctx.settings.s3, archive, database, echo=click.echo)
            click.echo(f"database {result.database} is now the restored catalog "
                       f"(pgstac {result.check.pgstac_version}, {result.check.collections} collections, "
                       f"{result.check.items} items, {result.seconds:.1f} s)")
            if result.old_database:
                click.echo(f"the previous catalog is kept as {result.old_database}; drop it when satisfied: "
                           f"stacdrop restore --drop-old {result.old_database}")
    except StacdropError as exc:
        raise click.ClickException(str(exc)) from None


COMMANDS = (backup, restore)
