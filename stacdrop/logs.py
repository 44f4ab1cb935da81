"""Logging with structlog: JSON lines when not on a terminal, readable columns on one.

Stage runtimes bind ``job_id``, ``source`` and ``stage`` into the context, so every line a handler
logs carries them without passing them around.

No line leaves the process unredacted (``stacdrop.redact``): the last step of the structlog chain masks
every string value of the event (URL passwords, signatures, the configured secrets), the stdlib handlers
(pika, botocore, uvicorn) get the same as a filter, and ``stacdrop serve``'s access log writes the path
of each request without its query string, where clients put tokens (``?token=...``).
"""

from __future__ import annotations

import copy
import logging
import sys
from collections.abc import Iterable, MutableMapping
from typing import Any

import structlog

from stacdrop.redact import redact_data, redact_text


# Values the renderers write as they are; anything else (a Path, an exception, a settings object) is
# rendered as its text, and that text is redacted like the rest.
PLAIN = (str, int, float, bool, type(None), list, dict, tuple)


def redact_event(secrets: Iterable[str]) -> structlog.types.Processor:
    """A structlog processor masking secrets in every value of the event dict."""
    known = tuple(secrets)

    def processor(_logger: Any, _method: str, event_dict: MutableMapping[str, Any]) -> dict[str, Any]:
        return {key: redact_data(value if isinstance(value, PLAIN) else str(value), known)
                for key, value in event_dict.items()}

    return processor


class RedactFilter(logging.Filter):
    """Masks secrets in a stdlib record's message and traceback (it rewrites the record, drops nothing)."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        self.secrets = tuple(secrets)

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        clean = redact_text(message, self.secrets)
        if clean != message:
            record.msg, record.args = clean, None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact_text(record.exc_text, self.secrets)
        return True


class AccessPathOnly(logging.Filter):
    """uvicorn's access records carry ``(client, method, path with query, http version, status)``:
    keep the path, drop the query string, mask what is left."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        self.secrets = tuple(secrets)

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple) and len(record.args) == 5:
            client, method, full_path, version, status = record.args
            path = str(full_path).split("?", 1)[0]
            record.args = (client, method, redact_text(path, self.secrets), version, status)
        return True


def configure_logging(fmt: str = "auto", level: str = "info", secrets: Iterable[str] = ()) -> None:
    """``secrets``: values masked wherever they appear (``stacdrop.redact.secrets_of(settings)``)."""
    known = tuple(secrets)
    numeric = logging.getLevelName(level.upper()) if isinstance(level, str) else level
    if not isinstance(numeric, int):
        numeric = logging.INFO
    as_json = fmt == "json" or (fmt == "auto" and not sys.stderr.isatty())
    renderer = structlog.processors.JSONRenderer() if as_json else structlog.dev.ConsoleRenderer(colors=False)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.StackInfoRenderer(),
            structlog.processors.format_exc_info,
            redact_event(known),  # last before rendering: tracebacks and bound context are masked too
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )
    # Libraries that use the standard logging module (pika, watchdog, botocore) go to stderr at WARNING.
    logging.basicConfig(level=max(numeric, logging.WARNING), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for handler in logging.getLogger().handlers:
        for old in [f for f in handler.filters if isinstance(f, RedactFilter)]:
            handler.removeFilter(old)  # configured again (tests, a child process): the latest secrets
        handler.addFilter(RedactFilter(known))


def uvicorn_log_config(secrets: Iterable[str] = ()) -> dict[str, Any]:
    """uvicorn's own logging config, with the access log writing paths only and every line redacted."""
    from uvicorn.config import LOGGING_CONFIG  # noqa: PLC0415 - only `stacdrop serve` needs uvicorn

    config = copy.deepcopy(LOGGING_CONFIG)
    known = list(secrets)
    config["filters"] = {
        "redact": {"()": RedactFilter, "secrets": known},
        "path_only": {"()": AccessPathOnly, "secrets": known},
    }
    config["handlers"]["default"]["filters"] = ["redact"]
    config["handlers"]["access"]["filters"] = ["path_only"]
    return config
