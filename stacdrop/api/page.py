"""GET /: the status page (owned by the status-page work; placeholder router)."""

from fastapi import APIRouter

router = APIRouter()
