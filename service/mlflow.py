"""MLflow's tracking REST API (2.0), over the same run history as Azure ML's run history.

What `mlflow` (mlflow-skinny 3.x) calls for a script's `mlflow.start_run()` (with MLFLOW_RUN_ID
set: that run), `log_metric(s)`, `log_param(s)`, `set_tag(s)`, `end_run()`, and what
`MlflowClient().get_run`, `search_runs` and `get_metric_history` read back. As on Azure ML, an
MLflow run is an Azure ML run (the same id), an MLflow experiment is its experiment (the same id
as the run history's), and the tracking URI is the workspace's:

    <endpoint>/mlflow/v1.0/subscriptions/<sub>/resourceGroups/<rg>/providers/
        Microsoft.MachineLearningServices/workspaces/<ws>     (+ /api/2.0/mlflow/...)

What lands where, written through the run history:

    metric  a scalar metric value, with its step and time (the same table as `run.log`)
    param   a run property named `mlflow.param.<key>` (both are write-once: logging a param
            again with another value is refused, as MLflow and Azure ML refuse it)
    tag     a run tag
    artifact a run file (mlflow_artifacts.py: the run's artifact_uri is `mlflow-artifacts:/<run
            id>`, which the client resolves against its tracking URI)

Tokens: the caller's bearer token (MLFLOW_TRACKING_TOKEN), checked as every route checks it; a
run's token reaches that run (and its children) only. Creating a run needs the workspace's.
An interactive run that MLflow created (outside any `amlocal run`) is moved through the run
status machine by `end_run()` / `update_run`; a run a driver runs keeps the status its script's
exit code gives it. Every other MLflow operation answers 501 naming it, in MLflow's error shape.
"""

import math
import re
import time

from starlette.responses import JSONResponse
from starlette.routing import Route

from amlocal.backends import status as run_status
from amlocal.backends.history.metric_batches import TooManyMetricNames, add_metric_batch
from amlocal.backends.history.store import is_plain_run_id
from amlocal.backends.local.telemetry import end_child_in, start_child_in
from amlocal.errors import RunNotFoundError, UserInputError
from amlocal.service import mlflow_artifacts
from amlocal.service.children import INTERACTIVE, is_driverless
from amlocal.service.errors import ServiceError, bad_request, not_found
from amlocal.service.experiments import create_experiment_named, experiment_id, experiments
from amlocal.service.wire import MAX_RUN_ID, WS, operation
from amlocal.validation import check_experiment_name, check_key_values, check_text

PREFIX = "/mlflow/v1.0" + WS
API = PREFIX + "/api/2.0/mlflow"
PARAM_PREFIX = "mlflow.param."
# MLflow's own limits on one log-batch (mlflow/utils/validation.py).
MAX_METRICS_PER_BATCH = 1000
MAX_PARAMS_TAGS_PER_BATCH = 100
MAX_KEY_LENGTH = 250
# Metric names a run may have through MLflow (Azure ML's v1 limit of 50 is for run.log's route).
MAX_METRIC_NAMES = 1000
MAX_SEARCH_RESULTS = 50000
_STATUS_TO_MLFLOW = {
    run_status.NOT_STARTED: "SCHEDULED", run_status.QUEUED: "SCHEDULED",
    run_status.PREPARING: "SCHEDULED", run_status.STARTING: "SCHEDULED",
    run_status.RUNNING: "RUNNING", run_status.FINALIZING: "RUNNING",
    run_status.CANCEL_REQUESTED: "RUNNING", run_status.COMPLETED: "FINISHED",
    run_status.FAILED: "FAILED", run_status.CANCELED: "KILLED",
    run_status.NOT_RESPONDING: "RUNNING"}
_MLFLOW_ENDINGS = {"FINISHED": run_status.COMPLETED, "FAILED": run_status.FAILED,
                   "KILLED": run_status.CANCELED}
_ERROR_CODES = {400: "INVALID_PARAMETER_VALUE", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED",
                404: "RESOURCE_DOES_NOT_EXIST", 409: "RESOURCE_ALREADY_EXISTS",
                413: "INVALID_PARAMETER_VALUE", 501: "NOT_IMPLEMENTED"}


