"""``stacdrop run | watch | process | publish | serve | health``: the long-running processes and the
container healthcheck."""

from __future__ import annotations

import click

from stacdrop.app.cli.context import Context, pass_ctx
from stacdrop.redact import secrets_of


def _run(ctx: Context, roles: tuple[str, ...], workers: int | None) -> None:
    from stacdrop.app.daemon import Daemon  # noqa: PLC0415

    daemon = Daemon(ctx.settings, roles=roles, workers=workers or ctx.settings.bus.workers)
    daemon.install_signal_handlers()
    daemon.start()
    daemon.wait()


@click.command()
@click.option("--workers", type=int, default=None, help="Processor processes (default: settings.bus.workers).")
@pass_ctx
def run(ctx: Context, workers: int | None) -> None:
    """Run watcher, processor and publisher in one process."""
    _run(ctx, ("watch", "process", "publish"), workers)


@click.command()
@pass_ctx
def watch(ctx: Context) -> None:
    """Run only the watcher: find sources and emit ingest jobs."""
    _run(ctx, ("watch",), 1)


@click.command()
@click.option("--workers", type=int, default=None, help="Processor processes.")
@pass_ctx
def process(ctx: Context, workers: int | None) -> None:
    """Run only the processor: convert to COG and store."""
    _run(ctx, ("process",), workers)


@click.command()
@pass_ctx
def publish(ctx: Context) -> None:
    """Run only the publisher: derive items and push them to the STAC sink."""
    _run(ctx, ("publish",), 1)


@click.command()
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
        problems.append(f"bus {redact_url(settings.bus.url, keep_user=True)}: {first_line(exc)}")
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


@click.command()
@click.option("--host", default=None, help="Address to listen on (default: settings.api.host, 127.0.0.1).")
@click.option("--port", type=int, default=None, help="Port (default: settings.api.port, 8000).")
@pass_ctx
def serve(ctx: Context, host: str | None, port: int | None) -> None:
    """Serve the HTTP API, /metrics and the status page (run the daemon beside it for work to flow)."""
    import uvicorn  # noqa: PLC0415

    from stacdrop.app.api.app import create_app  # noqa: PLC0415
    from stacdrop.logs import uvicorn_log_config  # noqa: PLC0415

    settings = ctx.settings
    uvicorn.run(create_app(settings), host=host or settings.api.host, port=settings.api.port if port is None else port,
                log_level=settings.log_level.lower(), proxy_headers=False,
                log_config=uvicorn_log_config(secrets_of(settings)))  # access log: paths without query strings


COMMANDS = (run, watch, process, publish, health, serve)
