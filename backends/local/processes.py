"""Host processes: how to stop a script's process group.

Whether one is alive is answered in backends/liveness.py, which the run history asks too;
`process_alive` is importable from here as well, for the local backend's modules.
"""

import os
import signal
import time

from amlocal.backends.liveness import process_alive

__all__ = ["process_alive", "stop_process_group"]


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
