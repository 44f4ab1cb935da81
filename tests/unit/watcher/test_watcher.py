"""Watcher: naming, pairing, and the local inbox on a real folder with real watchdog."""

from __future__ import annotations

import hashlib
import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from stacdrop.config import Settings
from stacdrop.app.components import watcher_settings
from stacdrop.messages import Priority
from stacdrop.sidecar import sidecar_document
from tests.support.recording_intake import RecordingIntake
from watcher.inbox import LocalInbox
from watcher.naming import classify, collection_of, is_ignored, stem
from watcher.pairing import EmitCollection, EmitRaster, Pairer

# ---------------------------------------------------------------------------- naming


@pytest.mark.parametrize(
    "rel",
    [".hidden.tif", "c/.partial.tif", ".git/x.tif", "c/.d/x.tif", "c/x.tif.part", "c/x.TMP", "c/~lock.tif",
     "~c/x.tif", ""],
)
def test_ignored(rel: str) -> None:
    assert is_ignored(rel)
    assert classify(rel) is None


@pytest.mark.parametrize(
    ("rel", "kind"),
    [
        ("c/a.tif", "raster"),
        ("c/sub/A.TIFF", "raster"),
        ("c/a b é.Tif", "raster"),
        ("c/a.json", "sidecar"),
        ("c/a.JSON", "sidecar"),
        ("c/collection.json", "collection"),
        ("c/Collection.JSON", "collection"),
        ("collection.json", "collection"),
        ("c/sub/collection.json", "sidecar"),
        ("c/readme.txt", None),
        ("c/a.tif.aux.xml", None),
    ],
)
def test_classify(rel: str, kind: str | None) -> None:
    assert classify(rel) == kind


def test_stem_and_collection() -> None:
    assert stem("c/sub/a b.tif") == "c/sub/a b"
    assert stem("c/sub/a b.json") == "c/sub/a b"
    assert stem("c/v1.2/a.x.TIFF") == "c/v1.2/a.x"
    assert collection_of("c/sub/a.tif") == "c"
    assert collection_of("été/a.tif") == "été"
    assert collection_of("a.tif") is None


# ---------------------------------------------------------------------------- pairing


def test_raster_then_sidecar() -> None:
    p = Pairer(sidecar_wait=10)
    p.file_ready("c/a.tif", 0)
    assert p.due(1) == []
    p.file_ready("c/a.json", 2)
    assert p.due(2) == [EmitRaster("c/a.tif", "c/a.json")]
    assert p.due(100) == []


def test_sidecar_then_raster_pairs_at_once() -> None:
    p = Pairer(sidecar_wait=10)
    p.file_ready("c/a.json", 0)
    assert p.due(50) == []  # a lone sidecar waits, without limit
    assert p.waiting_sidecars() == ["c/a.json"]
    p.file_ready("c/a.tif", 60)
    assert p.due(60) == [EmitRaster("c/a.tif", "c/a.json")]
    assert p.waiting_sidecars() == []


def test_sidecar_timeout_emits_alone_then_late_sidecar_reemits() -> None:
    p = Pairer(sidecar_wait=10)
    p.file_ready("c/a.tif", 0)
    assert p.next_deadline() == 10
    assert p.due(9.9) == []
    assert p.due(10) == [EmitRaster("c/a.tif", None)]
    assert p.next_deadline() is None
    p.file_ready("c/a.json", 20)
    assert p.due(20) == [EmitRaster("c/a.tif", "c/a.json")]


def test_changed_sidecar_reemits_pair() -> None:
    p = Pairer(sidecar_wait=10)
    p.file_ready("c/a.tif", 0)
    p.file_ready("c/a.json", 0)
    assert p.due(0) == [EmitRaster("c/a.tif", "c/a.json")]
    p.file_ready("c/a.json", 30)  # rewritten
    assert p.due(30) == [EmitRaster("c/a.tif", "c/a.json")]
    assert p.due(31) == []


def test_rewritten_raster_reemits() -> None:
    p = Pairer(sidecar_wait=10)
    p.file_ready("c/a.tif", 0)
    p.file_ready("c/a.json", 0)
    assert p.due(0) == [EmitRaster("c/a.tif", "c/a.json")]
    p.file_ready("c/a.tif", 5)
    assert p.due(5) == [EmitRaster("c/a.tif", "c/a.json")]


