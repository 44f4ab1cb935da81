"""Catalog backups: ``pg_dump`` archives of the pgstac database in a directory or S3, and a safe restore.

``backup()`` writes ``<database>-<YYYYmmddTHHMMSSZ>.dump`` (custom format, compressed) atomically: a local
archive is dumped under a hidden temporary name and renamed, an S3 archive is dumped locally and uploaded (an
S3 object is visible only once complete). It then keeps the newest ``keep`` archives of that database and
deletes the older ones; nothing else in the destination is ever touched (only names matching the pattern).

``restore()`` never writes into the live database. It loads the archive into a new database
``<live>_restore_<ts>``, re-applies the database-level settings the archive carries (``ALTER DATABASE ... SET``,
which a plain restore into another name drops), checks it (``pgstac.get_version()``, collection and item
counts, one ``pgstac.search``), and only then swaps: connections to the live database are refused and
terminated, and in one transaction ``live`` becomes ``<live>_old_<ts>`` and the restored database becomes
``live``. The old database is kept until ``drop_old()``. Any failure before the swap drops the new database
and leaves the live one as it was.

Why the restore goes through plain SQL (``pg_restore -f -`` piped into ``psql``) instead of
``pg_restore -d``: pg_dump runs every statement with ``search_path = ''``, and some pgstac SQL functions call
PostGIS without a schema (``collection_geom`` -> ``st_makeenvelope``), so re-creating ``pgstac.collections``
(a generated column over that function) fails (pgstac issue #64). The stream is restored with
``search_path = pgstac, public`` instead; every name pg_dump writes is schema-qualified, so nothing else changes.

Roles: the pgstac roles (pgstac_admin, pgstac_read, pgstac_ingest and their search_path) are created the way
``pypgstac migrate`` does when missing, so an archive restores on a fresh server too; no ``pg_dumpall
--globals-only`` is taken (other roles named in the archive must exist, and the restore says which is missing).
The password of the DSN goes to the PostgreSQL tools through ``PGPASSWORD``, never on a command line or in a
message.
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from stacdrop.config import BackupSettings, S3Settings
from stacdrop.errors import ErrorClass, StacdropError

ARCHIVE_RE = re.compile(r"^(?P<database>[A-Za-z0-9_.-]+)-(?P<stamp>\d{8}T\d{6}Z)\.dump$")
STAMP_FORMAT = "%Y%m%dT%H%M%SZ"
PGSTAC_ROLES = ("pgstac_admin", "pgstac_read", "pgstac_ingest")
MAINTENANCE_DB = "postgres"
# pg_dump/pg_restore's session start; replaced in the restore stream (see the module docstring)
_EMPTY_SEARCH_PATH = b"SELECT pg_catalog.set_config('search_path', '', false);"
_PGSTAC_SEARCH_PATH = b"SELECT pg_catalog.set_config('search_path', 'pgstac, public', false);"


class BackupError(StacdropError):
    """A backup, restore or retention step failed; the message names the database or archive and the reason."""

    error_class = ErrorClass.BACKUP


@dataclass(frozen=True)
class Archive:
    name: str
    location: str  # local path or s3:// URL
    size: int
    taken_at: datetime  # from the name: when the dump started (UTC)

    @property
    def database(self) -> str:
        match = ARCHIVE_RE.match(self.name)
        assert match is not None
        return match["database"]


@dataclass(frozen=True)
class BackupResult:
    archive: Archive
    pruned: list[str]
    seconds: float


@dataclass(frozen=True)
class CatalogCheck:
    pgstac_version: str
    collections: int
    items: int


@dataclass(frozen=True)
class RestoreResult:
    database: str  # the live name, now the restored catalog
    old_database: str | None  # the previous live database, kept; None when there was none
    check: CatalogCheck
    seconds: float


# -- connection settings --------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Target:
    """The catalog DSN split into what the tools need: a conninfo without password, and the password."""

    params: dict[str, str]
    password: str | None

    @property
    def database(self) -> str:
        return self.params.get("dbname", "")

    @property
    def where(self) -> str:
        return f"{self.params.get('host', 'localhost')}:{self.params.get('port', '5432')}"

    def conninfo(self, database: str | None = None) -> str:
        from psycopg.conninfo import make_conninfo  # noqa: PLC0415

        return make_conninfo(**{**self.params, "dbname": database or self.database})

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        if self.password is not None:
            env["PGPASSWORD"] = self.password
        return env

    def connect(self, database: str | None = None, **kwargs: Any) -> Any:
        import psycopg  # noqa: PLC0415

        return psycopg.connect(self.conninfo(database), password=self.password, connect_timeout=10, **kwargs)


def _target(settings: BackupSettings, database: str | None = None) -> _Target:
    from psycopg.conninfo import conninfo_to_dict  # noqa: PLC0415

    if settings.catalog_dsn is None:
        raise BackupError("catalog_dsn is not set (STACDROP_CATALOG_DSN): the pgstac database to back up or restore")
    dsn = settings.catalog_dsn.get_secret_value()
    # SQLAlchemy spelling (postgresql+psycopg://) is accepted: the ledger setting uses it
    dsn = re.sub(r"^postgres(?:ql)?\+\w+://", "postgresql://", dsn)
    try:
        params = {k: str(v) for k, v in conninfo_to_dict(dsn).items() if v is not None}
    except Exception as exc:  # noqa: BLE001 - psycopg's message names the bad part, never the password
        raise BackupError(f"catalog_dsn is not a valid PostgreSQL URL: {exc}") from None
    password = params.pop("password", None)
    if database:
        params["dbname"] = database
    if not params.get("dbname"):
        raise BackupError("catalog_dsn names no database: add /<database> to the URL")
    return _Target(params, password)


def _run(cmd: list[str], target: _Target, what: str, **kwargs: Any) -> subprocess.CompletedProcess[bytes]:
    try:
        out = subprocess.run(cmd, env=target.env(), capture_output=True, check=False, **kwargs)  # noqa: S603
    except FileNotFoundError:
        raise BackupError(
            f"{what}: {cmd[0]} not found (install the PostgreSQL client, e.g. postgresql-client)"
        ) from None
    if out.returncode != 0:
        raise BackupError(f"{what}: {_tail(out.stderr)}")
    return out


def _tail(stderr: bytes, limit: int = 1500) -> str:
    text = stderr.decode("utf-8", "replace").strip() or "no error output"
    return text if len(text) <= limit else "..." + text[-limit:]


def _oneline(exc: BaseException) -> str:
    """A server error on one line (psycopg adds the query line and a caret on others)."""
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def _stamp(now: datetime | None) -> str:
    return (now or datetime.now(UTC)).astimezone(UTC).strftime(STAMP_FORMAT)


def _taken_at(name: str) -> datetime:
    match = ARCHIVE_RE.match(name)
    assert match is not None
    return datetime.strptime(match["stamp"], STAMP_FORMAT).replace(tzinfo=UTC)


# -- destinations: a directory or s3://bucket/prefix --------------------------------------------------------
def _is_s3(dest: str) -> bool:
    return dest.startswith("s3://")


def _s3_parts(s3: S3Settings, dest: str) -> tuple[Any, str, str]:
    from stacdrop.s3 import parse_s3_url, s3_client  # noqa: PLC0415

    bucket, prefix = parse_s3_url(dest)
    prefix = prefix.strip("/")
    return s3_client(s3), bucket, (prefix + "/" if prefix else "")


def list_archives(settings: BackupSettings, s3: S3Settings, dest: str | None = None,
                  database: str | None = None) -> list[Archive]:
    """Archives in the destination (default ``settings.dir``), oldest first; only names matching
    ``<database>-<YYYYmmddTHHMMSSZ>.dump`` (of ``database`` when given)."""
    dest = dest or settings.dir
    found: list[Archive] = []
    if _is_s3(dest):
        client, bucket, prefix = _s3_parts(s3, dest)
        try:
            pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix, Delimiter="/")
            for page in pages:
                for obj in page.get("Contents", []):
                    name = obj["Key"][len(prefix):]
                    if ARCHIVE_RE.match(name):
                        found.append(Archive(name, f"s3://{bucket}/{obj['Key']}", obj["Size"], _taken_at(name)))
        except Exception as exc:  # noqa: BLE001 - botocore errors carry no secrets
            raise BackupError(f"cannot list backups in {dest}: {exc}") from None
    else:
        directory = Path(dest)
        if not directory.exists():
            return []
        if not directory.is_dir():
            raise BackupError(f"backup_dir {dest} is not a directory")
        for path in directory.iterdir():
            if ARCHIVE_RE.match(path.name) and path.is_file():
                found.append(Archive(path.name, str(path), path.stat().st_size, _taken_at(path.name)))
    if database:
        found = [a for a in found if a.database == database]
    return sorted(found, key=lambda a: (a.taken_at, a.name))


def _delete(s3: S3Settings, archive: Archive) -> None:
    if _is_s3(archive.location):
        from stacdrop.s3 import parse_s3_url, s3_client  # noqa: PLC0415

        bucket, key = parse_s3_url(archive.location)
        s3_client(s3).delete_object(Bucket=bucket, Key=key)
    else:
        Path(archive.location).unlink(missing_ok=True)


def prune(settings: BackupSettings, s3: S3Settings, database: str, keep: int, dest: str | None = None) -> list[str]:
    """Delete all but the newest ``keep`` archives of ``database``; returns the deleted names."""
    if keep < 1:
        raise BackupError(f"keep must be at least 1 (got {keep})")
    archives = list_archives(settings, s3, dest, database=database)
    doomed = archives[:-keep] if len(archives) > keep else []
    for archive in doomed:
        try:
            _delete(s3, archive)
        except Exception as exc:  # noqa: BLE001
            raise BackupError(f"cannot delete old backup {archive.location}: {exc}") from None
    return [a.name for a in doomed]


# -- backup ---------------------------------------------------------------------------------------------
def backup(settings: BackupSettings, s3: S3Settings, dest: str | None = None, keep: int | None = None,
           now: datetime | None = None) -> BackupResult:
    """Dump the catalog database into ``dest`` (default ``settings.dir``), then keep the newest
    ``keep`` (default ``settings.keep``) archives of it. ``now`` names the archive (tests)."""
    started = time.monotonic()
    target = _target(settings)
    dest = dest or settings.dir
    keep = settings.keep if keep is None else keep
    if keep < 1:
        raise BackupError(f"keep must be at least 1 (got {keep})")
    name = f"{target.database}-{_stamp(now)}.dump"
    if not ARCHIVE_RE.match(name):
        raise BackupError(f"database name {target.database!r} cannot name an archive (letters, digits, _ . - only)")
    what = f"backup of database {target.database!r} on {target.where}"
    if _is_s3(dest):
        client, bucket, prefix = _s3_parts(s3, dest)
        with tempfile.TemporaryDirectory(prefix="stacdrop-backup-") as tmp:
            local = Path(tmp) / name
            _pg_dump(target, local, what)
            size = local.stat().st_size
            try:
                # an S3 object appears only once its upload completes: readers never see half an archive
                client.upload_file(str(local), bucket, prefix + name)
            except Exception as exc:  # noqa: BLE001
                raise BackupError(f"{what}: upload to {dest} failed: {exc}") from None
        archive = Archive(name, f"s3://{bucket}/{prefix}{name}", size, _taken_at(name))
    else:
        directory = Path(dest)
        try:
            directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise BackupError(f"{what}: cannot create backup_dir {dest}: {exc.strerror}") from None
        final = directory / name
        if final.exists():
            raise BackupError(f"{what}: {final} already exists (two backups in the same second)")
        # hidden temporary name: never matches ARCHIVE_RE, so a crash leaves nothing that looks like a backup
        partial = directory / f".{name}.{os.getpid()}.partial"
        try:
            _pg_dump(target, partial, what)
            with open(partial, "rb") as fh:
                os.fsync(fh.fileno())
            os.replace(partial, final)
        finally:
            partial.unlink(missing_ok=True)
        archive = Archive(name, str(final), final.stat().st_size, _taken_at(name))
    pruned = prune(settings, s3, target.database, keep, dest)
    return BackupResult(archive, pruned, time.monotonic() - started)


def _pg_dump(target: _Target, path: Path, what: str) -> None:
    _run(["pg_dump", "--format=custom", "--no-password", f"--file={path}", f"--dbname={target.conninfo()}"],
         target, what)


# -- restore --------------------------------------------------------------------------------------------
@contextlib.contextmanager
def _local_archive(settings: BackupSettings, s3: S3Settings, archive: str) -> Iterator[Path]:
    """The archive as a local file: a path, an s3:// URL (downloaded), or a bare name in backup_dir."""
    if not _is_s3(archive) and Path(archive).is_file():
        yield Path(archive)
        return
    if not _is_s3(archive):
        if "/" in archive or not ARCHIVE_RE.match(archive):
            raise BackupError(f"archive {archive}: no such file")
        base = settings.dir
        if not _is_s3(base):
            path = Path(base) / archive
            if not path.is_file():
                raise BackupError(f"archive {archive}: not found in backup_dir {base}")
            yield path
            return
        archive = base.rstrip("/") + "/" + archive
    from stacdrop.s3 import parse_s3_url, s3_client  # noqa: PLC0415

    bucket, key = parse_s3_url(archive)
    with tempfile.TemporaryDirectory(prefix="stacdrop-restore-") as tmp:
        local = Path(tmp) / (key.rsplit("/", 1)[-1] or "archive.dump")
        try:
            s3_client(s3).download_file(bucket, key, str(local))
        except Exception as exc:  # noqa: BLE001
            raise BackupError(f"archive {archive}: download failed: {exc}") from None
        yield local