def tracking_uri(endpoint, arm_id):
    """The MLflow tracking URI of the workspace `arm_id` served at `endpoint`."""
    return f"{endpoint.rstrip('/')}/mlflow/v1.0{arm_id}"


def mlflow_error(status, code, message, details=()):
    """MLflow's error body ({"error_code", "message"}), which its client raises as
    MlflowException with that code."""
    return JSONResponse({"error_code": _ERROR_CODES.get(status, "INTERNAL_ERROR"),
                         "message": message}, status_code=status)


def mlflow_operation(path, methods, auth="caller"):
    return operation(API + path, methods, auth=auth, errors=mlflow_error)


# -- the caller and the run ------------------------------------------------------------------

def _parameter(call, name, required=True):
    """A field of the request: the query for GET, the JSON body otherwise."""
    source = call.query if call.method == "GET" else call.json_object()
    value = source.get(name)
    if value is None and name == "run_id":
        value = source.get("run_uuid")  # what MLflow's older clients send
    if required and (value is None or value == ""):
        raise bad_request(f"missing value for required parameter {name!r}")
    return value


def _run_id(call):
    run_id = _parameter(call, "run_id")
    if not (isinstance(run_id, str) and len(run_id) <= MAX_RUN_ID and is_plain_run_id(run_id)):
        raise bad_request(f"invalid run id {str(run_id)[:100]!r}")
    return run_id


def _parent_of(store, run_id):
    try:
        return store.get_run(run_id)["parent_id"]
    except RunNotFoundError:
        return None


def _allowed(call, run_id):
    store = call.service.store
    return call.claims.allows_run(run_id, lambda child: _parent_of(store, child))


def _allowed_run_id(call):
    """The request's run id, once the token is checked against it."""
    run_id = _run_id(call)
    if not _allowed(call, run_id):
        raise ServiceError(403, "AuthorizationFailed", f"the token's scope ({call.claims.scope}) "
                           f"does not allow run {run_id}")
    return run_id


def _record(call):
    """The record of the request's run (after the token is checked against it); 404 if none.
    Read through the backend: a run whose driver died is reconciled first, as everywhere."""
    run_id = _allowed_run_id(call)
    try:
        call.service.backend().get_run(run_id)
        return call.service.store.get_run(run_id)
    except RunNotFoundError:
        raise not_found(f"Run with id={run_id} not found") from None


# -- what MLflow reads ------------------------------------------------------------------------

def _ms(seconds):
    return int(seconds * 1000) if seconds is not None else None


def _number(value):
    """A metric value MLflow can show (a double), or None for one it cannot (a list, text)."""
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, (int, float)):
        return float(value)
    return None


def _metric_json(name, value, step, logged_at):
    number = value if math.isfinite(value) else str(value)  # proto JSON's "NaN", "Infinity"
    return {"key": name, "value": number, "timestamp": _ms(logged_at), "step": step}


def metric_history(store, run_id):
    """{name: [MLflow metric]} of every scalar number the run logged, either way; a value that
    run.log gave no step has its place in the metric's logging order as its step."""
    history = {}
    for record in store.get_metric_records(run_id):
        value = _number(record["value"]) if record["type"] == "scalar" else None
        if record["damaged"] or value is None:
            continue
        step = record["step"] if record["step"] is not None else record["position"]
        history.setdefault(record["name"], []).append(
            _metric_json(record["name"], value, step, record["logged_at"]))
    return history


def _latest(values):
    # MLflow's "latest" value of a metric: the highest step, then the latest time.
    return max(values, key=lambda metric: (metric["step"], metric["timestamp"]))


def run_info(service, record):
    return {"run_id": record["id"], "run_uuid": record["id"],
            "run_name": record["display_name"] or record["id"],
            "experiment_id": experiment_id(service, record["experiment"]),
            "user_id": "amlocal", "status": _STATUS_TO_MLFLOW.get(record["status"], "RUNNING"),
            "start_time": _ms(record["started_at"] or record["created_at"]),
            "end_time": _ms(record["ended_at"]),
            "artifact_uri": f"mlflow-artifacts:/{record['id']}", "lifecycle_stage": "active"}


