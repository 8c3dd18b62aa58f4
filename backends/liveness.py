"""Whether a host process is alive: one answer for the run history and the local backend.

The history asks it of the process that owns a model registration or deletion left half-done;
the local backend of a run's driver, its supervisor and its script.
"""

import os
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
