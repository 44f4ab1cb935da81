"""The S3 inbox's event feeds: bucket notifications consumed from AMQP and/or SQS, decoded and resolved
into the objects the inbox's main loop pairs.

Threads (started by ``watcher.s3.S3Inbox``):

* **AMQP consumer**: a queue bound to the exchange the object store pushes to (Ceph RGW, MinIO; the
  exchange is declared when missing, used as it is when it exists with another type);
* **SQS poller** (AWS): long polls of ten messages, deleted once settled;
* **resolver**: decodes each message (``watcher.s3events``), drops ``ObjectCreated:Post`` and test
  events, events for other buckets or prefixes, and stale or duplicate ones (sequencer, where present),
  then HEADs the object (gone: ignored; the HEAD's ETag and size are the truth) and lists the stem's
  siblings (``watcher.s3bucket``). A deletion is HEAD-checked too: an object that is there again makes
  it stale.

Every message travels with a ``Delivery``: it is acked (AMQP ack, SQS delete) only once each of its
records is settled by whichever thread finishes with it, so that an event is never lost to a crash or
a stop: unsettled, it is delivered again. A malformed message is logged and acked. Acks are handed back
to the consumer's own thread (pika and boto3 clients are not shared across threads).
"""

from __future__ import annotations

import functools
import queue
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import structlog

from watcher.settings import WatcherSettings
from stacdrop.messages import Priority
from stacdrop.s3 import s3_credentials
from watcher.s3bucket import S3Bucket
from watcher.s3events import MalformedEvent, S3Event, parse_message
from watcher.s3reconcile import Group
from watcher.submission import Stopped

log = structlog.get_logger("stacdrop.watcher.s3")

AMQP_PREFETCH = 1000  # unacked events held at once (rasters wait up to sidecar_wait for their sidecar)
LRU_SIZE = 100_000


class Delivery:
    """One event message: acked once each of its records is settled."""

    def __init__(self, ack: Callable[[], None], what: str) -> None:
        self._ack = ack
        self.what = what
        self._pending = 1  # the message itself, until its records are counted
        self._lock = threading.Lock()

    def expect(self, records: int) -> None:
        with self._lock:
            self._pending += records

    def settle(self) -> None:
        with self._lock:
            self._pending -= 1
            done = self._pending == 0
        if done:
            try:
                self._ack()
            except Exception as exc:  # noqa: BLE001 - a lost ack means a redelivery, which is harmless
                log.warning("event ack failed", what=self.what, error=repr(exc))


@dataclass
class Observed:
    """Objects reported by the resolver or the reconciler."""

    group: Group
    priority: int
    token: Delivery | None = None


@dataclass
class Gone:
    """A relative key deleted (an event) or no longer listed (the reconciler)."""

    rel: str
    token: Delivery | None = None


class LRU(OrderedDict):
    """A dict that forgets its oldest entries beyond ``size``."""

    def __init__(self, size: int) -> None:
        super().__init__()
        self.size = size

    def put(self, key: Any, value: Any) -> None:
        self[key] = value
        self.move_to_end(key)
        if len(self) > self.size:
            self.popitem(last=False)


def amqp_url_of(settings: WatcherSettings) -> str | None:
    """The broker the bucket notifications come from: ``s3_events_amqp``, by default the bus's broker
    when it is AMQP; ``off`` (or empty) for none."""
    value = settings.s3.events_amqp
    if value is None:
        return settings.bus.url if settings.bus.url.startswith("amqp") else None
    if value.strip().lower() in ("", "off", "none", "false", "0"):
        return None
    return value


