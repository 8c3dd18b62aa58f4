"""Waking the runs queued for a compute target when its nodes are freed, across processes.

Each run waiting at a target's queue (lifecycle.RunDriver, one detached supervisor process per
run) opens a `QueueWaiter`: a Unix datagram socket bound to a random name in Linux's abstract
socket namespace (no file, so no path-length limit and nothing to clean up when its process
dies), announced by an empty file of the same name in $AMLOCAL_HOME/queue-wake/<target>/.
Whoever frees nodes or leaves the queue calls `wake(home, target)`, which sends one byte to every
announced waiter; each waiter then tries to take nodes again. A waiter that misses a byte, or
cannot open its socket at all, still wakes after its poll interval, so the channel only makes the
hand-off prompt and never decides who gets a node (try_allocate does, in one transaction).
"""

import contextlib
import os
import secrets
import select
import socket
from pathlib import Path

WAKE_FOLDER = "queue-wake"
_PREFIX = b"\0amlocal-queue-wake-"


def _folder(home, target):
    # Target names are AmlCompute names (letters, digits, '-') or "local": safe as a folder name.
    return Path(home) / WAKE_FOLDER / target


class QueueWaiter:
    """A run's wake channel at one target's queue; a context manager.

    `wait(timeout_s)` returns when woken or after `timeout_s`, whichever comes first. If the
    channel could not be opened it just sleeps `timeout_s` (the old poll).
    """

    def __init__(self, home, target):
        self._folder = _folder(home, target)
        self._token = secrets.token_hex(12)
        self._socket = None

    def __enter__(self):
        try:
            self._folder.mkdir(parents=True, exist_ok=True)
            channel = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            try:
                channel.bind(_PREFIX + os.fsencode(self._token))
                channel.setblocking(False)
                (self._folder / self._token).touch()
            except OSError:
                channel.close()
                raise
            self._socket = channel
        except OSError:
            self._socket = None  # no channel: wait() falls back to sleeping
        return self

    def wait(self, timeout_s):
        if self._socket is None:
            select.select([], [], [], timeout_s)
            return
        readable, _, _ = select.select([self._socket], [], [], timeout_s)
        if readable:
            self._drain()

    def _drain(self):
        # Several releases may have woken us at once: one try_allocate answers them all.
        with contextlib.suppress(OSError):
            while self._socket.recv(64):
                pass

    def __exit__(self, *_exc):
        if self._socket is not None:
            with contextlib.suppress(OSError):
                (self._folder / self._token).unlink()
            self._socket.close()
            self._socket = None


def wake(home, target):
    """Tell every run waiting at `target`'s queue to look again (never raises).

    Announcements whose socket is gone (their process died) are removed on the way.
    """
    try:
        tokens = os.listdir(_folder(home, target))
    except OSError:
        return
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sender:
        sender.setblocking(False)
        for token in tokens:
            try:
                sender.sendto(b"!", _PREFIX + os.fsencode(token))
            except (ConnectionRefusedError, FileNotFoundError):
                with contextlib.suppress(OSError):
                    (_folder(home, target) / token).unlink()
            except OSError:
                pass  # a full socket buffer: that waiter has a wake pending already
