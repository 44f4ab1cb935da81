"""The daemon's own state files are readable by its user only: 0600 files, 0700 folders.

The SQLite ledger and embedded bus hold every job's parameters and history (sources, sidecar fields,
errors); they were created world-readable (0644 under the usual umask). Each file is created here with
its final mode before SQLite opens it or anything is written, so there is no moment when it is readable
by others, whatever the umask. SQLite gives a database's ``-wal`` and ``-shm`` files the mode of the
database file itself, so they follow. Files that already exist keep their mode (an operator may have
chosen it); one readable by others is reported in the log with the command that tightens it.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import structlog

log = structlog.get_logger("stacdrop.files")

FILE_MODE = 0o600
DIR_MODE = 0o700


def sqlite_path(url: str) -> Path | None:
    """The database file of a ``sqlite:///...`` URL (or a plain path); None for memory or URI forms."""
    path = url.split(":///", 1)[1] if url.startswith("sqlite") and ":///" in url else url
    if "://" in path or not path or path == ":memory:" or path.startswith("file:"):
        return None
    return Path(path.split("?", 1)[0])


def create_private_file(path: Path) -> None:
    """Create ``path`` (empty) with mode 0600 unless it exists. An empty file is a new SQLite database."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), FILE_MODE)
    except FileExistsError:
        _report_open_mode(path)
        return
    os.close(fd)


def open_private_file(path: Path, flags: int = os.O_RDWR | os.O_CREAT) -> int:
    """``os.open`` that creates a missing file with mode 0600 (a lock file beside the ledger)."""
    return os.open(path, flags | getattr(os, "O_CLOEXEC", 0), FILE_MODE)


def private_dir(path: Path) -> None:
    """Create the folder with mode 0700 unless it exists (the umask may only take bits away)."""
    try:
        path.mkdir(mode=DIR_MODE)
    except FileExistsError:
        return
    os.chmod(path, DIR_MODE)


def _report_open_mode(path: Path) -> None:
    try:
        mode = stat.S_IMODE(os.stat(path).st_mode)
    except OSError:
        return
    if mode & 0o077:
        log.warning("state file readable by other users", file=str(path), mode=oct(mode),
                    fix=f"chmod 600 {path} {path}-wal {path}-shm")
