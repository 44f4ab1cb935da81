"""The FastAPI application factory (owned by the API work; placeholder)."""

from fastapi import FastAPI

from stacdrop.api import metrics, page
from stacdrop.config import Settings


def create_app(settings: Settings | None = None) -> FastAPI:
    app = FastAPI(title="stacdrop")
    app.include_router(metrics.router)
    app.include_router(page.router)
    return app
