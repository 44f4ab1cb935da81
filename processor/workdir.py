"""The processor's work directory: temp-file names that say who owns them, and removal of leftovers.

Several processor processes (and their worker threads) may share one work directory, so a leftover is
only removed when its owner is certainly gone. The rule:

- our COG temp files are named ``cog-<pid>-<hex>-...`` (GDAL's side files, ``cog.tif.ovr.tmp`` and the
  like, share the prefix): such a file is stale when no process with that pid is alive. A pid reused by
  an unrelated process only keeps a leftover longer, it never removes a live file;
- files without a pid (``cog-<hex>-...`` of older releases, the fetcher's ``src-<hex>...``) are stale
  only when older than this process's start *and* older than ``min_age`` seconds: a live sibling keeps
  writing (mtime moves) while it converts or downloads, and one that started before us was last written
  within the lease anyway. A file that survives this rule is removed on a later start.
"""

from __future__ import annotations

import os
import re
import shutil
import time
import uuid
from pathlib import Path

_PID_NAME = re.compile(r"^cog-(\d+)-[0-9a-f]{16}-")
_LEGACY_NAME = re.compile(r"^(cog-[0-9a-f]{16}-|src-[0-9a-f]{16})")
PROCESS_START = time.time()


def cog_prefix() -> str:
    return f"cog-{os.getpid()}-{uuid.uuid4().hex[:16]}-"


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by another user
    return True


def remove_stale(workdir: Path, *, min_age: float = 3600.0, now: float | None = None) -> list[str]:
    """Remove leftovers of killed conversions from ``workdir``; return the names removed."""
    now = time.time() if now is None else now
    removed: list[str] = []
    try:
        entries = list(os.scandir(workdir))
    except FileNotFoundError:
        return removed
    for entry in entries:
        m = _PID_NAME.match(entry.name)
        if m:
            stale = not _alive(int(m.group(1)))
        elif _LEGACY_NAME.match(entry.name):
            try:
                mtime = entry.stat(follow_symlinks=False).st_mtime
            except FileNotFoundError:
                continue
            stale = mtime < PROCESS_START and mtime < now - min_age
        else:
            continue
        if not stale:
            continue
        try:
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path, ignore_errors=True)
            else:
                os.unlink(entry.path)
            removed.append(entry.name)
        except FileNotFoundError:
            pass
    return removed
