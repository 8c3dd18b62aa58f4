"""What executors share: the run they are given (a LocalRun), and a started script (a Job), whose
output a tail copies into the driver log."""

import threading
from dataclasses import dataclass
from pathlib import Path

from amlocal.backends.base import RecordedSpec, RunSpec


@dataclass(frozen=True)
class LocalRun:
    """A run as its driver hands it to an executor: the typed spec, read once from the run's
    record, with the record's facts that executors need beside it."""

    id: str
    experiment: str
    spec: RunSpec
    run_dir: Path
    container_id: str | None = None  # recorded once the docker executor created the container
    script_pid: int | None = None  # recorded once the process executor started the launcher

    @classmethod
    def from_record(cls, record, run_dir):
        """The run of a stored record (RunRecordCorruptedError if its spec is damaged)."""
        return cls(id=record["id"], experiment=record["experiment"],
                   spec=RecordedSpec.from_json(record["spec"]).spec, run_dir=Path(run_dir),
                   container_id=record["container_id"], script_pid=record["script_pid"])


@dataclass(frozen=True)
class Prepared:
    """What an executor's Preparing stage produced: the image to run (None: no image)."""

    image: str | None
    detail: str


class ScriptVanished(Exception):
    """The script is gone and left no trace of how it ended (its container or process vanished)."""


class Job:
    """A running script. Subclasses start it (or find it again) and say how to wait for its exit
    and how to stop it.

    A daemon thread waits for the exit code, so `wait(timeout)` returns as soon as the script
    exits and its output (`output`, an OutputTail) is copied to its end, without polling. If
    waiting itself fails (the engine went away), `infrastructure_error` says why and the job
    counts as ended, so a driver is never stuck on a script it can no longer see.
    """

    def __init__(self, wait_for_exit, output):
        self.exit_code = None
        self.infrastructure_error = None
        self.vanished = None  # why the script's end is unknown (see ScriptVanished)
        self.output = output
        self._exited = threading.Event()

        def waiter():
            try:
                self.exit_code = wait_for_exit()
            except ScriptVanished as gone:
                self.vanished = str(gone)
            except Exception as error:
                self.infrastructure_error = f"{type(error).__name__}: {error}"
            finally:
                self._exited.set()
                output.script_ended()

        threading.Thread(target=waiter, name="amlocal-exit", daemon=True).start()

    def wait(self, timeout=None):
        """True once the script has ended and all it wrote is in the driver log, False on timeout."""
        if not self._exited.wait(timeout):
            return False
        # Once the script has ended its output file stops growing: the tail reaches its end.
        return self.output.wait(timeout)

    def stop(self, grace_s):
        """SIGTERM the script, SIGKILL it after grace_s seconds."""
        raise NotImplementedError

    def kill(self):
        """SIGKILL the script now."""
        raise NotImplementedError

    def termination_reason(self):
        """Why the script ended, when the executor knows more than the exit code (e.g. OOM)."""
        return None

    def failed_rank(self):
        """(rank, exit code) of the rank that failed a distributed run (None: not known, or not
        distributed)."""
        return None

    def identity(self):
        """Run-record fields that let another process find what this job started."""
        return {}

    def cleanup(self):
        """Release what the job holds once it has exited (a container, ...)."""
