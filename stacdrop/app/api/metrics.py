"""GET /metrics: Prometheus exposition of the ledger and the bus (stacdrop/app/metrics.py computes it).

Label values (collections, error classes) come from the ledger; the exposition is plain text, so
``stacdrop.app.api.redaction`` masks any secret in it on the way out, as in every other answer.
"""

from __future__ import annotations

import threading

from fastapi import APIRouter, Depends, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from stacdrop.app.api.auth import require_read
from stacdrop.app.api.deps import ApiState, get_state
from stacdrop.app.api.jobs import ERRORS
from stacdrop.app.metrics import StacdropCollector

router = APIRouter()
_lock = threading.Lock()


def _registry(request: Request, state: ApiState) -> CollectorRegistry:
    """One registry per app: the collector keeps its incremental tally of job events between scrapes."""
    app_state = request.app.state
    with _lock:
        registry = getattr(app_state, "metrics_registry", None)
        if registry is None:
            registry = CollectorRegistry(auto_describe=False)
            registry.register(StacdropCollector(state.ledger, state.bus))
            app_state.metrics_registry = registry
    return registry


@router.get(
    "/metrics",
    tags=["operations"],
    summary="Prometheus metrics",
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE_LATEST: {}}, "description": "Prometheus text exposition"},
               401: ERRORS[401]},
    dependencies=[Depends(require_read)],
)
def metrics(request: Request, state: ApiState = Depends(get_state)) -> Response:
    """Jobs by state, stage durations, retries by error class, queue depths, dead letters, consumers,
    bytes converted and the arrival-to-published time, computed from the ledger and the bus at scrape time."""
    return Response(generate_latest(_registry(request, state)), media_type=CONTENT_TYPE_LATEST)