def test_deleted_raster_is_forgotten() -> None:
    p = Pairer(sidecar_wait=10)
    p.file_ready("c/a.tif", 0)
    p.file_gone("c/a.tif")
    assert p.due(100) == []
    p.file_ready("c/a.json", 101)  # the sidecar alone does not resurrect it
    assert p.due(200) == []


def test_deleted_sidecar_unpairs() -> None:
    p = Pairer(sidecar_wait=10)
    p.file_ready("c/a.json", 0)
    p.file_gone("c/a.json")
    p.file_ready("c/a.tif", 1)
    assert p.due(1) == []
    assert p.due(11) == [EmitRaster("c/a.tif", None)]


def test_moved_raster_pairs_under_new_name() -> None:
    p = Pairer(sidecar_wait=10)
    p.file_ready("c/b.json", 0)
    p.file_ready("c/a.tif", 0)
    p.file_gone("c/a.tif")  # renamed a.tif -> b.tif
    p.file_ready("c/b.tif", 1)
    assert p.due(1) == [EmitRaster("c/b.tif", "c/b.json")]
    assert p.due(50) == []


def test_collection_and_ignored() -> None:
    p = Pairer(sidecar_wait=0)
    p.file_ready("c/collection.json", 0)
    p.file_ready("c/x.tif.part", 0)
    p.file_ready("c/notes.txt", 0)
    assert p.due(0) == [EmitCollection("c/collection.json")]
    assert p.due(1) == []


def test_sidecar_document() -> None:
    assert sidecar_document(b'\xef\xbb\xbf{"id": "x"}', "c/a.json", None, "c", limit=None).text == '{"id": "x"}'
    assert sidecar_document('{"title": "été"}'.encode(), "c/a.json", None, "c", limit=None).text == '{"title": "été"}'
    latin1 = sidecar_document(b'{"title": "\xe9t\xe9"}', "c/a.json", None, "c", limit=None)  # the processor fails it
    assert latin1.text is None and latin1.error_class == "invalid_sidecar" and "not UTF-8" in latin1.error
    assert latin1.size == 16 and latin1.sha256 == hashlib.sha256(b'{"title": "\xe9t\xe9"}').hexdigest()


# ---------------------------------------------------------------------------- local inbox


def wait_for(cond: Callable[[], Any], timeout: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = cond()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"condition not met within {timeout}s")


SETTINGS = Settings(sidecar_wait=1.5, settle_time=0.4, rescan_interval=0)


@pytest.fixture
def inbox_dir(tmp_path: Path) -> Path:
    root = tmp_path / "inbox"
    root.mkdir()
    return root


class Running:
    def __init__(self, root: Path, intake: RecordingIntake, settings: Settings = SETTINGS) -> None:
        self.stop = threading.Event()
        self.inbox = LocalInbox(root, watcher_settings(settings), intake)
        self.errors: list[BaseException] = []
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        time.sleep(0.3)  # let the observer start

    def _run(self) -> None:
        try:
            self.inbox.run(self.stop)
        except BaseException as exc:  # noqa: BLE001  # pragma: no cover - reported by close()
            self.errors.append(exc)

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=30)
        assert not self.thread.is_alive()
        assert not self.errors


@pytest.fixture
def run_inbox() -> Iterator[Callable[..., Running]]:
    started: list[Running] = []

    def start(root: Path, intake: RecordingIntake, settings: Settings = SETTINGS) -> Running:
        running = Running(root, intake, settings)
        started.append(running)
        return running

    yield start
    for running in started:
        if not running.stop.is_set():
            running.close()


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_slow_chunked_write_emitted_once_complete(inbox_dir: Path, run_inbox: Callable[..., Running]) -> None:
    intake = RecordingIntake()
    run_inbox(inbox_dir, intake)
    (inbox_dir / "c").mkdir()
    (inbox_dir / "c" / "slow.json").write_text('{"id": "slow"}')
    chunk = os.urandom(64 * 1024)
    with open(inbox_dir / "c" / "slow.tif", "wb") as fh:
        for _ in range(6):
            fh.write(chunk)
            fh.flush()
            time.sleep(0.3)  # a slow upload
            assert intake.keys() == []  # nothing while the file is open and growing
    full = chunk * 6
    wait_for(lambda: intake.keys())
    time.sleep(1.0)
    assert len(intake.rasters) == 1
    job = intake.rasters[0]
    assert job["source"].size == len(full)
    assert job["source"].content_key == sha(full)
    assert job["source"].url == str(inbox_dir / "c" / "slow.tif")
    assert job["sidecar_text"] == '{"id": "slow"}' and job["sidecar_name"] == "c/slow.json"
    assert job["collection"] == "c" and job["origin"] == "inbox" and job["priority"] == Priority.LIVE


