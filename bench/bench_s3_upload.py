"""Bench: S3Store.put versus boto3's own ``upload_file`` (default TransferConfig), same moto server.

    .venv/bin/python bench/bench_s3_upload.py [--size 14000] [--repeat 5] [--endpoint URL]

(1) writes a ~550 MB COG (SIZE x SIZE uint16, uncompressed, with overviews) under bench/out/, reused;
(2) starts a moto_server on a free 127.0.0.1 port (stopped at the end), or uses ``--endpoint`` (a
    running S3 such as Ceph RGW on 127.0.0.1:7480, with ``--access-key``/``--secret-key``);
(3) alternates S3Store.put (16 MiB parts, 4 in flight, sha256 + Content-MD5 + CRC32 + ETag/HEAD checks)
    and ``client.upload_file`` (8 MiB parts, 10 threads, CRC32 only), deleting the object after each run
    so the server's memory stays flat; prints the best and median MB/s of each and the ratio ours/boto3
    of the best runs (these machines are shared and noisy: the best of N is the least disturbed run).
moto is a Python server on the same 2 cores: the numbers compare client overheads, not a network.
The loopback Ceph of scripts/ keeps objects in a 2 GiB memstore: a 550 MB object per client plus RGW's
copies fill it (the OSD goes full and RGW requests hang); use ``--size 6000`` (~75 MB) there.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import boto3
import numpy as np
import rasterio
from rasterio.transform import from_origin

from processor.s3store import S3Store
from stacdrop.stac_terms import MediaType
from stacdrop.config import Settings
from stacdrop.s3 import s3_client
from tests.support.services import MotoServer

OUT = ROOT / "bench" / "out"


def make_cog(size: int) -> Path:
    path = OUT / f"cog_uint16_{size}_raw.tif"
    if path.exists():
        return path
    OUT.mkdir(parents=True, exist_ok=True)
    tmp = OUT / f"cog_src_{size}.tif"
    rng = np.random.default_rng(0)
    profile = dict(driver="GTiff", width=size, height=size, count=1, dtype="uint16", crs="EPSG:32633",
                   transform=from_origin(300000, 6000000, 10, 10), tiled=True, blockxsize=512, blockysize=512)
    with rasterio.open(tmp, "w", **profile) as dst:
        for row in range(0, size, 1024):
            h = min(1024, size - row)
            dst.write(rng.integers(0, 65535, size=(1, h, size), dtype=np.uint16),
                      window=((row, row + h), (0, size)))
    with rasterio.open(tmp) as src:
        rasterio.shutil.copy(src, path, driver="COG", COMPRESS="NONE", BLOCKSIZE=512, OVERVIEW_RESAMPLING="NEAREST")
    tmp.unlink()
    return path


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=14000)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--endpoint", help="an S3 endpoint already running (default: a moto_server of our own)")
    ap.add_argument("--access-key", default="bench")
    ap.add_argument("--secret-key", default="bench")
    args = ap.parse_args()
    cog = make_cog(args.size)
    size = cog.stat().st_size
    print(f"COG {cog.name}: {size / 1e6:.0f} MB")
    server = None if args.endpoint else MotoServer().start()
    url = args.endpoint or server.url
    try:
        settings = Settings(aws_access_key_id=args.access_key, aws_secret_access_key=args.secret_key,
                            aws_endpoint_url=url)
        os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
        client = s3_client(settings.s3, max_pool_connections=20)
        try:
            client.create_bucket(Bucket="bench-cogs")
        except client.exceptions.BucketAlreadyOwnedByYou:
            pass
        store = S3Store("bench-cogs", "io", client=client)
        plain = boto3.client("s3", endpoint_url=url, aws_access_key_id=args.access_key,
                             aws_secret_access_key=args.secret_key, region_name="us-east-1")
        times: dict[str, list[float]] = {"S3Store.put": [], "boto3 upload_file": []}
        for _ in range(args.repeat):
            with open(cog, "rb") as f:  # into the page cache, as after a conversion
                while f.read(64 << 20):
                    pass
            t = time.perf_counter()
            store.put(cog, "bench/cog.tif", content_type=MediaType.COG)
            times["S3Store.put"].append(time.perf_counter() - t)
            client.delete_object(Bucket="bench-cogs", Key="io/bench/cog.tif")
            t = time.perf_counter()
            plain.upload_file(str(cog), "bench-cogs", "plain/cog.tif")
            times["boto3 upload_file"].append(time.perf_counter() - t)
            plain.delete_object(Bucket="bench-cogs", Key="plain/cog.tif")
        best = {name: min(v) for name, v in times.items()}
        med = {name: statistics.median(v) for name, v in times.items()}
        print(f"endpoint {'moto_server' if server else url}, {args.repeat} runs each, alternating")
        for name, v in times.items():
            runs = ", ".join(f"{x:.2f}" for x in v)
            print(f"{name:18s} best {best[name]:6.2f} s {size / 1e6 / best[name]:7.1f} MB/s  "
                  f"median {med[name]:6.2f} s   runs: {runs}")
        ratio = best["boto3 upload_file"] / best["S3Store.put"]
        print(f"throughput ratio S3Store.put / upload_file, best of {args.repeat}: {ratio:.2f}  "
              f"(medians: {med['boto3 upload_file'] / med['S3Store.put']:.2f})")
    finally:
        if server:
            server.stop()


if __name__ == "__main__":
    main()
