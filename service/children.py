"""History: the child runs a run's script creates with azureml-core's `run.child_run()`.

azureml-core creates a child with a PATCH of a new run id (parentRunId, status NotStarted, name,
target), then posts its Start event (events.py). The child is recorded as the stand-in's child
runs are (backends/local/telemetry.py): under its parent, in its experiment, on its compute, with
folders of its own; its statuses move only through the run-status state machine. A run's token
may create children of that run only (wire.py's scope check reads the parentRunId).
"""

from amlocal.backends import status as run_status
from amlocal.backends.local.telemetry import insert_child_in
from amlocal.errors import RunNotFoundError
from amlocal.service.errors import ServiceError, bad_request, not_found
from amlocal.service.experiments import experiment_id
from amlocal.validation import check_text

# What azureml-core's CreateRunDto carries when child_run() creates a run.
_CREATE_FIELDS = {"runId", "parentRunId", "status", "name", "target", "scriptName", "tags",
                  "properties"}


def _parent_record(call, parent_id):
    try:
        parent = call.service.store.get_run(parent_id)
    except RunNotFoundError:
        raise not_found(f"parent run {parent_id!r} of run {call.run_id!r} was not found") from None
    named = call.params.get("experiment_name")
    identifier = call.params.get("experiment_id")
    if (named is not None and parent["experiment"] != named) or (
            identifier is not None and experiment_id(call.service, parent["experiment"]) != identifier):
        raise not_found(f"parent run {parent_id!r} is not in the URL's experiment")
    if run_status.is_terminal(parent["status"]):
        raise bad_request(f"run {parent_id} has ended ({parent['status']}): it takes no new child "
                          "runs")
    return parent


def create_child(call, body, checked):
    """Record the new child run a PATCH of an unknown run id asks for; return its handle.

    `checked(changes, current, kind)` is history's check of tags or properties (Azure's limits).
    """
    parent_id = body.get("parentRunId")
    if not parent_id:
        raise ServiceError(501, "NotImplemented", f"creating run {call.run_id!r} with PATCH "
                           "without a parentRunId (start_logging) is not emulated yet")
    unknown = sorted(key for key, value in body.items()
                     if value is not None and key not in _CREATE_FIELDS)
    if unknown:
        raise ServiceError(501, "NotImplemented", "creating a child run with "
                           f"{', '.join(unknown)} is not emulated yet")
    if body.get("runId") not in (None, call.run_id):
        raise bad_request(f"the body's runId {body['runId']!r} is not the URL's {call.run_id!r}",
                          code="ValidationError")
    if body.get("status") not in (None, run_status.NOT_STARTED):
        raise bad_request(f"a child run is created NotStarted, not {body['status']!r}",
                          code="ValidationError")
    name = body.get("name")
    if name is not None:
        if not isinstance(name, str) or len(name) > 255:
            raise bad_request("a run's name is a string of up to 255 characters",
                              code="ValidationError")
        check_text(name, "run name")
    tags = checked(body.get("tags") or {}, {}, "tag")
    properties = checked(body.get("properties") or {}, {}, "property")
    _parent_record(call, parent_id)
    store = call.service.store
    with store.transaction() as conn:
        if conn.execute("SELECT 1 FROM runs WHERE id = ?", (call.run_id,)).fetchone():
            raise ServiceError(409, "Conflict", f"run {call.run_id!r} exists already")
        insert_child_in(store, conn, parent_id, call.run_id, name)
    handle = call.service.backend().get_run(call.run_id)
    if tags:
        handle.set_tags(tags)
    if properties:
        handle.add_properties(properties)
    return handle


def is_in_run_child(record):
    """Was this run created by its parent's script (its statuses come from events, not from a
    driver of its own, as a sweep's children's do)?"""
    return bool(record["spec"].get("child_of"))
