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

Searching runs and experiments is in mlflow_search.py.

Tokens: the caller's bearer token (MLFLOW_TRACKING_TOKEN), checked as every route checks it; a
run's token reaches that run (and its children) only. Creating a run needs the workspace's.
An interactive run that MLflow created (outside any `amlocal run`) is moved through the run
status machine by `end_run()` / `update_run`; a run a driver runs keeps the status its script's
exit code gives it. Every other MLflow operation answers 501 naming it, in MLflow's error shape.
"""

import math
import time

from starlette.responses import JSONResponse
from starlette.routing import Route

from amlocal.backends import status as run_status
from amlocal.backends.base import DEFAULT_EXPERIMENT
from amlocal.backends.history.metric_batches import TooManyMetricNames, add_metric_batch
from amlocal.backends.history.store import is_plain_run_id
from amlocal.backends.local.telemetry import end_child_in, start_child_in
from amlocal.errors import RunNotFoundError, UserInputError
from amlocal.service.children import INTERACTIVE, is_driverless
from amlocal.service.errors import ServiceError, bad_request, not_found
from amlocal.service.experiments import experiment_id, experiments
from amlocal.service.wire import MAX_RUN_ID, WS, operation
from amlocal.validation import check_key_values, check_text

PREFIX = "/mlflow/v1.0" + WS
API = PREFIX + "/api/2.0/mlflow"
PARAM_PREFIX = "mlflow.param."
MLFLOW_DEFAULT_EXPERIMENT_ID = "0"
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
                411: "INVALID_PARAMETER_VALUE", 413: "INVALID_PARAMETER_VALUE",
                501: "NOT_IMPLEMENTED"}


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

def parameter(call, name, required=True):
    """A field of the request: the query for GET, the JSON body otherwise."""
    source = call.query if call.method == "GET" else call.json_object()
    value = source.get(name)
    if value is None and name == "run_id":
        value = source.get("run_uuid")  # what MLflow's older clients send
    if required and (value is None or value == ""):
        raise bad_request(f"missing value for required parameter {name!r}")
    return value


def _run_id(call):
    run_id = parameter(call, "run_id")
    if not (isinstance(run_id, str) and len(run_id) <= MAX_RUN_ID and is_plain_run_id(run_id)):
        raise bad_request(f"invalid run id {str(run_id)[:100]!r}")
    return run_id


def _parent_of(store, run_id):
    try:
        return store.get_run(run_id)["parent_id"]
    except RunNotFoundError:
        return None


def allowed(call, run_id):
    store = call.service.store
    return call.claims.allows_run(run_id, lambda child: _parent_of(store, child))


def _allowed_run_id(call):
    """The request's run id, once the token is checked against it."""
    run_id = _run_id(call)
    if not allowed(call, run_id):
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

def milliseconds(seconds):
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
    return {"key": name, "value": number, "timestamp": milliseconds(logged_at), "step": step}


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
            "start_time": milliseconds(record["started_at"] or record["created_at"]),
            "end_time": milliseconds(record["ended_at"]),
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
    key = parameter(call, "metric_key")
    values = metric_history(call.service.store, record["id"]).get(key, [])
    start = page_start(call.query.get("page_token"))
    size = bounded(call.query.get("max_results"), len(values) or 1, MAX_SEARCH_RESULTS)
    page = values[start:start + size]
    following = start + size if start + size < len(values) else None
    return {"metrics": page, **({"next_page_token": str(following)} if following else {})}


def page_start(token):
    if token in (None, ""):
        return 0
    if not str(token).isdigit():
        raise bad_request(f"invalid page_token {str(token)[:40]!r}")
    return int(token)


def bounded(value, default, largest):
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


def listed(body, name, largest):
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
    key = _key(parameter(call, "key"), "tag")
    if key not in record["tags"]:
        raise not_found(f"No tag with name: {key} in run with id {record['id']}")
    call.service.store.update_tags(record["id"], remove=[key])
    return {}


@mlflow_operation("/runs/log-batch", ["POST"])
def log_batch(call):
    body = call.json_object()
    metrics = listed(body, "metrics", MAX_METRICS_PER_BATCH)
    params = listed(body, "params", MAX_PARAMS_TAGS_PER_BATCH)
    tags = listed(body, "tags", MAX_PARAMS_TAGS_PER_BATCH)
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
    wanted = parameter(call, "status", required=False)
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
    name = experiment_name(call, parameter(call, "experiment_id", required=False) or
                           MLFLOW_DEFAULT_EXPERIMENT_ID)
    run_name = body.get("run_name")
    tags = {str(tag.get("key")): str(tag.get("value", "")) for tag in listed(
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


def known_experiments(service):
    """{name: created time} of the workspace's experiments, with MLflow's default one (which an
    MLflow server always has), the run history's `Default`."""
    known = experiments(service)
    known.setdefault(DEFAULT_EXPERIMENT, min(known.values(), default=time.time()))
    return known


def experiment_name(call, identifier):
    """The name of the experiment with id `identifier`; MLflow's id of its default experiment,
    "0", is `Default`'s too."""
    if identifier == MLFLOW_DEFAULT_EXPERIMENT_ID:
        return DEFAULT_EXPERIMENT
    for name in known_experiments(call.service):
        if experiment_id(call.service, name) == identifier:
            return name
    raise not_found(f"No Experiment with id={identifier} exists")


async def _not_emulated(request):
    return mlflow_error(501, "NotImplemented", f"amlocal's MLflow tracking server does not "
                        f"emulate {request.method} {request.url.path} yet")


# Any other MLflow operation is a 501 in MLflow's shape, naming it: the last of the MLflow
# routes (mlflow_artifacts.py, the last MLflow family, puts it after its own).
NOT_EMULATED = [Route(PREFIX + "/{anything:path}", _not_emulated,
                      methods=["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"])]

ROUTES = [get_run, get_metric_history, log_metric, log_parameter, set_tag, delete_tag, log_batch,
          update_run, create_run]
