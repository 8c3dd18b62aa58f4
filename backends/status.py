"""The run-status state machine: Azure ML SDK v1's status vocabulary and the moves between them.

This module owns which status may follow which. Stores call `check_transition` before they write a
new status (and write it with a compare-and-set), so no status changes anywhere else.

The order follows an Azure ML v1 script run: NotStarted -> Starting -> Preparing (image build) ->
Queued (waiting for nodes) -> Running -> Finalizing (outputs collected) -> Completed. A cancel goes
through CancelRequested to Canceled; any live status may fail. Running may go back to Queued when a
low-priority node is preempted (Azure reschedules the run on another node). NotResponding is, as
on Azure, the one status exempt from the order: a run may leave it for any earlier live status
(its driver came back) or end; its cancel goes straight to Canceled, as nobody would act on a
request.
"""

from amlocal.errors import IllegalTransitionError

NOT_STARTED = "NotStarted"
QUEUED = "Queued"
PREPARING = "Preparing"
STARTING = "Starting"
RUNNING = "Running"
FINALIZING = "Finalizing"
CANCEL_REQUESTED = "CancelRequested"
COMPLETED = "Completed"
FAILED = "Failed"
CANCELED = "Canceled"
NOT_RESPONDING = "NotResponding"

ALL_STATUSES = (
    NOT_STARTED, QUEUED, PREPARING, STARTING, RUNNING, FINALIZING,
    CANCEL_REQUESTED, COMPLETED, FAILED, CANCELED, NOT_RESPONDING,
)
TERMINAL_STATUSES = frozenset({COMPLETED, FAILED, CANCELED})

_ALLOWED = {
    NOT_STARTED: {STARTING, PREPARING, CANCEL_REQUESTED, FAILED, CANCELED},
    STARTING: {PREPARING, CANCEL_REQUESTED, FAILED},
    PREPARING: {QUEUED, CANCEL_REQUESTED, FAILED},
    QUEUED: {RUNNING, CANCEL_REQUESTED, FAILED},
    RUNNING: {FINALIZING, CANCEL_REQUESTED, FAILED, NOT_RESPONDING, QUEUED},
    NOT_RESPONDING: {PREPARING, QUEUED, RUNNING, FINALIZING, FAILED, CANCELED},
    FINALIZING: {COMPLETED, FAILED, CANCEL_REQUESTED},
    CANCEL_REQUESTED: {CANCELED, FAILED},
    COMPLETED: set(),
    FAILED: set(),
    CANCELED: set(),
}


def is_terminal(status):
    return status in TERMINAL_STATUSES


def allowed_next(status):
    """The statuses a run in `status` may move to."""
    if status not in _ALLOWED:
        raise IllegalTransitionError(f"unknown run status {status!r}")
    return frozenset(_ALLOWED[status])


def check_transition(current, new):
    """Raise IllegalTransitionError unless a run may go from `current` to `new`."""
    if new not in _ALLOWED:
        raise IllegalTransitionError(f"unknown run status {new!r}")
    if new not in allowed_next(current):
        raise IllegalTransitionError(f"a run cannot go from {current} to {new}")