class EventFeeds:
    """The consumers and the resolver; ``post`` hands ``Observed``/``Gone`` items to the main loop."""

    def __init__(self, settings: WatcherSettings, bucket: S3Bucket, post: Callable[[Observed | Gone], None],
                 stop: Callable[[], threading.Event]) -> None:
        self.settings = settings
        self.bucket = bucket
        self.post = post
        self.stop = stop  # read at each use: the inbox gets its stop event only in run()
        self.amqp_url = amqp_url_of(settings)
        self.sqs_url = settings.s3.events_sqs or None
        self._inbound: queue.Queue[tuple[bytes, Delivery]] = queue.Queue()  # consumers -> resolver
        self._orders: LRU = LRU(LRU_SIZE)  # resolver only: key -> (store, order) of the newest event seen

    def threads(self) -> list[threading.Thread]:
        threads = [threading.Thread(target=self.resolver, name="stacdrop-s3-resolver", daemon=True)]
        if self.amqp_url:
            threads.append(threading.Thread(target=self.amqp_consumer, name="stacdrop-s3-amqp", daemon=True))
        if self.sqs_url:
            threads.append(threading.Thread(target=self.sqs_consumer, name="stacdrop-s3-sqs", daemon=True))
        return threads

    # ------------------------------------------------------------------ consumers

    def amqp_consumer(self) -> None:
        import pika  # noqa: PLC0415
        import pika.exceptions  # noqa: PLC0415

        stop = self.stop()
        acks: queue.Queue[tuple[int, int]] = queue.Queue()
        exchange = self.settings.s3.events_exchange
        queue_name = self.settings.s3.events_queue or f"{self.settings.bus.queue_prefix}.s3-events"
        generation = 0
        delay = 1.0
        while not stop.is_set():
            generation += 1
            conn = None
            try:
                params = pika.URLParameters(self.amqp_url)
                params.client_properties = {"connection_name": f"stacdrop s3 events {queue_name}"}
                conn = pika.BlockingConnection(params)
                ch = conn.channel()
                try:
                    ch.exchange_declare(exchange, self.settings.s3.events_exchange_type, durable=True)
                except pika.exceptions.ChannelClosedByBroker as exc:
                    if exc.reply_code != 406:
                        raise
                    ch = conn.channel()  # it exists with another type: use it as it is
                ch.queue_declare(queue_name, durable=True)
                ch.queue_bind(queue_name, exchange, routing_key=self.settings.s3.events_routing_key)
                ch.basic_qos(prefetch_count=AMQP_PREFETCH)
                log.info("s3 events: consuming", exchange=exchange, queue=queue_name)
                delay = 1.0
                def flush(ch: Any = ch, generation: int = generation) -> None:
                    while True:
                        try:
                            gen, tag = acks.get_nowait()
                        except queue.Empty:
                            return
                        if gen == generation:
                            ch.basic_ack(tag)

                for method, _props, body in ch.consume(queue_name, inactivity_timeout=0.2):
                    flush()
                    if stop.is_set():
                        time.sleep(0.3)  # let the main loop settle what just finished
                        flush()
                        break
                    if method is None:
                        continue
                    token = Delivery(functools.partial(acks.put, (generation, method.delivery_tag)),
                                     f"amqp {method.delivery_tag}")
                    self._inbound.put((body, token))
            except Exception as exc:  # noqa: BLE001 - reconnect with backoff; unacked events come again
                log.warning("s3 events: AMQP connection lost", error=repr(exc), retry_in=delay)
                stop.wait(delay)
                delay = min(delay * 2, 30.0)
            finally:
                if conn is not None:
                    try:
                        conn.close()
                    except Exception:  # noqa: BLE001,S110
                        pass

    def _sqs_client(self) -> Any:
        import boto3  # noqa: PLC0415

        session = boto3.session.Session(**s3_credentials(self.settings.s3))
        region = session.region_name or "us-east-1"
        return session.client("sqs", endpoint_url=self.settings.s3.endpoint_url or None, region_name=region)

    def sqs_consumer(self) -> None:
        stop = self.stop()
        acks: queue.Queue[str] = queue.Queue()
        visibility = int(max(300, self.settings.inbox.sidecar_wait * 4))
        delay = 1.0
        client = None
        def flush() -> None:
            while True:
                try:
                    handle = acks.get_nowait()
                except queue.Empty:
                    return
                assert client is not None  # flush() runs only once the client exists
                client.delete_message(QueueUrl=self.sqs_url, ReceiptHandle=handle)

        while not stop.is_set():
            try:
                client = client or self._sqs_client()
                flush()
                resp = client.receive_message(QueueUrl=self.sqs_url, MaxNumberOfMessages=10, WaitTimeSeconds=1,
                                              VisibilityTimeout=visibility)
                for msg in resp.get("Messages", []):
                    token = Delivery(functools.partial(acks.put, msg["ReceiptHandle"]), f"sqs {msg.get('MessageId')}")
                    self._inbound.put((msg.get("Body", ""), token))
                delay = 1.0
            except Exception as exc:  # noqa: BLE001
                log.warning("s3 events: SQS receive failed", error=repr(exc), retry_in=delay)
                client = None
                stop.wait(delay)
                delay = min(delay * 2, 30.0)
        if client is not None:
            time.sleep(0.3)  # let the main loop settle what just finished
            try:
                flush()
            except Exception as exc:  # noqa: BLE001 - not deleted: received again later, a duplicate
                log.warning("s3 events: SQS delete failed at stop", error=repr(exc))

    # ------------------------------------------------------------------ resolver

    def resolver(self) -> None:
        stop = self.stop()
        while not stop.is_set():
            try:
                body, token = self._inbound.get(timeout=0.2)
            except queue.Empty:
                continue
            try:
                events, dropped = parse_message(body)
            except MalformedEvent as exc:
                log.warning("s3 event dropped: malformed message", error=str(exc), body=preview(body))
                token.settle()
                continue
            for reason in dropped:
                log.warning("s3 event record dropped: malformed", error=reason, body=preview(body))
            token.expect(len(events))
            token.settle()  # the message itself
            for event in events:
                try:
                    self.resolve(event, token)
                except Stopped:
                    return
                except Exception:  # one bad record never stops the loop
                    log.exception("s3 event record dropped: unexpected error", record=repr(event))
                    token.settle()

    def resolve(self, event: S3Event, token: Delivery) -> None:
        """One record: settled here when ignored on purpose, else posted to the main loop with its token."""
        bucket = self.bucket
        if event.kind == "ignored" or event.bucket != bucket.bucket:
            log.debug("s3 event ignored", event_name=event.name, bucket=event.bucket, keys=event.keys)
            token.settle()
            return
        keys = [k for k in event.keys if bucket.rel_of(k) is not None]
        if not keys:
            token.settle()
            return
        order = event.order
        if order is not None:  # unknown order: never dropped as old (the HEAD's ETag decides below)
            last = self._orders.get(keys[0])
            if last is not None and last[0] == event.store and order <= last[1]:
                log.debug("s3 event stale or duplicate (sequencer)", key=keys[0], event_name=event.name)
                token.settle()
                return
            self._orders.put(keys[0], (event.store, order))
        heads = [(k, bucket.head(k)) for k in keys]
        found = [obj for _k, obj in heads if obj is not None]
        if event.kind == "removed":
            # The most likely key decides: on Ceph the raw "a+b.tif" is gone even while its decoded
            # neighbour "a b.tif" exists, which is another object, neither stale evidence nor gone.
            if heads[0][1] is not None:
                log.info("s3 deletion event is stale: the object exists", key=heads[0][1].rel)
                token.settle()
            else:
                for k in [k for k, obj in heads[1:] if obj is None]:
                    self.post(Gone(k[len(bucket.prefix):]))
                self.post(Gone(keys[0][len(bucket.prefix):], token))
            return
        if not found:
            log.info("s3 object gone before work; event ignored", keys=keys, event_name=event.name)
            token.settle()
            return
        obj = next((o for o in found if event.etag and o.etag == event.etag), found[0])
        self.post(Observed(Group((obj,), bucket.siblings(obj)), Priority.LIVE, token))


def preview(body: bytes | str, n: int = 300) -> str:
    """The start of a message body, for a log line."""
    text = body.decode("utf-8", errors="replace") if isinstance(body, bytes) else str(body)
    return text[:n]
