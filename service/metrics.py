"""Metric v2.0: batch ingest (what `run.log*` sends) with Azure ML's service rules, the read-back
that `run.get_metrics()` makes (list, then each metric in full), and the ingest wait.

amlocal records a metric value as one of scalar (a value), list (a list), row ({column: value})
and table ({column: [values]}); on the wire they are v2 metrics of uxMetricType azureml.v1.scalar,
azureml.v1.list or azureml.v1.table, one MetricV2 value per element, row or table row. An image
(`run.log_image`: the file is uploaded first, as a run file) is azureml.v2.image, its value the
file's aml://artifactId URI; amlocal records it as the stand-in does ({"file": run file name}).
A confusion matrix, accuracy table, residuals or predictions (uploaded first as a run file named
like the metric, a JSON document) is azureml.v2.<kind>, its value that file's URI; amlocal
records the document inline, as the stand-in does, so reports draw it.
"""

import json
import math
import time
import uuid
from datetime import datetime, timezone

from amlocal.backends.history.metric_batches import TooManyMetricNames, add_metric_batch
from amlocal.backends.history.store import iso_time
from amlocal.errors import UserInputError
from amlocal.service.errors import ServiceError, not_found
from amlocal.service.history import run_handle, run_paths
from amlocal.service.wire import WS, operation
from amlocal.validation import check_text, shown

METRIC_RUN = "/metric/v2.0" + WS + "/runs/{run_id}"
SCALAR, LIST, TABLE = "azureml.v1.scalar", "azureml.v1.list", "azureml.v1.table"
IMAGE = "azureml.v2.image"
IMAGE_COLUMN_TYPE = "artifact"
# The artifact-backed metrics whose artifact is a JSON document (azureml-core uploads it as the
# run file named like the metric, then logs the metric naming that file): {uxMetricType: the
# kind the run history records, with the document as its value, as the stand-in does}.
JSON_ARTIFACT_KINDS = {"azureml.v2.confusion_matrix": "confusion_matrix",
                       "azureml.v2.accuracy_table": "accuracy_table",
                       "azureml.v2.residuals": "residuals",
                       "azureml.v2.predictions": "predictions"}
_JSON_ARTIFACT_TYPES = {kind: ux_type for ux_type, kind in JSON_ARTIFACT_KINDS.items()}
_ARTIFACT_BACKED = (IMAGE, *JSON_ARTIFACT_KINDS)
# The largest JSON artifact a metric may name (the run history keeps the document inline).
MAX_JSON_ARTIFACT_BYTES = 16 << 20
# Azure ML's service limits on metrics (its service-limits page): names per run, columns per
# table row, characters in a name, a column name or a string value, values in one upload.
MAX_METRIC_NAMES = 50
MAX_COLUMNS = 15
MAX_NAME_LENGTH = 255
MAX_ROWS_PER_BATCH = 250
_CELL_TYPES = {"int", "double", "float", "string", "bool", "none"}


def _invalid(message):
    return ServiceError(400, "ValidationError", message)


def _printable(text, what):
    """The run history keeps only what a terminal and a report can show (amlocal.validation)."""
    try:
        check_text(text, what)
    except UserInputError as error:
        raise _invalid(str(error)) from None


def cell_type(value):
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "double"
    return "string"


def artifact_uri(run_id, name):
    """The aml://artifactId URI of run file `name`, as azureml-core names an image's file."""
    return f"aml://artifactId/ExperimentRun/dcid.{run_id}/{name}"


def wire_values(record, run_id):
    """The (uxMetricType, [data]) of one recorded metric value of run `run_id`; None for what is
    not served."""
    name, kind, value = record["name"], record["type"], record["value"]
    if kind == "image" and isinstance(value, dict) and isinstance(value.get("file"), str):
        return IMAGE, [{name: artifact_uri(run_id, value["file"])}]
    if kind in _JSON_ARTIFACT_TYPES:  # the SDK reads these as their artifact's URI
        return _JSON_ARTIFACT_TYPES[kind], [{name: artifact_uri(run_id, name)}]
    if kind == "scalar":
        return SCALAR, [{name: value}]
    if kind == "list" and isinstance(value, list):
        return LIST, [{name: element} for element in value]
    if kind == "row" and isinstance(value, dict):
        return TABLE, [value]
    if kind == "table" and isinstance(value, dict):
        columns = [column for column, cells in value.items() if isinstance(cells, list)]
        rows = max((len(value[column]) for column in columns), default=0)
        return TABLE, [{column: value[column][index] for column in columns
                        if index < len(value[column])} for index in range(rows)]
    return None


