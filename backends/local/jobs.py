"""What executors share: a started script (a Job) whose output is pumped line by line."""

import threading
from dataclasses import dataclass


@dataclass(frozen=True)
class Prepared:
    """What an executor's Preparing stage produced: the image to run (None: no image)."""

    image: str | None
    detail: str


def iter_lines(chunks):
    """Decoded lines (without the newline) from a stream of byte chunks split anywhere."""
    pending = b""
    for chunk in chunks:
        pending += chunk
        *complete, pending = pending.split(b"\n")
        for line in complete:
            yield line.rstrip(b"\r").decode("utf-8", errors="replace")
    if pending:
        yield pending.decode("utf-8", errors="replace")


class Job:
    """A running script. Subclasses start it and say how to wait for its exit and how to stop it.

    Two daemon threads do the blocking work: one pumps output lines to `on_line`, one waits for
    the exit code. So `wait(timeout)` returns as soon as the script exits, without polling.
    """

    def __init__(self, output_chunks, wait_for_exit, on_line):
        self._exit_code = None
        self._exited = threading.Event()
        self._output_done = threading.Event()

        def pump():
            try:
                for line in iter_lines(output_chunks):
                    on_line(line)
            finally:
                self._output_done.set()

        def waiter():
            self._exit_code = wait_for_exit()
            self._exited.set()

        threading.Thread(target=pump, name="amlocal-output", daemon=True).start()
        threading.Thread(target=waiter, name="amlocal-exit", daemon=True).start()

    def wait(self, timeout=None):
        """The exit code once the script has exited and its output is drained, else None."""
        if not self._exited.wait(timeout):
            return None
        # The output stream ends when the script exits; give the pump a moment to drain it.
        self._output_done.wait(10)
        return self._exit_code

    def stop(self, grace_s):
        raise NotImplementedError

    def identity(self):
        """Run-record fields that let another process find what this job started."""
        return {}

    def cleanup(self):
        """Release what the job holds once it has exited (a container, ...)."""
