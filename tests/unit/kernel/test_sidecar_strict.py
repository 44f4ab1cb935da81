"""A strict sidecar schema, and every malformed sidecar classified at once.

- Unknown top-level fields are an invalid_sidecar error naming them and listing the allowed ones; the
  per-collection setting ``sidecar_extra_fields = "properties"`` brings back the old behaviour.
- Each malformed variant (syntax, depth, size, encoding, lone surrogates, NaN/Infinity, numbers out of
  range, out-of-range datetimes) fails permanently as invalid_sidecar on the FIRST attempt with a one-line
  reason, in the daemon (``stacdrop run`` as a subprocess), and is a 422 from the API (``stacdrop serve``
  as a subprocess: ``POST /jobs`` and the original ``POST /newitem``), as is a ``since=`` out of range.
- Hypothesis: any text or bytes give a Sidecar or an InvalidSidecar, never another exception.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import requests
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from stacdrop.bus.base import DeadLetterFilter
from stacdrop.config import Settings
from stacdrop.errors import InvalidSidecar
from stacdrop.sidecar import Sidecar, parse_sidecar, sidecar_from_dict
from tests.support.api_server import ApiServer
from tests.support.daemon import (
    DaemonProcess,
    base_env,
    bus_for,
    catalog_items,
    ledger_for,
    settled_jobs,
    wait_until,
    write_collection,
)
from tests.support.http_server import FileServer
from tests.support.rasters import write_geotiff

# name -> (sidecar file bytes, what the one-line reason says)
MALFORMED: dict[str, tuple[bytes, str]] = {
    "syntax": (b'{"id": "a",', "not valid JSON (Expecting property name enclosed in double quotes at line 1"),
    "deep": (b'{"properties": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", "nested deeper than 64 levels"),
    "depth-70": (('{"properties": ' + '{"a": ' * 70 + "1" + "}" * 70 + "}").encode(), "nested deeper than 64"),
    "nan": (b'{"properties": {"x": NaN}}', "NaN is not a JSON number"),
    "infinity": (b'{"properties": {"x": Infinity}}', "Infinity is not a JSON number"),
    "minus-infinity": (b'{"properties": {"x": -Infinity}}', "-Infinity is not a JSON number"),
    "1e400": (b'{"properties": {"x": 1e400}}', "the number at properties.x is out of range"),
    "long-integer": (b'{"properties": {"n": ' + b"9" * 5000 + b"}}", "a number with too many digits"),
    "surrogate": (b'{"title": "\\ud800"}', "the string at title holds a lone surrogate \\ud800"),
    "surrogate-key": (b'{"properties": {"\\udfff": 1}}', "a key at properties holds a lone surrogate \\udfff"),
    "nul": (b'{"title": "a\\u0000b"}', "the string at title holds U+0000"),
    "latin-1": ('{"title": "carte d\'été"}'.encode("latin-1"), "not UTF-8 text (invalid byte at offset 19)"),
    "utf-16": ('{"title": "x"}'.encode("utf-16"), "the sidecar is UTF-16 text (byte order mark)"),
    "not-an-object": (b"[1, 2]", "the sidecar must be a JSON object, got list"),
    "year-10000-in-utc": (b'{"datetime": "9999-12-31T23:00:00-05:00"}', "is out of range: in UTC it falls outside"),
    "year-0-in-utc": (b'{"datetime": "0001-01-01T00:00:00+01:00"}', "is out of range"),
    "year-0": (b'{"datetime": "0000-01-01"}', "'0000-01-01' is not a date or an RFC 3339 datetime"),
    "unknown-field": (b'{"id": "u", "datetime": "2020-01-01", "variable": "tas"}',
                      "unknown top-level field 'variable'"),
}


# ---------------------------------------------------------------------------------- the schema


def test_unknown_top_level_fields_are_refused_naming_them_and_the_allowed_ones() -> None:
    with pytest.raises(InvalidSidecar) as err:
        parse_sidecar('{"id": "a", "variable": "tas", "Depth": "0-5cm"}', "col/a.json")
    assert str(err.value) == (
        "col/a.json: unknown top-level fields 'variable', 'Depth'; allowed: collection, id, datetime, "
        "start_datetime, end_datetime, title, description, properties, collection_id, name, date, "
        "file_source_host, filename, stac_api_server. Put item properties under \"properties\" (or set "
        "sidecar_extra_fields = \"properties\" for the collection)"
    )
    assert err.value.error_class == "invalid_sidecar"
    # under "properties" they are item properties; the original /newitem names still work
    ok = parse_sidecar('{"collection_id": "col", "name": "a", "date": "2001-01-01", "filename": "a.tif", '
                       '"properties": {"variable": "tas"}}', "col/a.json")
    assert ok == Sidecar(collection="col", id="a", datetime="2001-01-01T00:00:00Z", properties={"variable": "tas"})


def test_unknown_fields_become_properties_where_a_collection_opts_in() -> None:
    settings = Settings(collections={"legacy": {"sidecar_extra_fields": "properties"}})
    text = '{"id": "a", "variable": "tas", "properties": {"unit": "K"}}'
    kept = parse_sidecar(text, "legacy/a.json", settings.collection_settings, "legacy")
    assert kept.properties == {"variable": "tas", "unit": "K"}
    with pytest.raises(InvalidSidecar, match="unknown top-level field 'variable'"):
        parse_sidecar(text, "strict/a.json", settings.collection_settings, "strict")
    # the collection the sidecar names decides, not the folder it lies in
    named = parse_sidecar('{"collection": "legacy", "variable": "tas"}', "strict/a.json", settings.collection_settings,
                          "strict")
    assert named.collection == "legacy" and named.properties == {"variable": "tas"}
    with pytest.raises(InvalidSidecar):
        sidecar_from_dict({"collection_id": "strict", "variable": "tas"}, "x", settings.collection_settings, "legacy")
    settings_default = Settings(collection_defaults={"sidecar_extra_fields": "properties"})
    assert parse_sidecar('{"v": 1}', "any/a.json", settings_default.collection_settings, "any").properties == {"v": 1}


@pytest.mark.parametrize("name", sorted(MALFORMED))
def test_each_malformed_variant_is_an_invalid_sidecar(name: str) -> None:
    raw, reason = MALFORMED[name]
    with pytest.raises(InvalidSidecar) as err:
        parse_sidecar(raw, "col/x.json")
    assert reason in str(err.value) and str(err.value).startswith("col/x.json: ")
    assert "\n" not in str(err.value) and len(str(err.value)) < 400


# ---------------------------------------------------------------------------------- the daemon


@pytest.mark.e2e
def test_malformed_sidecars_fail_on_the_first_attempt_in_the_daemon(tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    write_collection(inbox, "col")
    write_collection(inbox, "legacy")
    for name, (raw, _reason) in MALFORMED.items():
        write_geotiff(inbox / "col" / f"{name}.tif", width=16, height=16)
        (inbox / "col" / f"{name}.json").write_bytes(raw)
    # a UTF-8 byte order mark is fine; an unknown field where the collection opts in becomes a property
    write_geotiff(inbox / "col" / "bom.tif", width=16, height=16)
    (inbox / "col" / "bom.json").write_bytes(b'\xef\xbb\xbf{"id": "bom", "datetime": "2020-01-01"}')
    write_geotiff(inbox / "legacy" / "tas.tif", width=16, height=16)
    (inbox / "legacy" / "tas.json").write_text('{"id": "tas", "datetime": "2020-01-01", "variable": "tas"}')
    env = base_env(tmp_path, STACDROP_COLLECTIONS=json.dumps({"legacy": {"sidecar_extra_fields": "properties"}}),
                   STACDROP_SIDECAR_WAIT="30")
    expected = len(MALFORMED) + 4
    with DaemonProcess(tmp_path, env) as daemon:
        ledger = ledger_for(env)
        jobs = wait_until(lambda: settled_jobs(ledger, expected), 120, f"{expected} jobs settled", daemon)
    by_key = {j.source_key: j for j in jobs}
    dead = {d.envelope.job_id: d for d in bus_for(env).dead_letters(DeadLetterFilter())}
    wrong = {}
    for name, (_raw, reason) in MALFORMED.items():
        job = by_key[f"col/{name}.tif"]
        letter = dead.get(job.id)
        if not (job.state == "failed" and job.error_class == "invalid_sidecar" and job.attempts == 1
                and job.error.startswith(f"col/{name}.json: ") and reason in job.error and "\n" not in job.error
                and letter is not None and letter.attempts == 1 and letter.error_class == "invalid_sidecar"
                and job.params["request"]["sidecar_text"] is None):
            wrong[name] = (job.state, job.error_class, job.attempts, job.error)
    assert not wrong, wrong
    items = catalog_items(tmp_path / "data" / "stac")
    assert set(items) == {"col/bom", "legacy/tas"}
    assert items["legacy/tas"]["properties"]["variable"] == "tas"


# ---------------------------------------------------------------------------------- the API

TOKEN = "strict-t0ken"


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServer]:
    root = tmp_path_factory.mktemp("api")
    env = base_env(root, STACDROP_API_TOKEN=TOKEN, STACDROP_ALLOWED_HOSTS="localhost",
                   STACDROP_COLLECTIONS=json.dumps({"chelsa": {"create_if_missing": True}}))
    server = ApiServer(root, env).start()
    yield server
    server.stop()


# name -> (JSON text of one more member of the body, what the reason says)
BODY_VARIANTS: dict[str, tuple[bytes, str]] = {
    "deep": (b'"properties": {"a": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", "nested deeper than 64 levels"),
    "depth-70": (('"properties": ' + '{"a": ' * 70 + "1" + "}" * 70).encode(), "nested deeper than 64"),
    "nan": (b'"properties": {"x": NaN}', "NaN is not a JSON number"),
    "infinity": (b'"properties": {"x": Infinity}', "Infinity is not a JSON number"),
    "1e400": (b'"properties": {"x": 1e400}', "out of range"),
    "long-integer": (b'"properties": {"n": ' + b"9" * 5000 + b"}", "a number with too many digits"),
    "surrogate": (b'"properties": {"title": "\\ud800"}', "lone surrogate \\ud800"),
    "latin-1": ('"properties": {"t": "été"}'.encode("latin-1"), "not UTF-8 text"),
    "syntax": (b'"properties": {', "not valid JSON"),
}


def _post(api: ApiServer, path: str, body: bytes) -> requests.Response:
    return requests.post(api.url + path, data=body, timeout=30,
                         headers={**api.headers(), "Content-Type": "application/json"})


def test_api_answers_422_to_every_malformed_body(api: ApiServer, files: FileServer) -> None:
    jobs_head = f'{{"source": "{files.url}/ok.tif", "collection": "chelsa", '.encode()
    newitem_head = (f'{{"collection_id": "chelsa", "filename": "ok.tif", "file_source_host": "{files.url}", '
                    '"name": "ok", ').encode()
    bodies = {}
    for name, (member, reason) in BODY_VARIANTS.items():
        bodies[f"/jobs {name}"] = ("/jobs", jobs_head + member + b"}", reason)
        bodies[f"/newitem {name}"] = ("/newitem", newitem_head + member + b"}", reason)
    for dt, reason in (("9999-12-31T23:00:00-05:00", "out of range"), ("0000-01-01", "is not a date")):
        bodies[f"/jobs datetime {dt}"] = ("/jobs", jobs_head + f'"datetime": "{dt}"}}'.encode(), reason)
        bodies[f"/newitem date {dt}"] = ("/newitem", newitem_head + f'"date": "{dt}"}}'.encode(), reason)
    wrong = {}
    for what, (path, body, reason) in bodies.items():
        resp = _post(api, path, body)
        detail = resp.json().get("detail") if resp.headers.get("content-type") == "application/json" else resp.text
        if resp.status_code != 422 or reason not in str(detail) or "\n" in str(detail):
            wrong[what] = (resp.status_code, str(detail)[:200])
    assert not wrong, wrong
    assert api.get("/jobs").json()["jobs"] == []  # none made a job
    # the same bodies without the bad member go through: the original /newitem body works as it is
    assert _post(api, "/newitem", newitem_head + b'"date": "2001-01-01"}').status_code == 200
    assert _post(api, "/jobs", jobs_head + b'"id": "ok2", "datetime": "2001-01-01T00:00:00Z"}').status_code == 202


def test_api_answers_422_to_a_since_out_of_range(api: ApiServer) -> None:
    wrong = {}
    for since in ("99999999999999999999", "99999999999999999999d", "99999999999d", "9999-12-31T23:00:00-05:00",
                  "0001-01-01T00:00:00+01:00"):
        for path in ("/jobs", "/dead-letters"):
            resp = api.get(path, params={"since": since})
            if resp.status_code != 422 or "since" not in resp.json()["detail"]:
                wrong[f"{path}?since={since}"] = (resp.status_code, resp.text[:200])
        resp = api.post("/dead-letters/replay", {"since": since, "dry_run": True})
        if resp.status_code != 422:
            wrong[f"replay since={since}"] = (resp.status_code, resp.text[:200])
    assert not wrong, wrong
    assert api.get("/jobs", params={"since": "9999-12-31T23:00:00Z"}).status_code == 200


# ---------------------------------------------------------------------------------- any input

FIELD_NAMES = ["collection", "id", "datetime", "start_datetime", "end_datetime", "title", "description",
               "properties", "collection_id", "name", "date", "filename"]


def _judge(raw: str | bytes) -> None:
    """A Sidecar that serialises to strict JSON and UTF-8, or an InvalidSidecar with a one-line reason."""
    try:
        sidecar = parse_sidecar(raw, "h.json")
    except InvalidSidecar as exc:
        assert str(exc).startswith("h.json: ") and "\n" not in str(exc), str(exc)
        return
    assert isinstance(sidecar, Sidecar)
    json.dumps(sidecar.model_dump(mode="json"), allow_nan=False, ensure_ascii=False).encode("utf-8")


any_char = st.characters(codec=None, exclude_categories=())  # surrogates and NUL included
offsets = st.integers(-23 * 60 - 59, 23 * 60 + 59).map(lambda m: timezone(timedelta(minutes=m)))
datetime_texts = st.one_of(
    st.datetimes(min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31, 23, 59, 59), timezones=offsets)
    .map(datetime.isoformat),
    st.sampled_from(["9999-12-31T23:00:00-05:00", "0001-01-01T00:00:00+01:00", "0000-01-01", "10000-01-01",
                     "2020-02-30", "1999", "2020-01-01T24:00:00Z"]),
    st.integers(-10, 20000),
)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(any_char, max_size=8) | datetime_texts,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(any_char, max_size=5), children,
                                                                        max_size=4),
    max_leaves=20,
)
ids = st.sampled_from(["a", "item-1", "", ".", "a:b", "x y"]) | st.text(any_char, max_size=6) | json_values
# Mostly sidecar-shaped (each known field optional, with values near what it expects), sometimes anything.
documents = st.one_of(
    st.fixed_dictionaries({}, optional={
        "collection": ids, "id": ids, "name": ids, "datetime": datetime_texts, "date": datetime_texts,
        "start_datetime": datetime_texts, "end_datetime": datetime_texts, "title": st.text(any_char, max_size=5),
        "description": json_values, "properties": st.dictionaries(st.text(any_char, max_size=5), json_values),
    }),
    st.dictionaries(st.sampled_from(FIELD_NAMES) | st.text(any_char, max_size=6), json_values, max_size=6),
)
# Text shaped like JSON, or not: random characters, and runs of JSON's own tokens and of the fragments that
# broke parsers (a deep run of brackets, NaN, 1e400, a lone surrogate escape, an out-of-range datetime).
TOKENS = ["{", "}", "[", "]", ":", ",", '"', "1", "-0.5e3", "NaN", "Infinity", "-Infinity", "1e400", "null",
          "true", '"\\ud800"', '"\\u0000"', '"datetime"', '"properties"', '"id"', '"x"', "[" * 3000,
          '{"properties": {"a": ', '"9999-12-31T23:00:00-05:00"', '"0001-01-01T00:00:00+01:00"', "9" * 5000]
texts = st.text(any_char) | st.lists(st.sampled_from(TOKENS) | st.text(any_char, max_size=3), max_size=12).map("".join)


@hsettings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(texts)
def test_any_text_gives_a_sidecar_or_an_invalid_sidecar(text: str) -> None:
    _judge(text)


@hsettings(max_examples=300, deadline=None)
@given(st.binary() | texts.map(lambda t: t.encode("utf-8", "surrogatepass")))
def test_any_bytes_give_a_sidecar_or_an_invalid_sidecar(data: bytes) -> None:
    _judge(data)


@hsettings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(documents, st.booleans())
def test_any_json_document_gives_a_sidecar_or_an_invalid_sidecar(doc: dict, ascii_only: bool) -> None:
    _judge(json.dumps(doc, ensure_ascii=ascii_only))