def _database_header(archive: Path, target: _Target) -> tuple[str, list[str]]:
    """From the archive: the ``WITH ...`` options of its CREATE DATABASE (encoding, locale) and its
    database-level ``SET`` clauses (``ALTER DATABASE x SET ...``), which pg_restore emits only with --create."""
    with tempfile.NamedTemporaryFile("w", suffix=".list") as empty:
        # an empty TOC list: only the DATABASE and DATABASE PROPERTIES entries are written
        out = _run(["pg_restore", "--create", f"--use-list={empty.name}", "--file=-", str(archive)], target,
                   f"archive {archive.name}: not a readable pg_dump custom-format archive")
    options, settings = "", []
    for line in out.stdout.decode("utf-8", "replace").splitlines():
        if m := re.match(r'^CREATE DATABASE (?:"(?:[^"]|"")+"|\S+) (WITH .*);$', line):
            options = m[1]
        elif m := re.match(r'^ALTER DATABASE (?:"(?:[^"]|"")+"|\S+) (SET .*;)$', line):
            settings.append(m[1])
    return options, settings


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _ensure_pgstac_roles(target: _Target) -> None:
    """Create the pgstac roles as ``pypgstac migrate`` does, when this server lacks them (a fresh server)."""
    with target.connect(MAINTENANCE_DB, autocommit=True) as conn:
        for role in PGSTAC_ROLES:
            if conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone() is None:
                conn.execute(f"CREATE ROLE {role}")
                conn.execute(f"ALTER ROLE {role} SET search_path TO pgstac, public")


