"""S3 event decoding per store (AWS, MinIO, Ceph RGW), the reconciler's merge-join and sibling groups,
and the Pairer's release for inboxes that cannot remember every file. Pure: no services."""

from __future__ import annotations

import json
from urllib.parse import quote, quote_plus

import pytest

from watcher.pairing import EmitRaster, Pairer
from watcher.s3events import MalformedEvent, event_order, parse_message
from watcher.s3reconcile import Group, Obj, OrderError, group_siblings, merge_diff
from tests.support.s3_events import aws_record, ceph_record, ceph_sequencer, minio_message

KEY = "drop/clim/sub dir/bio+1 ünï.tif"


def test_aws_keys_are_form_decoded():
    for encoded in (quote_plus(KEY, safe="/"), quote_plus(KEY)):  # '+' for space, with or without %2F
        rec = aws_record(KEY)
        rec["s3"]["object"]["key"] = encoded
        (event,), dropped = parse_message(json.dumps({"Records": [rec]}))
        assert not dropped
        assert event.store == "aws" and event.kind == "created" and event.keys == (KEY,)
        assert event.etag == "abc" and event.size == 10 and event.sequencer == "0A1B"


def test_minio_raw_key_first_then_decoded():
    (event,), _ = parse_message(json.dumps(minio_message(KEY)))
    assert event.store == "minio" and event.name == "ObjectCreated:Put" and event.keys == (KEY,)
    msg = minio_message(KEY)
    del msg["Key"]
    (event,), _ = parse_message(json.dumps(msg))
    assert event.keys == (KEY,)  # query-escaped: %2F, '+' for space, %2B for '+'


def test_ceph_raw_key_first_and_encoded_accepted():
    (event,), _ = parse_message(json.dumps({"Records": [ceph_record(KEY)]}))
    assert event.store == "ceph" and event.keys == (KEY, KEY.replace("+", " "))
    (event,), _ = parse_message(json.dumps({"Records": [ceph_record(quote(KEY))]}))
    assert event.keys == (quote(KEY), KEY)
    # without eventSource, the x-amz-id-2 / eventId hints still say Ceph
    rec = ceph_record(KEY)
    del rec["eventSource"]
    (event,), _ = parse_message(json.dumps({"Records": [rec]}))
    assert event.store == "ceph" and event.keys[0] == KEY


def test_unknown_store_decoded_first_then_raw():
    rec = {"eventName": "ObjectCreated:Put", "s3": {"bucket": {"name": "inbox"}, "object": {"key": "a+b.tif"}}}
    (event,), _ = parse_message(json.dumps({"Records": [rec]}))
    assert event.store == "unknown" and event.keys == ("a b.tif", "a+b.tif") and event.size is None


def test_post_test_events_and_removals():
    (post,), _ = parse_message(json.dumps({"Records": [ceph_record(KEY, "s3:ObjectCreated:Post")]}))
    assert post.kind == "ignored"
    (mp,), _ = parse_message(json.dumps({"Records": [aws_record(KEY, "ObjectCreated:CompleteMultipartUpload")]}))
    assert mp.kind == "created"
    (rm,), _ = parse_message(json.dumps(minio_message(KEY, "s3:ObjectRemoved:Delete")))
    assert rm.kind == "removed"
    assert parse_message(json.dumps({"Service": "Amazon S3", "Event": "s3:TestEvent", "Bucket": "inbox"})) == ([], [])


def test_sns_envelope():
    body = json.dumps({"Type": "Notification", "Message": json.dumps({"Records": [aws_record(KEY)]})})
    (event,), _ = parse_message(body)
    assert event.keys == (KEY,)


@pytest.mark.parametrize("body", [b"\xff\xfe", "not json", "[]", json.dumps({"Records": "x"}), json.dumps({})])
def test_malformed_messages(body):
    with pytest.raises(MalformedEvent):
        parse_message(body)


def test_malformed_record_dropped_others_kept():
    events, dropped = parse_message(json.dumps({"Records": [{"eventName": 3}, aws_record(KEY), {"s3": {}}]}))
    assert [e.keys for e in events] == [(KEY,)] and len(dropped) == 2


def test_sequencer_order_aws_and_minio_compare_as_hex_numbers():
    assert event_order("aws", "0A1B") > event_order("aws", "A1A")  # different lengths: padded, as AWS says
    assert event_order("aws", "0055AED6DCD90281E5") == event_order("aws", "55AED6DCD90281E5")
    assert event_order("aws", "0055AED6DCD90281E4") < event_order("aws", "0055AED6DCD90281E5")
    assert event_order("minio", "17A9C0FFEE") < event_order("minio", "17A9C0FFEF")


