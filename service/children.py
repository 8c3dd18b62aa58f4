"""History: runs that azureml-core creates itself, which no driver of amlocal's runs.

- An interactive run: `Experiment.start_logging()` PATCHes a new run id without a parentRunId
  (name, target "local", properties, runTypeV2), posts its Start event, and PATCHes the
  ContentSnapshotId of the snapshot it took of `snapshot_directory`. It is recorded with the
  executor "interactive": nothing runs it, the user's process logs to it and ends it.
- A child run: `run.child_run()` PATCHes a new run id with its parentRunId (status NotStarted);
  `run.create_children()` PATCHes .../batch/runs with several, then posts their Start events
  in a batch (events.py). It is recorded as the stand-in's child runs are
  (backends/local/telemetry.py): under its parent, in its experiment, on its compute.

Either way its statuses move only through the run-status state machine, by the events its
creator posts (events.py). A run's token may create children of that run only.
"""

import dataclasses

from amlocal.backends import status as run_status
from amlocal.backends.history.store import is_plain_run_id
from amlocal.backends.local.telemetry import insert_child_in
from amlocal.errors import RunNotFoundError
from amlocal.service.errors import ServiceError, bad_request, not_found
from amlocal.service.experiments import HISTORY, experiment_id, name_of_experiment_id
from amlocal.service.snapshots import materialize
from amlocal.service.wire import MAX_RUN_ID, operation
from amlocal.validation import check_text

INTERACTIVE = "interactive"  # the executor of a run that start_logging created
SNAPSHOT_PROPERTY = "ContentSnapshotId"
MAX_CHILDREN_PER_BATCH = 100  # azureml-core's create_children refuses more itself
# What azureml-core's CreateRunDto carries when child_run(), create_children() or
# start_logging() creates a run (runTypeV2 only says who orchestrates it: "External").
_CREATE_FIELDS = {"runId", "parentRunId", "status", "name", "displayName", "target",
                  "scriptName", "tags", "properties", "runTypeV2"}


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


def _display_name(body):
    """The run's name: displayName (start_logging's display_name) or name (child_run's)."""
    name = body.get("displayName") or body.get("name")
    if name is not None:
        if not isinstance(name, str) or len(name) > 255:
            raise bad_request("a run's name is a string of up to 255 characters",
                              code="ValidationError")
        check_text(name, "run name")
    return name


def _checked_body(call, body):
    unknown = sorted(key for key, value in body.items()
                     if value is not None and key not in _CREATE_FIELDS)
    if unknown:
        raise ServiceError(501, "NotImplemented", "creating a run with "
                           f"{', '.join(unknown)} is not emulated yet")
    if body.get("runId") not in (None, call.run_id):
        raise bad_request(f"the body's runId {body['runId']!r} is not the URL's {call.run_id!r}",
                          code="ValidationError")
    if body.get("status") not in (None, run_status.NOT_STARTED):
        raise bad_request(f"a run is created NotStarted, not {body['status']!r}",
                          code="ValidationError")
    target = body.get("target")
    if target is not None and not (isinstance(target, str) and target and len(target) <= 255):
        raise bad_request("a run's target is a name of up to 255 characters",
                          code="ValidationError")
    if target is not None:
        check_text(target, "run target")


def checked_new_run(call, body, checked):
    """(name, tags, properties) of the new run `body` describes, checked; 400 or 501 with Azure's
    body otherwise. `checked(changes, current, kind)` is history's check of tags or properties
    (Azure's limits)."""
    if not isinstance(body, dict):
        raise bad_request("a new run is described by a JSON object", code="ValidationError")
    _checked_body(call, body)
    name = _display_name(body)
    tags = checked(body.get("tags") or {}, {}, "tag")
    properties = checked(body.get("properties") or {}, {}, "property")
    if body.get("parentRunId"):
        _parent_record(call, body["parentRunId"])
    return name, tags, properties


