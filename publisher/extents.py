"""Collection extents: the extent of one item and the union of two extents, shared by both sinks.

Both the static catalog and the STAC API sink keep a collection's extent current as items arrive, without
rescanning the items: each new item widens the stored extent. Extents only grow (replacing an item whose
datetime or footprint changed widens the extent to cover the new values but never shrinks it; deleting an
item leaves it alone), and a collection's first bbox / first interval are the ones maintained. Longitude
ranges may cross the antimeridian (west > east); the union picks the smallest range covering both.
"""

from __future__ import annotations

import copy
from typing import Any

from stacdrop.times import parse_time


def item_extent(item: dict[str, Any]) -> dict[str, Any]:
    """The collection extent of one item."""
    props = item.get("properties", {})
    start = props.get("start_datetime") or props.get("datetime")
    end = props.get("end_datetime") or props.get("datetime")
    return {"spatial": {"bbox": [list(item["bbox"][:4]) if len(item["bbox"]) == 4 else list(item["bbox"])]},
            "temporal": {"interval": [[start, end]]}}


def _norm_west(x: float) -> float:
    return ((x + 180.0) % 360.0) - 180.0


def _norm_east(x: float) -> float:
    return -(((-x + 180.0) % 360.0) - 180.0)


def union_lon(a: tuple[float, float], b: tuple[float, float]) -> tuple[float, float]:
    """Smallest longitude range covering two ranges; west > east crosses the antimeridian."""
    if (a[0] <= -180 and a[1] >= 180) or (b[0] <= -180 and b[1] >= 180):
        return (-180.0, 180.0)
    aw, ae = a[0], a[1] if a[1] >= a[0] else a[1] + 360.0
    bw, be = b[0], b[1] if b[1] >= b[0] else b[1] + 360.0
    best: tuple[float, bool, float, float] | None = None
    for shift in (0.0, -360.0, 360.0):
        lo, hi = min(aw, bw + shift), max(ae, be + shift)
        crosses = _norm_west(lo) > _norm_east(hi)
        key = (round(hi - lo, 9), crosses, lo, hi)
        if best is None or key[:2] < best[:2]:
            best = key
    assert best is not None
    span, _, lo, hi = best
    if span >= 360.0:
        return (-180.0, 180.0)
    return (_norm_west(lo), _norm_east(hi))


def union_bbox(a: list[float], b: list[float]) -> list[float]:
    """The smallest bbox (2D or 3D) covering two bboxes."""
    def parts(bb: list[float]) -> tuple[float, float, float, float, float | None, float | None]:
        if len(bb) == 6:
            return bb[0], bb[1], bb[3], bb[4], bb[2], bb[5]
        return bb[0], bb[1], bb[2], bb[3], None, None

    aw, as_, ae, an, az0, az1 = parts(a)
    bw, bs, be, bn, bz0, bz1 = parts(b)
    w, e = union_lon((aw, ae), (bw, be))
    s, n = min(as_, bs), max(an, bn)
    if az0 is not None or bz0 is not None:
        zs = [z for z in (az0, bz0) if z is not None]
        zn = [z for z in (az1, bz1) if z is not None]
        return [w, s, min(zs), e, n, max(zn)]
    return [w, s, e, n]


def union_extents(base: dict[str, Any], add: dict[str, Any]) -> dict[str, Any]:
    """``base`` widened so that its first bbox and first interval also cover ``add``'s first ones.

    Further bboxes / intervals (finer descriptions, see the STAC collection spec) are kept from ``base``.
    A null interval end is open and stays open.
    """
    out = copy.deepcopy(base) if base else {}
    base_bboxes = (out.get("spatial") or {}).get("bbox") or []
    add_bboxes = (add.get("spatial") or {}).get("bbox") or []
    if base_bboxes and add_bboxes:
        bboxes = [union_bbox(base_bboxes[0], add_bboxes[0])] + base_bboxes[1:]
    else:
        bboxes = base_bboxes or [list(b) for b in add_bboxes[:1]]
    base_iv = (out.get("temporal") or {}).get("interval") or []
    add_iv = (add.get("temporal") or {}).get("interval") or []
    if base_iv and add_iv:
        (b0, b1), (a0, a1) = base_iv[0], add_iv[0]
        start = None if b0 is None or a0 is None else (b0 if parse_time(b0) <= parse_time(a0) else a0)
        end = None if b1 is None or a1 is None else (b1 if parse_time(b1) >= parse_time(a1) else a1)
        intervals = [[start, end]] + base_iv[1:]
    else:
        intervals = base_iv or [list(i) for i in add_iv[:1]]
    out["spatial"] = {**(out.get("spatial") or {}), "bbox": bboxes}
    out["temporal"] = {**(out.get("temporal") or {}), "interval": intervals}
    return out
