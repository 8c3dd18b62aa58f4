"""History: runs that the local backend ran, as Azure ML's run history serves them.

Get, patch (tags, properties), details, list (runs:query), children, tag removal, cancel,
and the run token. Every read goes through the local backend's run handles (so a run whose
driver died is reconciled, as `amlocal runs show` would); every change through the handle's
methods, with Azure's limits.
"""

import re
import uuid

from amlocal.backends.base import DEFAULT_EXPERIMENT
from amlocal.backends.history.store import BUILD_LOG, DRIVER_LOG, iso_time
from amlocal.errors import RunNotFoundError
from amlocal.service.children import add_properties, create_run
from amlocal.service.errors import ServiceError, not_found
from amlocal.service.submitted import submitted_definition
from amlocal.service.experiments import HISTORY, experiment_id
from amlocal.service.tokens import RUN_SCOPE, RUN_TOKEN_SECONDS
from amlocal.service.wire import content_url, operation, read_token
from amlocal.validation import check_key_values

RUNS = HISTORY + "/experiments/{experiment_name}/runs"
# azureml-core names a run's experiment by name or, once it knows it, by id.
RUN_PREFIXES = (RUNS, HISTORY + "/experimentids/{experiment_id}/runs")


def run_paths(suffix=""):
    """A run operation's paths under both ways of naming the experiment."""
    return tuple(f"{prefix}/{{run_id}}{suffix}" for prefix in RUN_PREFIXES)


RUN_TYPE = "azureml.scriptrun"


def run_handle(call):
    """The handle of the URL's run, which must belong to the URL's experiment; 404 otherwise."""
    try:
        handle = call.service.backend().get_run(call.run_id)
    except RunNotFoundError:
        raise not_found(f"run {call.run_id!r} was not found") from None
    experiment = handle.get_details()["experiment"]
    named = call.params.get("experiment_name")
    if named is not None and experiment != named:
        raise not_found(f"run {call.run_id!r} was not found in experiment {named!r}")
    identifier = call.params.get("experiment_id")
    if identifier is not None and experiment_id(call.service, experiment) != identifier:
        raise not_found(f"run {call.run_id!r} was not found in experiment {identifier!r}")
    return handle


def _run_error(details):
    if not details["error"]:
        return None
    return {"error": {"code": "UserError" if details["exit_code"] else "ServiceError",
                      "message": details["error"]}}


def _root_of(service, details):
    root = details
    for _ in range(64):  # a sweep's child's parent is the root; nothing nests deeper here
        if not root["parent_id"]:
            break
        try:
            root = service.backend().get_run(root["parent_id"]).get_details()
        except RunNotFoundError:
            break
    return root["id"]


def run_dto(service, details):
    """A RunDto (what GET .../runs/{id} answers) of a run's details."""
    run_id = details["id"]
    parent = details["parent_id"]
    return {
        "runId": run_id,
        "runUuid": str(uuid.uuid5(uuid.NAMESPACE_URL, f"{service.identity.workspace_id}/{run_id}")),
        "parentRunId": parent,
        "rootRunId": _root_of(service, details),
        "experimentId": experiment_id(service, details["experiment"] or DEFAULT_EXPERIMENT),
        "runNumber": details["number"],
        "status": details["status"],
        "createdUtc": details["created_at"],
        "startTimeUtc": details["started_at"],
        "endTimeUtc": details["ended_at"],
        "name": details["display_name"],
        "displayName": details["display_name"] or run_id,
        "dataContainerId": f"dcid.{run_id}",
        "description": None,
        "hidden": False,
        "heartbeatEnabled": False,
        "runType": RUN_TYPE,
        "scriptName": details["script"],
        "target": details["compute"],
        "tags": details["tags"],
        "properties": details["properties"],
        "error": _run_error(details),
        "createdBy": {"userName": "amlocal"},
        # Run.cancel() POSTs here (with its workspace token) when a run has a cancelUri.
        "cancelUri": f"{service.endpoint}/amlocal/runs/{run_id}/cancel",
    }