def run_json(service, record):
    metrics = [_latest(values) for values in metric_history(service.store, record["id"]).values()]
    params = [{"key": key[len(PARAM_PREFIX):], "value": value}
              for key, value in record["properties"].items() if key.startswith(PARAM_PREFIX)]
    tags = [{"key": key, "value": value} for key, value in record["tags"].items()]
    return {"info": run_info(service, record),
            "data": {"metrics": metrics, "params": params, "tags": tags}, "inputs": {}}


@mlflow_operation("/runs/get", ["GET"])
def get_run(call):
    return {"run": run_json(call.service, _record(call))}


@mlflow_operation("/metrics/get-history", ["GET"])
def get_metric_history(call):
    record = _record(call)
    key = _parameter(call, "metric_key")
    values = metric_history(call.service.store, record["id"]).get(key, [])
    start = _page_start(call.query.get("page_token"))
    size = _bounded(call.query.get("max_results"), len(values) or 1, MAX_SEARCH_RESULTS)
    page = values[start:start + size]
    following = start + size if start + size < len(values) else None
    return {"metrics": page, **({"next_page_token": str(following)} if following else {})}


def _page_start(token):
    if token in (None, ""):
        return 0
    if not str(token).isdigit():
        raise bad_request(f"invalid page_token {str(token)[:40]!r}")
    return int(token)


def _bounded(value, default, largest):
    if value in (None, ""):
        return default
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise bad_request(f"max_results must be a whole number, not {str(value)[:40]!r}") from None
    if not 0 < number <= largest:
        raise bad_request(f"max_results must be between 1 and {largest}")
    return number


# -- what MLflow writes -----------------------------------------------------------------------

def _key(key, what):
    if not isinstance(key, str) or not key or len(key) > MAX_KEY_LENGTH:
        raise bad_request(f"{what} name must be a string of 1 to {MAX_KEY_LENGTH} characters")
    try:
        check_text(key, f"{what} name {key[:40]!r}")
    except UserInputError as error:
        raise bad_request(str(error)) from None
    return key


def _metric_record(metric):
    """(name, (type, value, step, logged_at)) of one MLflow metric; 400 for a malformed one."""
    if not isinstance(metric, dict):
        raise bad_request("each metric must be an object")
    name = _key(metric.get("key"), "metric")
    value = metric.get("value")
    if isinstance(value, str) and value in ("NaN", "Infinity", "-Infinity"):
        value = float(value.replace("Infinity", "inf"))
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise bad_request(f"metric {name!r} has no number for its value")
    step = metric.get("step", 0)
    timestamp = metric.get("timestamp")
    try:
        step = int(step or 0)
        logged_at = int(timestamp) / 1000 if timestamp not in (None, "") else time.time()
    except (TypeError, ValueError):
        raise bad_request(f"metric {name!r}: step and timestamp are whole numbers") from None
    if not -2 ** 63 <= step < 2 ** 63:
        raise bad_request(f"metric {name!r}: its step is out of range")
    return name, ("scalar", float(value), step, logged_at)


def _writable(call):
    """The record of the request's run, which must not have ended (MLflow's own rule)."""
    record = _record(call)
    if run_status.is_terminal(record["status"]):
        raise bad_request(_ended(record["id"], record["status"]))
    return record


def _ended(run_id, status):
    return (f"The run {run_id} must be in the 'active' state. Current state is {status} (it "
            "has ended).")