def test_part_file_renamed_is_picked_up(inbox_dir: Path, run_inbox: Callable[..., Running]) -> None:
    intake = RecordingIntake()
    run_inbox(inbox_dir, intake)
    (inbox_dir / "c").mkdir()
    data = os.urandom(10_000)
    (inbox_dir / "c" / "x.tif.part").write_bytes(data)
    (inbox_dir / "c" / "x.json").write_text("{}")
    time.sleep(1.0)
    assert intake.keys() == []
    os.rename(inbox_dir / "c" / "x.tif.part", inbox_dir / "c" / "x.tif")
    wait_for(lambda: intake.keys())
    time.sleep(0.5)
    assert intake.keys() == ["c/x.tif"]
    assert intake.rasters[0]["source"].content_key == sha(data)
    assert intake.rasters[0]["sidecar_name"] == "c/x.json"


def test_startup_scan_is_backfill(inbox_dir: Path, run_inbox: Callable[..., Running]) -> None:
    (inbox_dir / "c" / "sub").mkdir(parents=True)
    (inbox_dir / "c" / "a.tif").write_bytes(b"A" * 100)
    (inbox_dir / "c" / "a.json").write_text('{"id": "a"}')
    (inbox_dir / "c" / "sub" / "b.tif").write_bytes(b"B" * 100)  # no sidecar: emitted after the wait
    (inbox_dir / "c" / "collection.json").write_text('{"id": "c"}')
    (inbox_dir / "c" / ".hidden.tif").write_bytes(b"H")
    (inbox_dir / "root.tif").write_bytes(b"R")
    intake = RecordingIntake()
    run_inbox(inbox_dir, intake)
    wait_for(lambda: len(intake.rasters) >= 3)
    wait_for(lambda: intake.collections)
    time.sleep(0.5)
    by_key = {r["source"].key: r for r in intake.rasters}
    assert sorted(by_key) == ["c/a.tif", "c/sub/b.tif", "root.tif"]
    assert all(r["priority"] == Priority.BACKFILL for r in intake.rasters)
    assert by_key["c/a.tif"]["sidecar_text"] == '{"id": "a"}'
    assert by_key["c/sub/b.tif"]["sidecar_text"] is None and by_key["c/sub/b.tif"]["sidecar_name"] is None
    assert by_key["c/sub/b.tif"]["collection"] == "c"
    assert by_key["root.tif"]["collection"] == ""  # no collection folder: the processor fails it
    assert [(c["collection"], c["text"]) for c in intake.collections] == [("c", '{"id": "c"}')]


def test_restart_with_unchanged_tree_submits_nothing(inbox_dir: Path, run_inbox: Callable[..., Running]) -> None:
    (inbox_dir / "c").mkdir()
    (inbox_dir / "c" / "a.tif").write_bytes(b"A" * 100)
    (inbox_dir / "c" / "a.json").write_text("{}")
    (inbox_dir / "c" / "lone.tif").write_bytes(b"L" * 100)
    (inbox_dir / "c" / "collection.json").write_text("{}")
    intake = RecordingIntake()
    first = run_inbox(inbox_dir, intake)
    wait_for(lambda: len(intake.rasters) == 2 and intake.collections)
    first.close()
    counts = (len(intake.rasters), len(intake.collections))

    second = run_inbox(inbox_dir, intake)
    time.sleep(SETTINGS.inbox.settle_time + SETTINGS.inbox.sidecar_wait + 1.5)
    assert (len(intake.rasters), len(intake.collections)) == counts
    # ... but a change made while stopped is found by the start-up scan
    second.close()
    (inbox_dir / "c" / "a.json").write_text('{"title": "changed"}')
    run_inbox(inbox_dir, intake)
    wait_for(lambda: len(intake.rasters) == counts[0] + 1)
    last = intake.rasters[-1]
    assert last["source"].key == "c/a.tif" and last["sidecar_text"] == '{"title": "changed"}'
    assert last["priority"] == Priority.BACKFILL


