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
    the exit code. So `wait(timeout)` returns as soon as the script exits, without polling. If
    waiting itself fails (the engine went away), `infrastructure_error` says why and the job
    counts as ended, so a driver is never stuck on a script it can no longer see.
    """

    def __init__(self, output_chunks, wait_for_exit, on_line):
        self.exit_code = None
        self.infrastructure_error = None
        self._exited = threading.Event()
        self._output_done = threading.Event()

        def pump():
            try:
                for line in iter_lines(output_chunks):
                    on_line(line)
            except Exception:  # the stream broke; the waiter reports why the job ended
                pass
            finally:
                self._output_done.set()

        def waiter():
            try:
                self.exit_code = wait_for_exit()
            except Exception as error:
                self.infrastructure_error = f"{type(error).__name__}: {error}"
            finally:
                self._exited.set()

        threading.Thread(target=pump, name="amlocal-output", daemon=True).start()
        threading.Thread(target=waiter, name="amlocal-exit", daemon=True).start()

    def wait(self, timeout=None):
        """True once the script has ended (and its output is drained), False on timeout."""
        if not self._exited.wait(timeout):
            return False
        # The output stream ends when the script exits; give the pump a moment to drain it.
        self._output_done.wait(10)
        return True

    def stop(self, grace_s):
        """SIGTERM the script, SIGKILL it after grace_s seconds."""
        raise NotImplementedError

    def kill(self):
        """SIGKILL the script now."""
        raise NotImplementedError

    def termination_reason(self):
        """Why the script ended, when the executor knows more than the exit code (e.g. OOM)."""
        return None

    def identity(self):
        """Run-record fields that let another process find what this job started."""
        return {}

    def cleanup(self):
        """Release what the job holds once it has exited (a container, ...)."""
