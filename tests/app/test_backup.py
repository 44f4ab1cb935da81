"""Catalog backups and restore (stacdrop/app/backup.py) on the real PostgreSQL + pgstac + stac-fastapi-pgstac.

The module has its own catalog database and STAC API (tests/support/stac_api.py): restores swap that database.
"""

from __future__ import annotations

import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest
import requests

from stacdrop.app.backup import BackupError, backup, drop_old, kept_databases, list_archives, restore
from stacdrop.config import Settings
from tests.support.services import ServiceUnavailable
from tests.support.stac_api import StacApiServer, check_available
from tests.support.stac_items import make_collection, make_item

pytestmark = [pytest.mark.postgres, pytest.mark.e2e]

ITEMS = [f"tile-{i}" for i in range(5)]
T0 = datetime(2026, 11, 27, 3, 15, tzinfo=UTC)


def _databases(admin_dsn: str, like: str) -> list[str]:
    with psycopg.connect(admin_dsn) as conn:
        return [r[0] for r in conn.execute("SELECT datname FROM pg_database WHERE datname LIKE %s ORDER BY 1", (like,))]


def _drop(admin_dsn: str, *names: str) -> None:
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        for name in names:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def search_ids(url: str) -> list[str]:
    resp = requests.post(f"{url}/search", json={"limit": 100}, timeout=10)
    resp.raise_for_status()
    return sorted(f["id"] for f in resp.json()["features"])


def search_features(url: str) -> dict[str, dict]:
    resp = requests.post(f"{url}/search", json={"limit": 100}, timeout=10)
    resp.raise_for_status()
    return {f["id"]: f for f in resp.json()["features"]}


@pytest.fixture(scope="module")
def catalog(postgres_dsn: str) -> Iterator[StacApiServer]:
    """A pgstac catalog with one collection and five items, loaded through the running stac-fastapi-pgstac."""
    try:
        check_available(postgres_dsn)
    except ServiceUnavailable as exc:
        pytest.skip(str(exc))
    server = StacApiServer(postgres_dsn)
    try:
        server.create().start()
        cid = "backup-col"
        requests.post(f"{server.url}/collections", json=make_collection(cid), timeout=10).raise_for_status()
        items = {i: make_item(i, collection=cid) for i in ITEMS}
        requests.post(f"{server.url}/collections/{cid}/bulk_items", json={"items": items, "method": "insert"},
                      timeout=30).raise_for_status()
        assert search_ids(server.url) == ITEMS
        yield server
    finally:
        server.drop()
        _drop(postgres_dsn, *_databases(postgres_dsn, server.dbname + "%"))


def settings_for(catalog: StacApiServer, backup_dir: str | Path, **kw) -> Settings:
    return Settings(catalog_dsn=catalog.dsn, backup_dir=str(backup_dir), **kw)


def test_backup_restore_swap_serves_the_backed_up_items(catalog, postgres_dsn, tmp_path):
    live = catalog.dbname
    with psycopg.connect(catalog.dsn, autocommit=True) as conn:
        # a database-level setting, which a restore into another name loses unless re-applied
        conn.execute(f'ALTER DATABASE "{live}" SET stacdrop.backup_test TO \'kept\'')
    settings = settings_for(catalog, tmp_path)
    served = search_features(catalog.url)
    result = backup(settings.backup, settings.s3, now=T0)
    assert result.archive.name == f"{live}-20261127T031500Z.dump"
    assert Path(result.archive.location).stat().st_size == result.archive.size > 10_000
    assert result.pruned == []

    # the catalog moves on after the backup: one item deleted, one added
    cid = "backup-col"
    requests.delete(f"{catalog.url}/collections/{cid}/items/tile-0", timeout=10).raise_for_status()
    requests.post(f"{catalog.url}/collections/{cid}/items", json=make_item("late", collection=cid),
                  timeout=10).raise_for_status()
    assert search_ids(catalog.url) == sorted([*ITEMS[1:], "late"])

    lines: list[str] = []
    restored = restore(settings.backup, settings.s3, result.archive.location, now=T0 + timedelta(hours=1),
                       echo=lines.append)
    assert restored.database == live
    assert restored.old_database == f"{live}_old_20261127t041500z"
    assert (restored.check.collections, restored.check.items) == (1, len(ITEMS))
    assert restored.check.pgstac_version.startswith("0.")
    assert any("1 collections, 5 items" in line for line in lines)
    assert _databases(postgres_dsn, f"{live}_restore_%") == []

    # The same API process serves the restored catalog, no restart: the swap terminated its pooled sessions
    # and asyncpg's pool reconnects (by name, now the restored database) on the next acquire.
    assert catalog.proc is not None and catalog.proc.poll() is None and catalog.starts == 1
    assert search_ids(catalog.url) == ITEMS
    assert search_features(catalog.url) == served  # the same documents, not only the same ids
    item = requests.get(f"{catalog.url}/collections/{cid}/items/tile-0", timeout=10)
    assert item.status_code == 200 and item.json()["id"] == "tile-0"
    # transactions still work on the restored catalog (roles, search_path, triggers came back)
    requests.post(f"{catalog.url}/collections/{cid}/items", json=make_item("after", collection=cid),
                  timeout=10).raise_for_status()
    assert "after" in search_ids(catalog.url)

    with psycopg.connect(catalog.dsn) as conn:
        assert conn.execute("SELECT current_setting('stacdrop.backup_test')").fetchone()[0] == "kept"
    # the previous catalog is kept, as it was at the swap, until told to drop it
    old_dsn = catalog.dsn.rsplit("/", 1)[0] + "/" + restored.old_database
    with psycopg.connect(old_dsn) as conn:
        assert conn.execute("SELECT count(*) FROM pgstac.items WHERE id = 'late'").fetchone()[0] == 1
    assert kept_databases(settings.backup) == [restored.old_database]
    with pytest.raises(BackupError, match="not a database kept by a restore"):
        drop_old(settings.backup, live)  # never the live one, nor any other
    drop_old(settings.backup, restored.old_database)
    assert kept_databases(settings.backup) == []
    assert search_ids(catalog.url) == sorted([*ITEMS, "after"])