def _restore_stream(archive: Path, target: _Target, database: str) -> None:
    """``pg_restore -f - | psql`` with the search_path fix (module docstring), one transaction, stop on error."""
    what = f"restore of {archive.name} into database {database!r}"
    env = target.env()
    try:
        # The PostgreSQL client tools from PATH (S607), with fixed arguments (S603).
        dump = subprocess.Popen(["pg_restore", "--file=-", str(archive)], stdout=subprocess.PIPE,  # noqa: S603, S607
                                stderr=subprocess.PIPE, env=env)
        load = subprocess.Popen(  # noqa: S603
            [  # noqa: S607
                "psql", "--no-psqlrc", "--quiet", "--no-password", "--single-transaction", "--set=ON_ERROR_STOP=1",
                f"--dbname={target.conninfo(database)}", "--output=/dev/null",
            ],
            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env,
        )
    except FileNotFoundError as exc:
        raise BackupError(f"{what}: {exc.filename} not found (install the PostgreSQL client)") from None
    assert dump.stdout is not None and load.stdin is not None and dump.stderr is not None and load.stderr is not None
    load_err = _drain(load.stderr)
    dump_err = _drain(dump.stderr)
    try:
        copy_fixing_search_path(dump.stdout, load.stdin)
    except BrokenPipeError:
        pass  # psql stopped at an error: its exit code and message say which
    finally:
        with contextlib.suppress(BrokenPipeError):
            load.stdin.close()
    dump.stdout.close()
    dump_rc, load_rc = dump.wait(), load.wait()
    # pg_restore's failure comes first: a truncated archive makes psql see a short but valid script
    if dump_rc != 0:
        raise BackupError(f"{what}: the archive is unreadable (truncated or corrupt?): {_tail(dump_err())}")
    if load_rc != 0:
        raise BackupError(f"{what}: {_tail(load_err())}")


