"""Bench: download-then-convert versus GDAL reading the source remotely, for one COG conversion.

    .venv/bin/python bench/bench_fetch.py [--size 6000] [--repeat 2]

A SIZE x SIZE uint16 striped GeoTIFF (DEFLATE, as sources usually come) is put in a bucket of a
moto_server, which also serves it as plain HTTP (with ranges) at its path-style URL. Timed, alternating:
  s3 download   fetch_source("s3://...") to a temp file, then convert_to_cog from it
  s3 remote     convert_to_cog("/vsis3/...") through stacdrop.s3.rasterio_env
  http download fetch_source("http://...") then convert_to_cog
  http remote   convert_to_cog("/vsicurl/http://...")
Medians are printed. Loopback has no latency: the remote numbers are a best case for GDAL.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np
import rasterio
from rasterio.transform import from_origin

from processor.cogeo import ENV, cog_creation_options, convert_to_cog
import rasterio.shutil
from processor.fetch import fetch_source
from stacdrop.config import Settings
from stacdrop.s3 import rasterio_env, s3_client
from stacdrop.app.components import processor_settings
from tests.support.services import MotoServer

OUT = ROOT / "bench" / "out"


def make_source(size: int) -> Path:
    path = OUT / f"src_uint16_{size}_striped_deflate.tif"
    if path.exists():
        return path
    OUT.mkdir(parents=True, exist_ok=True)
    yy, xx = np.mgrid[0:256, 0:size]
    rng = np.random.default_rng(0)
    with rasterio.open(path, "w", driver="GTiff", width=size, height=size, count=1, dtype="uint16",
                       crs="EPSG:32633", transform=from_origin(300000, 6000000, 10, 10), compress="deflate") as dst:
        for row in range(0, size, 256):
            h = min(256, size - row)
            base = (np.sin(xx[:h] / 37.0) + np.cos((yy[:h] + row) / 23.0) + 2.0) * 8000
            dst.write((base + rng.normal(0, 5, base.shape)).astype("uint16")[None], window=((row, row + h), (0, size)))
    return path


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=6000)
    ap.add_argument("--repeat", type=int, default=2)
    args = ap.parse_args()
    src = make_source(args.size)
    print(f"source {src.name}: {src.stat().st_size / 1e6:.0f} MB")
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    server = MotoServer().start()
    # moto enforces no auth: the object is also a plain HTTP resource (with ranges) at its path-style URL
    http_url = f"{server.url}/bench-src/in/src.tif"
    try:
        settings = Settings(aws_access_key_id="bench", aws_secret_access_key="bench", aws_endpoint_url=server.url,
                            allowed_hosts=["127.0.0.1"])
        client = s3_client(settings.s3)
        client.create_bucket(Bucket="bench-src")
        client.upload_file(str(src), "bench-src", "in/src.tif")
        s3_url = "s3://bench-src/in/src.tif"
        times: dict[str, list[float]] = {}
        with tempfile.TemporaryDirectory(dir=OUT) as tmp:
            work = Path(tmp)

            def download(url: str) -> None:
                with fetch_source(url, work, processor_settings(settings).access) as local:
                    convert_to_cog(local, str(work / "out.tif"), resampling="average")

            def remote(url: str) -> None:
                # The same creation options as convert_to_cog; the dataset is opened inside the env so
                # rasterio hands GDAL the session's credentials (a path given to shutil.copy gets none).
                with rasterio_env(settings.s3), rasterio.Env(**ENV), rasterio.open(url) as ds:
                    rasterio.shutil.copy(ds, str(work / "out.tif"), driver="COG",
                                         **cog_creation_options(resampling="average"))

            cases = {
                "s3 download": lambda: download(s3_url),
                "s3 remote (/vsis3/)": lambda: remote(s3_url),
                "http download": lambda: download(http_url),
                "http remote (/vsicurl/)": lambda: remote(http_url),
            }
            for _ in range(args.repeat):
                for name, run in cases.items():
                    t = time.perf_counter()
                    run()
                    times.setdefault(name, []).append(time.perf_counter() - t)
                    (work / "out.tif").unlink()
        for name, v in times.items():
            print(f"{name:24s} median {statistics.median(v):6.2f} s   runs: {', '.join(f'{x:.2f}' for x in v)}")
    finally:
        server.stop()


if __name__ == "__main__":
    main()
