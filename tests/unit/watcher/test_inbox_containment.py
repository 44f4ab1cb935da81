"""Inbox containment with real symlinks: files whose real path leads out of the inbox are refused, naming
the inbox file and never holding the target's content; sidecars are read up to max_sidecar_bytes; the
SQLite state files are private.

The end-to-end case runs ``stacdrop run`` (tests/support/daemon.py) on an inbox holding: a sidecar linked to a
credentials JSON outside, a sidecar linked to a fake shadow file, a raster linked from outside, a
collection subfolder linked to a folder outside, symlinks that stay inside (allowed: they name another
inbox file), and a 2 MB sidecar. The others drive the watcher and the processor directly, for what the
daemon cannot show deterministically (a folder swapped for a symlink between the scan and the read, a
message that names a file outside, a FIFO).
"""

from __future__ import annotations

import json
import os
import stat
import threading
from pathlib import Path

import pytest

from processor.stage import process_raster
from processor.store import LocalStore
from stacdrop.bus.base import DeadLetterFilter
from stacdrop.bus.sqlite import SqliteBus
from stacdrop.config import Settings
from stacdrop.errors import NotRegularFile, OutsideInbox
from stacdrop.ledger import Ledger
from stacdrop.messages import Envelope, IngestRequest, Refusal, Source
from stacdrop.app.components import processor_settings, watcher_settings
from tests.support.daemon import (
    DaemonProcess,
    base_env,
    bus_for,
    catalog_items,
    ledger_for,
    settled_jobs,
    wait_until,
    write_collection,
    write_sidecar,
)
from tests.support.rasters import write_geotiff
from tests.support.recording_intake import RecordingIntake
from watcher.inbox import LocalInbox

SECRET = "AKIAEXAMPLE-S3CRET-9f2c"
SHADOW = "root:$6$saltsalt$SHADOWHASHnotreal0123456789:19000:0:99999:7:::"
OUTSIDE_TITLE = "FROM-OUTSIDE-THE-INBOX"
PAD = "G" * 64


def write_outside(outside: Path) -> None:
    """What lives next to the inbox and must never be read through it."""
    outside.mkdir(parents=True, exist_ok=True)
    (outside / "credentials.json").write_text(json.dumps(
        {"id": "stolen", "aws_access_key_id": "AKIAEXAMPLE", "aws_secret_access_key": SECRET}))
    (outside / "shadow").write_text(SHADOW + "\ndaemon:*:19000:0:99999:7:::\n")
    write_geotiff(outside / "outside.tif", width=32, height=32)
    write_geotiff(outside / "dir" / "x.tif", width=32, height=32)
    write_sidecar(outside / "dir" / "x.tif", id="x", title=OUTSIDE_TITLE)


def everything_stored(root: Path, env: dict[str, str], daemon: DaemonProcess | None = None) -> str:
    """Every byte the deployment keeps about its jobs: the ledger (jobs, params, events), the dead letters,
    the catalog, the SQLite files themselves and the logs."""
    ledger = ledger_for(env)
    parts = []
    for job in ledger.list_jobs(limit=1000):
        full = ledger.get(job.id, with_events=True)
        parts.append(repr(full))
        parts.append(json.dumps(full.params))
    parts += [d.envelope.model_dump_json() + d.error for d in bus_for(env).dead_letters(DeadLetterFilter())]
    parts += [p.read_text(errors="replace") for p in (root / "data" / "stac").rglob("*.json")]
    parts += [p.read_bytes().decode("latin-1") for p in (root / "data").glob("*.db*") if p.is_file()]
    if daemon is not None:
        parts.append(daemon.logs())
    return "\n".join(parts)


def mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.mark.e2e
def test_files_from_outside_the_inbox_are_refused_end_to_end(tmp_path: Path) -> None:
    inbox, outside = tmp_path / "inbox", tmp_path / "outside"
    write_outside(outside)
    write_collection(inbox, "col")
    col = inbox / "col"
    # a sidecar linked to a credentials JSON outside; one linked to a shadow file (not JSON)
    write_geotiff(col / "creds.tif", width=32, height=32)
    (col / "creds.json").symlink_to(outside / "credentials.json")
    write_geotiff(col / "shadow.tif", width=32, height=32)
    (col / "shadow.json").symlink_to(outside / "shadow")
    # a raster linked from outside, with an honest sidecar
    (col / "linked.tif").symlink_to(outside / "outside.tif")
    write_sidecar(col / "linked.tif", id="linked", datetime="2020-01-01")
    # a collection subfolder linked to a folder outside
    (col / "sub").symlink_to(outside / "dir", target_is_directory=True)
    # symlinks that stay inside the inbox (relative and absolute): allowed, they name inbox files
    write_geotiff(col / "inner.tif", width=32, height=32)
    (inbox / ".shared").mkdir()
    write_sidecar(inbox / ".shared" / "inner.tif", id="inner", datetime="2020-01-01")
    (col / "inner.json").symlink_to(Path("..") / ".shared" / "inner.json")
    write_geotiff(inbox / ".shared" / "twin.tif", width=32, height=32)
    (col / "twin.tif").symlink_to(inbox / ".shared" / "twin.tif")
    write_sidecar(col / "twin.tif", id="twin", datetime="2020-01-01")
    # a 2 MB sidecar (valid JSON): refused unread past the limit
    write_geotiff(col / "big.tif", width=32, height=32)
    (col / "big.json").write_text(json.dumps({"id": "big", "title": PAD * ((2 << 20) // len(PAD))}))

    env = base_env(tmp_path)
    old_umask = os.umask(0o022)  # the usual umask, under which files are created 0644
    try:
        daemon = DaemonProcess(tmp_path, env).start()
    finally:
        os.umask(old_umask)
    try:
        ledger = ledger_for(env)
        jobs = wait_until(lambda: settled_jobs(ledger, 7), 90, "7 jobs settled", daemon)
        data = tmp_path / "data"
        # D. the SQLite files and the lock folder, while the daemon holds them open (-wal, -shm exist)
        for name in ("ledger.db", "ledger.db-wal", "ledger.db-shm", "queue.db", "queue.db-wal", "queue.db-shm"):
            assert mode(data / name) == 0o600, (name, oct(mode(data / name)))
        locks = data / "ledger.db.locks"
        assert mode(locks) == 0o700 and [mode(p) for p in locks.iterdir()] and all(
            mode(p) == 0o600 for p in locks.iterdir())
    finally:
        daemon.stop()

    by_key = {j.source_key: j for j in jobs}
    assert by_key["col/creds.tif"].state == "failed" and by_key["col/creds.tif"].error_class == "outside_inbox"
    assert by_key["col/creds.tif"].error.startswith("col/creds.json: refused: its real path is outside the inbox")
    assert by_key["col/shadow.tif"].error_class == "outside_inbox"
    assert by_key["col/shadow.tif"].error.startswith("col/shadow.json: refused")
    assert by_key["col/linked.tif"].error_class == "outside_inbox"
    assert by_key["col/linked.tif"].error.startswith("col/linked.tif: refused")
    big = by_key["col/big.tif"]
    assert big.error_class == "invalid_sidecar" and "max_sidecar_bytes (1048576)" in big.error
    for job in (by_key[k] for k in ("col/creds.tif", "col/shadow.tif", "col/linked.tif", "col/big.tif")):
        assert job.attempts == 1 and "\n" not in job.error and str(outside) not in job.error, job
    for key in ("col/creds.tif", "col/shadow.tif", "col/big.tif"):
        assert by_key[key].params["request"]["sidecar_text"] is None
    assert by_key["col/big.tif"].params["request"]["sidecar_size"] > 2 << 20
    # nothing from the linked folder; the scan names the folder it refused
    assert not [k for k in by_key if k.startswith("col/sub")]
    assert '"file": "col/sub"' in daemon.logs() and "inbox folder refused" in daemon.logs()
    # symlinks inside the inbox are fine
    assert by_key["col/inner.tif"].state == "published" and by_key["col/twin.tif"].state == "published"
    items = catalog_items(tmp_path / "data" / "stac")
    assert set(items) == {"col/inner", "col/twin"}
    # the refused files' content is nowhere: ledger, dead letters, catalog, database files, logs
    stored = everything_stored(tmp_path, env, daemon)
    for marker in (SECRET, "AKIAEXAMPLE", "SHADOWHASH", "daemon:*", OUTSIDE_TITLE, PAD * 4):
        assert marker not in stored, marker
    dead = {d.envelope.job_id: d for d in bus_for(env).dead_letters(DeadLetterFilter())}
    assert dead[by_key["col/creds.tif"].id].error_class == "outside_inbox"
    assert dead[by_key["col/creds.tif"].id].attempts == 1


def test_folder_swapped_for_a_symlink_before_the_read_is_refused_unread(tmp_path: Path) -> None:
    """The watcher found col/sub/x.tif in a real folder; the folder became a symlink to the outside before
    the worker read it. Nothing is read or hashed: the job carries only the refusals."""
    inbox, outside = tmp_path / "inbox", tmp_path / "outside"
    write_outside(outside)
    (inbox / "col").mkdir(parents=True)
    (inbox / "col" / "sub").symlink_to(outside / "dir", target_is_directory=True)
    intake = RecordingIntake()
    watcher = LocalInbox(inbox, watcher_settings(Settings(inbox=str(inbox))), intake)
    watcher.files.submit_raster("col/sub/x.tif", "col/sub/x.json", 5)
    [job] = intake.rasters
    assert job["refused"] == Refusal(error_class="outside_inbox", error=str(_outside("col/sub/x.tif")))
    assert job["source"].content_key == "refused:outside_inbox"  # not the outside file's sha256
    assert job["sidecar_text"] is None and job["sidecar_error"] == str(_outside("col/sub/x.json"))
    assert OUTSIDE_TITLE not in repr(intake.rasters)


def _outside(name: str) -> OutsideInbox:
    return OutsideInbox(f"{name}: refused: its real path is outside the inbox (a symlink, or a symlinked "
                        "folder, leads out of it); put the file itself into the inbox")


def test_fifo_sidecar_does_not_hang_the_watcher(tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    write_geotiff(inbox / "col" / "f.tif", width=16, height=16)
    os.mkfifo(inbox / "col" / "f.json")
    intake = RecordingIntake()
    watcher = LocalInbox(inbox, watcher_settings(Settings(inbox=str(inbox))), intake)
    worker = threading.Thread(target=watcher.files.submit_raster, args=("col/f.tif", "col/f.json", 5), daemon=True)
    worker.start()
    worker.join(5)
    assert not worker.is_alive(), "the watcher blocked reading a FIFO"
    [job] = intake.rasters
    assert job["sidecar_error"] == "col/f.json: refused: not a regular file (a FIFO, a device or a folder)"


def _request(path: Path, key: str, **fields: object) -> IngestRequest:
    return IngestRequest(source=Source(url=str(path), key=key, content_key="x"), collection="col",
                         sidecar_text=json.dumps({"id": "x", "datetime": "2020-01-01"}),
                         sidecar_name=key[:-4] + ".json", **fields)


def test_processor_refuses_local_files_outside_the_inbox(tmp_path: Path) -> None:
    """Defense in depth: whatever the message says, the processor reads local files only inside the inbox."""
    inbox, outside = tmp_path / "inbox", tmp_path / "outside"
    write_outside(outside)
    (inbox / "col").mkdir(parents=True)
    (inbox / "col" / "sub").symlink_to(outside / "dir", target_is_directory=True)
    (inbox / "col" / "linked.tif").symlink_to(outside / "outside.tif")
    write_geotiff(inbox / "col" / "ok.tif", width=16, height=16)
    (inbox / "col" / "inside-link.tif").symlink_to(inbox / "col" / "ok.tif")
    settings = Settings(inbox=str(inbox), store=str(tmp_path / "store"))
    store = LocalStore(tmp_path / "store")
    cases = {
        "col/sub/x.tif": inbox / "col" / "sub" / "x.tif",  # through a symlinked folder
        "col/linked.tif": inbox / "col" / "linked.tif",  # a symlinked raster
        "col/forged.tif": outside / "outside.tif",  # a message naming an outside path outright
    }
    for key, path in cases.items():
        with pytest.raises(OutsideInbox) as err:
            process_raster(_request(path, key), processor_settings(settings), store, workdir=tmp_path / "work")
        assert str(err.value) == str(_outside(key))
    assert not list((tmp_path / "store").rglob("*.tif"))
    ready = process_raster(_request(inbox / "col" / "inside-link.tif", "col/inside-link.tif"),
                           processor_settings(settings), store, workdir=tmp_path / "work")
    assert ready.cog.key == "col/inside-link.tif"
    # a refusal the watcher recorded fails the job at once, with its class, reading nothing
    with pytest.raises(NotRegularFile, match="col/f.json: refused"):
        process_raster(_request(inbox / "col" / "ok.tif", "col/ok.tif", refused=Refusal(
            error_class="not_regular_file", error="col/f.json: refused: not a regular file")),
            processor_settings(settings), store, workdir=tmp_path / "work")


def test_state_files_are_created_private_whatever_the_umask(tmp_path: Path) -> None:
    old_umask = os.umask(0)  # the most permissive umask: every mode bit the code asks for is kept
    try:
        ledger = Ledger(f"sqlite:///{tmp_path / 'state' / 'ledger.db'}")
        with ledger.lock("publish"):
            pass
        bus = SqliteBus(f"sqlite:///{tmp_path / 'state' / 'queue.db'}")
        request = _request(tmp_path / "a.tif", "c/a.tif")
        bus.publish("process", Envelope.wrap("job1", request))
    finally:
        os.umask(old_umask)
    state = tmp_path / "state"
    modes = {p.name: oct(mode(p)) for p in state.rglob("*")}
    assert {"ledger.db", "ledger.db-wal", "ledger.db-shm", "queue.db", "queue.db-wal", "queue.db-shm",
            "ledger.db.locks"} <= set(modes), modes
    assert modes.pop("ledger.db.locks") == "0o700"
    assert set(modes.values()) == {"0o600"}, modes
    bus.close()
