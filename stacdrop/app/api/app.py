"""The FastAPI application: ``create_app(settings)``, served by ``stacdrop serve``.

Routers: the original system's API (compat), the modern API (jobs, queues, dead letters, explain),
/metrics and the status page; /healthz and /readyz here. Every error is JSON ``{"detail": "..."}``
naming the field or URL and the reason; request bodies over ``api_max_body_bytes`` are refused with 413.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from stacdrop.app.api import compat, jobs, metrics, page
from stacdrop.app.api.auth import BodySizeLimit
from stacdrop.app.api.deps import ApiState
from stacdrop.app.api.redaction import RedactResponses
from stacdrop.config import Settings, load_settings
from stacdrop.probes import check_stac, check_store
from stacdrop.redact import redact_text, secrets_of

class Health(BaseModel):
    status: str


class Readiness(BaseModel):
    ready: bool
    checks: dict[str, str] = Field(description="broker, ledger, store, stac: 'ok' or why not")
    detail: str | None = Field(default=None, description="Which checks failed")


def _validation_detail(exc: RequestValidationError) -> str:
    parts = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err.get("loc", ()) if p != "body") or "body"
        parts.append(f"{where}: {err.get('msg', 'invalid')}")
    return "; ".join(parts) or "invalid request"


def readiness(state: ApiState) -> dict[str, str]:
    checks = {"broker": state.bus.stats, "ledger": state.ledger.ping,
              "store": lambda: check_store(state.settings.store, state.settings.s3),
              "stac": lambda: check_stac(state.settings.stac)}
    out = {}
    for name, check in checks.items():
        try:
            check()
            out[name] = "ok"
        except Exception as exc:  # noqa: BLE001 - any failure means not ready; say which and why
            text = str(exc) or type(exc).__name__
            # Redacted before it is cut: a URL cut before its '@' would no longer look like one.
            out[name] = f"{type(exc).__name__}: {redact_text(text, secrets_of(state.settings))}"[:300]
    return out


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or load_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.stacdrop = ApiState.open(settings)
        try:
            yield
        finally:
            app.state.stacdrop.close()

    app = FastAPI(
        title="stacdrop", version="1", lifespan=lifespan,
        description="Submit rasters by URL, follow every job, replay dead letters. Writes need "
                    "'Authorization: Bearer <api_token>'.",
    )
    app.state.settings = settings
    app.add_middleware(BodySizeLimit, limit=settings.api.max_body_bytes)
    app.add_middleware(RedactResponses, secrets=secrets_of(settings))  # outermost: every answer, the 413 too

    @app.exception_handler(RequestValidationError)
    async def invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse({"detail": _validation_detail(exc)}, status_code=422)

    @app.get("/healthz", response_model=Health, tags=["operations"])
    def healthz() -> dict[str, str]:
        """The process is alive (checks nothing else)."""
        return {"status": "ok"}

    @app.get("/readyz", response_model=Readiness, tags=["operations"],
             responses={503: {"model": Readiness, "description": "A backend is unreachable: see checks"}})
    def readyz(request: Request) -> Any:
        """Broker, ledger, store and STAC destination reachable: 200, else 503 naming what failed."""
        checks = readiness(request.app.state.stacdrop)
        failed = [name for name, value in checks.items() if value != "ok"]
        if failed:
            return JSONResponse({"ready": False, "checks": checks, "detail": f"not ready: {', '.join(failed)}"},
                                status_code=503)
        return {"ready": True, "checks": checks, "detail": None}

    app.include_router(compat.router)
    app.include_router(jobs.read)
    app.include_router(jobs.write)
    app.include_router(metrics.router)
    app.include_router(page.router)
    return app
