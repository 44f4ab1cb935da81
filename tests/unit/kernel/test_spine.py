"""Unit tests of the spine's small pieces: sidecar parsing, settings, retry policy, message contracts."""

from __future__ import annotations

import random

import pytest

from stacdrop.config import load_settings
from stacdrop.redact import redact_url
from stacdrop.errors import ConfigError, InvalidSidecar, classify
from stacdrop.messages import Envelope, IngestRequest, Source
from stacdrop.retry import RetryPolicy
from stacdrop.sidecar import parse_sidecar


def test_sidecar_native_fields() -> None:
    s = parse_sidecar('{"collection": "chelsa-clim", "id": "bio1", "datetime": "1981-01-01T00:00:00Z", '
                      '"title": "T", "properties": {"variable": "bio1"}}', "chelsa-clim/bio1.json")
    assert (s.collection, s.id, s.datetime, s.title) == ("chelsa-clim", "bio1", "1981-01-01T00:00:00Z", "T")
    assert s.properties == {"variable": "bio1"}


def test_sidecar_original_system_aliases() -> None:
    s = parse_sidecar('{"collection_id": "c", "name": "tas_06_2010", "date": "2010-06-01", "filename": "x.tif",'
                      ' "stac_api_server": "http://x", "file_source_host": "http://y",'
                      ' "properties": {"full_filename": "x.tif", "datetime": "2010-06-01T00:00:00Z"}}', "x.json")
    assert (s.collection, s.id, s.datetime) == ("c", "tas_06_2010", "2010-06-01T00:00:00Z")
    assert s.properties == {"full_filename": "x.tif"}


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ('{"datetime": "2000-01-01",', "not valid JSON"),
        ("[1, 2]", "must be a JSON object"),
        ('{"datetime": "the year 2000"}', "'the year 2000' is not a date"),
        ('{"id": "a:b"}', "forbidden characters"),
        ('{"id": "has space"}', "forbidden characters"),
        ('{"collection": "../etc"}', "forbidden characters"),
        ('{"start_datetime": "2001-01-01"}', "together"),
        ('{"start_datetime": "2002-01-01", "end_datetime": "2001-01-01"}', "after"),
        ('{"properties": [1]}', "must be a JSON object"),
        ('{"collection": "a", "collection_id": "b"}', "alias"),
    ],
)
def test_sidecar_errors_name_the_file_and_reason(text: str, needle: str) -> None:
    with pytest.raises(InvalidSidecar) as info:
        parse_sidecar(text, "clim/bad.json")
    assert "clim/bad.json" in str(info.value) and needle in str(info.value)


def test_sidecar_datetimes_are_normalised_to_utc() -> None:
    s = parse_sidecar('{"datetime": "2000-06-01T12:00:00+02:00", "start_datetime": "1999", '
                      '"end_datetime": "2000-12-31"}', "x.json")
    assert (s.datetime, s.start_datetime, s.end_datetime) == (
        "2000-06-01T10:00:00Z", "1999-01-01T00:00:00Z", "2000-12-31T00:00:00Z")


def test_settings_precedence_file_then_env(tmp_path) -> None:
    cfg = tmp_path / "stacdrop.toml"
    cfg.write_text('inbox = "/from/file"\nstore = "/file/store"\n[collections.lc]\nresampling = "mode"\n'
                   '[collection_defaults]\nasset_key = "cog"\n')
    s = load_settings(cfg, environ={"STACDROP_INBOX": "/from/env", "ARBUTUS_OBJECT_ACCESS_KEY": "k"})
    assert s.inbox.path == "/from/env" and s.store == "/file/store"
    assert s.collection("lc").resampling == "mode" and s.collection("lc").asset_key == "cog"
    assert s.collection("other").resampling == "average"
    assert s.s3.secret_access_key.get_secret_value() == "k" and s.masked()["s3"]["secret_access_key"] == "***"


