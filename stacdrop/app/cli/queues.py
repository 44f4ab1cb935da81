"""``stacdrop queues`` and ``stacdrop dlq list | show | replay | purge``: the bus, read and repaired.
Replaying is the shared rule of stacdrop/app/deadletters.py (also ``POST /dead-letters/replay``)."""

from __future__ import annotations

import json
import time
from typing import Any

import click

from stacdrop.app.cli.context import Context, parse_since_option, pass_ctx, table
from stacdrop.bus.base import DeadLetterFilter


@click.command()
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
                click.echo(table(rows, ["QUEUE", "READY", "UNACKED", "CONSUMERS", "RETRYING", "DEAD", "IN", "DONE"]))
            if not watch_:
                return
            time.sleep(interval)
    except KeyboardInterrupt:
        pass
    finally:
        bus.close()


@click.group()
def dlq() -> None:
    """Dead letters: list, show, replay, purge."""


def _dlq_filter(ids: tuple[str, ...], stage: str | None, error_class: str | None, collection: str | None,
                since: str | None) -> DeadLetterFilter:
    return DeadLetterFilter(queue=stage, error_class=error_class, collection=collection,
                            since=parse_since_option(since), ids=list(ids))


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
    click.echo(table(rows, ["ID", "STAGE", "JOB", "COLLECTION", "ERROR CLASS", "TRIES", "DEAD AT", "ERROR"]))


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


COMMANDS = (queues, dlq)