def _log(call, record, metrics=(), params=(), tags=()):
    """Write a checked batch: tags and params first (each refused whole, by Azure's limits on
    tags and properties, before any is written), then the metrics in one transaction."""
    store = call.service.store
    run_id = record["id"]
    checked_tags = {_key(tag.get("key") if isinstance(tag, dict) else None, "tag"):
                    str(tag.get("value", "")) for tag in tags}
    checked_params = {PARAM_PREFIX + _key(param.get("key") if isinstance(param, dict) else None,
                                          "param"): str(param.get("value", ""))
                      for param in params}
    records = _metric_records(metrics)  # all checked before anything is written
    try:
        if checked_tags:
            check_key_values({**record["tags"], **checked_tags}, "tag")
        if checked_params:
            check_key_values({**record["properties"], **checked_params}, "property")
            for key, value in checked_params.items():
                if record["properties"].get(key, value) != value:
                    raise UserInputError(
                        f"Changing param values is not allowed. Param with key="
                        f"'{key[len(PARAM_PREFIX):]}' was already logged with value="
                        f"'{record['properties'][key]}' for run ID='{run_id}'. Attempted "
                        f"logging new value '{value}'.")
        if checked_tags:
            store.update_tags(run_id, checked_tags)
        if checked_params:
            store.add_properties(run_id, checked_params)
    except UserInputError as error:
        raise bad_request(str(error)) from None
    return _write_metrics(store, run_id, records)


def _metric_records(metrics):
    records = {}
    for metric in metrics:
        name, value = _metric_record(metric)
        records.setdefault(name, []).append(value)
    return records


def _write_metrics(store, run_id, records):
    """Write checked MLflow metrics ({name: records}) in one transaction."""
    if records:
        try:
            add_metric_batch(store, run_id, records, MAX_METRIC_NAMES)
        except TooManyMetricNames as error:
            raise bad_request(f"run {run_id} would have {error.names} metric names; amlocal "
                              f"keeps at most {MAX_METRIC_NAMES} per run") from None
    return {}


def _list(body, name, largest):
    values = body.get(name) or []
    if not isinstance(values, list):
        raise bad_request(f"{name} must be a list")
    if len(values) > largest:
        raise bad_request(f"A batch logging request can contain at most {largest} {name}; "
                          f"got {len(values)}")
    return values


def _log_metrics_only(call, metrics):
    """Metrics alone: the run's status is all that is read (a script may log thousands)."""
    records = _metric_records(metrics)
    run_id = _allowed_run_id(call)
    try:
        status = call.service.store.get_status(run_id)
    except RunNotFoundError:
        raise not_found(f"Run with id={run_id} not found") from None
    if run_status.is_terminal(status):
        raise bad_request(_ended(run_id, status))
    return _write_metrics(call.service.store, run_id, records)


@mlflow_operation("/runs/log-metric", ["POST"])
def log_metric(call):
    return _log_metrics_only(call, [call.json_object()])


@mlflow_operation("/runs/log-parameter", ["POST"])
def log_parameter(call):
    body = call.json_object()
    return _log(call, _writable(call), params=[body])


@mlflow_operation("/runs/set-tag", ["POST"])
def set_tag(call):
    body = call.json_object()
    return _log(call, _record(call), tags=[body])  # tags may change after a run ended


@mlflow_operation("/runs/delete-tag", ["POST"])
def delete_tag(call):
    record = _record(call)
    key = _key(_parameter(call, "key"), "tag")
    if key not in record["tags"]:
        raise not_found(f"No tag with name: {key} in run with id {record['id']}")
    call.service.store.update_tags(record["id"], remove=[key])
    return {}


@mlflow_operation("/runs/log-batch", ["POST"])
def log_batch(call):
    body = call.json_object()
    metrics = _list(body, "metrics", MAX_METRICS_PER_BATCH)
    params = _list(body, "params", MAX_PARAMS_TAGS_PER_BATCH)
    tags = _list(body, "tags", MAX_PARAMS_TAGS_PER_BATCH)
    if not params and not tags:
        return _log_metrics_only(call, metrics)
    record = _writable(call) if metrics or params else _record(call)
    return _log(call, record, metrics=metrics, params=params, tags=tags)


