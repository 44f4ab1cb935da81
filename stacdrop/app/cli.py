"""The ``stacdrop`` command: a thin click layer over the library."""

from __future__ import annotations

import json
import sys
import time
from datetime import datetime
from typing import Any

import click

from stacdrop.config import Settings, load_settings
from stacdrop.errors import StacdropError
from stacdrop.logs import configure_logging
from stacdrop.redact import redact_data, secrets_of
from stacdrop.times import parse_since


class Context:
    def __init__(self, config: str | None) -> None:
        self.config = config
        self._settings: Settings | None = None

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            try:
                self._settings = load_settings(self.config)
            except StacdropError as exc:
                raise click.ClickException(str(exc)) from None
            configure_logging(self._settings.log_format, self._settings.log_level, secrets_of(self._settings))
        return self._settings

    def shown(self, data: Any) -> Any:
        """``data`` as printed for people: URL passwords, signatures and secret settings masked (the
        ledger and the bus keep what the stages need, e.g. a source URL with its credentials)."""
        return redact_data(data, secrets_of(self.settings))

    def bus(self):  # noqa: ANN201
        from stacdrop.app.components import open_bus  # noqa: PLC0415 - stages load only for commands that need them

        return open_bus(self.settings)

    def ledger(self):  # noqa: ANN201
        from stacdrop.app.components import open_ledger  # noqa: PLC0415

        return open_ledger(self.settings)


pass_ctx = click.make_pass_decorator(Context)


@click.group()
@click.option("--config", "config", type=click.Path(dir_okay=False), envvar="STACDROP_CONFIG",
              help="TOML config file (default ./stacdrop.toml when present).")
@click.version_option(package_name="stacdrop")
@click.pass_context
def main(ctx: click.Context, config: str | None) -> None:
    """stacdrop: rasters dropped into an inbox become COGs and STAC items."""
    ctx.obj = Context(config)


# -- daemons ------------------------------------------------------------------------------------------
def _run(ctx: Context, roles: tuple[str, ...], workers: int | None) -> None:
    from stacdrop.app.daemon import Daemon  # noqa: PLC0415

    daemon = Daemon(ctx.settings, roles=roles, workers=workers or ctx.settings.workers)
    daemon.install_signal_handlers()
    daemon.start()
    daemon.wait()


@main.command()
@click.option("--workers", type=int, default=None, help="Processor processes (default: settings.workers).")
@pass_ctx
def run(ctx: Context, workers: int | None) -> None:
    """Run watcher, processor and publisher in one process."""
    _run(ctx, ("watch", "process", "publish"), workers)


@main.command()
@pass_ctx
def watch(ctx: Context) -> None:
    """Run only the watcher: find sources and emit ingest jobs."""
    _run(ctx, ("watch",), 1)


@main.command()
@click.option("--workers", type=int, default=None, help="Processor processes.")
@pass_ctx
def process(ctx: Context, workers: int | None) -> None:
    """Run only the processor: convert to COG and store."""
    _run(ctx, ("process",), workers)


@main.command()
@pass_ctx
def publish(ctx: Context) -> None:
    """Run only the publisher: derive items and push them to the STAC sink."""
    _run(ctx, ("publish",), 1)