def test_settings_errors_name_the_file(tmp_path) -> None:
    cfg = tmp_path / "bad.toml"
    cfg.write_text('[collections.lc]\nresampling = "smear"\n')
    with pytest.raises(ConfigError, match="lc"):
        load_settings(cfg, environ={})
    with pytest.raises(ConfigError, match="not found"):
        load_settings(tmp_path / "missing.toml", environ={})


def test_redact_url() -> None:
    assert redact_url("amqp://u:secret@h:5672/v", keep_user=True) == "amqp://u:***@h:5672/v"
    assert redact_url("postgresql://u@h/db", keep_user=True) == "postgresql://***@h/db"  # often a token
    assert redact_url("amqp://u:secret@h:5672/v?heartbeat=60") == "amqp://h:5672/v?..."
    assert redact_url("./data/stac") == "./data/stac"


def test_retry_policy_backoff_with_jitter() -> None:
    policy = RetryPolicy(max_retries=3, base=2.0, maximum=10.0, jitter=0.5)
    rng = random.Random(1)
    delays = [policy.delay(n, rng) for n in (1, 2, 3, 4, 5)]
    for n, d in zip((1, 2, 3, 4, 5), delays):
        raw = min(10.0, 2.0 * 2 ** (n - 1))
        assert raw * 0.5 <= d <= raw
    assert policy.should_retry(3, transient=True) and not policy.should_retry(4, transient=True)
    assert not policy.should_retry(1, transient=False)


def test_classify_unknown_errors_as_transient() -> None:
    assert classify(InvalidSidecar("x")) == ("invalid_sidecar", False)
    assert classify(ConnectionResetError()) == ("network", True)
    assert classify(KeyError("k")) == ("KeyError", True)


def test_envelope_round_trip() -> None:
    body = IngestRequest(source=Source(url="/i/c/a.tif", key="c/a.tif", size=3, content_key="abc"),
                         collection="c", sidecar_text="{}")
    env = Envelope.wrap("job1", body)
    again = Envelope.from_bytes(env.to_bytes())
    assert again == env and again.parsed() == body and again.collection == "c"


def test_parse_s3_url_keeps_question_marks_and_hashes_in_keys() -> None:
    from stacdrop.s3 import parse_s3_url

    assert parse_s3_url("s3://bucket/a b/x?y#z.tif") == ("bucket", "a b/x?y#z.tif")
    assert parse_s3_url("s3://bucket") == ("bucket", "")
    with pytest.raises(ValueError):
        parse_s3_url("https://bucket/key")


def test_a_source_outage_is_uncounted_for_the_patience_then_counted(tmp_path) -> None:
    from datetime import timedelta

    from processor.errors import SourceUnavailable
    from stacdrop.bus.sqlite import SqliteBus
    from stacdrop.errors import ClaimedElsewhere
    from stacdrop.ledger import Ledger
    from stacdrop.times import utcnow
    from stacdrop.runtime import StageRunner

    runner = StageRunner("process", lambda *a: None, bus=SqliteBus(f"sqlite:///{tmp_path}/q.db"),
                         ledger=Ledger(f"sqlite:///{tmp_path}/l.db"),
                         policy=RetryPolicy(base=2.0, outage_patience=3600))
    down = SourceUnavailable("http://h/x.tif: ConnectionError (after 3 attempts)", outage=True)
    env = Envelope(job_id="j", body={})
    assert runner._uncounted_delay(env, down, "source_unavailable") is not None  # first refusal: waits
    recent = env.with_failure("process", "source_unavailable", "down", counted=False)
    assert runner._uncounted_delay(recent, down, "source_unavailable") is not None
    old = recent.model_copy(update={"history": [recent.history[0].model_copy(
        update={"at": utcnow() - timedelta(hours=2)})]})
    assert runner._uncounted_delay(old, down, "source_unavailable") is None  # down for 2 h: counted now
    counted = old.with_failure("process", "source_unavailable", "down")
    assert runner._uncounted_delay(counted, down, "source_unavailable") is None  # and stays counted
    # A 500 on one file says something about the file: counted at once. A live claim never runs out.
    assert runner._uncounted_delay(env, SourceUnavailable("HTTP 500"), "source_unavailable") is None
    assert runner._uncounted_delay(old, ClaimedElsewhere("held"), "claimed_elsewhere") == 15.0


