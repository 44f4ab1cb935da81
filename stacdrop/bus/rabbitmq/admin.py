"""The operator's side of the RabbitMQ bus (``stacdrop queues``, ``stacdrop dlq``): queue counts, and
reading, replaying and purging dead letters.

AMQP has no way to look into a queue, so dead letters are read by consuming them unacked on a private
channel and closing it: everything not acked goes back in its original order. A replay publishes with
confirm before it acks the dead copy, so a crash in between leaves a duplicate, never a loss.

Counts come from passive declares (exact). ``unacked`` and the rates are only known to the management
API (http://host:15672, same credentials); without it they are None (unknown), never a made-up 0.
"""

from __future__ import annotations

import time
import urllib.parse
from collections.abc import Callable, Iterable
from datetime import datetime, timezone
from typing import Any

import pika
import pika.exceptions
import requests
import structlog

from stacdrop.bus.base import DeadLetter, DeadLetterFilter, QueueStats
from stacdrop.bus.rabbitmq.link import Connector
from stacdrop.bus.rabbitmq.topology import Topology, header_text
from stacdrop.messages import Envelope
from stacdrop.times import parse_time

log = structlog.get_logger("stacdrop.bus.rabbitmq")

_STOP = object()  # a visitor's answer: the scan of a dead queue ends here


class Admin:
    """Stats and dead letters of one topology, each on a short-lived admin connection."""

    def __init__(self, topology: Topology, connector: Connector, management_url: str | None = None) -> None:
        self.topology = topology
        self.connector = connector
        self._mgmt = self._management_base(management_url)
        self._mgmt_down_until = 0.0

    # -- stats ----------------------------------------------------------------------------------------
    def stats(self) -> list[QueueStats]:
        """Exact ready/retrying/dead/consumers from passive declares.

        ``unacked`` and the rates need the management API (http://host:15672, same credentials); when it
        is not reachable they are None (unknown), never a made-up 0. Its counters lag a few seconds.
        """
        top = self.topology
        mgmt = self._management_queues()
        out = []
        with self.connector.admin() as conn:
            counter = _Counter(conn)
            for q in top.queues:
                ready, consumers = counter.count(top.work_queue(q))
                retrying = sum(counter.count(top.retry_queue(q, t))[0] for t in top.retry_levels)
                dead = counter.count(top.dead_queue(q))[0]
                unacked = publish_rate = ack_rate = None
                if mgmt is not None:
                    work = mgmt.get(top.work_queue(q), {})
                    claim_prefix = top.claim_prefix(q)
                    unacked = int(work.get("messages_unacknowledged") or 0) + sum(
                        int(info.get("messages_unacknowledged") or 0)
                        for name, info in mgmt.items() if name.startswith(claim_prefix)
                    )
                    rates = work.get("message_stats") or {}
                    publish_rate = (rates.get("publish_details") or {}).get("rate")
                    ack_rate = (rates.get("ack_details") or {}).get("rate")
                out.append(QueueStats(queue=q, ready=ready, unacked=unacked, retrying=retrying, dead=dead,
                                      consumers=consumers, publish_rate=publish_rate, ack_rate=ack_rate))
        return out

    def _management_base(self, explicit: str | None) -> tuple[str, tuple[str, str], str] | None:
        if explicit == "":
            return None
        parsed = urllib.parse.urlsplit(self.connector.url)
        base = explicit or f"http://{parsed.hostname or '127.0.0.1'}:15672"
        creds = (urllib.parse.unquote(parsed.username or "guest"), urllib.parse.unquote(parsed.password or "guest"))
        vhost = urllib.parse.unquote(parsed.path[1:]) if len(parsed.path) > 1 else "/"
        return base.rstrip("/"), creds, vhost

    def _management_queues(self) -> dict[str, dict[str, Any]] | None:
        if self._mgmt is None or time.monotonic() < self._mgmt_down_until:
            return None
        base, creds, vhost = self._mgmt
        try:
            resp = requests.get(
                f"{base}/api/queues/{urllib.parse.quote(vhost, safe='')}",
                params={"page": "1", "page_size": "500", "name": f"^{self.topology.prefix}\\.", "use_regex": "true"},
                auth=creds, timeout=3,
            )
            resp.raise_for_status()
            items = resp.json().get("items", [])
        except (requests.RequestException, ValueError):
            self._mgmt_down_until = time.monotonic() + 30  # don't stall every stats() call
            return None
        return {item["name"]: item for item in items}

    # -- dead letters ---------------------------------------------------------------------------------
    def dead_letters(self, where: DeadLetterFilter | None = None, limit: int | None = None) -> list[DeadLetter]:
        where = where or DeadLetterFilter()
        found: list[DeadLetter] = []
        with self.connector.admin() as conn:
            for q in self.topology.queues:
                if where.queue is not None and where.queue != q:
                    continue
                mine: list[DeadLetter] = []

                def visit(_ch: Any, _tag: int, letter: DeadLetter, mine: list[DeadLetter] = mine) -> object:
                    if where.matches(letter):
                        mine.append(letter)
                        if limit is not None and len(mine) >= limit:
                            return _STOP
                    return None

                self._scan_dead(conn, q, visit)
                found.extend(mine)
        found.sort(key=lambda d: d.dead_at)
        return found[:limit] if limit is not None else found

    def replay(self, ids: Iterable[str]) -> list[str]:
        top = self.topology

        def move(ch: Any, tag: int, letter: DeadLetter) -> None:
            env = letter.envelope.for_replay()
            ch.basic_publish(top.exchange, letter.queue, env.to_bytes(), top.properties(env), mandatory=True)
            ch.basic_ack(tag)  # only after the broker confirmed the copy on the work queue

        return self._settle_dead(ids, move)

    def purge(self, ids: Iterable[str]) -> list[str]:
        return self._settle_dead(ids, lambda ch, tag, _letter: ch.basic_ack(tag))

    def _settle_dead(self, ids: Iterable[str], action: Callable[[Any, int, DeadLetter], None]) -> list[str]:
        wanted = set(ids)
        done: list[str] = []
        if not wanted:
            return done
        with self.connector.admin() as conn:
            for q in self.topology.queues:
                if not wanted:
                    break

                def visit(ch: Any, tag: int, letter: DeadLetter) -> object:
                    if letter.id in wanted:
                        action(ch, tag, letter)
                        wanted.discard(letter.id)
                        done.append(letter.id)
                    return _STOP if not wanted else None

                self._scan_dead(conn, q, visit)
        return done

    def _scan_dead(self, conn: pika.BlockingConnection, queue: str,
                   visit: Callable[[Any, int, DeadLetter], object]) -> None:
        """Read a dead queue oldest first without taking anything off it.

        Messages are consumed unacked on a private channel; ``visit`` may ack some (after publishing
        with confirm on the same channel). Closing the channel gives the others back to the queue in
        their original order. The scan ends at the count seen at the start, at ``_STOP``, or when nothing
        arrives for a second (another process took messages meanwhile).
        """
        dead_queue = self.topology.dead_queue(queue)
        ch = conn.channel()
        try:
            ch.confirm_delivery()
            try:
                total = ch.queue_declare(dead_queue, passive=True).method.message_count
            except pika.exceptions.ChannelClosedByBroker as exc:
                if exc.reply_code == 404:
                    return
                raise
            if total == 0:
                return
            ch.basic_qos(prefetch_count=total if total <= 65535 else 0)
            for seen, (method, props, body) in enumerate(
                ch.consume(dead_queue, auto_ack=False, inactivity_timeout=1.0), start=1
            ):
                if method is None:
                    break
                letter = _letter(queue, props, body)
                if letter is not None and visit(ch, method.delivery_tag, letter) is _STOP:
                    break
                if seen >= total:
                    break
        finally:
            if ch.is_open:
                ch.close()  # everything still unacked goes back, in order