@main.command()
@click.option("--url", default=None, help="Also GET this URL (e.g. http://127.0.0.1:8000/healthz); 2xx = healthy.")
@click.option("--timeout", type=float, default=10.0, show_default=True, help="Seconds for the URL check.")
@pass_ctx
def health(ctx: Context, url: str | None, timeout: float) -> None:
    """Container healthcheck: exit 0 when the ledger and the broker answer (and URL is 2xx), else exit 1
    naming what failed. Passwords are not printed."""
    import logging  # noqa: PLC0415

    import requests  # noqa: PLC0415

    from stacdrop.redact import redact_text, redact_url  # noqa: PLC0415

    settings = ctx.settings
    problems: list[str] = []

    def first_line(exc: Exception) -> str:
        text = redact_text(str(exc), secrets_of(settings))  # a driver's error may quote its URL
        return f"{type(exc).__name__}: {text.splitlines()[0] if text else ''}"

    try:
        ctx.ledger().ping()
    except Exception as exc:  # noqa: BLE001 - any failure is unhealthy, reported by name
        problems.append(f"ledger {redact_url(settings.ledger, keep_user=True)}: {first_line(exc)}")
    logging.getLogger("pika").setLevel(logging.CRITICAL)  # a queue not declared yet is not a failure here
    try:
        with ctx.bus() as bus:
            bus.stats()  # a connection and passive declares: the broker answers
    except Exception as exc:  # noqa: BLE001
        problems.append(f"bus {redact_url(settings.broker, keep_user=True)}: {first_line(exc)}")
    if url:
        try:
            resp = requests.get(url, timeout=timeout)
            if not resp.ok:
                problems.append(f"{url}: HTTP {resp.status_code}")
        except requests.RequestException as exc:
            problems.append(f"{url}: {first_line(exc)}")
    if problems:
        raise click.ClickException("unhealthy: " + "; ".join(problems))
    click.echo("healthy")


@main.command()
@click.option("--host", default=None, help="Address to listen on (default: settings.api_host, 127.0.0.1).")
@click.option("--port", type=int, default=None, help="Port (default: settings.api_port, 8000).")
@pass_ctx
def serve(ctx: Context, host: str | None, port: int | None) -> None:
    """Serve the HTTP API, /metrics and the status page (run the daemon beside it for work to flow)."""
    import uvicorn  # noqa: PLC0415

    from stacdrop.app.api.app import create_app  # noqa: PLC0415
    from stacdrop.logs import uvicorn_log_config  # noqa: PLC0415

    settings = ctx.settings
    uvicorn.run(create_app(settings), host=host or settings.api_host, port=settings.api_port if port is None else port,
                log_level=settings.log_level.lower(), proxy_headers=False,
                log_config=uvicorn_log_config(secrets_of(settings)))  # access log: paths without query strings


# -- settings and explain -----------------------------------------------------------------------------
@main.command("config")
@pass_ctx
def show_config(ctx: Context) -> None:
    """Print the effective settings, secrets masked."""
    click.echo(json.dumps(ctx.settings.masked(), indent=2))


