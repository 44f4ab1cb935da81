"""The S3 inbox (``inbox = "s3://bucket/prefix"``): bucket notifications, a polling reconciler, the same
pairing and submission rules as the local inbox.

Keys relative to the prefix have the local inbox's shape (``<collection-id>/.../NAME.tif``); a raster
becomes ``Source(url="s3://bucket/key", key=<relative key>, size, content_key=<ETag>)``.

Threads:

* **event consumers**: an AMQP queue bound to the exchange the object store pushes to (Ceph RGW, MinIO;
  the exchange is declared when missing) and/or an SQS queue (AWS). Messages go to the resolver.
* **resolver**: decodes each message (``watcher.s3events``), drops ``ObjectCreated:Post`` and test
  events, events for other buckets or prefixes, and stale or duplicate ones (sequencer, where present),
  then HEADs the object (gone: ignored; the HEAD's ETag and size are the truth) and lists the stem's
  siblings (``<stem>.``: one request) so that a sidecar finds a raster emitted long ago and a raster its
  unchanged sidecar. A deletion is HEAD-checked too: an object that is there again makes it stale.
* **reconciler**: at start (``Priority.BACKFILL``: work that arrived while stopped) and then every
  ``reconcile_interval`` seconds, ListObjectsV2 (paginated) merge-joined with the ledger's fingerprints
  (``watcher.s3reconcile``): only new or changed objects are reported, memory stays bounded. With no
  event source configured it is the only detection.
* **main loop**: feeds ``watcher.pairing.Pairer`` (the local inbox's pairing: sidecar in either order,
  ``sidecar_wait``, a rewritten sidecar re-emits its raster) and hands due pairs to the worker.
* **worker**: skips a pair whose objects' fingerprints (``"<etag>:<size>"``, one per object, under the
  key ``s3://bucket/<key>``) are those remembered; otherwise GETs the sidecar (at most ``max_sidecar_bytes``,
  judged like the local inbox's by ``stacdrop.sidecar.sidecar_document``: an invalid one is carried as its
  size, sha256 and reason only, and fails the job at once), submits through the intake, remembers the
  fingerprints. A failed submission is retried with backoff until it goes through.

An event message is acked only once each of its records is settled: submitted (durably: job in the
ledger, message on the bus, fingerprint remembered), or ignored on purpose (duplicate, stale, gone, not
ours). A sidecar whose raster has not arrived is settled once parked: when the raster comes, its
sibling listing finds the sidecar again, even after a restart. A malformed message is logged and acked.
"""

from __future__ import annotations

import hashlib
import queue
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import structlog

from stacdrop.config import Settings
from stacdrop.messages import Priority, Source
from stacdrop.s3 import S3Failure, classify_s3_error, parse_s3_url, s3_client, s3_credentials
from stacdrop.sidecar import SidecarDocument, sidecar_document, too_large
from watcher.inbox import COLLECTION_MAX, Intake
from watcher.naming import classify, collection_of, stem
from watcher.pairing import EmitCollection, EmitRaster, Pairer
from watcher.s3events import MalformedEvent, S3Event, parse_message, sequencer_newer
from watcher.s3reconcile import Group, Obj, OrderError, group_siblings, merge_diff

log = structlog.get_logger("stacdrop.watcher.s3")

TICK = 0.1
ORIGIN = "inbox"
AMQP_PREFETCH = 1000  # unacked events held at once (rasters wait up to sidecar_wait for their sidecar)
LRU_SIZE = 100_000
BACKLOG_MAX = 5000  # the reconciler waits while this much work is queued


class _Stopped(Exception):
    pass


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
class _Observed:
    """Objects reported by the resolver or the reconciler."""

    group: Group
    priority: int
    token: Delivery | None = None


@dataclass
class _Gone:
    rel: str
    token: Delivery | None = None


@dataclass
class _Work:
    action: EmitRaster | EmitCollection
    objs: dict[str, Obj]
    priority: int
    tokens: list[Delivery] = field(default_factory=list)


@dataclass
class _Done:
    work: _Work
    submitted: dict[str, Obj]  # what was submitted or found unchanged


class _LRU(OrderedDict):
    def __init__(self, size: int) -> None:
        super().__init__()
        self.size = size

    def put(self, key: Any, value: Any) -> None:
        self[key] = value
        self.move_to_end(key)
        if len(self) > self.size:
            self.popitem(last=False)


def _etag(value: str | None) -> str:
    return (value or "").strip('"')