def test_unicode_and_spaces(inbox_dir: Path, run_inbox: Callable[..., Running]) -> None:
    intake = RecordingIntake()
    run_inbox(inbox_dir, intake)
    folder = inbox_dir / "forêt dense" / "année 2020"
    folder.mkdir(parents=True)
    (folder / "carte d'été.json").write_text('{"title": "carte d\'été"}', encoding="utf-8")
    (folder / "carte d'été.TIF").write_bytes(b"x" * 50)
    wait_for(lambda: intake.keys())
    job = intake.rasters[0]
    assert job["source"].key == "forêt dense/année 2020/carte d'été.TIF"
    assert job["source"].url == str(folder / "carte d'été.TIF")
    assert job["collection"] == "forêt dense"
    assert job["sidecar_name"] == "forêt dense/année 2020/carte d'été.json"
    assert job["sidecar_text"] == '{"title": "carte d\'été"}'


def test_changed_sidecar_while_running(inbox_dir: Path, run_inbox: Callable[..., Running]) -> None:
    intake = RecordingIntake()
    run_inbox(inbox_dir, intake)
    (inbox_dir / "c").mkdir()
    (inbox_dir / "c" / "a.tif").write_bytes(b"A" * 100)
    (inbox_dir / "c" / "a.json").write_text('{"title": "1"}')
    wait_for(lambda: intake.keys())
    (inbox_dir / "c" / "a.json").write_text('{"title": "2"}')
    wait_for(lambda: len(intake.rasters) == 2)
    assert [r["sidecar_text"] for r in intake.rasters] == ['{"title": "1"}', '{"title": "2"}']
    assert intake.rasters[0]["source"].content_key == intake.rasters[1]["source"].content_key


def test_undecodable_sidecar_passes_name_without_text(inbox_dir: Path, run_inbox: Callable[..., Running]) -> None:
    intake = RecordingIntake()
    run_inbox(inbox_dir, intake)
    (inbox_dir / "c").mkdir()
    (inbox_dir / "c" / "a.json").write_bytes(b'{"title": "\xe9t\xe9"}')
    (inbox_dir / "c" / "a.tif").write_bytes(b"A")
    wait_for(lambda: intake.keys())
    assert intake.rasters[0]["sidecar_name"] == "c/a.json"
    assert intake.rasters[0]["sidecar_text"] is None and "not UTF-8" in intake.rasters[0]["sidecar_error"]


def test_error_on_one_file_does_not_stop_the_watcher(inbox_dir: Path, run_inbox: Callable[..., Running]) -> None:
    intake = RecordingIntake(fail_keys={"c/bad.tif"})
    run_inbox(inbox_dir, intake, Settings(sidecar_wait=0.2, settle_time=0.3, rescan_interval=1.0))
    (inbox_dir / "c").mkdir()
    (inbox_dir / "c" / "bad.tif").write_bytes(b"B")
    time.sleep(1.0)
    (inbox_dir / "c" / "good.tif").write_bytes(b"G")
    wait_for(lambda: "c/good.tif" in intake.keys())  # noqa: SIM118 - keys() is RecordingIntake's list, not a dict's
    wait_for(lambda: "c/bad.tif" in intake.keys())  # noqa: SIM118 - the periodic rescan retries a failed file


def test_deleted_before_sidecar_wait_is_forgotten(inbox_dir: Path, run_inbox: Callable[..., Running]) -> None:
    intake = RecordingIntake()
    run_inbox(inbox_dir, intake)
    (inbox_dir / "c").mkdir()
    (inbox_dir / "c" / "gone.tif").write_bytes(b"G")
    time.sleep(0.8)  # ready, waiting for its sidecar
    (inbox_dir / "c" / "gone.tif").unlink()
    (inbox_dir / "c" / "kept.tif").write_bytes(b"K")
    wait_for(lambda: intake.keys())
    time.sleep(SETTINGS.inbox.sidecar_wait)
    assert intake.keys() == ["c/kept.tif"]


def test_folder_moved_in_from_outside(inbox_dir: Path, tmp_path: Path, run_inbox: Callable[..., Running]) -> None:
    intake = RecordingIntake()
    run_inbox(inbox_dir, intake)
    staging = tmp_path / "staging" / "c"
    (staging / "sub").mkdir(parents=True)
    (staging / "sub" / "a.tif").write_bytes(b"A")
    (staging / "sub" / "a.json").write_text("{}")
    (staging / "collection.json").write_text("{}")
    os.rename(staging, inbox_dir / "c")
    wait_for(lambda: intake.keys() and intake.collections)
    time.sleep(0.5)
    assert intake.keys() == ["c/sub/a.tif"] and intake.rasters[0]["sidecar_name"] == "c/sub/a.json"
    assert intake.rasters[0]["priority"] == Priority.LIVE
    assert [c["source"].key for c in intake.collections] == ["c/collection.json"]