# The fields a RunDetailsDto shares with the RunDto.
_DETAILS_FROM_DTO = ("runId", "target", "status", "startTimeUtc", "endTimeUtc", "properties",
                     "error")


def run_details_dto(service, details, file_names):
    """A RunDetailsDto (GET .../runs/{id}/details): what `Run.get_details()` returns."""
    dto = run_dto(service, details)
    token = read_token(service, details["id"])
    return {
        **{key: dto[key] for key in _DETAILS_FROM_DTO},
        "inputDatasets": [],
        "outputDatasets": [],
        "warnings": [],
        "runDefinition": submitted_definition(service, details["id"]) or {
            "script": details["script"], "arguments": details["arguments"],
            "target": details["compute"], "nodeCount": details["node_count"]},
        # azureml-core's wait_for_completion(show_output=True) reads the last of these (by
        # name) with a plain GET: the image build log while the run prepares, then the driver log.
        "logFiles": {name: content_url(service, details["id"], name, token)
                     for name in (BUILD_LOG, DRIVER_LOG) if name in file_names},
    }


@operation((*run_paths(), HISTORY + "/runs/{run_id}"), ["GET"])
def get_run(call):
    return run_dto(call.service, run_handle(call).get_details())


@operation(run_paths("/details"), ["GET"])
def get_run_details(call):
    handle = run_handle(call)
    return run_details_dto(call.service, handle.get_details(), handle.get_file_names())


def checked_changes(changes, current, kind):
    """Azure's limits on a run's tags or properties, checked on what they would become."""
    if not isinstance(changes, dict):
        raise ServiceError(400, "ValidationError", f"{kind}s must be an object of strings")
    changes = {str(key): "" if value is None else str(value) for key, value in changes.items()}
    check_key_values({**current, **changes}, kind)
    return changes


@operation(run_paths(), ["PATCH"])
def patch_run(call):
    """Tags and properties, all checked before any is written (a refused PATCH changes nothing)."""
    body = call.json_object()
    try:
        call.service.store.get_status(call.run_id)
    except RunNotFoundError:
        # A PATCH of a new id is how azureml-core creates runs (child_run, start_logging).
        return run_dto(call.service, create_run(call, body, checked_changes).get_details())
    unknown = sorted(set(body) - {"runId", "tags", "properties"})
    if unknown:
        raise ServiceError(501, "NotImplemented", "changing a run's "
                           f"{', '.join(unknown)} with PATCH is not emulated yet")
    handle = run_handle(call)
    details = handle.get_details()
    tags = checked_changes(body.get("tags", {}), details["tags"], "tag")
    properties = checked_changes(body.get("properties", {}), details["properties"], "property")
    for key, value in properties.items():
        if details["properties"].get(key, value) != value:
            raise ServiceError(400, "UserError", f"property {key!r} of run {call.run_id} is "
                               f"already {details['properties'][key]!r}; run properties "
                               "cannot be changed")
    if tags:
        handle.set_tags(tags)
    if properties:
        add_properties(call.service, handle, properties)
    return run_dto(call.service, handle.get_details())


@operation(run_paths("/tags"), ["DELETE"])
def delete_tags(call):
    keys = call.json()
    if not isinstance(keys, list) or not all(isinstance(key, str) for key in keys):
        raise ServiceError(400, "ValidationError", "the body must be a list of tag names")
    handle = run_handle(call)
    handle.set_tags({}, remove=keys)
    return run_dto(call.service, handle.get_details())


@operation("/amlocal/runs/{run_id}/cancel", ["POST"])
def cancel_run(call):
    """Ask the run to stop, as `amlocal runs cancel` does: CancelRequested, then Canceled once
    its script has stopped (a run that has ended is left as it is)."""
    handle = run_handle(call)
    handle.cancel()
    return run_dto(call.service, handle.get_details())


@operation(run_paths("/token"), ["GET"])
def get_run_token(call):
    """A token for the run's URLs only (what a run holds as AZUREML_RUN_TOKEN, renewed here)."""
    run_handle(call)
    token = call.service.tokens.issue(RUN_SCOPE + call.run_id, RUN_TOKEN_SECONDS)
    return {"token": token, "expiryTimeUtc": iso_time(call.service.tokens.verify(token).expires)}