def test_ceph_sequencer_is_little_endian_seconds_and_nanoseconds():
    # verbatim from a Ceph 16.2.15 event (../shared/reference/ceph-rgw.md)
    assert event_order("ceph", "3C2A0F6B99A76538") == (1796155964, 946186137)
    # two events of one key within one second: as strings the newer one sorts first
    older, newer = ceph_sequencer(1796155964_000000255), ceph_sequencer(1796155964_000000256)
    assert newer < older  # the string comparison the old code did would drop the overwrite
    assert event_order("ceph", newer) > event_order("ceph", older)
    assert event_order("ceph", ceph_sequencer(1796155965_000000000)) > event_order("ceph", newer)


def test_unknown_order_is_none_so_nothing_is_dropped_for_being_old():
    assert event_order("unknown", "0A1B") is None
    assert event_order("ceph", "0A1B") is None  # not 8 bytes
    assert event_order("ceph", "zz2A0F6B99A76538") is None
    assert event_order("aws", "not hex") is None and event_order("aws", None) is None
    (event,) = parse_message(json.dumps({"Records": [ceph_record("c/a.tif")]}))[0]
    assert event.order == event_order("ceph", "F7E6D75DC742D108")


# -- reconciler ---------------------------------------------------------------------------------------


def o(rel: str, etag: str = "e", size: int = 1) -> Obj:
    return Obj(rel, etag, size)


def test_merge_diff():
    listing = [o("a.tif"), o("b.tif", "new"), o("c.tif"), o("e.tif")]
    known = [("a.tif", "e:1"), ("b.tif", "old:1"), ("d.tif", "e:1"), ("f.tif", "e:1")]
    got = [(status, rel) for status, _obj, rel in merge_diff(listing, known)]
    assert got == [("same", "a.tif"), ("changed", "b.tif"), ("new", "c.tif"), ("gone", "d.tif"), ("new", "e.tif"),
                   ("gone", "f.tif")]
    with pytest.raises(OrderError):
        list(merge_diff([o("b.tif"), o("a.tif")], []))
    with pytest.raises(OrderError):
        list(merge_diff([o("z")], [("b", "x"), ("a", "x")]))


def test_groups_bring_unchanged_siblings():
    listing = [o("c/B.TIF"), o("c/B.json", "new"), o("c/B.x.tif"), o("c/a.json"), o("c/a.tif", "new"),
               o("c/collection.json", "new"), o("c/notes.txt", "new"), o("c/q.json")]
    known = [(x.rel, "e:1") for x in listing]
    groups = list(group_siblings(merge_diff(listing, known)))
    assert groups == [
        Group((o("c/B.json", "new"),), (o("c/B.TIF"),)),  # B.x.tif (stem c/B.x) sits inside c/B. but apart
        Group((o("c/a.tif", "new"),), (o("c/a.json"),)),
        Group((o("c/collection.json", "new"),)),
    ]
    # gone keys come out as plain strings; unclassified ones not at all
    assert list(group_siblings(merge_diff([], [("c/x.tif", "e:1"), ("c/x.txt", "e:1")]))) == ["c/x.tif"]


def test_pairer_release_and_lookup():
    p = Pairer(5)
    p.file_ready("c/a.tif", 0)
    p.file_ready("c/a.json", 0)
    assert p.due(0) == [EmitRaster("c/a.tif", "c/a.json")]
    assert p.tracks("c/a.tif") and p.sidecar_of("c/a.tif") == "c/a.json" and not p.has_pending_raster("c/a.json")
    assert p.release("c/a.tif") == ["c/a.tif", "c/a.json"]
    assert not p.tracks("c/a.tif") and not p.tracks("c/a.json")
    p.file_ready("c/b.tif", 0)
    assert p.has_pending_raster("c/b.json") and p.release("c/b.tif") == []  # pending: not released


def test_kind_and_stem_matches_naming():
    from watcher.naming import classify, stem
    from watcher.s3reconcile import kind_and_stem

    keys = ["a.tif", "c/a.TIFF", "c/d/a.json", "c/collection.json", "collection.json", "c/d/collection.json",
            "c/COLLECTION.JSON", ".hidden/a.tif", "c/.a.tif", "c/~a.json", "c/a.tif.part", "c/a", "c/.tif", "/c/a.tif",
            "c//a.tif", "c/a.b.tif", "c/a.txt", "c/", "c/a.json.tmp", "~c/a.tif", "c/x y+z ü.tif"]
    for key in keys:
        assert kind_and_stem(key) == (classify(key), stem(key)), key