def _not_found(exc: Exception) -> bool:
    problem = classify_s3_error(exc)
    return problem is not None and problem.failure is S3Failure.NOT_FOUND


class S3Inbox:
    def __init__(self, url: str, settings: Settings, intake: Intake, *, client: Any = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.url = url
        self.bucket, prefix = parse_s3_url(url)
        prefix = prefix.strip("/")
        self.prefix = prefix + "/" if prefix else ""
        self.ns = f"s3://{self.bucket}/{self.prefix}"  # fingerprint keys: ns + relative key
        self.settings = settings
        self.intake = intake
        self.clock = clock
        self.client = client or s3_client(settings)
        self._stop = threading.Event()
        self._events: queue.Queue[Any] = queue.Queue()  # to the main loop
        self._inbound: queue.Queue[tuple[bytes, Delivery]] = queue.Queue()  # consumers -> resolver
        self._work: queue.Queue[_Work | None] = queue.Queue()
        self._pairer = Pairer(settings.sidecar_wait)
        self._info: dict[str, Obj] = {}  # objects the pairer tracks
        self._priority: dict[str, int] = {}
        self._waiters: dict[str, list[Delivery]] = {}
        self._recent: _LRU = _LRU(LRU_SIZE)  # rel -> fingerprint last submitted or found unchanged
        self._sequencers: _LRU = _LRU(LRU_SIZE)  # resolver only: key -> newest sequencer seen
        self.amqp_url = self._amqp_url(settings)
        self.sqs_url = settings.s3_events_sqs or None
        self.reconciles = 0  # finished reconciler passes (tests, diagnostics)

    @staticmethod
    def _amqp_url(settings: Settings) -> str | None:
        value = settings.s3_events_amqp
        if value is None:
            return settings.broker if settings.broker.startswith("amqp") else None
        if value.strip().lower() in ("", "off", "none", "false", "0"):
            return None
        return value

    # ------------------------------------------------------------------ keys

    def rel_of(self, key: str) -> str | None:
        if not key.startswith(self.prefix):
            return None
        rel = key[len(self.prefix):]
        return rel if rel and classify(rel) is not None else None

    def key_of(self, rel: str) -> str:
        return self.prefix + rel

    # ------------------------------------------------------------------ main loop

    def run(self, stop: threading.Event) -> None:
        self._stop = stop
        threads = [
            threading.Thread(target=self._worker, name="stacdrop-s3-worker", daemon=True),
            threading.Thread(target=self._resolver, name="stacdrop-s3-resolver", daemon=True),
            threading.Thread(target=self._reconciler, name="stacdrop-s3-reconciler", daemon=True),
        ]
        if self.amqp_url:
            threads.append(threading.Thread(target=self._amqp_consumer, name="stacdrop-s3-amqp", daemon=True))
        if self.sqs_url:
            threads.append(threading.Thread(target=self._sqs_consumer, name="stacdrop-s3-sqs", daemon=True))
        for thread in threads:
            thread.start()
        log.info("s3 inbox watching", inbox=self.url, amqp=bool(self.amqp_url), sqs=bool(self.sqs_url),
                 reconcile_interval=self.settings.reconcile_interval)
        try:
            while not stop.is_set():
                self._drain(TICK)
                self._guard("pairing", self._dispatch_due, self.clock())
        finally:
            self._work.put(None)
            for thread in threads:
                thread.join(timeout=30)
                if thread.is_alive():
                    log.warning("s3 inbox thread still busy at stop", thread=thread.name)
            log.info("s3 inbox stopped", inbox=self.url)

    def _guard(self, what: str, fn: Callable[..., Any], *args: Any) -> Any:
        try:
            return fn(*args)
        except Exception:
            log.exception("s3 inbox error", step=what, inbox=self.url)
            return None

    def _drain(self, timeout: float) -> None:
        try:
            item = self._events.get(timeout=timeout)
        except queue.Empty:
            return
        while True:
            self._guard("event", self._on_item, item, self.clock())
            try:
                item = self._events.get_nowait()
            except queue.Empty:
                return

    def _on_item(self, item: Any, now: float) -> None:
        if isinstance(item, _Observed):
            self._observed(item, now)
        elif isinstance(item, _Gone):
            self._gone(item.rel)
            if item.token:
                item.token.settle()
        elif isinstance(item, _Done):
            self._done(item)

    def _observed(self, item: _Observed, now: float) -> None:
        group = item.group
        accepted = [obj for obj in group.changed if self._ready(obj, item.priority, item.token, now)]
        changed_kinds = {classify(o.rel) for o in accepted}
        for obj in group.siblings:  # unchanged files of the same stem that pairing needs
            kind = classify(obj.rel)
            if kind == "sidecar" and "raster" in changed_kinds and self._pairer.sidecar_of(obj.rel) is None:
                self._ready(obj, item.priority, None, now, sibling=True)
            elif kind == "raster" and "sidecar" in changed_kinds and not self._pairer.tracks(obj.rel):
                self._ready(obj, item.priority, None, now, sibling=True)
        for obj in accepted:
            # A sidecar with no raster waiting is parked: settled now (its raster's arrival finds it again).
            if classify(obj.rel) == "sidecar" and not self._pairer.has_pending_raster(obj.rel):
                for token in self._waiters.pop(obj.rel, []):
                    token.settle()

    def _ready(self, obj: Obj, priority: int, token: Delivery | None, now: float, *, sibling: bool = False) -> bool:
        """Report a complete object to the pairer; False when it is a duplicate of what was submitted."""
        rel = obj.rel
        tracked = self._pairer.tracks(rel)
        if not sibling and not tracked and self._recent.get(rel) == obj.fingerprint:
            log.debug("s3 object unchanged (duplicate event)", file=rel)
            if token:
                token.settle()
            return False
        if token:
            self._waiters.setdefault(rel, []).append(token)
        self._priority[rel] = max(self._priority.get(rel, 0), int(priority))
        if tracked and self._info.get(rel) == obj and classify(rel) == "raster":
            return True  # the same version again while it waits: keep its sidecar deadline
        self._info[rel] = obj
        self._pairer.file_ready(rel, now)
        return True

    def _gone(self, rel: str) -> None:
        self._pairer.file_gone(rel)
        self._info.pop(rel, None)
        self._priority.pop(rel, None)
        self._recent.pop(rel, None)
        for token in self._waiters.pop(rel, []):
            token.settle()

    def _dispatch_due(self, now: float) -> None:
        for action in self._pairer.due(now):
            if isinstance(action, EmitRaster):
                rels = [action.raster] + ([action.sidecar] if action.sidecar else [])
            else:
                rels = [action.rel]
            objs = {rel: self._info[rel] for rel in rels if rel in self._info}
            if (action.raster if isinstance(action, EmitRaster) else action.rel) not in objs:
                continue
            priority = max(self._priority.get(rel, Priority.BACKFILL) for rel in rels)
            tokens = [t for rel in rels for t in self._waiters.pop(rel, [])]
            self._work.put(_Work(action, objs, int(priority), tokens))

    def _done(self, done: _Done) -> None:
        for rel, obj in done.submitted.items():
            self._recent.put(rel, obj.fingerprint)
        action = done.work.action
        if isinstance(action, EmitRaster):
            for rel in self._pairer.release(action.raster):
                self._info.pop(rel, None)
                self._priority.pop(rel, None)
        else:
            self._info.pop(action.rel, None)
            self._priority.pop(action.rel, None)
        for token in done.work.tokens:
            token.settle()

    def backlog(self) -> int:
        return self._events.qsize() + self._work.qsize() + len(self._info)

    # ------------------------------------------------------------------ event consumers

    def _amqp_consumer(self) -> None:
        import pika  # noqa: PLC0415
        import pika.exceptions  # noqa: PLC0415

        acks: queue.Queue[tuple[int, int]] = queue.Queue()
        exchange = self.settings.s3_events_exchange
        queue_name = self.settings.s3_events_queue or f"{self.settings.queue_prefix}.s3-events"
        generation = 0
        delay = 1.0
        while not self._stop.is_set():
            generation += 1
            conn = None
            try:
                params = pika.URLParameters(self.amqp_url)
                params.client_properties = {"connection_name": f"stacdrop s3 events {queue_name}"}
                conn = pika.BlockingConnection(params)
                ch = conn.channel()
                try:
                    ch.exchange_declare(exchange, self.settings.s3_events_exchange_type, durable=True)
                except pika.exceptions.ChannelClosedByBroker as exc:
                    if exc.reply_code != 406:
                        raise
                    ch = conn.channel()  # it exists with another type: use it as it is
                ch.queue_declare(queue_name, durable=True)
                ch.queue_bind(queue_name, exchange, routing_key=self.settings.s3_events_routing_key)
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
                    if self._stop.is_set():
                        time.sleep(0.3)  # let the main loop settle what just finished
                        flush()
                        break
                    if method is None:
                        continue
                    token = Delivery(lambda g=generation, t=method.delivery_tag: acks.put((g, t)),
                                     f"amqp {method.delivery_tag}")
                    self._inbound.put((body, token))
            except Exception as exc:  # noqa: BLE001 - reconnect with backoff; unacked events come again
                log.warning("s3 events: AMQP connection lost", error=repr(exc), retry_in=delay)
                self._stop.wait(delay)
                delay = min(delay * 2, 30.0)
            finally:
                if conn is not None:
                    try:
                        conn.close()
                    except Exception:  # noqa: BLE001,S110
                        pass

    def _sqs_client(self) -> Any:
        import boto3  # noqa: PLC0415

        session = boto3.session.Session(**s3_credentials(self.settings))
        region = session.region_name or "us-east-1"
        return session.client("sqs", endpoint_url=self.settings.aws_endpoint_url or None, region_name=region)

    def _sqs_consumer(self) -> None:
        acks: queue.Queue[str] = queue.Queue()
        visibility = int(max(300, self.settings.sidecar_wait * 4))
        delay = 1.0
        client = None
        def flush() -> None:
            while True:
                try:
                    handle = acks.get_nowait()
                except queue.Empty:
                    return
                client.delete_message(QueueUrl=self.sqs_url, ReceiptHandle=handle)

        while not self._stop.is_set():
            try:
                client = client or self._sqs_client()
                flush()
                resp = client.receive_message(QueueUrl=self.sqs_url, MaxNumberOfMessages=10, WaitTimeSeconds=1,
                                              VisibilityTimeout=visibility)
                for msg in resp.get("Messages", []):
                    token = Delivery(lambda h=msg["ReceiptHandle"]: acks.put(h), f"sqs {msg.get('MessageId')}")
                    self._inbound.put((msg.get("Body", ""), token))
                delay = 1.0
            except Exception as exc:  # noqa: BLE001
                log.warning("s3 events: SQS receive failed", error=repr(exc), retry_in=delay)
                client = None
                self._stop.wait(delay)
                delay = min(delay * 2, 30.0)
        if client is not None:
            time.sleep(0.3)  # let the main loop settle what just finished
            try:
                flush()
            except Exception as exc:  # noqa: BLE001 - not deleted: received again later, a duplicate
                log.warning("s3 events: SQS delete failed at stop", error=repr(exc))

    # ------------------------------------------------------------------ resolver

    def _resolver(self) -> None:
        while not self._stop.is_set():
            try:
                body, token = self._inbound.get(timeout=0.2)
            except queue.Empty:
                continue
            try:
                events, dropped = parse_message(body)
            except MalformedEvent as exc:
                log.warning("s3 event dropped: malformed message", error=str(exc), body=_preview(body))
                token.settle()
                continue
            for reason in dropped:
                log.warning("s3 event record dropped: malformed", error=reason, body=_preview(body))
            token.expect(len(events))
            token.settle()  # the message itself
            for event in events:
                try:
                    self._resolve(event, token)
                except _Stopped:
                    return
                except Exception:  # noqa: BLE001 - one bad record never stops the loop
                    log.exception("s3 event record dropped: unexpected error", record=repr(event))
                    token.settle()

    def _retrying(self, what: str, fn: Callable[[], Any]) -> Any:
        """Call an S3 request until it goes through (the store may be down); stop ends the wait."""
        delay = 1.0
        while True:
            try:
                return fn()
            except Exception as exc:
                if _not_found(exc):
                    raise
                log.warning("s3 request failed; retrying", what=what, error=repr(exc), retry_in=delay)
                if self._stop.wait(delay):
                    raise _Stopped() from None
                delay = min(delay * 2, 60.0)

    def head(self, key: str) -> Obj | None:
        rel = key[len(self.prefix):]
        try:
            resp = self._retrying(f"HEAD {key}", lambda: self.client.head_object(Bucket=self.bucket, Key=key))
        except Exception as exc:
            if _not_found(exc):
                return None
            raise
        return Obj(rel, _etag(resp.get("ETag")), int(resp.get("ContentLength", 0)))

    def list_objects(self, prefix: str) -> Iterator[Obj]:
        """Objects under ``prefix`` (a full key prefix) in key order, relative to the inbox prefix."""
        token = None
        while True:
            kwargs: dict[str, Any] = {"Bucket": self.bucket, "Prefix": prefix, "MaxKeys": 1000}
            if token:
                kwargs["ContinuationToken"] = token
            resp = self._retrying(f"LIST {prefix}", lambda kw=kwargs: self.client.list_objects_v2(**kw))
            for item in resp.get("Contents", []):
                yield Obj(item["Key"][len(self.prefix):], _etag(item.get("ETag")), int(item.get("Size", 0)))
            token = resp.get("NextContinuationToken")
            if not resp.get("IsTruncated") or not token:
                return

    def _resolve(self, event: S3Event, token: Delivery) -> None:
        if event.kind == "ignored" or event.bucket != self.bucket:
            log.debug("s3 event ignored", event_name=event.name, bucket=event.bucket, keys=event.keys)
            token.settle()
            return
        keys = [k for k in event.keys if self.rel_of(k) is not None]
        if not keys:
            token.settle()
            return
        if event.sequencer:
            last = self._sequencers.get(keys[0])
            if last is not None and sequencer_newer(event.sequencer, last) <= 0:
                log.debug("s3 event stale or duplicate (sequencer)", key=keys[0], event_name=event.name)
                token.settle()
                return
            self._sequencers.put(keys[0], event.sequencer)
        found = [obj for obj in (self.head(k) for k in keys) if obj is not None]
        if event.kind == "removed":
            if found:
                log.info("s3 deletion event is stale: the object exists", key=found[0].rel)
                token.settle()
            else:
                for k in keys:
                    self._events.put(_Gone(k[len(self.prefix):]))
                self._events.put(_Gone(keys[0][len(self.prefix):], token))
            return
        if not found:
            log.info("s3 object gone before work; event ignored", keys=keys, event_name=event.name)
            token.settle()
            return
        obj = next((o for o in found if event.etag and o.etag == event.etag), found[0])
        siblings: tuple[Obj, ...] = ()
        if classify(obj.rel) in ("raster", "sidecar"):
            mine = stem(obj.rel)
            siblings = tuple(
                o for o in self.list_objects(self.key_of(mine) + ".")
                if o.rel != obj.rel and stem(o.rel) == mine and classify(o.rel) in ("raster", "sidecar")
            )
        self._events.put(_Observed(Group((obj,), siblings), Priority.LIVE, token))

    # ------------------------------------------------------------------ reconciler

    def _reconciler(self) -> None:
        interval = float(self.settings.reconcile_interval)
        priority = Priority.BACKFILL
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                counts = self.reconcile(priority)
                self.reconciles += 1
                log.info("s3 reconcile done", inbox=self.url, seconds=round(time.monotonic() - started, 3), **counts)
            except _Stopped:
                return
            except Exception:  # noqa: BLE001
                log.exception("s3 reconcile failed", inbox=self.url)
            if interval <= 0:
                return
            priority = Priority.LIVE
            if self._stop.wait(interval):
                return

    def reconcile(self, priority: int) -> dict[str, int]:
        """List the prefix, merge-join with the remembered fingerprints, report what is new or changed."""
        counts = {"listed": 0, "reported": 0, "gone": 0}

        def listing() -> Iterator[Obj]:
            for obj in self.list_objects(self.prefix):
                counts["listed"] += 1
                yield obj

        known = ((key[len(self.ns):], fp) for key, fp in self.intake.iter_fingerprints(self.ns))
        try:
            for item in group_siblings(merge_diff(listing(), known)):
                if self._stop.is_set():
                    raise _Stopped()
                if isinstance(item, str):
                    counts["gone"] += 1
                    self._events.put(_Gone(item))
                    continue
                counts["reported"] += len(item.changed)
                self._events.put(_Observed(item, priority))
                while self.backlog() > BACKLOG_MAX and not self._stop.is_set():
                    time.sleep(0.05)
        except OrderError as exc:
            log.error("s3 reconcile: keys out of order; is the ledger's key collation binary?", error=str(exc))
            raise
        return counts

    # ------------------------------------------------------------------ submission (worker thread)

    def _worker(self) -> None:
        while True:
            work = self._work.get()
            if work is None or self._stop.is_set():
                return
            action = work.action
            rel = action.raster if isinstance(action, EmitRaster) else action.rel
            delay = 1.0
            while True:
                try:
                    if isinstance(action, EmitRaster):
                        submitted = self._submit_raster(work)
                    else:
                        submitted = self._submit_collection(work)
                    self._events.put(_Done(work, submitted))
                    break
                except _Stopped:
                    return
                except Exception as exc:  # noqa: BLE001 - broker, ledger or store down: wait, try again
                    if _not_found(exc):
                        log.info("s3 object gone before submission", file=rel)
                        self._events.put(_Done(work, {}))
                        break
                    log.warning("s3 inbox submission failed; retrying", file=rel, error=repr(exc), retry_in=delay)
                    if self._stop.wait(delay):
                        return
                    delay = min(delay * 2, 60.0)

    def _get(self, rel: str, limit: int) -> tuple[bytes | None, Obj]:
        """The object's bytes (None when larger than ``limit``) and its ETag/size as read."""
        key = self.key_of(rel)
        resp = self._retrying(f"GET {key}", lambda: self.client.get_object(Bucket=self.bucket, Key=key))
        body = resp["Body"]
        try:
            size = int(resp.get("ContentLength", 0))
            data = body.read(limit + 1) if size <= limit else None
        finally:
            body.close()
        if data is not None and len(data) > limit:
            data = None
        return data, Obj(rel, _etag(resp.get("ETag")), size)

    def _submit_raster(self, work: _Work) -> dict[str, Obj]:
        action = work.action
        assert isinstance(action, EmitRaster)
        raster = work.objs[action.raster]
        sidecar = work.objs.get(action.sidecar) if action.sidecar else None
        if self.intake.fingerprint(self.ns + raster.rel) == raster.fingerprint and (
            sidecar is None or self.intake.fingerprint(self.ns + sidecar.rel) == sidecar.fingerprint
        ):
            log.debug("s3 object unchanged", file=raster.rel)
            return {o.rel: o for o in (raster, sidecar) if o is not None}
        collection = collection_of(raster.rel) or ""
        document: SidecarDocument | None = None
        if sidecar is not None:
            limit = int(self.settings.max_sidecar_bytes)
            try:
                data, sidecar = self._get(sidecar.rel, limit)
            except Exception as exc:
                if not _not_found(exc):
                    raise
                log.warning("sidecar gone before submission, submitting the raster alone", file=raster.rel,
                            sidecar=action.sidecar)
                sidecar = None
            else:
                if data is None:  # not read: larger than the limit
                    document = SidecarDocument.refused(sidecar.rel, too_large(sidecar.rel, sidecar.size, limit),
                                                       size=sidecar.size)
                else:
                    document = sidecar_document(data, sidecar.rel, self.settings, collection)
        source = Source(url=f"s3://{self.bucket}/{self.key_of(raster.rel)}", key=raster.rel, size=raster.size,
                        content_key=raster.etag)
        job, new = self.intake.submit_raster(
            source=source, collection=collection, sidecar=document, origin=ORIGIN, priority=work.priority,
        )
        self.intake.remember_fingerprint(self.ns + raster.rel, raster.fingerprint)
        if sidecar is not None:
            self.intake.remember_fingerprint(self.ns + sidecar.rel, sidecar.fingerprint)
        log.info("s3 raster submitted" if new else "s3 raster unchanged (duplicate)", file=raster.rel,
                 sidecar=document.name if document else None, collection=collection, job_id=job, priority=work.priority)
        return {o.rel: o for o in (raster, sidecar) if o is not None}

    def _submit_collection(self, work: _Work) -> dict[str, Obj]:
        action = work.action
        assert isinstance(action, EmitCollection)
        obj = work.objs[action.rel]
        if self.intake.fingerprint(self.ns + obj.rel) == obj.fingerprint:
            return {obj.rel: obj}
        data, obj = self._get(obj.rel, COLLECTION_MAX)
        if data is None:
            log.error("collection file too large; ignored", file=obj.rel, size=obj.size, limit=COLLECTION_MAX)
            return {obj.rel: obj}
        try:
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError:
            log.warning("collection file is not valid UTF-8", file=obj.rel)
            text = data.decode("utf-8", errors="replace")
        source = Source(url=f"s3://{self.bucket}/{self.key_of(obj.rel)}", key=obj.rel, size=len(data),
                        content_key=hashlib.sha256(data).hexdigest())
        collection = collection_of(obj.rel) or ""
        job = self.intake.submit_collection(source=source, collection=collection, text=text, origin=ORIGIN)
        self.intake.remember_fingerprint(self.ns + obj.rel, obj.fingerprint)
        log.info("s3 collection submitted" if job else "s3 collection unchanged", file=obj.rel,
                 collection=collection, job_id=job)
        return {obj.rel: obj}


def _preview(body: bytes | str, n: int = 300) -> str:
    text = body.decode("utf-8", errors="replace") if isinstance(body, bytes) else str(body)
    return text[:n]
