"""The training script's side of an amlocal run: what `Run.get_context()` returns.

Standard library only and Python 3.8+ syntax, because it runs inside whatever image or Python the
run uses. It never talks to the run history directly: it appends one JSON object per line to the
run's telemetry file (named by AMLOCAL_TELEMETRY_FILE), and the process that drives the run reads
that file into the run history, while the script runs and once more after it exits. So a script
can only write to its own run.

Values follow azureml-core's rules (azureml/core/_metrics.py) so that a script which logs cleanly
here does not fail on Azure for a logging reason: int, float, str, bool and None are kept; numpy's
bool_, str_, int8/16/32, uint8/16/32 and float16/32/64 become Python values; float128 and every
other type (numpy int64 included, as in azureml-core) become their repr(), a string metric.
"""
import json
import os
import sys
import threading
import time

_NATIVE_TYPES = (int, float, str, bool, type(None))
_NUMPY_CONVERTERS = {
    "bool": bool, "bool_": bool, "str_": str,
    "int8": int, "int16": int, "int32": int,
    "uint8": int, "uint16": int, "uint32": int,
    "float16": float, "float32": float, "float64": float,
}


def convert_metric_value(value):
    """azureml-core's conversion of a scalar metric value (exact types, as azureml-core checks)."""
    value_type = type(value)
    if value_type in _NATIVE_TYPES:
        return value
    if value_type.__module__ == "numpy" and value_type.__name__ in _NUMPY_CONVERTERS:
        return _NUMPY_CONVERTERS[value_type.__name__](value)
    return repr(value)


class _TelemetryWriter(object):
    """Appends events to the telemetry file; one short write per event, so lines never interleave."""

    def __init__(self, path):
        self._path = path
        self._lock = threading.Lock()

    def write(self, event):
        event["t"] = time.time()
        line = json.dumps(event, allow_nan=True) + "\n"
        with self._lock:
            with open(self._path, "a", encoding="utf-8") as handle:
                handle.write(line)


class Run(object):
    """A run as the training script sees it (the subset of azureml.core.Run a script uses)."""

    def __init__(self, run_id, experiment_name, telemetry_path):
        self.id = run_id
        self.experiment_name = experiment_name
        self._telemetry = _TelemetryWriter(telemetry_path)
        self._tags = {}
        self._properties = {}

    @classmethod
    def get_context(cls, allow_offline=True, used_for_context_manager=False, **kwargs):
        """The current run inside an amlocal run; an offline run elsewhere (or raise)."""
        return get_context(allow_offline=allow_offline)

    def __repr__(self):
        return "Run(Experiment: {}, Id: {}, Type: local)".format(self.experiment_name, self.id)

    def log(self, name, value, description="", step=None):
        """Log one value of a metric; repeated calls append to the metric's list of values."""
        self._metric(name, "scalar", convert_metric_value(value), description, step)

    def log_list(self, name, value, description=""):
        """Log a list of values as one metric."""
        values = [_check_list_element(name, element) for element in value]
        if values:
            self._metric(name, "list", values, description, None)

    def log_row(self, name, description=None, **kwargs):
        """Log one row of a table metric (column name -> scalar)."""
        row = {}
        for column, cell in kwargs.items():
            if isinstance(cell, (list, tuple)):
                raise ValueError("InvalidColumnData: log_row values must be scalars, got a list for "
                                 "column {!r} of metric {!r}".format(column, name))
            row[column] = _check_list_element(name, cell)
        self._metric(name, "row", row, description, None)

    def log_table(self, name, value, description=""):
        """Log a table metric given as {column: list of values}, all columns of equal length."""
        columns = {}
        for column, cells in value.items():
            cells = list(cells) if isinstance(cells, (list, tuple)) else [cells]
            columns[column] = [_check_list_element(name, cell) for cell in cells]
        if len({len(cells) for cells in columns.values()}) > 1:
            raise ValueError("InvalidColumnLength: columns of table metric {!r} differ in "
                             "length".format(name))
        self._metric(name, "table", columns, description, None)

    def tag(self, key, value=None):
        self.set_tags({key: "" if value is None else str(value)})

    def set_tags(self, tags):
        tags = {str(key): "" if value is None else str(value) for key, value in tags.items()}
        self._tags.update(tags)
        self._telemetry.write({"kind": "tags", "tags": tags})

    def get_tags(self):
        return dict(self._tags)

    def add_properties(self, properties):
        properties = {str(key): str(value) for key, value in properties.items()}
        self._properties.update(properties)
        self._telemetry.write({"kind": "properties", "properties": properties})

    def get_properties(self):
        return dict(self._properties)

    def complete(self, _set_status=True):
        """Nothing to do: the run completes when the script exits with status 0."""

    def fail(self, error_details=None, error_code=None, _set_status=True):
        """Record that the script declared the run failed; the run ends Failed."""
        self._telemetry.write({"kind": "fail", "error": str(error_details or "Run.fail() called"),
                               "error_code": error_code})

    def flush(self, timeout_seconds=300):
        """Nothing to do: every event is written when it is logged."""

    def _metric(self, name, metric_type, value, description, step):
        if not isinstance(name, str) or not name:
            raise ValueError("metric name must be a non-empty string, got {!r}".format(name))
        event = {"kind": "metric", "name": name, "type": metric_type, "value": value}
        if description:
            event["description"] = str(description)
        if step is not None:
            event["step"] = step
        self._telemetry.write(event)


