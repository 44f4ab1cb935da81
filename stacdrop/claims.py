"""One live worker per job: a claim in the ledger, renewed by a heartbeat, taken over only when stale.

A broker hands a message to another consumer as soon as the first one's connection drops, although the
first process is alive and still converting: without a claim, a second processor converts the same
raster again (hours of work on the largest ones). So a processor claims the job before it converts and
renews the claim every ``stale_after / 4`` seconds from a thread. A second worker that receives the
same job meanwhile finds the claim fresh and raises ``ClaimedElsewhere``: the runtime puts the message
back without spending an attempt, and on its next delivery the job is either done (the runtime acks it)
or its claim has gone stale (the first worker died or hung) and is taken over.

Waiting for staleness is needed only across hosts. An owner names its host, pid namespace and pid, so a
worker on the same host sees at once that the owner's process is gone (kill -9, OOM) and takes over
without waiting.

A claim is released when the attempt fails, so a retry or a replay can start at once. After a success
it is left to go stale: releasing it before the runtime has recorded the job's next state would let a
redelivery slip in between. Claims older than an hour are pruned as new ones are taken.
"""

from __future__ import annotations

import os
import socket
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import structlog

from stacdrop.errors import ClaimedElsewhere
from stacdrop.ledger import Ledger

log = structlog.get_logger("stacdrop.claims")


def _pid_namespace() -> str:
    try:
        return str(os.stat("/proc/self/ns/pid").st_ino)
    except OSError:
        return "-"


def owner_id() -> str:
    """A new owner name, unique per attempt: ``host|pid namespace|pid|nonce``."""
    return f"{socket.gethostname()}|{_pid_namespace()}|{os.getpid()}|{uuid.uuid4().hex[:12]}"


def owner_is_dead(owner: str) -> bool:
    """True when ``owner`` ran on this host, in this pid namespace, and its process is gone."""
    try:
        host, namespace, pid, _nonce = owner.split("|")
    except ValueError:
        return False
    if host != socket.gethostname() or namespace != _pid_namespace():
        return False  # another machine or container: only the heartbeat can tell
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except (PermissionError, ValueError):
        return False
    return False


@contextmanager
def holding(ledger: Ledger, job_id: str, stage: str, *, stale_after: float) -> Iterator[str]:
    """Claim ``job_id`` for the block, heartbeating; raise ClaimedElsewhere when a live worker holds it."""
    owner = owner_id()
    if not ledger.claim(job_id, stage, owner, stale_after=stale_after):
        holder = ledger.claim_owner(job_id)
        if not (holder and owner_is_dead(holder)
                and ledger.claim(job_id, stage, owner, stale_after=stale_after, take_from=holder)):
            raise ClaimedElsewhere(f"job {job_id} is being converted by another worker ({_short(holder)}); "
                                   f"waiting for it to finish or its claim to go stale ({stale_after:.0f}s)")
        log.warning("took over the claim of a dead worker", job_id=job_id, previous=_short(holder))
    stop = threading.Event()
    beat = threading.Thread(target=_heartbeat, args=(ledger, job_id, stage, owner, stale_after, stop),
                            name=f"claim-{job_id}", daemon=True)
    beat.start()
    try:
        yield owner
    except BaseException:
        stop.set()
        beat.join()
        try:
            ledger.release(job_id, owner)
        except Exception:  # the claim goes stale on its own; the attempt's error matters more
            log.exception("could not release the claim", job_id=job_id)
        raise
    stop.set()
    beat.join()


def _heartbeat(ledger: Ledger, job_id: str, stage: str, owner: str, stale_after: float,
               stop: threading.Event) -> None:
    while not stop.wait(stale_after / 4):
        try:
            if not ledger.claim(job_id, stage, owner, stale_after=stale_after):
                # We were taken for dead (a pause longer than stale_after): the other worker's result and
                # ours are the same job's; the publisher publishes a job once.
                log.warning("claim taken over by another worker while converting", job_id=job_id)
                return
        except Exception:  # a ledger hiccup: try again at the next beat
            log.warning("could not renew the claim", job_id=job_id, exc_info=True)


def _short(owner: str | None) -> str:
    """host and pid of an owner, for messages (the nonce means nothing to people)."""
    if not owner:
        return "unknown"
    parts = owner.split("|")
    return f"{parts[0]} pid {parts[2]}" if len(parts) == 4 else owner