def run_metrics(handle):
    """{name: {"type": uxMetricType, "columns": {...}, "values": [MetricV2Value]}} of a run."""
    metrics = {}
    for record in handle.get_metric_records():
        if record["damaged"]:
            continue
        wire = wire_values(record, handle.id)
        if wire is None:
            continue
        kind, rows = wire
        metric = metrics.setdefault(record["name"], {"type": kind, "columns": {}, "values": []})
        for data in rows:
            for column, cell in data.items():
                metric["columns"].setdefault(column, cell_type(cell))
            position = len(metric["values"])
            metric["values"].append({
                "metricId": str(uuid.uuid5(uuid.NAMESPACE_URL,
                                           f"{handle.id}/{record['name']}/{position}")),
                "createdUtc": iso_time(record["logged_at"]),
                "step": record["step"] if record["step"] is not None else position,
                "data": data,
            })
    return metrics


@operation(METRIC_RUN + "/list", ["POST"])
def list_metrics(call):
    metrics = run_metrics(run_handle(call))
    return {"value": [{"metricKey": {"namespace": None, "name": name},
                       "columns": metric["columns"],
                       "properties": {"uxMetricType": metric["type"]}}
                      for name, metric in metrics.items()],
            "continuationToken": None, "nextLink": None}


@operation(METRIC_RUN + "/full", ["POST"])
def get_full_fidelity(call):
    name = call.json_object().get("metricName")
    metric = run_metrics(run_handle(call)).get(name)
    if metric is None:
        raise not_found(f"run {call.run_id} has no metric {name!r}")
    return {"dataContainerId": f"dcid.{call.run_id}", "name": name, "columns": metric["columns"],
            "properties": {"uxMetricType": metric["type"]}, "namespace": None,
            "value": metric["values"], "continuationToken": None}


def _checked_metric(metric):
    """(name, uxMetricType, columns, values) of one metric of a batch, or 400 with Azure's body."""
    if not isinstance(metric, dict):
        raise _invalid("each metric of a batch must be an object")
    name = metric.get("name")
    if not isinstance(name, str) or not name.strip():
        raise _invalid("a metric name must be a non-empty string")
    if len(name) > MAX_NAME_LENGTH:
        raise _invalid(f"metric name {name[:40]!r}... is longer than {MAX_NAME_LENGTH} characters")
    _printable(name, f"metric name {shown(name)}")
    kind = (metric.get("properties") or {}).get("uxMetricType") or SCALAR
    if kind not in (SCALAR, LIST, TABLE, *_ARTIFACT_BACKED):
        raise ServiceError(501, "NotImplemented", f"metrics of type {kind!r} (metric {name!r}) "
                           "are not emulated yet")
    columns = metric.get("columns")
    values = metric.get("value")
    if not isinstance(columns, dict) or not columns or not isinstance(values, list):
        raise _invalid(f"metric {name!r} needs columns and a list of values")
    if len(columns) > MAX_COLUMNS:
        raise _invalid(f"metric {name!r} has {len(columns)} columns; a table row may have at "
                       f"most {MAX_COLUMNS}")
    for column, declared in columns.items():
        if len(column) > MAX_NAME_LENGTH:
            raise _invalid(f"column name {column[:40]!r}... of metric {name!r} is longer than "
                           f"{MAX_NAME_LENGTH} characters")
        _printable(column, f"column name {shown(column)} of metric {shown(name)}")
        if str(declared).lower() not in (
                {IMAGE_COLUMN_TYPE} if kind in _ARTIFACT_BACKED else _CELL_TYPES):
            raise _invalid(f"column {column!r} of metric {name!r} has unknown type {declared!r}")
    if kind != TABLE and set(columns) != {name}:
        raise _invalid(f"a {kind} metric's only column is its name ({name!r})")
    stepped = [isinstance(value, dict) and value.get("step") is not None for value in values]
    if any(stepped) and not all(stepped):
        raise _invalid(f"metric {name!r}: if step is specified for a metric it must be "
                       "specified for all values")
    if any(stepped) and not all(isinstance(value["step"], int) and not isinstance(
            value["step"], bool) and 0 <= value["step"] < 2 ** 63 for value in values):
        raise _invalid(f"metric {name!r}: a step is a whole number from 0")
    for value in values:
        data = value.get("data") if isinstance(value, dict) else None
        if not isinstance(data, dict) or set(data) - set(columns):
            raise _invalid(f"a value of metric {name!r} has data outside its columns")
        for column, cell in data.items():
            _check_cell(name, column, columns[column], cell)
    return name, kind, columns, values


def _check_cell(name, column, declared, cell):
    declared = str(declared).lower()
    if isinstance(cell, str):
        if len(cell) > MAX_NAME_LENGTH and declared == "string":
            raise _invalid(f"a value of column {column!r} of metric {name!r} is longer than "
                           f"{MAX_NAME_LENGTH} characters")
        return
    if cell is None or isinstance(cell, bool):
        return
    if isinstance(cell, (int, float)):
        if isinstance(cell, float) and not math.isfinite(cell) and declared not in ("double", "float"):
            raise _invalid(f"column {column!r} of metric {name!r} is {declared} but holds {cell}")
        return
    raise _invalid(f"a value of column {column!r} of metric {name!r} is not a scalar")