def _check_list_element(metric_name, value):
    """azureml-core validates list, table and row cells (and rejects what it cannot send)."""
    value_type = type(value)
    is_numpy_scalar = value_type.__module__ == "numpy" and value_type.__name__ in _NUMPY_CONVERTERS
    if value_type not in _NATIVE_TYPES and not is_numpy_scalar:
        raise ValueError("InvalidArgumentType: metric {!r} got a value of type {}, expected int, "
                         "float, str, bool or None".format(metric_name, value_type.__name__))
    converted = convert_metric_value(value)
    if type(converted) in (int, float) and sys.getsizeof(converted) > 64:
        # azureml-core compares the Python object's size in bytes against 64 (sic); mirror it.
        raise ValueError("ArgumentSizeOutOfRangeType: value {!r} of metric {!r} is too large"
                         .format(value, metric_name))
    return converted


class _OfflineRun(object):
    """What a script gets outside any run: logging prints, as azureml-core's offline run does."""

    id = "OfflineRun_local"

    def __getattr__(self, method):
        if method.startswith("log"):
            def log(name, value=None, *args, **kwargs):
                kind = method[len("log_"):] if method != "log" else "scalar"
                if method == "log_row":
                    kwargs.pop("description", None)
                    value = kwargs
                print("Attempted to log {} metric {}:\n{}".format(kind, name, value))
            return log
        if method in ("tag", "set_tags", "add_properties", "complete", "fail", "flush"):
            return lambda *args, **kwargs: None
        raise AttributeError(method)


_current = None


def get_context(allow_offline=True):
    """The run this process belongs to, from the environment amlocal sets; cached per process."""
    global _current
    if _current is not None:
        return _current
    run_id = os.environ.get("AZUREML_RUN_ID")
    telemetry = os.environ.get("AMLOCAL_TELEMETRY_FILE")
    if run_id and telemetry:
        _current = Run(run_id, os.environ.get("AZUREML_ARM_PROJECT_NAME", ""), telemetry)
        return _current
    if not allow_offline:
        raise RuntimeError("RunEnvironmentException: not inside an amlocal or Azure ML run")
    return _OfflineRun()


def get_context_for_azureml_core(cls, allow_offline=True, used_for_context_manager=False, **kwargs):
    """Replacement for azureml-core's Run.get_context inside amlocal runs (see sitecustomize)."""
    return get_context(allow_offline=allow_offline)
