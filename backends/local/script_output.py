"""A script's output: written by the script straight into a file, copied by the host into the log.

The run's launcher (runtime/amlocal_launch.py) puts OUTPUT_FILE on the script's stdout and
stderr. The host follows that file (OutputTail) into azureml-logs/70_driver_log.txt, byte for
byte, and hands each line on for the terminal. Because the driver log is a byte-exact copy, its
size is how far the file has been copied: a driver that adopts a run whose first driver died
resumes there, and nothing is lost or shown twice.

The script controls OUTPUT_FILE (it can replace it with a link, a FIFO, ...), so the host opens it
without following links, reads it only if it is a regular file, and never writes through it.
"""

import errno
import os
import stat
import threading

from amlocal.backends.history.store import DRIVER_LOG

OUTPUT_DIR = "driver_output"  # in the run folder; mounted into a container for just this file
OUTPUT_NAME = "script_output.txt"
OUTPUT_FILE = f"{OUTPUT_DIR}/{OUTPUT_NAME}"
EXIT_STATUS_FILE = f"{OUTPUT_DIR}/exit_status"  # written by the launcher (process executor)
LAUNCHER = "amlocal_launch.py"
CHUNK_BYTES = 1 << 20
IDLE_POLL_S = 0.05


class OutputUnreadable(OSError):
    """The script's output file is not a regular file the host may read."""


def _open_no_follow(path, flags):
    """A descriptor of the regular file at `path`; never through a link, never blocking on a FIFO."""
    descriptor = os.open(path, flags | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, 0o644)
    if not stat.S_ISREG(os.fstat(descriptor).st_mode):
        os.close(descriptor)
        raise OutputUnreadable(errno.EINVAL, "not a regular file", str(path))
    return descriptor


def prepare_output_file(run_dir, name=OUTPUT_FILE):
    """Create the run's output folder and file `name` (empty if new) before the script starts."""
    (run_dir / OUTPUT_DIR).mkdir(exist_ok=True)
    os.close(_open_no_follow(run_dir / name, os.O_WRONLY | os.O_CREAT))


def append_note(run_dir, text):
    """Append a line of amlocal's own to the script's output, so the driver log gets it in order."""
    descriptor = _open_no_follow(run_dir / OUTPUT_FILE, os.O_WRONLY | os.O_APPEND)
    try:
        os.write(descriptor, (text + "\n").encode())
    finally:
        os.close(descriptor)


def _lines(pending, chunk):
    """(complete lines of pending + chunk, decoded, and the bytes after the last newline)."""
    *complete, rest = (pending + chunk).split(b"\n")
    return [line.rstrip(b"\r").decode("utf-8", errors="replace") for line in complete], rest


def _write_all(raw_file, data):
    view = memoryview(data)
    while view:
        view = view[raw_file.write(view):]


class OutputTail:
    """Copies the script's output file (`source`, in the run folder: a distributed run has one
    per rank) into the driver log and hands each line to `on_line` (None: to nobody).

    It runs in a thread of its own from the driver log's current size (where an earlier driver
    stopped) until `script_ended()` was called and the file is read to its end: there is no
    drain timeout, so the log ends where the script's output ended.

    If `on_line` raises (a terminal that went away), lines are no longer handed on, but the log
    is still written in full. If the file cannot be read or the log cannot be written (a full
    disk), `error` says why; the log is then incomplete.
    """

    def __init__(self, run_dir, log_path, on_line, source=OUTPUT_FILE):
        self.error = None
        self._on_line = on_line
        self._ended = threading.Event()
        self._done = threading.Event()
        try:
            self._source = _open_no_follow(run_dir / source, os.O_RDONLY)
            self._log = open(log_path, "ab", buffering=0)  # others follow the log as it grows
            os.lseek(self._source, os.fstat(self._log.fileno()).st_size, os.SEEK_SET)
        except OSError as error:
            self.error = error
            self._done.set()
            return
        threading.Thread(target=self._copy, name="amlocal-output", daemon=True).start()

    def script_ended(self):
        self._ended.set()

    def wait(self, timeout=None):
        """True once everything the script wrote is copied (or copying failed)."""
        return self._done.wait(timeout)

    def _copy(self):
        pending = b""
        try:
            while True:
                ended = self._ended.is_set()  # read before the last read: nothing comes after
                chunk = os.read(self._source, CHUNK_BYTES)
                if not chunk:
                    if ended:
                        break
                    self._ended.wait(IDLE_POLL_S)
                    continue
                _write_all(self._log, chunk)
                lines, pending = _lines(pending, chunk)
                self._hand_on(lines)
            if pending:
                self._hand_on([pending.decode("utf-8", errors="replace")])
        except OSError as error:
            self.error = error
        finally:
            os.close(self._source)
            try:
                self._log.close()
            except OSError as error:
                self.error = self.error or error
            self._done.set()

    def _hand_on(self, lines):
        if self._on_line is None:
            return
        try:
            for line in lines:
                self._on_line(line)
        except Exception:  # whoever shows the lines failed; the log itself goes on
            self._on_line = None


def follow_output(run_dir, on_line):
    """Start copying the run's script output into its driver log (see OutputTail)."""
    return OutputTail(run_dir, run_dir / DRIVER_LOG, on_line)
