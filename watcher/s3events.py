"""S3 bucket notification messages ("Records" events) from AWS, MinIO and Ceph RGW, decoded.

Pure functions, no I/O. ``parse_message(body)`` accepts:

* a Records document (AWS S3 -> SQS, Ceph RGW and MinIO -> AMQP);
* an SNS envelope around one (AWS S3 -> SNS -> SQS): ``{"Type": "Notification", "Message": "..."}``;
* AWS's ``s3:TestEvent`` (no records: nothing to do).

Key encodings differ per store, and the event does not say which one was used:

* AWS form-encodes the key (space -> ``+``, ``/`` -> ``%2F`` in some paths, ``+`` -> ``%2B``);
* MinIO query-escapes it (Go's ``url.QueryEscape``: the same form encoding) and also puts the raw
  ``bucket/key`` in the top-level ``Key`` of the message;
* Ceph RGW sends the raw UTF-8 key, not encoded at all: ``"100%25 and %20.txt"`` is that very key
  (measured on 16.2.15, ../shared/reference/ceph-rgw.md); the decoded form is only a second guess.

So each event carries *candidate* keys, most likely first: the caller HEADs them in order (the ETag of
the event picks between two that both exist). For AWS and MinIO the decoded key is the only candidate;
for Ceph the raw key comes first, then the decoded one; for a store we do not recognise, decoded first,
then raw. The store is recognised by ``eventSource`` (``aws:s3``, ``minio:s3``, ``ceph:s3``), else by
hints: MinIO's ``x-minio-*`` response elements or ``source`` block, Ceph's ``eventId``/``opaqueData``
fields or its ``x-amz-id-2`` of the form ``<id>-<zone>-<zonegroup>``.

Ordering. Each record carries a ``sequencer`` that orders the events of one key, but each store spells
it differently, so ``event_order`` decodes it per store into a tuple that compares correctly:

* AWS: a hex string; the documentation says to pad the shorter one with zeros and compare, which is
  comparing them as numbers (``int(s, 16)``);
* MinIO: the hex of the event time in nanoseconds (Go's ``%X`` of ``UnixNano``): a number too;
* Ceph RGW: the hex of the *little-endian* bytes of (seconds, nanoseconds) (``3C2A0F6B99A76538`` is
  (1796155964, 946186137)): compared as a string a newer event can sort first, so an overwrite of a key
  within the same second could be dropped as "stale". It is decoded with ``struct.unpack("<II")``.

Where the order is unknown (a store we do not recognise, a sequencer we cannot decode) it is None, and
the caller must never drop an event for being old: it HEADs the object, and the fingerprint of what it
finds (its ETag) decides whether there is new work.

Event names are normalised without the ``s3:`` prefix (Ceph and MinIO send ``s3:ObjectCreated:Put``,
AWS ``ObjectCreated:Put``). ``ObjectCreated:Post`` is ignored: older Ceph releases are documented to emit
it when a multipart upload starts, before any object exists (16.2.15 does not; a browser POST upload is
found by the reconciler instead).
"""

from __future__ import annotations

import json
import re
import struct
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import unquote_plus

Kind = Literal["created", "removed", "ignored"]
Store = Literal["aws", "minio", "ceph", "unknown"]

_SOURCES: dict[str, Store] = {"aws:s3": "aws", "minio:s3": "minio", "ceph:s3": "ceph"}
_CEPH_ID2 = re.compile(r"^[0-9a-f]+-[^-]+-[^-]+$")


class MalformedEvent(ValueError):
    """A message or record that is not an S3 event we can read."""


@dataclass(frozen=True)
class S3Event:
    kind: Kind
    name: str  # e.g. ObjectCreated:Put, without the s3: prefix
    store: Store
    bucket: str
    keys: tuple[str, ...]  # candidate object keys, most likely first
    size: int | None = None
    etag: str | None = None  # without quotes
    sequencer: str | None = None

    @property
    def order(self) -> Order | None:
        """Where this event stands among the events of its key (``event_order``); None when unknown."""
        return event_order(self.store, self.sequencer)


Order = tuple[int, ...]


def event_order(store: Store, sequencer: str | None) -> Order | None:
    """The order of an event among the events of one key, as its store defines the sequencer (see the
    module docstring); None when the store or the sequencer's form is unknown."""
    if not sequencer:
        return None
    try:
        if store == "ceph":
            raw = bytes.fromhex(sequencer)
            if len(raw) != 8:
                return None
            seconds, nanoseconds = struct.unpack("<II", raw)
            return (seconds, nanoseconds)
        if store in ("aws", "minio"):
            return (int(sequencer, 16),)
    except ValueError:
        return None
    return None