@mlflow_operation("/runs/update", ["POST"])
def update_run(call):
    """A status from `mlflow.start_run()` (RUNNING) or `end_run()` (FINISHED, FAILED, KILLED):
    an interactive run MLflow (or start_logging) created moves through the state machine; a
    run a driver runs is the driver's to end, so its status stays as it is."""
    record = _record(call)
    wanted = _parameter(call, "status", required=False)
    if wanted is not None and wanted not in (*_MLFLOW_ENDINGS, "RUNNING", "SCHEDULED"):
        raise bad_request(f"unknown run status {str(wanted)[:40]!r}")
    if wanted and is_driverless(record) and not record["spec"].get("child_of"):
        store = call.service.store
        with store.transaction() as conn:
            if store.status_in(conn, record["id"]) == run_status.NOT_STARTED:
                start_child_in(store, conn, record["id"])
            if wanted in _MLFLOW_ENDINGS:
                end_child_in(store, conn, record["id"], _MLFLOW_ENDINGS[wanted])
        record = call.service.store.get_run(record["id"])
    return {"run_info": run_info(call.service, record)}


@mlflow_operation("/runs/create", ["POST"], auth="token")
def create_run(call):
    """A new interactive run (as `Experiment.start_logging()` makes one): Running at once, ended
    by `end_run()`. Needs the workspace's token (a run's token cannot create runs)."""
    body = call.json_object()
    name = _experiment_name(call, _parameter(call, "experiment_id", required=False) or
                            experiment_id(call.service, "Default"))
    run_name = body.get("run_name")
    tags = {str(tag.get("key")): str(tag.get("value", "")) for tag in _list(
        body, "tags", MAX_PARAMS_TAGS_PER_BATCH) if isinstance(tag, dict)}
    try:
        tags = check_key_values(tags, "tag")
        if run_name is not None:
            check_text(str(run_name), "run name")
    except UserInputError as error:
        raise bad_request(str(error)) from None
    store = call.service.store
    run_id = store.create_run(experiment=name, executor=INTERACTIVE, compute="local",
                              spec={INTERACTIVE: True, "script": None, "tags": tags},
                              fill_snapshot=lambda folder: folder.mkdir(),
                              display_name=str(run_name)[:255] if run_name else None)
    with store.transaction() as conn:
        start_child_in(store, conn, run_id)
    return {"run": run_json(call.service, store.get_run(run_id))}


def _experiment_name(call, identifier):
    for name in experiments(call.service):
        if experiment_id(call.service, name) == identifier:
            return name
    if identifier == experiment_id(call.service, "Default"):
        return "Default"  # MLflow's default experiment is there before it has runs
    raise not_found(f"No Experiment with id={identifier} exists")


@mlflow_operation("/runs/search", ["POST"])
def search_runs(call):
    body = call.json_object()
    wanted = {str(identifier) for identifier in _list(body, "experiment_ids", 1000)}
    if body.get("order_by"):
        raise ServiceError(501, "NotImplemented", "search_runs' order_by is not emulated yet "
                           "(runs come newest first)")
    matches = run_filter(body.get("filter") or "")
    start = _page_start(body.get("page_token"))
    size = _bounded(body.get("max_results"), 1000, MAX_SEARCH_RESULTS)
    found = []
    store = call.service.store
    for record in store.list_runs():
        if "corrupted" in record or (wanted and experiment_id(
                call.service, record["experiment"]) not in wanted):
            continue
        if not _allowed(call, record["id"]):
            continue
        full = store.get_run(record["id"])
        document = run_json(call.service, full)
        if matches(document):
            found.append(document)
    page = found[start:start + size]
    following = start + size if start + size < len(found) else None
    return {"runs": page, **({"next_page_token": str(following)} if following else {})}


_CLAUSE = re.compile(r"\s*(metrics|metric|params|param|tags|tag|attributes|attribute|attr|run)"
                     r"\.(`[^`]+`|\"[^\"]+\"|[\w./-]+)\s*(=|!=|>=|<=|>|<)\s*"
                     r"('(?:[^']*)'|\"(?:[^\"]*)\"|[-+\w.]+)\s*", re.IGNORECASE)
_COMPARE = {"=": lambda a, b: a == b, "!=": lambda a, b: a != b, ">": lambda a, b: a > b,
            ">=": lambda a, b: a >= b, "<": lambda a, b: a < b, "<=": lambda a, b: a <= b}


