"""``stacdrop jobs`` and ``stacdrop job``: the ledger, read (URL credentials masked in what is printed)."""

from __future__ import annotations

import json

import click

from stacdrop.app.cli.context import Context, parse_since_option, pass_ctx, table


@click.command()
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
                                   since=parse_since_option(since), limit=limit)
    if as_json:
        click.echo(json.dumps(ctx.shown([j.as_dict() for j in found]), indent=2))
        return
    rows = [[j.id, j.state, j.stage, j.step, j.collection, j.item_id, j.source_key,
             (j.error or "")[:80]] for j in found]
    click.echo(table(rows, ["JOB", "STATE", "STAGE", "STEP", "COLLECTION", "ITEM", "SOURCE", "ERROR"]))


@click.command()
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
    click.echo(table(rows, ["AT", "STAGE", "STEP", "STATUS", "TRY", "ERROR CLASS", "MESSAGE"]))


COMMANDS = (jobs, job)