def _drain(stream: IO[bytes]) -> Callable[[], bytes]:
    """Read a pipe in a thread (so neither process blocks on a full stderr); call the result for the bytes."""
    import threading  # noqa: PLC0415

    chunks: list[bytes] = []
    thread = threading.Thread(target=lambda: chunks.extend(iter(lambda: stream.read(65536), b"")), daemon=True)
    thread.start()

    def result() -> bytes:
        thread.join()
        return b"".join(chunks)

    return result


def copy_fixing_search_path(src: IO[bytes], dst: IO[bytes]) -> None:
    """Copy a pg_restore script from ``src`` to ``dst``, pg_dump's empty session search_path replaced by
    pgstac's (module docstring); lines inside COPY data are copied as they are."""
    in_copy = False
    for line in src:
        if in_copy:
            if line == b"\\.\n":
                in_copy = False
        elif line.startswith(b"COPY ") and line.rstrip().endswith(b"FROM stdin;"):
            in_copy = True
        elif line.rstrip(b"\n") == _EMPTY_SEARCH_PATH:
            line = _PGSTAC_SEARCH_PATH + b"\n"
        dst.write(line)


def check_catalog(target: _Target, database: str) -> CatalogCheck:
    """What the STAC API needs from the database: pgstac answers, with its collections and items."""
    step = "connect"
    try:
        with target.connect(database, autocommit=True) as conn:
            step = "SELECT pgstac.get_version()"
            version = conn.execute(step).fetchone()[0]
            step = "count collections"
            collections = conn.execute("SELECT count(*) FROM pgstac.collections").fetchone()[0]
            step = "count items"
            items = conn.execute("SELECT count(*) FROM pgstac.items").fetchone()[0]
            step = "pgstac.search"  # the way stac-fastapi-pgstac runs it (search_path pgstac, public)
            conn.execute("SET search_path TO pgstac, public")
            conn.execute("SELECT pgstac.search('{\"limit\": 1}'::jsonb)").fetchone()
    except Exception as exc:  # noqa: BLE001
        raise BackupError(f"check of restored database {database!r} failed: {step}: {_oneline(exc)}") from None
    if not version:
        raise BackupError(f"check of restored database {database!r} failed: pgstac.get_version() returned nothing")
    return CatalogCheck(str(version), int(collections), int(items))