def _letter(queue: str, props: pika.BasicProperties, body: bytes) -> DeadLetter | None:
    try:
        env = Envelope.from_bytes(body)
    except ValueError:
        log.warning("unreadable message in a dead-letter queue; left there", queue=queue,
                    message_id=props.message_id)
        return None
    headers = props.headers or {}
    last = env.history[-1] if env.history else None
    error_class = header_text(headers.get("error_class")) or (last.error_class if last else "unknown")
    error = header_text(headers.get("error")) or ""
    if last is not None and last.error_class == error_class and last.error.startswith(error):
        error = last.error  # the header is truncated; the history has the whole text
    dead_at_text = header_text(headers.get("dead_at"))
    if dead_at_text:
        dead_at = parse_time(dead_at_text)
    else:
        dead_at = datetime.fromtimestamp(props.timestamp or 0, timezone.utc)
    attempts = headers.get("attempts")
    return DeadLetter(id=env.id, queue=header_text(headers.get("queue")) or queue, error_class=error_class,
                      error=error, attempts=int(attempts) if attempts is not None else env.attempts,
                      envelope=env, dead_at=dead_at)


class _Counter:
    """Passive declares on one channel; a missing queue counts 0 (and costs the channel)."""

    def __init__(self, conn: pika.BlockingConnection) -> None:
        self.conn = conn
        self.ch = conn.channel()

    def count(self, name: str) -> tuple[int, int]:
        try:
            ok = self.ch.queue_declare(name, passive=True).method
            return ok.message_count, ok.consumer_count
        except pika.exceptions.ChannelClosedByBroker as exc:
            if exc.reply_code != 404:
                raise
            self.ch = self.conn.channel()
            return 0, 0
