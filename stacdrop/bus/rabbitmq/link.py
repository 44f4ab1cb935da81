"""Connections to the broker: one per role (admin, publish, one per consumer), each named for the
management UI, and the shared publishing connection.

pika's ``BlockingConnection`` is not thread-safe, so publishing from many threads goes through one
connection behind a lock, with publisher confirms: ``publish()`` returns once the broker has the message.
An idle connection may have been closed by the broker (missed heartbeats while nobody published), so it
is checked before use and rebuilt once on a link error (a duplicate is possible, with the same id).
"""

from __future__ import annotations

import threading
import time
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pika
import pika.exceptions
import structlog

log = structlog.get_logger("stacdrop.bus.rabbitmq")

# Anything that means "this connection or channel is gone": the session is rebuilt.
LINK_ERRORS = (pika.exceptions.AMQPError, OSError)

URL_OPTIONS = ("claim_interval",)  # bus options an operator may put in the broker URL's query string


def split_bus_options(url: str) -> tuple[str, dict[str, float]]:
    """``amqp://...?heartbeat=30&claim_interval=300`` -> pika's URL and {"claim_interval": 300.0}."""
    parts = urllib.parse.urlsplit(url)
    query = urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
    ours = {k: float(v) for k, v in query if k in URL_OPTIONS}
    if not ours:
        return url, {}
    rest = urllib.parse.urlencode([(k, v) for k, v in query if k not in URL_OPTIONS])
    return urllib.parse.urlunsplit(parts._replace(query=rest)), ours


class Connector:
    """Opens connections to one broker URL (without our options), named ``stacdrop <prefix> <role>``."""

    def __init__(self, url: str, prefix: str, heartbeat: int) -> None:
        self.url = url
        self.prefix = prefix
        self.params = pika.URLParameters(url)
        if "heartbeat=" not in url:
            self.params.heartbeat = int(heartbeat)
        self.heartbeat = int(self.params.heartbeat or 0)  # the URL's heartbeat wins over the option
        self.params.blocked_connection_timeout = 300
        self.params.connection_attempts = 1

    def connect(self, role: str, heartbeat: int | None = None) -> pika.BlockingConnection:
        params = pika.URLParameters(self.url)
        params.heartbeat = self.params.heartbeat if heartbeat is None else heartbeat
        params.blocked_connection_timeout = self.params.blocked_connection_timeout
        params.connection_attempts = 1
        params.client_properties = {"connection_name": f"stacdrop {self.prefix} {role}"}
        return pika.BlockingConnection(params)

    @contextmanager
    def admin(self) -> Iterator[pika.BlockingConnection]:
        """A short-lived connection for setup and the operator's commands."""
        conn = self.connect("admin")
        try:
            yield conn
        finally:
            try:
                conn.close()
            except LINK_ERRORS:
                pass


class Publisher:
    """The one publishing connection of a bus, shared by every thread behind a lock."""

    def __init__(self, connector: Connector, exchange: str) -> None:
        self.connector = connector
        self.exchange = exchange
        self._lock = threading.Lock()
        self._conn: pika.BlockingConnection | None = None
        self._ch: Any = None
        self._used = 0.0

    def publish(self, routing_key: str, body: bytes, props: pika.BasicProperties) -> None:
        """Publish with confirm; reconnect and try once more if the connection is gone."""
        with self._lock:
            for attempt in (1, 2):
                try:
                    self._channel().basic_publish(self.exchange, routing_key, body, props, mandatory=True)
                    self._used = time.monotonic()
                    return
                except (pika.exceptions.UnroutableError, pika.exceptions.NackError):
                    raise
                except LINK_ERRORS as exc:
                    self._drop()
                    if attempt == 2:
                        raise
                    log.warning("rabbitmq publish failed; reconnecting", error=repr(exc))

    def _channel(self) -> Any:
        conn = self._conn
        if conn is not None and conn.is_open and time.monotonic() - self._used > self.connector.heartbeat / 2:
            try:  # idle for a while: let pika notice a connection the broker has closed
                conn.process_data_events(0)
            except LINK_ERRORS:
                self._drop()
        if self._conn is None or not self._conn.is_open or not self._ch.is_open:
            self._drop()
            self._conn = self.connector.connect("publish")
            self._ch = self._conn.channel()
            self._ch.confirm_delivery()
            self._used = time.monotonic()
        return self._ch

    def _drop(self) -> None:
        conn, self._conn, self._ch = self._conn, None, None
        if conn is not None:
            try:
                conn.close()
            except LINK_ERRORS:
                pass

    def close(self) -> None:
        with self._lock:
            self._drop()