def create_run(call, body, checked):
    """Record the new run a PATCH of an unknown run id asks for; return its handle.
    Everything is checked before anything is written: a refused request records nothing."""
    name, tags, properties = checked_new_run(call, body, checked)
    parent_id = body.get("parentRunId")
    store = call.service.store
    if parent_id:
        with store.transaction() as conn:
            if store.exists_in(conn, call.run_id):
                raise ServiceError(409, "Conflict", f"run {call.run_id!r} exists already")
            insert_child_in(store, conn, parent_id, call.run_id, name)
    else:
        _create_interactive(call, body, name, tags)
    handle = call.service.backend().get_run(call.run_id)
    if tags and parent_id:
        handle.set_tags(tags)
    if properties:
        add_properties(call.service, handle, properties)
    return handle


def _create_interactive(call, body, name, tags):
    store = call.service.store
    experiment = call.params.get("experiment_name") or name_of_experiment_id(
        call.service, call.params["experiment_id"])
    store.check_new_run_id(call.run_id)
    # Its source is what the user's process snapshots (ContentSnapshotId, add_properties below).
    store.create_run(experiment=experiment, executor=INTERACTIVE,
                     compute=body.get("target") or "local", run_id=call.run_id,
                     spec={INTERACTIVE: True, "script": body.get("scriptName"), "tags": tags},
                     fill_snapshot=lambda folder: folder.mkdir(), display_name=name or None)


def add_properties(service, handle, properties):
    """Add a run's properties; an interactive run's ContentSnapshotId (what start_logging's
    take_snapshot adds) brings that snapshot's files into the run's snapshot folder first, so a
    snapshot that is not there is refused before the property is written."""
    snapshot_id = properties.get(SNAPSHOT_PROPERTY)
    details = handle.get_details()
    if snapshot_id and details["executor"] == INTERACTIVE and \
            SNAPSHOT_PROPERTY not in details["properties"]:
        materialize(service.home, snapshot_id, handle.run_dir / "snapshot")
    handle.add_properties(properties)


def is_driverless(record):
    """Does no driver of amlocal's set this run's statuses (a child its parent's script created,
    or an interactive run), so that its creator's events move it?"""
    return bool(record["spec"].get("child_of") or record["spec"].get(INTERACTIVE))


@operation(HISTORY + "/experiments/{experiment_name}/batch/runs", ["PATCH"], auth="caller")
def create_children(call):
    """create_children: several new child runs, each checked and recorded as one child_run's
    PATCH would be; a token of a run may create children of that run only."""
    from amlocal.service.history import checked_changes, run_dto  # history routes PATCH here

    requested = call.json_object().get("runs")
    if not isinstance(requested, list) or not 0 < len(requested) <= MAX_CHILDREN_PER_BATCH:
        raise bad_request(f"the batch needs a list of 1 to {MAX_CHILDREN_PER_BATCH} runs",
                          code="ValidationError")
    children = []
    for body in requested:
        parent_id = body.get("parentRunId") if isinstance(body, dict) else None
        if not (isinstance(parent_id, str) and call.claims.allows_run(parent_id)):
            raise ServiceError(403, "AuthorizationFailed", f"the token's scope "
                               f"({call.claims.scope}) does not allow creating children of "
                               f"run {str(parent_id)[:100]!r}")
        child_id = body.get("runId")
        if not (isinstance(child_id, str) and len(child_id) <= MAX_RUN_ID
                and is_plain_run_id(child_id)):
            raise bad_request(f"invalid run id {str(child_id)[:100]!r} in the batch",
                              code="ValidationError")
        child = dataclasses.replace(call, params={**call.params, "run_id": child_id})
        checked_new_run(child, body, checked_changes)  # all are checked before any is written
        children.append((child, body))
    if len({child.run_id for child, _ in children}) != len(children):
        raise bad_request("the batch names a run id twice", code="ValidationError")
    runs = {}
    for child, body in children:
        handle = create_run(child, body, checked_changes)
        runs[handle.id] = run_dto(call.service, handle.get_details())
    return {"runs": runs, "errors": {}}


ROUTES = [create_children]
