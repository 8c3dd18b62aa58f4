"""Host processes: is one alive, and how to stop a script's process group."""

import os
import signal
import time
from pathlib import Path


def process_alive(pid):
    """True while `pid` runs (a zombie counts as exited: its parent just has not reaped it)."""
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # alive, owned by someone else
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def stop_process_group(pid, grace_s, exited):
    """SIGTERM the script's process group (it runs in a session of its own, so its children go
    with it), then SIGKILL what is left after grace_s."""

    def signal_group(signum):
        try:
            os.killpg(pid, signum)
        except ProcessLookupError:
            pass

    signal_group(signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while not exited() and time.monotonic() < deadline:
        time.sleep(0.05)
    if not exited():
        signal_group(signal.SIGKILL)