def run_filter(expression):
    """A predicate on an MLflow run document for a search filter of MLflow's grammar's common
    part: clauses `metrics.k OP number`, `params.k = 'v'`, `tags.k = 'v'` and
    `attributes.status | run_name | run_id = 'v'` joined by AND; 501 naming anything else."""
    tests = []
    for clause in re.split(r"\s+and\s+", expression.strip(), flags=re.IGNORECASE) if \
            expression.strip() else []:
        found = _CLAUSE.fullmatch(clause)
        if not found:
            raise ServiceError(501, "NotImplemented",
                               f"the search filter clause {clause[:200]!r} is not emulated yet")
        kind, key, operator, value = found.groups()
        key, value = key.strip("`\""), value.strip("'\"")
        tests.append(_clause_test(kind.lower(), key, operator, value))
    return lambda document: all(test(document) for test in tests)


def _clause_test(kind, key, operator, value):
    compare = _COMPARE[operator]
    if kind.startswith("metric"):
        try:
            number = float(value)
        except ValueError:
            raise bad_request(f"metric filters compare with a number, not {value!r}") from None
        return lambda document: any(metric["key"] == key and isinstance(metric["value"], float)
                                    and compare(metric["value"], number)
                                    for metric in document["data"]["metrics"])
    if kind.startswith("param") or kind.startswith("tag"):
        field = "params" if kind.startswith("param") else "tags"
        if operator not in ("=", "!="):
            raise bad_request(f"{field} filters compare with = or !=")
        return lambda document: any(entry["key"] == key and compare(entry["value"], value)
                                    for entry in document["data"][field])
    if key not in ("status", "run_name", "run_id") or operator not in ("=", "!="):
        raise ServiceError(501, "NotImplemented",
                           f"the search filter on attributes.{key} {operator} is not emulated yet")
    return lambda document: compare(document["info"][key], value)


# -- experiments ------------------------------------------------------------------------------

def _experiment_json(service, name, created_at):
    return {"experiment_id": experiment_id(service, name), "name": name,
            "artifact_location": "mlflow-artifacts:/", "lifecycle_stage": "active",
            "creation_time": _ms(created_at), "last_update_time": _ms(created_at), "tags": []}


@mlflow_operation("/experiments/get", ["GET"])
def get_experiment(call):
    identifier = _parameter(call, "experiment_id")
    name = _experiment_name(call, identifier)
    known = experiments(call.service)
    return {"experiment": _experiment_json(call.service, name, known.get(name, time.time()))}


@mlflow_operation("/experiments/get-by-name", ["GET"])
def get_experiment_by_name(call):
    name = _parameter(call, "experiment_name")
    known = experiments(call.service)
    if name not in known:
        raise not_found(f"Could not find experiment with name '{name}'")
    return {"experiment": _experiment_json(call.service, name, known[name])}


@mlflow_operation("/experiments/create", ["POST"], auth="token")
def create_experiment(call):
    name = _parameter(call, "name")
    try:
        check_experiment_name(name)
    except UserInputError as error:
        raise bad_request(str(error)) from None
    if name in experiments(call.service):
        raise ServiceError(409, "Conflict", f"Experiment '{name}' already exists.")
    create_experiment_named(call.service, name)
    return {"experiment_id": experiment_id(call.service, name)}


@mlflow_operation("/experiments/search", ["POST"])
def search_experiments(call):
    body = call.json_object()
    if body.get("filter"):
        raise ServiceError(501, "NotImplemented", "search_experiments' filter is not emulated "
                           "yet")
    return {"experiments": [_experiment_json(call.service, name, at)
                            for name, at in sorted(experiments(call.service).items())]}


async def _not_emulated(request):
    return mlflow_error(501, "NotImplemented", f"amlocal's MLflow tracking server does not "
                        f"emulate {request.method} {request.url.path} yet")


# Last: any other MLflow operation is a 501 in MLflow's shape, naming it.
_REST = [Route(PREFIX + "/{anything:path}", _not_emulated,
               methods=["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"])]

ROUTES = [get_run, get_metric_history, log_metric, log_parameter, set_tag, delete_tag, log_batch,
          update_run, create_run, search_runs, get_experiment, get_experiment_by_name,
          create_experiment, search_experiments, *mlflow_artifacts.ROUTES, _REST]
