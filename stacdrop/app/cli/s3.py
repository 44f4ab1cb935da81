"""``stacdrop s3 notifications setup | show | remove``: the S3 inbox's bucket wired to stacdrop's events
(stacdrop/app/s3_notifications.py; docs/s3-notifications.md)."""

from __future__ import annotations

import json

import click

from stacdrop.app.cli.context import Context, failed, pass_ctx
from stacdrop.errors import StacdropError
from stacdrop.redact import secrets_of

FLAVOURS = click.Choice(["auto", "ceph", "aws", "minio"])


@click.group()
def s3() -> None:
    """The S3 inbox's bucket."""


@s3.group()
def notifications() -> None:
    """Connect the inbox bucket's notifications to stacdrop (Ceph RGW topic, AWS SQS queue, MinIO commands)."""


def _run(ctx: Context, operation: str, flavour: str) -> None:
    from stacdrop.app import s3_notifications as lib  # noqa: PLC0415 - boto3 and pika only when used

    try:
        wiring = getattr(lib, operation)(ctx.settings, None if flavour == "auto" else lib.Flavour(flavour))
    except StacdropError as exc:
        raise failed(exc) from None
    click.echo(json.dumps(wiring.as_dict(secrets_of(ctx.settings)), indent=2))


@notifications.command()
@click.option("--store", "flavour", type=FLAVOURS, default="auto", help="The object store (default: detect it).")
@pass_ctx
def setup(ctx: Context, flavour: str) -> None:
    """Create what sends the bucket's events to stacdrop: idempotent."""
    _run(ctx, "setup", flavour)


@notifications.command()
@click.option("--store", "flavour", type=FLAVOURS, default="auto")
@pass_ctx
def show(ctx: Context, flavour: str) -> None:
    """Show stacdrop's notification on the bucket (and its topic or queue)."""
    _run(ctx, "show", flavour)


@notifications.command()
@click.option("--store", "flavour", type=FLAVOURS, default="auto")
@pass_ctx
def remove(ctx: Context, flavour: str) -> None:
    """Remove stacdrop's notification from the bucket (and its Ceph topic; an SQS queue is kept)."""
    _run(ctx, "remove", flavour)


COMMANDS = [s3]
