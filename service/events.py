"""History: run events (POST .../runs/{id}/events), what azureml-core sends as a run's life goes on.

Who sets a status: a run that a driver runs (every `amlocal run`, a sweep's children) gets its
statuses from that driver, from its script's exit code, as Azure ML's service sets them, so its
script's Start, Completed, Failed and Canceled events change nothing; a child run its parent's
script created (children.py) has no driver, and its events move it through the run-status state
machine: Start (NotStarted -> Preparing -> Queued -> Running), then Completed, Failed or Canceled.
An Error event (what `run.fail()` sends) is the run's error: a driven run then ends Failed,
as when the stand-in's Run.fail() is called. Heartbeats and warnings are taken and dropped.
"""

from amlocal.backends import status as run_status
from amlocal.backends.local.telemetry import end_child_in, start_child_in
from amlocal.service.children import is_in_run_child
from amlocal.service.errors import bad_request
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
    with store.transaction() as conn:
        # The first error stays, as the stand-in's Run.fail() keeps it.
        conn.execute("UPDATE runs SET error = ? WHERE id = ? AND error IS NULL",
                     (f"Run.fail() called by the script: {message}", run_id))


@operation(run_paths("/events"), ["POST"])
def post_event(call):
    event = call.json_object()
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
    elif is_in_run_child(record):
        with store.transaction() as conn:
            status = conn.execute("SELECT status FROM runs WHERE id = ?",
                                  (call.run_id,)).fetchone()["status"]
            if status == run_status.NOT_STARTED and (name == START or name in _ENDINGS):
                start_child_in(store, conn, call.run_id)  # a child that ends had started
            if name in _ENDINGS:
                end_child_in(store, conn, call.run_id, _ENDINGS[name])
    return {}


ROUTES = [post_event]