def test_failed_restores_leave_the_live_catalog_serving(catalog, postgres_dsn, tmp_path):
    live = catalog.dbname
    settings = settings_for(catalog, tmp_path)
    before = search_ids(catalog.url)
    good = Path(backup(settings.backup, settings.s3, now=T0 + timedelta(days=1)).archive.location)

    truncated = tmp_path / "truncated.dump"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(BackupError, match=r"truncated\.dump.*(truncated or corrupt|unexpected end|could not read)"):
        restore(settings.backup, settings.s3, str(truncated), now=T0 + timedelta(days=1, hours=1))

    garbage = tmp_path / "notes.dump"
    garbage.write_text("not an archive\n")
    with pytest.raises(BackupError, match=r"notes\.dump: not a readable pg_dump custom-format archive"):
        restore(settings.backup, settings.s3, str(garbage))

    # an archive of a database without pgstac restores fine but fails the check
    plain = f"{live}_plain"
    _drop(postgres_dsn, plain)
    with psycopg.connect(postgres_dsn, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{plain}"')
    try:
        plain_settings = Settings(catalog_dsn=catalog.dsn.rsplit("/", 1)[0] + "/" + plain, backup_dir=str(tmp_path))
        plain_archive = backup(plain_settings.backup, plain_settings.s3, now=T0).archive
    finally:
        _drop(postgres_dsn, plain)
    with pytest.raises(BackupError, match=r"check of restored database .*_restore_.* failed: .*get_version"):
        restore(settings.backup, settings.s3, plain_archive.location)

    with pytest.raises(BackupError, match="no-such-20260101T000000Z.dump: not found in backup_dir"):
        restore(settings.backup, settings.s3, "no-such-20260101T000000Z.dump")

    assert _databases(postgres_dsn, f"{live}_restore_%") == []  # no half-restored database left
    assert kept_databases(settings.backup) == []  # and no swap happened
    assert search_ids(catalog.url) == before  # the live catalog kept serving, same API process
    with psycopg.connect(postgres_dsn) as conn:
        assert conn.execute("SELECT datallowconn FROM pg_database WHERE datname = %s", (live,)).fetchone()[0]


def test_retention_keeps_exactly_n_and_never_touches_other_files(catalog, tmp_path):
    live = catalog.dbname
    foreign = {
        "notes.txt": b"keep me",
        f"{live}-latest.dump": b"not our pattern",
        f"{live}-20200101T000000Z.dump.bak": b"not our pattern either",
        "other_db-20200101T000000Z.dump": b"another database's archive",
    }
    for name, data in foreign.items():
        (tmp_path / name).write_bytes(data)
    (tmp_path / "sub").mkdir()
    settings = settings_for(catalog, tmp_path, backup_keep=3)
    made = [backup(settings.backup, settings.s3, now=T0 + timedelta(minutes=i)).archive.name for i in range(5)]
    assert len(set(made)) == 5
    ours = [a.name for a in list_archives(settings.backup, settings.s3, database=live)]
    assert ours == made[-3:]  # the three newest, oldest first
    assert {p.name for p in tmp_path.iterdir()} == {*foreign, "sub", *made[-3:]}
    for name, data in foreign.items():
        assert (tmp_path / name).read_bytes() == data
    # --keep overrides the setting; the other database's archive still stays
    result = backup(settings.backup, settings.s3, keep=1, now=T0 + timedelta(minutes=10))
    assert sorted(result.pruned) == made[-3:]
    assert [a.name for a in list_archives(settings.backup, settings.s3)] == ["other_db-20200101T000000Z.dump",
                                                                          result.archive.name]
    assert not any(p.name.endswith(".partial") for p in tmp_path.iterdir())


def test_s3_destination_backup_list_restore(catalog, postgres_dsn, moto_url, monkeypatch):
    import boto3

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    bucket = f"backups-{uuid.uuid4().hex[:8]}"
    s3 = boto3.client("s3", endpoint_url=moto_url)
    s3.create_bucket(Bucket=bucket)
    s3.put_object(Bucket=bucket, Key="catalog/README", Body=b"foreign object")
    s3.put_object(Bucket=bucket, Key="catalog/deeper/x-20200101T000000Z.dump", Body=b"under another prefix")
    dest = f"s3://{bucket}/catalog/"
    settings = settings_for(catalog, dest, backup_keep=2, aws_endpoint_url=moto_url)
    expected = len(search_ids(catalog.url))  # the module's other tests may have added items
    made = [backup(settings.backup, settings.s3, now=T0 + timedelta(days=2, minutes=i)) for i in range(3)]
    assert made[0].archive.location == f"s3://{bucket}/catalog/{made[0].archive.name}"
    assert made[2].pruned == [made[0].archive.name]
    listed = list_archives(settings.backup, settings.s3)
    assert [a.name for a in listed] == [m.archive.name for m in made[1:]]
    assert [a.size for a in listed] == [m.archive.size for m in made[1:]] and listed[0].size > 10_000
    assert listed[0].taken_at == T0 + timedelta(days=2, minutes=1)
    keys = {o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]}
    assert {"catalog/README", "catalog/deeper/x-20200101T000000Z.dump"} <= keys

    # restore from S3, by URL and by bare name in backup_dir, into another database name (no live one yet)
    target = f"{catalog.dbname}_s3"
    _drop(postgres_dsn, target)
    try:
        by_url = restore(settings.backup, settings.s3, listed[-1].location, database=target)
        assert by_url.old_database is None and (by_url.check.collections, by_url.check.items) == (1, expected)
        by_name = restore(settings.backup, settings.s3, listed[0].name, database=target, now=T0)
        assert by_name.old_database == f"{target}_old_20261127t031500z"
        assert by_name.check.items == expected
    finally:
        _drop(postgres_dsn, *_databases(postgres_dsn, target + "%"))


