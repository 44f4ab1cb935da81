"""The API's job event is the ledger's event (stacdrop/ledger/jobs.py Event) field for field, ``at`` as ISO
8601 text: a field added to the ledger's event and not to the API's fails here."""

from __future__ import annotations

import dataclasses
from datetime import datetime, timezone

from stacdrop.app.api.jobs import JobEvent, job_event
from stacdrop.ledger import Event


def test_a_job_event_is_the_ledger_event_with_at_as_text() -> None:
    event = Event(at=datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc), stage="process", step="convert",
                  status="failed", attempt=2, error_class="invalid_raster", message="not a raster")
    shown = job_event(event)
    assert shown == {"at": "2026-01-02T03:04:05+00:00", "stage": "process", "step": "convert", "status": "failed",
                     "attempt": 2, "error_class": "invalid_raster", "message": "not a raster"}
    assert list(JobEvent.model_fields) == [f.name for f in dataclasses.fields(Event)] == list(shown)
    assert JobEvent(**shown).model_dump() == shown
