"""Where the web UI over a run history listens, while it runs: $AMLOCAL_HOME/ui.json.

`amlocal ui` writes {url, pid} when it listens and removes the file when it stops, so that
`amlocal runs show` and `Run.get_portal_url()` can name a run's page. A file left by a UI that
died (its pid is gone) is ignored, as is one that is not of that shape.
"""

import json
import os
from pathlib import Path

UI_FILE = "ui.json"


def write_ui_address(home, url):
    """Record that this process serves the UI of the history at `home` on `url` (atomically)."""
    path = Path(home) / UI_FILE
    partial = path.with_name(f".{UI_FILE}.{os.getpid()}")
    partial.write_text(json.dumps({"url": url, "pid": os.getpid()}))
    os.replace(partial, path)


def remove_ui_address(home, url):
    """Remove ui.json if it is still this process's (a newer UI may have replaced it)."""
    path = Path(home) / UI_FILE
    if _read(path) == (url, os.getpid()):
        path.unlink(missing_ok=True)


def running_ui_url(home):
    """The URL of the UI serving the history at `home`, or None when none runs."""
    found = _read(Path(home) / UI_FILE)
    if found is None or not _alive(found[1]):
        return None
    return found[0]


def run_page_url(home, run_id):
    """The run's page in the running UI, or None."""
    from urllib.parse import quote

    url = running_ui_url(home)
    return None if url is None else f"{url}/runs/{quote(run_id, safe='')}"


def _read(path):
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not (isinstance(data, dict) and isinstance(data.get("url"), str)
            and data["url"].startswith("http://") and isinstance(data.get("pid"), int)):
        return None
    return data["url"], data["pid"]


def _alive(pid):
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: alive
        return True
    return True