def test_settings_sections_and_their_flat_aliases(tmp_path) -> None:
    """Sections in TOML and STACDROP_<SECTION>__<FIELD>; the flat names of every earlier release still set
    the same fields; within one source the section wins, and the environment wins over the file."""
    cfg = tmp_path / "stacdrop.toml"
    cfg.write_text('broker = "amqp://flat"\nqueue_prefix = "flat"\n[bus]\nqueue_prefix = "table"\nworkers = 3\n'
                   '[inbox]\npath = "/in"\n')
    s = load_settings(cfg, environ={})
    assert (s.bus.url, s.bus.queue_prefix, s.bus.workers, s.inbox.path) == ("amqp://flat", "table", 3, "/in")
    s = load_settings(cfg, environ={"STACDROP_WORKERS": "5", "STACDROP_BUS__URL": "amqp://env",
                                    "STACDROP_API_PORT": "9001", "STACDROP_LIMITS__MAX_SOURCE_BYTES": "7"})
    assert (s.bus.url, s.bus.workers, s.api.port, s.limits.max_source_bytes) == ("amqp://env", 5, 9001, 7)
    assert s.replace(sidecar_wait=3).inbox == s.inbox.model_copy(update={"sidecar_wait": 3.0})
    with pytest.raises(ConfigError, match="urll"):
        cfg.write_text('[bus]\nurll = "amqp://typo"\n')
        load_settings(cfg, environ={})


def test_raster_ready_carries_a_typed_sidecar_and_old_dict_messages_still_validate() -> None:
    from stacdrop.messages import BandMetadata, RasterMetadata, RasterReady, StoredObject
    from stacdrop.sidecar import Sidecar

    sidecar = parse_sidecar('{"id": "a", "date": "2010-06-01T02:00:00+02:00", "properties": {"v": 1}}', "c/a.json")
    ready = RasterReady(
        source=Source(url="/i/c/a.tif", key="c/a.tif", content_key="k"), collection="c", sidecar=sidecar,
        cog=StoredObject(href="/store/c/a.tif", key="c/a.tif", size=1, sha256="ab" * 32),
        raster=RasterMetadata(width=1, height=1, count=1, crs_epsg=4326, transform=[1, 0, 0, 0, -1, 1],
                              bounds=[0, 0, 1, 1], bands=[BandMetadata(data_type="uint8")]),
    )
    env = Envelope.wrap("job1", ready)
    # On the wire: the same plain JSON object as when the field was an untyped dict.
    assert env.body["sidecar"] == {"collection": None, "id": "a", "datetime": "2010-06-01T00:00:00Z",
                                   "start_datetime": None, "end_datetime": None, "title": None,
                                   "description": None, "properties": {"v": 1}}
    again = Envelope.from_bytes(env.to_bytes()).parsed()
    assert isinstance(again, RasterReady) and isinstance(again.sidecar, Sidecar) and again.sidecar == sidecar
    assert again.sidecar.datetime == "2010-06-01T00:00:00Z"  # normalised once, by the parser
    # A message queued by an older version: a dict, possibly without every field, still validates.
    old = Envelope(job_id="job0", body={**env.body, "sidecar": {"id": "a", "datetime": "2010-06-01T00:00:00Z"}})
    parsed = Envelope.from_bytes(old.to_bytes()).parsed()
    assert isinstance(parsed.sidecar, Sidecar)
    assert (parsed.sidecar.id, parsed.sidecar.datetime, parsed.sidecar.properties) == ("a", "2010-06-01T00:00:00Z", {})
    no_sidecar = Envelope(job_id="job0", body={**env.body, "sidecar": None}).parsed()
    assert no_sidecar.sidecar is None
