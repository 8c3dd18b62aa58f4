"""One root exception for everything amlocal raises on purpose.

Callers (the CLI above all) catch `AmlocalError` and show its message as a one-line error;
each subclass carries the exit code the CLI uses for it, so scripts can tell bad input from an
unavailable engine from a run that did not complete.
"""


class AmlocalError(Exception):
    """Base of all amlocal errors. The message is one line a user can act on."""

    exit_code = 1


class UserInputError(AmlocalError):
    """The request itself is wrong: a missing folder or script, a malformed --input, ..."""

    exit_code = 2


class RunNotFoundError(AmlocalError):
    """No run with that id in this run history."""

    exit_code = 4


class EngineUnavailableError(AmlocalError):
    """The execution engine (the Docker daemon) does not answer."""

    exit_code = 3


class IllegalTransitionError(AmlocalError):
    """A run status change that the state machine does not allow (or that lost a race)."""


class RunFailedError(AmlocalError):
    """A run ended Failed or Canceled while the caller asked to wait for completion."""

    def __init__(self, message, run_id=None, status=None):
        super().__init__(message)
        self.run_id = run_id
        self.status = status


class RunRecordCorruptedError(AmlocalError):
    """A run's record, its folder or one of its files is damaged; it is reported, never served."""

    exit_code = 5