@main.command()
@click.argument("path", type=click.Path(exists=True, dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print the item only, as JSON.")
@pass_ctx
def explain(ctx: Context, path: str, as_json: bool) -> None:
    """Print the item PATH would get and which rule produced each field; processes nothing."""
    from stacdrop.app.explain import explain_file  # noqa: PLC0415

    try:
        derived = explain_file(path, ctx.settings)
    except StacdropError as exc:
        raise click.ClickException(f"{exc} [{exc.error_class}]") from None
    if as_json:
        click.echo(json.dumps(derived.item, indent=2))
        return
    click.echo(json.dumps(derived.item, indent=2))
    click.echo("\nfield provenance:")
    for field, rule in sorted(derived.provenance.items()):
        click.echo(f"  {field:<32} {rule}")


# -- jobs -----------------------------------------------------------------------------------------------
def _parse_since(value: str | None) -> datetime | None:
    """``2026-11-27``, an ISO datetime, or a duration like ``30m``, ``2h``, ``7d``."""
    try:
        return parse_since(value)
    except ValueError:
        raise click.BadParameter(f"--since {value!r}: not a date, a datetime or a duration like 2h") from None


def _table(rows: list[list[Any]], headers: list[str]) -> str:
    cells = [headers] + [["" if c is None else str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in cells)


@main.command()
@click.option("--state", help="new, queued, processing, publishing, retrying, published, failed, skipped")
@click.option("--stage")
@click.option("--collection")
@click.option("--error-class")
@click.option("--since", help="ISO date/time or a duration such as 2h")
@click.option("--limit", type=int, default=50)
@click.option("--json", "as_json", is_flag=True)
@pass_ctx
def jobs(ctx: Context, state: str | None, stage: str | None, collection: str | None, error_class: str | None,
         since: str | None, limit: int, as_json: bool) -> None:
    """List jobs, newest first."""
    found = ctx.ledger().list_jobs(state=state, stage=stage, collection=collection, error_class=error_class,
                                   since=_parse_since(since), limit=limit)
    if as_json:
        click.echo(json.dumps(ctx.shown([j.as_dict() for j in found]), indent=2))
        return
    rows = [[j.id, j.state, j.stage, j.step, j.collection, j.item_id, j.source_key,
             (j.error or "")[:80]] for j in found]
    click.echo(_table(rows, ["JOB", "STATE", "STAGE", "STEP", "COLLECTION", "ITEM", "SOURCE", "ERROR"]))


@main.command()
@click.argument("job_id")
@click.option("--json", "as_json", is_flag=True)
@pass_ctx
def job(ctx: Context, job_id: str, as_json: bool) -> None:
    """Show one job with its full stage history."""
    found = ctx.ledger().get(job_id, with_events=True)
    if found is None:
        raise click.ClickException(f"no job {job_id}")
    if as_json:
        click.echo(json.dumps(ctx.shown(found.as_dict()), indent=2))
        return
    data = ctx.shown(found.as_dict())
    events = data.pop("events")
    for key, value in data.items():
        if value not in (None, {}, ""):
            click.echo(f"{key:<14} {value}")
    from stacdrop.app.api.compat import original_step  # noqa: PLC0415 - the original system's step names

    click.echo(f"{'status step':<14} {original_step(found)}")
    click.echo("\nhistory:")
    rows = [[e["at"][:23], e["stage"], e["step"], e["status"], e["attempt"], e["error_class"], e["message"]]
            for e in events]
    click.echo(_table(rows, ["AT", "STAGE", "STEP", "STATUS", "TRY", "ERROR CLASS", "MESSAGE"]))


# -- catalog: collections and unpublishing ------------------------------------------------------------
def _cli_job(ctx: Context, kind: str, source: str, source_key: str, collection: str | None):  # noqa: ANN202
    """A ledger job for a command run by hand (each run is its own job)."""
    import uuid  # noqa: PLC0415

    job, _ = ctx.ledger().create_job(kind=kind, source=source, source_key=source_key,
                                     content_key=f"cli:{uuid.uuid4().hex}", collection=collection, origin="cli",
                                     priority=0)
    return job


@main.group()
def collection() -> None:
    """STAC collections in the configured catalog."""


@collection.command("push")
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
@pass_ctx
def collection_push(ctx: Context, file: str) -> None:
    """Create or update the collection in FILE (a STAC Collection JSON); recorded in the ledger."""
    import hashlib  # noqa: PLC0415
    from pathlib import Path  # noqa: PLC0415

    from publisher import publish_collection  # noqa: PLC0415
    from stacdrop.app.components import open_sink  # noqa: PLC0415
    from stacdrop.ledger import EventStatus, JobState, Stage  # noqa: PLC0415
    from stacdrop.messages import CollectionUpdate, Source  # noqa: PLC0415

    path = Path(file).resolve()
    text = path.read_text(encoding="utf-8", errors="replace")
    try:
        cid = json.loads(text).get("id")
    except (json.JSONDecodeError, AttributeError):
        cid = None
    if not isinstance(cid, str) or not cid:
        raise click.ClickException(f"{file}: not a STAC collection with an \"id\"")
    ledger = ctx.ledger()
    job = _cli_job(ctx, "collection", str(path), path.name, cid)
    update = CollectionUpdate(source=Source(url=str(path), key=path.name,
                                            content_key=hashlib.sha256(text.encode()).hexdigest()),
                              collection=cid, text=text)
    try:
        with open_sink(ctx.settings, ledger) as sink:
            action = publish_collection(update, sink)
    except StacdropError as exc:
        ledger.record(job.id, stage=Stage.PUBLISH, step="collection", status=EventStatus.FAILED, state=JobState.FAILED,
                      error_class=exc.error_class, error=str(exc), message=str(exc))
        raise click.ClickException(f"{exc} [{exc.error_class}]") from None
    ledger.record(job.id, stage=Stage.PUBLISH, step="finished", status=EventStatus.SUCCEEDED,
                  state=JobState.PUBLISHED, message=f"collection {cid} {action}")
    click.echo(f"collection {cid} {action} (job {job.id})")


@main.command()
@click.argument("item_id")
@click.option("--collection", "collection_id", required=True, help="The item's collection.")
@click.option("--delete-cog", is_flag=True, help="Also delete the item's COG from the store.")
@pass_ctx
def unpublish(ctx: Context, item_id: str, collection_id: str, delete_cog: bool) -> None:
    """Delete an item from the catalog (and its COG with --delete-cog); recorded in the ledger."""
    from stacdrop.app.components import open_sink  # noqa: PLC0415
    from stacdrop.ledger import EventStatus, JobState, Stage  # noqa: PLC0415

    ledger = ctx.ledger()
    job = _cli_job(ctx, "unpublish", f"stac:{collection_id}/{item_id}", f"{collection_id}/{item_id}", collection_id)

    def fail(exc: StacdropError) -> None:
        ledger.record(job.id, stage=Stage.PUBLISH, step="unpublish", status=EventStatus.FAILED, state=JobState.FAILED,
                      item_id=item_id, error_class=exc.error_class, error=str(exc), message=str(exc))
        raise click.ClickException(f"{exc} [{exc.error_class}]")

    published = ledger.list_jobs(collection=collection_id, item_id=item_id, state=JobState.PUBLISHED, limit=1000)
    try:
        with open_sink(ctx.settings, ledger) as sink:
            deleted = sink.delete_item(collection_id, item_id)
    except StacdropError as exc:
        fail(exc)
        return
    notes = [f"item {collection_id}/{item_id} {'deleted' if deleted else 'was not in the catalog'}"]
    if delete_cog:
        keys = [j.cog_key for j in published if j.cog_key]
        if not keys:
            notes.append("no COG deleted: no published job of this item records a store key")
        else:
            from stacdrop.app.components import open_store  # noqa: PLC0415

            store = open_store(ctx.settings)
            try:
                for key in dict.fromkeys(keys):
                    store.delete(key)
                    notes.append(f"COG {key} deleted")
            except StacdropError as exc:
                fail(exc)
                return
    message = "; ".join(notes)
    for old in published:
        ledger.record(old.id, stage=Stage.PUBLISH, step="unpublished", status=EventStatus.UNPUBLISHED,
                      state=JobState.UNPUBLISHED, message=f"{message} (job {job.id})")
    ledger.record(job.id, stage=Stage.PUBLISH, step="finished", status=EventStatus.SUCCEEDED,
                  state=JobState.UNPUBLISHED, item_id=item_id, message=message)
    click.echo(f"{message} (job {job.id})")


# -- queues and dead letters ----------------------------------------------------------------------------
@main.command()
@click.option("--watch", "watch_", is_flag=True, help="Refresh every --interval seconds.")
@click.option("--interval", type=float, default=2.0)
@click.option("--json", "as_json", is_flag=True)
@pass_ctx
def queues(ctx: Context, watch_: bool, interval: float, as_json: bool) -> None:
    """Per stage: ready, unacked, consumers, retrying and dead-lettered counts, and rates."""
    bus = ctx.bus()
    try:
        while True:
            stats = bus.stats()
            if as_json:
                click.echo(json.dumps([s.__dict__ for s in stats]))
            else:
                rows = [[s.queue, s.ready, "?" if s.unacked is None else s.unacked,
                         "?" if s.consumers is None else s.consumers, s.retrying,
                         s.dead, "-" if s.publish_rate is None else f"{s.publish_rate:.1f}/s",
                         "-" if s.ack_rate is None else f"{s.ack_rate:.1f}/s"] for s in stats]
                if watch_:
                    click.clear()
                    click.echo(time.strftime("%Y-%m-%d %H:%M:%S"))
                click.echo(_table(rows, ["QUEUE", "READY", "UNACKED", "CONSUMERS", "RETRYING", "DEAD", "IN", "DONE"]))
            if not watch_:
                return
            time.sleep(interval)
    except KeyboardInterrupt:
        pass
    finally:
        bus.close()


@main.group()
def dlq() -> None:
    """Dead letters: list, show, replay, purge."""


def _dlq_filter(ids: tuple[str, ...], stage: str | None, error_class: str | None, collection: str | None,
                since: str | None):  # noqa: ANN202
    from stacdrop.bus.base import DeadLetterFilter  # noqa: PLC0415

    return DeadLetterFilter(queue=stage, error_class=error_class, collection=collection,
                            since=_parse_since(since), ids=list(ids))


def _filter_options(func):  # noqa: ANN001, ANN202
    for option in reversed([
        click.option("--stage", help="process or publish"),
        click.option("--error-class"),
        click.option("--collection"),
        click.option("--since", help="ISO date/time or a duration such as 2h"),
    ]):
        func = option(func)
    return func


@dlq.command("list")
@_filter_options
@click.option("--json", "as_json", is_flag=True)
@pass_ctx
def dlq_list(ctx: Context, stage: str | None, error_class: str | None, collection: str | None, since: str | None,
             as_json: bool) -> None:
    """List dead letters, oldest first."""
    with ctx.bus() as bus:
        letters = bus.dead_letters(_dlq_filter((), stage, error_class, collection, since))
    if as_json:
        click.echo(json.dumps(ctx.shown([_letter_dict(d) for d in letters]), indent=2))
        return
    rows = [[d.id, d.queue, d.envelope.job_id, d.collection, d.error_class, d.attempts,
             d.dead_at.isoformat()[:19], d.error[:90]] for d in letters]
    click.echo(_table(rows, ["ID", "STAGE", "JOB", "COLLECTION", "ERROR CLASS", "TRIES", "DEAD AT", "ERROR"]))


def _letter_dict(d) -> dict[str, Any]:  # noqa: ANN001
    return {"id": d.id, "stage": d.queue, "job_id": d.envelope.job_id, "collection": d.collection,
            "error_class": d.error_class, "error": d.error, "attempts": d.attempts, "dead_at": d.dead_at.isoformat(),
            "history": [h.model_dump(mode="json") for h in d.envelope.history],
            "message": d.envelope.model_dump(mode="json")}


@dlq.command("show")
@click.argument("letter_id")
@pass_ctx
def dlq_show(ctx: Context, letter_id: str) -> None:
    """The error, every attempt, and the original message."""
    with ctx.bus() as bus:
        letter = bus.get_dead_letter(letter_id)
    if letter is None:
        raise click.ClickException(f"no dead letter {letter_id}")
    click.echo(json.dumps(ctx.shown(_letter_dict(letter)), indent=2))


@dlq.command("replay")
@click.argument("ids", nargs=-1)
@click.option("--all", "all_", is_flag=True, help="Replay every dead letter (with the filters).")
@_filter_options
@click.option("--dry-run", is_flag=True, help="Only show what would be replayed.")
@click.option("--rate", type=float, default=None, help="At most N replays per second.")
@pass_ctx
def dlq_replay(ctx: Context, ids: tuple[str, ...], all_: bool, stage: str | None, error_class: str | None,
               collection: str | None, since: str | None, dry_run: bool, rate: float | None) -> None:
    """Put dead letters back on their queue; the replay is recorded on each job."""
    from stacdrop.app.deadletters import replay_dead_letters  # noqa: PLC0415

    if not (ids or all_ or stage or error_class or collection or since):
        raise click.UsageError("name dead letter ids, or --all, or filters")

    def report(letter, replayed: bool) -> None:  # noqa: ANN001
        if dry_run:
            click.echo(f"would replay {letter.id} (job {letter.envelope.job_id}, {letter.error_class})")
        elif replayed:
            click.echo(f"replayed {letter.id} (job {letter.envelope.job_id})")

    with ctx.bus() as bus:
        result = replay_dead_letters(bus, ctx.ledger(), _dlq_filter(ids, stage, error_class, collection, since),
                                     dry_run=dry_run, rate=rate, on_letter=report)
    click.echo(f"{'would replay' if dry_run else 'replayed'} {len(result.matched)} dead letter(s)")


@dlq.command("purge")
@click.argument("ids", nargs=-1)
@click.option("--all", "all_", is_flag=True)
@_filter_options
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@pass_ctx
def dlq_purge(ctx: Context, ids: tuple[str, ...], all_: bool, stage: str | None, error_class: str | None,
              collection: str | None, since: str | None, yes: bool) -> None:
    """Delete dead letters for good (their jobs stay failed in the ledger)."""
    if not (ids or all_ or stage or error_class or collection or since):
        raise click.UsageError("name dead letter ids, or --all, or filters")
    with ctx.bus() as bus:
        letters = bus.dead_letters(_dlq_filter(ids, stage, error_class, collection, since))
        if letters and not yes:
            click.confirm(f"purge {len(letters)} dead letter(s)?", abort=True)
        purged = bus.purge([d.id for d in letters])
    click.echo(f"purged {len(purged)} dead letter(s)")


# -- catalog backups (stacdrop/app/backup.py) ---------------------------------------------------------------
@main.group(invoke_without_command=True)
@click.option("--to", "dest", default=None, help="Directory or s3://bucket/prefix (default: settings.backup_dir).")
@click.option("--keep", type=click.IntRange(min=1), default=None, help="Archives kept (default: settings.backup_keep, 30).")
@click.pass_context
def backup(click_ctx: click.Context, dest: str | None, keep: int | None) -> None:
    """Dump the pgstac catalog (settings.catalog_dsn) and prune old archives; `backup list` shows them."""
    if click_ctx.invoked_subcommand is not None:
        return
    from stacdrop.app.backup import backup as run_backup, human_size  # noqa: PLC0415

    ctx: Context = click_ctx.obj
    try:
        result = run_backup(ctx.settings, dest, keep)
    except StacdropError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"wrote {result.archive.location} ({human_size(result.archive.size)}, {result.seconds:.1f} s)")
    for name in result.pruned:
        click.echo(f"pruned {name}")


@backup.command("list")
@click.option("--to", "dest", default=None, help="Directory or s3://bucket/prefix (default: settings.backup_dir).")
@click.option("--json", "as_json", is_flag=True)
@pass_ctx
def backup_list(ctx: Context, dest: str | None, as_json: bool) -> None:
    """The archives, oldest first: name, size, date (UTC, when the dump was taken)."""
    from stacdrop.app.backup import human_size, list_archives  # noqa: PLC0415

    try:
        archives = list_archives(ctx.settings, dest)
    except StacdropError as exc:
        raise click.ClickException(str(exc)) from None
    if as_json:
        click.echo(json.dumps([{"name": a.name, "location": a.location, "size": a.size,
                                "date": a.taken_at.isoformat()} for a in archives], indent=2))
        return
    rows = [[a.name, human_size(a.size), a.taken_at.strftime("%Y-%m-%d %H:%M:%S UTC")] for a in archives]
    click.echo(_table(rows, ["NAME", "SIZE", "DATE"]) if rows else f"no backups in {dest or ctx.settings.backup_dir}")


@main.command()
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
            for name in lib.kept_databases(ctx.settings, database):
                click.echo(name)
        elif drop_old:
            lib.drop_old(ctx.settings, drop_old, database)
            click.echo(f"dropped database {drop_old}")
        else:
            result = lib.restore(ctx.settings, archive, database, echo=click.echo)
            click.echo(f"database {result.database} is now the restored catalog "
                       f"(pgstac {result.check.pgstac_version}, {result.check.collections} collections, "
                       f"{result.check.items} items, {result.seconds:.1f} s)")
            if result.old_database:
                click.echo(f"the previous catalog is kept as {result.old_database}; drop it when satisfied: "
                           f"stacdrop restore --drop-old {result.old_database}")
    except StacdropError as exc:
        raise click.ClickException(str(exc)) from None


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
