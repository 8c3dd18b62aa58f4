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


# Azure ML statuses outside the vocabulary above, as the nearest status in it (a remote run's
# status is observed, never set, by amlocal: see path_to).
_AZURE_EQUIVALENTS = {"Provisioning": PREPARING, "Unapproved": NOT_STARTED, "Pausing": RUNNING,
                      "Paused": RUNNING}


def from_azure(status):
    """An Azure ML run status in this module's vocabulary (None if it has no equivalent)."""
    status = _AZURE_EQUIVALENTS.get(status, status)
    return status if status in _ALLOWED else None


def path_to(current, observed):
    """The shortest sequence of allowed moves from `current` to `observed`, `current` excluded.

    For runs that go on elsewhere (on Azure): their status is polled, so a run seen Queued may be
    seen Completed next; the moves in between are the ones the run made. [] when they are equal;
    IllegalTransitionError when `observed` cannot follow `current` (a run that ended never
    starts again).
    """
    allowed_next(current)  # raises for an unknown status
    if observed == current:
        return []
    if observed not in _ALLOWED:
        raise IllegalTransitionError(f"unknown run status {observed!r}")
    paths = {current: []}
    frontier = [current]
    while frontier:
        following = []
        for status in frontier:
            for candidate in sorted(allowed_next(status)):
                if candidate in paths:
                    continue
                paths[candidate] = paths[status] + [candidate]
                if candidate == observed:
                    return paths[candidate]
                following.append(candidate)
        frontier = following
    raise IllegalTransitionError(f"a run cannot go from {current} to {observed}")


# -- stage statuses ---------------------------------------------------------------------------
# A run's stages (backends.base.STAGES: Preparing, Scaling, Running, PostProcessing) have their
# own, smaller vocabulary, as Azure ML's run details show it. A stage starts once and ends once:
# NotStarted -> Running -> Completed | Failed | Canceled | Preempted. A stage may also end without
# having started (the run failed or was canceled before it). Two moves happen only when a
# preempted run is queued again and runs from the start: its Running stage, Preempted, runs
# again, and so does its Scaling stage, which had Completed (`requeued=True`).

STAGE_NOT_STARTED = "NotStarted"
STAGE_RUNNING = "Running"
STAGE_COMPLETED = "Completed"
STAGE_FAILED = "Failed"
STAGE_CANCELED = "Canceled"
STAGE_PREEMPTED = "Preempted"

STAGE_STATUSES = (STAGE_NOT_STARTED, STAGE_RUNNING, STAGE_COMPLETED, STAGE_FAILED, STAGE_CANCELED,
                  STAGE_PREEMPTED)
# How a stage ends for good (a Preempted stage may run again).
STAGE_ENDINGS = frozenset({STAGE_COMPLETED, STAGE_FAILED, STAGE_CANCELED})

_STAGE_ALLOWED = {
    STAGE_NOT_STARTED: {STAGE_RUNNING, STAGE_FAILED, STAGE_CANCELED},
    STAGE_RUNNING: {STAGE_COMPLETED, STAGE_FAILED, STAGE_CANCELED, STAGE_PREEMPTED},
    STAGE_PREEMPTED: {STAGE_RUNNING, STAGE_FAILED, STAGE_CANCELED},
    STAGE_COMPLETED: set(),
    STAGE_FAILED: set(),
    STAGE_CANCELED: set(),
}
_STAGE_RERUNS = {STAGE_COMPLETED: {STAGE_RUNNING}}


def check_stage_transition(current, new, requeued=False):
    """Raise IllegalTransitionError unless a stage may go from `current` to `new`.

    `requeued`: the run is running its stages again after a preemption, so a stage that had
    Completed may run again.
    """
    for status in (current, new):
        if status not in _STAGE_ALLOWED:
            raise IllegalTransitionError(f"unknown stage status {status!r}")
    allowed = _STAGE_ALLOWED[current] | (_STAGE_RERUNS.get(current, set()) if requeued else set())
    if new not in allowed:
        raise IllegalTransitionError(f"a stage cannot go from {current} to {new}")
