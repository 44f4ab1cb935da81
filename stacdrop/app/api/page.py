"""GET /: the status page (static HTML + plain JS over the JSON API, no build step), and GET /footprints.

The page itself holds no data: app.js fetches /queues, /jobs, /dead-letters and /footprints and renders
them with text nodes only (never innerHTML with API data), every few seconds. What it shows is what those
answers hold, redacted on the way out (``stacdrop.app.api.redaction``): no password or signature reaches it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Query
from fastapi.responses import FileResponse
from pydantic import BaseModel, Field

from stacdrop.app.api.auth import require_read
from stacdrop.app.api.deps import ApiState, get_state
from stacdrop.app.api.jobs import ERRORS
from stacdrop.ledger import Ledger

router = APIRouter()
STATIC = Path(__file__).resolve().parent / "static"
MEDIA_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
               ".css": "text/css; charset=utf-8"}
# The page sends no data anywhere else and loads nothing from other origins.
PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
                               "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-cache",
}


def _static(name: str) -> FileResponse:
    path = STATIC / name
    if path.suffix not in MEDIA_TYPES or not path.is_file():
        raise HTTPException(404, f"no such file: {name}")
    return FileResponse(path, media_type=MEDIA_TYPES[path.suffix], headers=PAGE_HEADERS)


@router.get("/", include_in_schema=False)
def index() -> FileResponse:
    return _static("index.html")


@router.get("/static/{name}", include_in_schema=False)
def static_file(name: str) -> FileResponse:
    if "/" in name or name.startswith("."):
        raise HTTPException(404, f"no such file: {name}")
    return _static(name)


def latest_footprints(ledger: Ledger, limit: int) -> dict[str, Any]:
    """The bboxes of the latest published items as a GeoJSON FeatureCollection (one Polygon per bbox)."""
    with ledger.reports() as reports:
        rows = reports.latest_published_bboxes(limit)
    features = []
    for job_id, item_id, collection, finished_at, bbox_text in rows:
        bbox = _bbox(bbox_text)
        if bbox is None:
            continue
        w, s, e, n = bbox
        features.append({
            "type": "Feature",
            "bbox": bbox,
            "geometry": {"type": "Polygon", "coordinates": [[[w, s], [e, s], [e, n], [w, n], [w, s]]]},
            "properties": {"job_id": job_id, "item_id": item_id, "collection": collection,
                           "finished_at": finished_at.isoformat() if finished_at else None},
        })
    return {"type": "FeatureCollection", "features": features}


def _bbox(text: str) -> list[float] | None:
    """The stored [w, s, e, n]; anything else (a 3D bbox, a damaged value) is left off the map."""
    try:
        values = [float(v) for v in json.loads(text)]
    except (TypeError, ValueError):
        return None
    return values if len(values) == 4 else None


class FootprintProperties(BaseModel):
    job_id: str
    item_id: str | None
    collection: str | None
    finished_at: str | None = Field(description="When the item was published (ISO 8601)")


class FootprintGeometry(BaseModel):
    type: Literal["Polygon"]
    coordinates: list[list[list[float]]] = Field(description="The bbox as a closed ring, lon/lat (WGS84)")


class Footprint(BaseModel):
    type: Literal["Feature"]
    bbox: list[float] = Field(min_length=4, max_length=4, description="[west, south, east, north] in WGS84")
    geometry: FootprintGeometry
    properties: FootprintProperties


class Footprints(BaseModel):
    type: Literal["FeatureCollection"]
    features: list[Footprint]


@router.get("/footprints", tags=["status"], summary="Footprints of the latest published items",
            response_model=Footprints, responses=ERRORS, dependencies=[Depends(require_read)])
def footprints(limit: int = Query(50, ge=1, le=1000), state: ApiState = Depends(get_state)) -> dict[str, Any]:
    """GeoJSON FeatureCollection of the bboxes (WGS84) of the latest published items, newest first."""
    return latest_footprints(state.ledger, limit)