def _logged_at(value):
    """When run.log was called: the value's createdUtc (azureml-core stamps it then, to the
    microsecond), as a timestamp; now where it names no time."""
    try:
        created = datetime.fromisoformat(value["createdUtc"])
    except (KeyError, TypeError, ValueError):
        return time.time()
    if created.tzinfo is None:
        created = created.replace(tzinfo=timezone.utc)
    return created.timestamp()


def _amlocal_records(handle, name, kind, columns, values):
    """What the run history records for one checked metric of a batch of the run of `handle`:
    (type, value, step, logged_at) tuples."""
    rows = [value["data"] for value in values]
    if kind == IMAGE:
        return [("image", {"file": _image_file(handle.id, name, row.get(name))}, None,
                 _logged_at(value)) for row, value in zip(rows, values)]
    if kind in JSON_ARTIFACT_KINDS:
        return [(JSON_ARTIFACT_KINDS[kind],
                 _json_artifact(handle, name, _image_file(handle.id, name, row.get(name))),
                 None, _logged_at(value)) for row, value in zip(rows, values)]
    if kind == SCALAR:
        return [("scalar", row.get(name), value.get("step"), _logged_at(value))
                for row, value in zip(rows, values)]
    if not rows:
        return []
    logged_at = _logged_at(values[0])
    if kind == LIST:
        return [("list", [row.get(name) for row in rows], None, logged_at)]
    if len(rows) == 1:
        return [("row", rows[0], None, logged_at)]
    return [("table", {column: [row.get(column) for row in rows] for column in columns}, None,
             logged_at)]


def _image_file(run_id, name, uri):
    """The run file an artifact-backed metric's URI names; 400 unless it is a file of run
    `run_id`."""
    prefix = artifact_uri(run_id, "")
    if not isinstance(uri, str) or not uri.startswith(prefix) or uri == prefix:
        raise _invalid(f"metric {name!r} must name a file of run {run_id} ({prefix}NAME)")
    return uri[len(prefix):]


def _json_artifact(handle, name, file_name):
    """The JSON document (an object) in run file `file_name`, which metric `name` names; 400
    when the script did not upload it first, or it is too large or not a JSON object."""
    try:
        with handle.open_file(file_name) as stream:
            content = stream.read(MAX_JSON_ARTIFACT_BYTES + 1)
    except (FileNotFoundError, KeyError, UserInputError, OSError):
        raise _invalid(f"metric {name!r} names {file_name!r}, which is not a file of run "
                       f"{handle.id}: upload the artifact before logging its metric") from None
    if len(content) > MAX_JSON_ARTIFACT_BYTES:
        raise _invalid(f"the artifact of metric {name!r} is larger than "
                       f"{MAX_JSON_ARTIFACT_BYTES >> 20} MB")
    try:
        document = json.loads(content)
    except (UnicodeDecodeError, ValueError):
        document = None
    if not isinstance(document, dict):
        raise _invalid(f"the artifact of metric {name!r} is not a JSON object")
    return document


@operation(METRIC_RUN + "/batch", ["POST"])
def post_run_metrics(call):
    """A batch of metrics, checked whole against Azure's rules, then written in one transaction
    (the names limit is checked inside it, so two batches at once cannot pass it together)."""
    body = call.json_object()
    metrics = body.get("values")
    if not isinstance(metrics, list):
        raise _invalid("the batch needs a list of values")
    checked = [_checked_metric(metric) for metric in metrics]
    rows = sum(len(values) for _, _, _, values in checked)
    if rows > MAX_ROWS_PER_BATCH:
        raise _invalid(f"the batch holds {rows} values; one upload may hold at most "
                       f"{MAX_ROWS_PER_BATCH}")
    handle = run_handle(call)  # the run must be there, in the URL's experiment
    records = {}
    for name, kind, columns, values in checked:
        records.setdefault(name, []).extend(_amlocal_records(handle, name, kind, columns, values))
    try:
        add_metric_batch(call.service.store, call.run_id, records, MAX_METRIC_NAMES)
    except TooManyMetricNames as error:
        raise _invalid(f"run {call.run_id} would have {error.names} metric names; a run may "
                       f"have at most {MAX_METRIC_NAMES}") from None
    return {"errors": []}


@operation(run_paths("/metricsingest/wait"), ["GET"])
def wait_on_ingest(call):
    # A batch is in the run history when its request is answered: nothing is ever pending.
    run_handle(call)
    return {}


ROUTES = [list_metrics, get_full_fidelity, post_run_metrics, wait_on_ingest]
