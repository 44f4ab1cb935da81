"""schemathesis against the OpenAPI schema ``stacdrop serve`` publishes: no 5xx, and every response (status,
content type, body) as the schema says. Run with the token, so write endpoints are exercised past auth;
bounded (``MAX_EXAMPLES`` per operation, positive and negative data)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.generation.modes import GenerationMode

from tests.support.api_server import ApiServer
from stacdrop.messages import PROCESS_QUEUE, Envelope, IngestRequest, Source
from tests.support.daemon import base_env, bus_for, ledger_for

MAX_EXAMPLES = 25
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServer]:
    root: Path = tmp_path_factory.mktemp("schema")
    env = base_env(root, STACDROP_API_TOKEN="schemathesis-token", STACDROP_ALLOWED_HOSTS="localhost",
                   STACDROP_COLLECTIONS=json.dumps({"chelsa": {"create_if_missing": True,
                                                               "key_template": "{variable}_{year}.tif"}}))
    server = ApiServer(root, env).start()
    server.seeded = seed(env)  # type: ignore[attr-defined]
    yield server
    server.stop()


def seed(env: dict[str, str]) -> list[str]:
    """Jobs in several states and one dead letter, so that the response schemas are checked on real rows."""
    ledger = ledger_for(env)
    ids = []
    for n, (state, fields) in enumerate([
        ("published", dict(item_id="bio1", item_bbox=[-10.0, -5.0, 10.0, 5.0])),
        ("failed", dict(error_class="invalid_raster", error="chelsa/bad.tif: not a raster")),
        ("retrying", dict(error_class="network", error="ConnectionError (retry 1 of 5 in 2s)")),
    ]):
        job, _ = ledger.create_job(kind="raster", source=f"http://localhost/f{n}.tif", source_key=f"chelsa/f{n}.tif",
                                   content_key=f"etag:{n}", collection="chelsa", origin="http", priority=5,
                                   params={"newitem": {"collection_id": "chelsa", "filename": f"f{n}.tif"}})
        # A retry follows a started attempt (stacdrop.ledger.states.TRANSITIONS refuses "new" -> "retrying").
        ledger.record(job.id, stage="process", step="convert", status="running", attempt=1,
                      **({"state": "processing"} if state == "retrying" else {}))
        ledger.record(job.id, stage="publish" if state == "published" else "process", step="finished",
                      status=state, state=state, attempt=1, **fields)
        ids.append(job.id)
    with bus_for(env) as bus:
        bus.setup()
        bus.publish(PROCESS_QUEUE, Envelope.wrap(ids[1], IngestRequest(
            source=Source(url="http://localhost/f1.tif", key="chelsa/f1.tif", content_key="etag:1"),
            collection="chelsa")))
        stop = threading.Event()

        def dead(delivery) -> None:
            delivery.dead_letter("invalid_raster", "chelsa/bad.tif: not a raster")
            stop.set()

        bus.consume(PROCESS_QUEUE, dead, stop)
    ledger.close()
    return ids


def test_openapi_schema_holds(api: ApiServer) -> None:
    schema = schemathesis.openapi.from_url(api.url + "/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    paths = {op.path for op in operations}
    assert {"/newitem", "/status", "/status/all", "/jobs", "/jobs/{job_id}", "/queues", "/dead-letters",
            "/dead-letters/replay", "/explain", "/healthz", "/readyz"} <= paths
    # GET /dead-letters is fuzzed before POST /dead-letters/replay (which may replay it): it sees a real one.
    assert len(requests.get(api.url + "/dead-letters", timeout=30).json()["dead_letters"]) == 1
    spec = requests.get(api.url + "/openapi.json", timeout=30).json()
    failures: list[str] = []
    for operation in operations:
        definition = spec["paths"][operation.path][operation.method.lower()]
        # Negative data needs something to break: operations without parameters or body get none.
        takes_input = bool(definition.get("parameters") or definition.get("requestBody"))
        modes = (GenerationMode.POSITIVE, GenerationMode.NEGATIVE) if takes_input else (GenerationMode.POSITIVE,)
        for mode in modes:
            try:
                fuzz(api, operation, mode)
            except Exception as exc:  # noqa: BLE001 - collect every operation's failure, then report them all
                failures.append(f"{operation.method.upper()} {operation.path} ({mode}): {exc}")
    # Known ids too (random ones are 404s): the detail and status shapes of real jobs.
    by_path = {op.path: op for op in operations}
    for job_id in api.seeded:  # type: ignore[attr-defined]
        for path, fixed in (("/jobs/{job_id}", {"path_parameters": {"job_id": job_id}}),
                            ("/status", {"query": {"id": job_id}})):
            try:
                fuzz(api, by_path[path], GenerationMode.POSITIVE, examples=3, **fixed)
            except Exception as exc:  # noqa: BLE001
                failures.append(f"GET {path} ({job_id}): {exc}")
    assert not failures, "\n\n".join(failures)
    assert "Traceback" not in api.logs()


def fuzz(api: ApiServer, operation, mode: GenerationMode, examples: int = MAX_EXAMPLES,
         **fixed: dict[str, str]) -> None:
    """Positive data: every check; negative data (outside the schema): no 5xx (a 4xx is the right answer)."""
    checks = CHECKS if mode is GenerationMode.POSITIVE else [not_a_server_error]

    @given(case=operation.as_strategy(generation_mode=mode, **fixed))
    @settings(max_examples=examples, deadline=None, database=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
    def run(case) -> None:
        case.call_and_validate(base_url=api.url, headers=api.headers(), checks=checks, timeout=30)

    run()