def test_cli_backup_list_and_a_clear_failure(catalog, tmp_path):
    env_base = {"PATH": str(Path(sys.executable).parent) + ":/usr/bin:/bin", "HOME": str(tmp_path)}
    stacdrop = str(Path(sys.executable).parent / "stacdrop")
    env = {**env_base, "STACDROP_CATALOG_DSN": catalog.dsn, "STACDROP_BACKUP_DIR": str(tmp_path / "b")}
    out = subprocess.run([stacdrop, "backup", "--keep", "5"], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith(f"wrote {tmp_path / 'b' / catalog.dbname}-")
    out = subprocess.run([stacdrop, "backup", "list"], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    header, row = out.stdout.splitlines()
    assert header.split() == ["NAME", "SIZE", "DATE"]
    (archive,) = list_archives(settings_for(catalog, tmp_path / "b").backup, Settings().s3)
    assert row.split()[0] == archive.name
    assert " KiB " in row or " MiB " in row
    assert archive.taken_at.strftime("%Y-%m-%d %H:%M:%S UTC") in row

    # a database that does not exist: non-zero exit, the database and the reason named, no password shown
    bad = {**env, "STACDROP_CATALOG_DSN": catalog.dsn.replace("postgres@", "postgres:hunter2@") + "_missing"}
    out = subprocess.run([stacdrop, "backup"], env=bad, capture_output=True, text=True, timeout=60)
    assert out.returncode != 0
    assert f"backup of database '{catalog.dbname}_missing'" in out.stderr and "does not exist" in out.stderr
    assert "hunter2" not in out.stderr + out.stdout
    kept = list_archives(settings_for(catalog, tmp_path / "b").backup, Settings().s3)
    assert [a.name for a in kept] == [archive.name]


def test_restore_stream_fixes_only_the_session_search_path():
    """Unit test of the stream filter: pg_dump's empty search_path becomes pgstac's, COPY data never changes."""
    import io

    from stacdrop.app.backup import copy_fixing_search_path

    empty = b"SELECT pg_catalog.set_config('search_path', '', false);\n"
    script = (empty + b"CREATE TABLE pgstac.t (v text);\n"
              + b"COPY pgstac.t (v) FROM stdin;\n" + empty + b"\\.\n" + empty)
    out = io.BytesIO()
    copy_fixing_search_path(io.BytesIO(script), out)
    fixed = b"SELECT pg_catalog.set_config('search_path', 'pgstac, public', false);\n"
    assert out.getvalue() == (fixed + b"CREATE TABLE pgstac.t (v text);\n"
                              + b"COPY pgstac.t (v) FROM stdin;\n" + empty + b"\\.\n" + fixed)