# The clauses azureml-core's Run.list / get_runs / get_children put in a runs:query filter
# (azureml/_restclient/_odata/constants.py), and what each asks of a run's details.
_CLAUSES = (
    (re.compile(r"\(ParentRunId eq null\)"), lambda found, run: not run["parent_id"]),
    (re.compile(r"\(Tags/(.+?) ne null or Tags/\1 eq null\)"),
     lambda found, run: found.group(1) in run["tags"]),
    (re.compile(r"\(Tags/(.+?) eq (.*?)\)"),
     lambda found, run: run["tags"].get(found.group(1)) == _unquoted(found.group(2))),
    (re.compile(r"\(Properties/(.+?) ne null or Properties/\1 eq null\)"),
     lambda found, run: found.group(1) in run["properties"]),
    (re.compile(r"\(Properties/(.+?) eq (.*?)\)"),
     lambda found, run: run["properties"].get(found.group(1)) == _unquoted(found.group(2))),
    (re.compile(r"\(Status eq (.*?)\)"),
     lambda found, run: run["status"] == _unquoted(found.group(1))),
    (re.compile(r"\(RunType eq (.+?) or Properties/azureml\.runsource eq \1\)"),
     lambda found, run: _unquoted(found.group(1)) == RUN_TYPE),
    (re.compile(r"\(Target eq (.*?)\)"),
     lambda found, run: run["compute"] == _unquoted(found.group(1))),
)


def _unquoted(text):
    text = text.strip()
    return text[1:-1] if len(text) > 1 and text[0] == text[-1] and text[0] in "'\"" else text


def _wraps_whole(text):
    """Does the "(" at text[0] close at text[-1]?"""
    depth = 0
    for index, character in enumerate(text):
        depth += {"(": 1, ")": -1}.get(character, 0)
        if depth == 0:
            return index == len(text) - 1
    return False


def _conjuncts(expression):
    """The clauses of an and-joined filter, as azureml-core's and_join writes it: "((A) and (B))"
    (quotes are not looked into: tag values are compared whole below)."""
    text = expression.strip()
    if text.startswith("(") and text.endswith(")") and _wraps_whole(text) and \
            text[1:-1].strip().startswith("("):
        text = text[1:-1].strip()
    parts, depth, start = [], 0, 0
    for index, character in enumerate(text):
        depth += {"(": 1, ")": -1}.get(character, 0)
        if depth == 0 and text.startswith(" and ", index):
            parts.append(text[start:index])
            start = index + len(" and ")
    parts.append(text[start:])
    return [part.strip() for part in parts if part.strip()]


def run_filter(expression):
    """A predicate on run details for a runs:query filter; 501 naming a clause it cannot read."""
    tests = []
    for clause in _conjuncts(expression or ""):
        for pattern, test in _CLAUSES:
            found = pattern.fullmatch(clause)
            if found:
                tests.append((test, found))
                break
        else:
            raise ServiceError(501, "NotImplemented",
                               f"the run filter clause {clause[:200]!r} is not emulated yet")
    return lambda run: all(test(found, run) for test, found in tests)


def _page(service, records):
    return {"value": [run_dto(service, record) for record in records],
            "continuationToken": None, "nextLink": None}


@operation(RUNS + ":query", ["POST"])
def query_runs(call):
    query = call.json_object()
    wanted = run_filter(query.get("filter"))
    experiment = call.params["experiment_name"]
    records = [record for record in call.service.backend().list_runs(experiment=experiment)
               if "corrupted" not in record and wanted(record)]
    return _page(call.service, records)


@operation(run_paths("/children"), ["GET"])
def get_children(call):
    return _page(call.service, [child.get_details() for child in run_handle(call).get_children()])


ROUTES = [query_runs, get_run, patch_run, get_run_details, delete_tags, get_children, cancel_run,
          get_run_token]