def event_kind(name: str) -> Kind:
    if name.startswith("ObjectCreated:") and name != "ObjectCreated:Post":
        return "created"
    if name.startswith("ObjectRemoved:"):
        return "removed"
    return "ignored"  # ObjectCreated:Post (multipart initiate), TestEvent, lifecycle, replication, ...


def guess_store(record: dict[str, Any]) -> Store:
    source = record.get("eventSource")
    if isinstance(source, str) and source in _SOURCES:
        return _SOURCES[source]
    response = record.get("responseElements")
    if isinstance(response, dict):
        if any(str(k).startswith("x-minio-") for k in response):
            return "minio"
        id2 = response.get("x-amz-id-2")
        if isinstance(id2, str) and _CEPH_ID2.match(id2):
            return "ceph"
    if isinstance(record.get("source"), dict):
        return "minio"
    s3 = record.get("s3")
    if (
        "eventId" in record
        or "opaqueData" in record
        or (isinstance(s3, dict) and ("eventId" in s3 or "opaqueData" in s3))
    ):
        return "ceph"
    return "unknown"


def candidate_keys(raw: str, store: Store, minio_raw: str | None = None) -> tuple[str, ...]:
    decoded = unquote_plus(raw)
    if store == "aws":
        keys = [decoded]
    elif store == "minio":
        keys = [minio_raw, decoded] if minio_raw else [decoded]
    elif store == "ceph":
        keys = [raw, decoded]
    else:
        keys = [decoded, raw]
    return tuple(dict.fromkeys(k for k in keys if k))


def parse_record(record: Any, minio_key: str | None = None) -> S3Event:
    """One record. ``minio_key``: MinIO's top-level raw ``bucket/key`` of a one-record message."""
    if not isinstance(record, dict):
        raise MalformedEvent("record is not an object")
    name = record.get("eventName")
    s3 = record.get("s3")
    if not isinstance(name, str) or not isinstance(s3, dict):
        raise MalformedEvent("record without eventName or s3")
    bucket = s3.get("bucket")
    obj = s3.get("object")
    if not isinstance(bucket, dict) or not isinstance(obj, dict):
        raise MalformedEvent("record without s3.bucket or s3.object")
    bucket_name = bucket.get("name")
    raw = obj.get("key")
    if not isinstance(bucket_name, str) or not bucket_name or not isinstance(raw, str) or not raw:
        raise MalformedEvent("record without bucket name or object key")
    name = name.removeprefix("s3:")
    store = guess_store(record)
    minio_raw = None
    if store == "minio" and minio_key and minio_key.startswith(bucket_name + "/"):
        minio_raw = minio_key[len(bucket_name) + 1:]
    size = obj.get("size")
    if isinstance(size, bool) or not isinstance(size, int) or size < 0:
        size = None
    etag = obj.get("eTag", obj.get("etag"))
    etag = etag.strip('"') if isinstance(etag, str) and etag else None
    sequencer = obj.get("sequencer")
    sequencer = sequencer if isinstance(sequencer, str) and sequencer else None
    return S3Event(kind=event_kind(name), name=name, store=store, bucket=bucket_name,
                   keys=candidate_keys(raw, store, minio_raw), size=size, etag=etag, sequencer=sequencer)


def parse_message(body: bytes | str) -> tuple[list[S3Event], list[str]]:
    """The events of one message, and the reasons records were dropped. Raises ``MalformedEvent`` when
    the message as a whole cannot be read."""
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise MalformedEvent(f"not JSON: {exc}") from None
    if isinstance(data, dict) and data.get("Type") == "Notification" and isinstance(data.get("Message"), str):
        try:
            data = json.loads(data["Message"])  # SNS envelope
        except ValueError as exc:
            raise MalformedEvent(f"SNS message is not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise MalformedEvent("message is not a JSON object")
    if data.get("Event") == "s3:TestEvent" or data.get("EventName") == "s3:TestEvent":
        return [], []
    records = data.get("Records")
    if not isinstance(records, list):
        raise MalformedEvent("message has no Records list")
    minio_key = data.get("Key") if isinstance(data.get("Key"), str) and len(records) == 1 else None
    events: list[S3Event] = []
    dropped: list[str] = []
    for record in records:
        try:
            events.append(parse_record(record, minio_key))
        except MalformedEvent as exc:
            dropped.append(str(exc))
    return events, dropped
