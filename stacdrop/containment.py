"""Inbox containment: a file of the local inbox is read only when its real path is inside the inbox.

Whoever can write the inbox can also create symlinks in it. Without this check a sidecar linked to a
credentials file had its fields published, the raw content of a non-JSON target (``/etc/shadow``) was
copied into the ledger and a dead letter, and a raster linked from elsewhere was converted and published.

The rule, for rasters and sidecars alike, in the watcher (before it reads or hashes anything) and again in
the processor (before the conversion reads the file, so a message that names an outside path is refused
whoever wrote it):

- the real path (``os.path.realpath``: every symlink resolved, the file's own and its folders') must lie
  under the real path of the inbox root; else ``OutsideInbox``, naming the inbox-relative file, never the
  target and never its content;
- a symlink that stays inside the inbox is fine: it names another inbox file, which anyone who can write
  the inbox could have copied there;
- the file is opened by its resolved path with ``O_NOFOLLOW`` (a symlink swapped in after the check makes
  the open fail), ``O_NONBLOCK`` (a FIFO must not hang the worker) and then checked through the open
  descriptor: a regular file (else ``NotRegularFile``), and on Linux ``/proc/self/fd`` names the file
  actually opened, which must still be inside (a folder swapped for a symlink after the check).

What the processor hands GDAL is the checked real path, not the descriptor: GDAL reads a raster's side
files (``.tfw``, ``.aux.xml``, ``.ovr``) by name next to it. A folder swapped between that check and GDAL's
own open is the one window left; docs/security.md says so.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path
from typing import TYPE_CHECKING

from stacdrop.errors import OutsideInbox, NotRegularFile

if TYPE_CHECKING:
    from stacdrop.config import InboxSettings

_OPEN_FLAGS = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)


def local_inbox_root(inbox_settings: InboxSettings) -> Path | None:
    """The local inbox folder (``file://`` accepted); None for an ``s3://`` inbox."""
    inbox = inbox_settings.path
    if inbox.startswith("s3://"):
        return None
    return Path(os.path.abspath(inbox.removeprefix("file://")))


def is_inside(root_real: str, real: str) -> bool:
    """Whether the resolved path ``real`` lies strictly under the resolved folder ``root_real``."""
    return real != root_real and real.startswith(root_real.rstrip(os.sep) + os.sep)


def _outside(name: str) -> OutsideInbox:
    return OutsideInbox(f"{name}: refused: its real path is outside the inbox (a symlink, or a symlinked "
                        "folder, leads out of it); put the file itself into the inbox")


def check_inside(root: str | os.PathLike[str], path: str | os.PathLike[str], name: str) -> str:
    """The resolved path of ``path`` when it is inside ``root``; raises OutsideInbox otherwise."""
    root_real = os.path.realpath(root)
    real = os.path.realpath(path)
    if not is_inside(root_real, real):
        raise _outside(name)
    return real


def open_inbox_file(root: str | os.PathLike[str], path: str | os.PathLike[str], name: str) -> tuple[int, str]:
    """Open an inbox file for reading, contained (see the module docstring): ``(descriptor, real path)``.
    Raises OutsideInbox, NotRegularFile, or FileNotFoundError when the file is gone."""
    real = check_inside(root, path, name)
    try:
        fd = os.open(real, _OPEN_FLAGS)
    except OSError as exc:
        if exc.errno == errno.ELOOP:  # the last part became a symlink after realpath resolved it
            raise _outside(name) from None
        raise
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise NotRegularFile(f"{name}: refused: not a regular file (a FIFO, a device or a folder)")
        opened = _opened_path(fd)
        if opened is not None and not is_inside(os.path.realpath(root), opened):
            raise _outside(name)
    except BaseException:
        os.close(fd)
        raise
    return fd, real


def _opened_path(fd: int) -> str | None:
    """The path of what ``fd`` refers to, from the kernel (Linux); None where /proc cannot tell."""
    try:
        path = os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return None
    return path if path.startswith(os.sep) and not path.endswith(" (deleted)") else None


def read_limited(fd: int, limit: int) -> bytes:
    """At most ``limit`` + 1 bytes from ``fd``: one byte more than allowed tells the caller it is too large,
    without reading a 50 MB file (or an endless one) into memory."""
    chunks: list[bytes] = []
    left = limit + 1
    while left > 0:
        chunk = os.read(fd, min(left, 1 << 20))
        if not chunk:
            break
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)
