"""GET /metrics: Prometheus exposition (owned by the metrics work; placeholder router)."""

from fastapi import APIRouter

router = APIRouter()
