"""History: run events (POST .../runs/{id}/events), what azureml-core sends as a run's life goes on.

Who sets a status: a run that a driver runs (every `amlocal run`, a sweep's children) gets its
statuses from that driver, from its script's exit code, as Azure ML's service sets them, so its
script's Start, Completed, Failed and Canceled events change nothing; a child run its parent's
script created and an interactive run (start_logging) have no driver (children.py): their events
move them through the run-status state machine: Start (NotStarted -> Preparing -> Queued -> Running), then Completed, Failed or Canceled.
An Error event (what `run.fail()` sends) is the run's error: a driven run then ends Failed,
as when the stand-in's Run.fail() is called. Heartbeats and warnings are taken and dropped.
"""

import dataclasses

from amlocal.backends import status as run_status
from amlocal.backends.local.telemetry import end_child_in, start_child_in
from amlocal.errors import RunNotFoundError
from amlocal.service.children import is_driverless
from amlocal.service.errors import ServiceError, bad_request
from amlocal.service.experiments import HISTORY
from amlocal.service.history import run_handle, run_paths
from amlocal.service.wire import operation

_EVENT = "Microsoft.MachineLearning.Run."
START = _EVENT + "Start"
ERROR = _EVENT + "Error"
_ENDINGS = {_EVENT + "Completed": run_status.COMPLETED, _EVENT + "Failed": run_status.FAILED,
            _EVENT + "Canceled": run_status.CANCELED}
_TAKEN_AND_DROPPED = {_EVENT + name for name in ("Heartbeat", "Warning", "Queued",
                                                 "QueueingInfo", "CancelRequested")}
MAX_ERROR_MESSAGE = 4096


def _error_message(data):
    response = data.get("ErrorResponse")
    error = response.get("error") if isinstance(response, dict) else None
    message = error.get("message") if isinstance(error, dict) else None
    return str(message)[:MAX_ERROR_MESSAGE] if message is not None else "(no message)"


def _record_error(store, run_id, message):
    # The first error stays, as the stand-in's Run.fail() keeps it.
    store.record_first_error(run_id, f"Run.fail() called by the script: {message}")


@operation(run_paths("/events"), ["POST"])
def post_event(call):
    _apply(call, call.json_object())
    return {}


MAX_EVENTS_PER_BATCH = 100


@operation(HISTORY + "/experiments/{experiment_name}/batch/events", ["POST"], auth="caller")
def post_events(call):
    """Several runs' events (create_children starts its children so); a run's token may post
    those of that run and of its children only."""
    events = call.json_object().get("events")
    if not isinstance(events, list) or not 0 < len(events) <= MAX_EVENTS_PER_BATCH:
        raise bad_request(f"the batch needs a list of 1 to {MAX_EVENTS_PER_BATCH} events",
                          code="ValidationError")
    calls = []
    for event in events:
        data = event.get("data") if isinstance(event, dict) else None
        run_id = data.get("RunId") if isinstance(data, dict) else None
        if not isinstance(run_id, str):
            raise bad_request("each event of the batch needs its data.RunId",
                              code="ValidationError")
        if not call.claims.allows_run(run_id, lambda child: _parent_of(call.service, child)):
            raise ServiceError(403, "AuthorizationFailed", "the token's scope "
                               f"({call.claims.scope}) does not allow events of run "
                               f"{run_id[:100]!r}")
        calls.append((dataclasses.replace(call, params={**call.params, "run_id": run_id}), event))
    for run_call, event in calls:
        _apply(run_call, event)
    return {"errors": []}


def _parent_of(service, run_id):
    try:
        return service.store.get_run(run_id)["parent_id"]
    except RunNotFoundError:
        return None


def _apply(call, event):
    """Take one event of the URL's run (call.run_id) as the run history would."""
    name, data = event.get("name"), event.get("data") or {}
    if not isinstance(name, str) or not isinstance(data, dict):
        raise bad_request("an event needs a name and a data object", code="ValidationError")
    if data.get("RunId", call.run_id) != call.run_id:
        raise bad_request(f"the event is for run {data.get('RunId')!r}, not the URL's "
                          f"{call.run_id!r}", code="ValidationError")
    if name not in (START, ERROR, *_ENDINGS, *_TAKEN_AND_DROPPED):
        raise bad_request(f"unknown run event {name[:200]!r}", code="ValidationError")
    run_handle(call)  # the run must be there, in the URL's experiment
    store = call.service.store
    record = store.get_run(call.run_id)
    if name == ERROR:
        _record_error(store, call.run_id, _error_message(data))
    elif is_driverless(record):
        with store.transaction() as conn:
            status = store.status_in(conn, call.run_id)
            if status == run_status.NOT_STARTED and (name == START or name in _ENDINGS):
                start_child_in(store, conn, call.run_id)  # a child that ends had started
            if name in _ENDINGS:
                end_child_in(store, conn, call.run_id, _ENDINGS[name])


ROUTES = [post_event, post_events]