def restore(settings: BackupSettings, s3: S3Settings, archive: str, database: str | None = None,
            now: datetime | None = None, echo: Callable[[str], None] = lambda _m: None) -> RestoreResult:
    """Restore ``archive`` (path, s3:// URL or bare name in backup_dir) in place of the live catalog database
    (``database``, default the catalog_dsn's). Needs a superuser DSN. See the module docstring for the steps."""
    started = time.monotonic()
    target = _target(settings, database)
    live = target.database
    stamp = _stamp(now)
    # lower case: an operator can type the names unquoted in psql
    new, old = f"{live}_restore_{stamp.lower()}", f"{live}_old_{stamp.lower()}"
    if len(old.encode()) > 63:
        raise BackupError(f"database name {live!r} is too long for {old!r} (PostgreSQL allows 63 bytes)")
    with _local_archive(settings, s3, archive) as path:
        options, db_settings = _database_header(path, target)
        try:
            with target.connect(MAINTENANCE_DB, autocommit=True) as conn:
                conn.execute(f"CREATE DATABASE {_ident(new)} {options}")
        except Exception as exc:  # noqa: BLE001
            raise BackupError(f"cannot create database {new!r} on {target.where}: {_oneline(exc)}") from None
        try:
            _ensure_pgstac_roles(target)
            echo(f"restoring {path.name} into new database {new}")
            _restore_stream(path, target, new)
            with target.connect(new, autocommit=True) as conn:
                for clause in db_settings:
                    conn.execute(f"ALTER DATABASE {_ident(new)} {clause}")
                conn.execute("ANALYZE")  # pg_restore brings no planner statistics; pgstac's searches need them
            check = check_catalog(target, new)
            echo(f"checked {new}: pgstac {check.pgstac_version}, {check.collections} collections, {check.items} items")
            swapped_old = _swap(target, live, new, old)
        except BaseException:
            _drop_quietly(target, new)
            raise
    return RestoreResult(live, swapped_old, check, time.monotonic() - started)


