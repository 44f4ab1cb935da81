"""RasterReady messages as the processor hands them to the publisher (a COG already stored, its metadata
read), built without a raster on disk, for the publisher's derive, validation, stage and sink tests."""

from __future__ import annotations

from stacdrop.messages import BandMetadata, RasterMetadata, RasterReady, Source, StoredObject
from stacdrop.sidecar import sidecar_from_dict

SHA = "ab" * 32


def make_raster(**kw):
    base = dict(
        width=100, height=50, count=1, crs_epsg=4326, transform=[0.1, 0.0, -10.0, 0.0, -0.1, 50.0],
        bounds=[-10.0, 45.0, 0.0, 50.0],
        bands=[BandMetadata(data_type="int16", nodata=-32768, scale=0.1, offset=-273.15, unit="K",
                            statistics={"minimum": 1.0, "maximum": 5.0, "mean": 3.0, "stddev": 1.0,
                                        "valid_percent": 90.0})],
    )
    base.update(kw)
    return RasterMetadata(**base)


def make_ready(key="chelsa/CHELSA_tas_06_2010.tif", collection=None, sidecar=None, raster=None, **kw):
    collection = collection or key.split("/")[0]
    return RasterReady(
        source=Source(url=f"/inbox/{key}", key=key, content_key="c"),
        collection=collection,
        sidecar=sidecar_from_dict(sidecar, "sidecar.json").model_dump() if sidecar is not None else None,
        sidecar_name=kw.pop("sidecar_name", None),
        cog=StoredObject(href=f"https://s3.example/bucket/{key}", key=key, size=1234, sha256=SHA),
        raster=raster or make_raster(),
        **kw,
    )


TEMPLATE = "CHELSA_{variable}_{month}_{year}.tif"