def _swap(target: _Target, live: str, new: str, old: str) -> str | None:
    """Put ``new`` in place of ``live`` (kept as ``old``). Returns ``old``, or None when there was no live one."""
    with target.connect(MAINTENANCE_DB, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (live,)).fetchone() is not None
        if not exists:
            conn.execute(f"ALTER DATABASE {_ident(new)} RENAME TO {_ident(live)}")
            return None
        # no new sessions (superusers included) while the old ones are ended: nothing can slip in between
        conn.execute(f"ALTER DATABASE {_ident(live)} WITH ALLOW_CONNECTIONS false")
        try:
            for attempt in range(50):
                conn.execute("SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity "
                             "WHERE datname IN (%s, %s) AND pid <> pg_backend_pid()", (live, new))
                try:
                    with conn.transaction():  # both renames or neither
                        conn.execute(f"ALTER DATABASE {_ident(live)} RENAME TO {_ident(old)}")
                        conn.execute(f"ALTER DATABASE {_ident(new)} RENAME TO {_ident(live)}")
                    break
                except Exception as exc:  # noqa: BLE001
                    # a terminated backend can take a moment to leave pg_stat_activity
                    if "being accessed by other users" not in str(exc) or attempt == 49:
                        raise BackupError(f"cannot swap {new!r} in place of {live!r}: {_oneline(exc)}") from None
                    time.sleep(0.1)
        except BaseException:
            conn.execute(f"ALTER DATABASE {_ident(live)} WITH ALLOW_CONNECTIONS true")
            raise
        conn.execute(f"ALTER DATABASE {_ident(old)} WITH ALLOW_CONNECTIONS true")
        return old


def _drop_quietly(target: _Target, database: str) -> None:
    with contextlib.suppress(Exception):
        with target.connect(MAINTENANCE_DB, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {_ident(database)} WITH (FORCE)")


def kept_databases(settings: BackupSettings, database: str | None = None) -> list[str]:
    """Previous live databases kept by restores (``<live>_old_<ts>``), oldest first."""
    target = _target(settings, database)
    pattern = re.compile(re.escape(target.database) + r"_old_\d{8}t\d{6}z$")
    with target.connect(MAINTENANCE_DB, autocommit=True) as conn:
        names = [r[0] for r in conn.execute("SELECT datname FROM pg_database ORDER BY datname")]
    return [n for n in names if pattern.match(n)]


def drop_old(settings: BackupSettings, name: str, database: str | None = None) -> None:
    """Drop a database a restore kept. Only names ``<live>_old_<ts>`` of this catalog are accepted."""
    kept = kept_databases(settings, database)
    if name not in kept:
        listed = ", ".join(kept) or "none"
        raise BackupError(f"{name!r} is not a database kept by a restore of this catalog (kept: {listed})")
    target = _target(settings, database)
    try:
        with target.connect(MAINTENANCE_DB, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE {_ident(name)} WITH (FORCE)")
    except Exception as exc:  # noqa: BLE001
        raise BackupError(f"cannot drop database {name!r}: {_oneline(exc)}") from None


def human_size(size: int) -> str:
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{size} B"


__all__ = ["Archive", "BackupError", "BackupResult", "CatalogCheck", "RestoreResult", "backup", "check_catalog",
           "drop_old", "human_size", "kept_databases", "list_archives", "prune", "restore"]
