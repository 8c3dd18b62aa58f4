"""The training script's side of an amlocal run: what `Run.get_context()` returns.

Standard library only and Python 3.8+ syntax, because it runs inside whatever image or Python the
run uses. It never talks to the run history directly: it appends one JSON object per line to the
run's telemetry file (AMLOCAL_TELEMETRY_FILE) and copies uploaded files and logged images into
the run's upload folder (AMLOCAL_UPLOADS_DIR); the process that drives the run reads both into the
run history while the script runs and once more after it exits. So a script can only write to its
own run.

Values and limits follow azureml-core and the Azure ML service, so that a script which logs
cleanly here does not fail on Azure for a logging reason:
- log(): int, float, str, bool and None are kept; numpy's bool_, str_, int8/16/32, uint8/16/32 and
  float16/32/64 become Python values; float128 and every other type (numpy int64 included, as in
  azureml-core) become their repr(), a string metric.
- list, row and table cells must be one of those types (else "Value of type ... is not supported")
  and numbers must pass azureml-core's size check; rows hold scalars only; table columns must
  have equal lengths; confusion matrices and the like must be valid JSON.
- Service limits (rejected by Azure ML, so refused here when logged): 50 metric names per run,
  15 columns per row or table, 255 characters per column name or string cell, 50 tags and 50
  properties per run, keys up to 100 and values up to 1,000 characters; once a metric is logged
  with a step, every value of it needs one.
"""
import hashlib
import io
import json
import os
import re
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
AZUREML_MAX_NUMBER_SIZE_IN_BITS = 64
MAX_METRIC_NAMES = 50
MAX_COLUMNS = 15
MAX_COLUMN_TEXT = 255
MAX_TAGS = 50
MAX_KEY_LENGTH = 100
MAX_VALUE_LENGTH = 1000
_ARTIFACT_METRIC_SCHEMAS = ("confusion_matrix", "accuracy_table", "residuals", "predictions")
# The run ids the host takes for child runs (backends/local/telemetry.py).
_RUN_ID = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.-]{0,511}")
_IMAGE_SIGNATURES = (b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"GIF87a", b"GIF89a", b"BM")


def _exceptions():
    """azureml's exception classes: the real ones when azureml-core is installed, else amlocal's
    stand-ins (the same names, from the azureml package on this run's path)."""
    from azureml.exceptions import AzureMLException, UserErrorException
    return AzureMLException, UserErrorException


def _user_error(message):
    return _exceptions()[1](message)


def _azureml_error(message):
    return _exceptions()[0](message)


def convert_metric_value(value):
    """azureml-core's conversion of a scalar metric value (exact types, as azureml-core checks)."""
    value_type = type(value)
    if value_type in _NATIVE_TYPES:
        return value
    if value_type.__module__ == "numpy" and value_type.__name__ in _NUMPY_CONVERTERS:
        return _NUMPY_CONVERTERS[value_type.__name__](value)
    return repr(value)


def _check_cell(value):
    """azureml-core's check of one list, row or table cell; returns the converted value."""
    value_type = type(value)
    is_numpy_scalar = value_type.__module__ == "numpy" and value_type.__name__ in _NUMPY_CONVERTERS
    if isinstance(value, (int, float)) and sys.getsizeof(value) > AZUREML_MAX_NUMBER_SIZE_IN_BITS:
        # azureml-core compares the Python object's size in bytes against 64 "bits" (sic).
        raise _azureml_error("Number size of type [{}] is out of range bits (Range: [0 - {}])."
                             .format(value_type, AZUREML_MAX_NUMBER_SIZE_IN_BITS))
    if value_type not in _NATIVE_TYPES and not is_numpy_scalar:
        raise _azureml_error("Value of type {} is not supported, supported types include [{}]"
                             .format(value_type, ", ".join(str(t) for t in _NATIVE_TYPES)))
    converted = convert_metric_value(value)
    if isinstance(converted, str) and len(converted) > MAX_COLUMN_TEXT:
        raise _user_error("A metric value of {} characters is over Azure ML's limit of {}"
                          .format(len(converted), MAX_COLUMN_TEXT))
    return converted


def _check_columns(name, columns):
    if len(columns) > MAX_COLUMNS:
        raise _user_error("Metric {!r} has {} columns; Azure ML allows at most {} per row or table"
                          .format(name, len(columns), MAX_COLUMNS))
    for column in columns:
        if len(str(column)) > MAX_COLUMN_TEXT:
            raise _user_error("Column name {!r}... of metric {!r} is over Azure ML's limit of {} "
                              "characters".format(str(column)[:20], name, MAX_COLUMN_TEXT))


def _check_key_value(kind, key, value):
    if len(key) > MAX_KEY_LENGTH:
        raise _user_error("{} key {!r}... is over Azure ML's limit of {} characters"
                          .format(kind, key[:20], MAX_KEY_LENGTH))
    if len(value) > MAX_VALUE_LENGTH:
        raise _user_error("{} {!r} has a value of {} characters; Azure ML allows at most {}"
                          .format(kind, key, len(value), MAX_VALUE_LENGTH))


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


class _Experiment(object):
    """What `run.experiment` offers inside a run: its name."""

    def __init__(self, name):
        self.name = name

    def __repr__(self):
        return "Experiment(Name: {})".format(self.name)


class Run(object):
    """A run as the training script sees it: azureml.core.Run's script-side methods."""

    def __init__(self, run_id, experiment_name, telemetry, uploads_dir, parent=None, name=None):
        self.id = run_id
        self.name = name
        self.parent = parent
        self.experiment = _Experiment(experiment_name)
        self._telemetry = telemetry
        self._uploads_dir = uploads_dir
        self._lock = threading.Lock()
        self._metric_names = set()
        self._stepped = {}
        self._tags = {}
        self._properties = {}
        self._children = 0

    @classmethod
    def get_context(cls, allow_offline=True, used_for_context_manager=False, **kwargs):
        """The current run inside an amlocal run; an offline run elsewhere (or raise)."""
        return get_context(allow_offline=allow_offline)

    def __repr__(self):
        return "Run(Experiment: {}, Id: {}, Type: local)".format(self.experiment.name, self.id)

    # -- metrics --------------------------------------------------------------------------------

    def log(self, name, value, description="", step=None):
        """Log one value of a metric; repeated calls append to the metric's values."""
        self._metric(name, "scalar", convert_metric_value(value), description, step)

    def log_list(self, name, value, description=""):
        """Log a list of values as one metric (an empty list logs nothing, as on Azure)."""
        values = [_check_cell(element) for element in value]
        if values:
            self._metric(name, "list", values, description)

    def log_row(self, name, description=None, **kwargs):
        """Log one row of a table metric: column=scalar keyword arguments."""
        for column, cell in kwargs.items():
            if isinstance(cell, list):
                raise _azureml_error("Rows cannot contain list values, column {} contains a list."
                                     .format(column))
        _check_columns(name, kwargs)
        row = {column: _check_cell(cell) for column, cell in kwargs.items()}
        self._metric(name, "row", row, description or "")

    def log_table(self, name, value, description=""):
        """Log a table metric given as {column: list of values (or one value)}."""
        if not isinstance(value, dict):
            raise _azureml_error("Argument [Table] is of invalid type. Expected type: "
                                 "[dict[string]: column]")
        _check_columns(name, value)
        columns = {column: cells if isinstance(cells, list) else [cells]
                   for column, cells in value.items()}
        lengths = {column: len(cells) for column, cells in columns.items()}
        if lengths:
            reference = next(iter(lengths))
            for column, length in lengths.items():
                if length != lengths[reference]:
                    raise _azureml_error(
                        "Columns must have the same length, column {} had length {}, however, "
                        "column {} had length {}.".format(reference, lengths[reference], column, length))
        table = {column: [_check_cell(cell) for cell in cells] for column, cells in columns.items()}
        if table:
            self._metric(name, "table", table, description)

    def log_image(self, name, path=None, plot=None, description=""):
        """Log an image from a file (path) or a matplotlib figure or pyplot (plot)."""
        if path is not None and plot is not None:
            raise _azureml_error("Invalid parameters, path and plot were both provided, only one at "
                                 "a time is supported")
        if path is None and plot is None:
            raise _azureml_error("Invalid parameters, one of path and plot is required as input")
        stored = "{}_{}.png".format(_safe_name(name), int(time.time() * 1000))
        if plot is not None:
            buffer = io.BytesIO()
            try:
                plot.savefig(buffer, format="png")
            except AttributeError:
                raise _azureml_error("Argument [plot] is of invalid type. Expected type: "
                                     "[matplotlib.pyplot]")
            self._write_upload(stored, buffer.getvalue())
        else:
            with open(path, "rb") as handle:
                content = handle.read()
            if not content.startswith(_IMAGE_SIGNATURES):
                raise _azureml_error("Argument [{}] is malformed.".format(path))
            stored = "{}_{}{}".format(_safe_name(name), int(time.time() * 1000),
                                      os.path.splitext(path)[1] or ".png")
            self._write_upload(stored, content)
        self._metric(name, "image", {"file": stored}, description)

    def log_confusion_matrix(self, name, value, description=""):
        self._artifact_metric(name, "confusion_matrix", value, description)

    def log_accuracy_table(self, name, value, description=""):
        self._artifact_metric(name, "accuracy_table", value, description)

    def log_residuals(self, name, value, description=""):
        self._artifact_metric(name, "residuals", value, description)

    def log_predictions(self, name, value, description=""):
        self._artifact_metric(name, "predictions", value, description)

    # -- tags and properties ----------------------------------------------------------------

    def tag(self, key, value=None):
        self.set_tags({key: "" if value is None else value})

    def set_tags(self, tags):
        tags = {str(key): "" if value is None else str(value) for key, value in tags.items()}
        for key, value in tags.items():
            _check_key_value("Tag", key, value)
        if len(set(self._tags) | set(tags)) > MAX_TAGS:
            raise _user_error("A run can have at most {} tags on Azure ML".format(MAX_TAGS))
        self._tags.update(tags)
        self._write({"kind": "tags", "tags": tags})

    def remove_tags(self, tags):
        removed = [str(tag) for tag in tags]
        for tag in removed:
            self._tags.pop(tag, None)
        self._write({"kind": "remove_tags", "tags": removed})

    def get_tags(self):
        return dict(self._tags)

    def add_properties(self, properties):
        properties = {str(key): str(value) for key, value in properties.items()}
        for key, value in properties.items():
            _check_key_value("Property", key, value)
            if key in self._properties and self._properties[key] != value:
                # Properties are immutable on Azure ML: a key keeps its first value.
                raise _user_error("Property {!r} is already set to {!r}; run properties cannot be "
                                  "changed".format(key, self._properties[key]))
        if len(set(self._properties) | set(properties)) > MAX_TAGS:
            raise _user_error("A run can have at most {} properties on Azure ML".format(MAX_TAGS))
        self._properties.update(properties)
        self._write({"kind": "properties", "properties": properties})

    def get_properties(self):
        return dict(self._properties)

    # -- files --------------------------------------------------------------------------------

    def upload_file(self, name, path_or_stream, datastore_name=None):
        """Store a file (a path, or a binary stream) in the run under `name`."""
        if hasattr(path_or_stream, "read"):
            content = path_or_stream.read()
            self._write_upload(name, content if isinstance(content, bytes) else content.encode())
        else:
            self._copy_upload(name, path_or_stream)
        return name

    def upload_files(self, names, paths, return_artifacts=False, timeout_seconds=None,
                     datastore_name=None):
        if len(names) != len(paths):
            raise _user_error("upload_files needs as many names ({}) as paths ({})"
                              .format(len(names), len(paths)))
        for name, path in zip(names, paths):
            self.upload_file(name, path)
        return list(names) if return_artifacts else None

    def upload_folder(self, name, path, datastore_name=None):
        """Store every file under the folder `path` in the run, under `name`/<relative path>."""
        if not os.path.isdir(path):
            raise _user_error("upload_folder: {} is not a folder".format(path))
        uploaded = []
        for root, _dirs, files in os.walk(path):
            for filename in sorted(files):
                full = os.path.join(root, filename)
                relative = os.path.relpath(full, path).replace(os.sep, "/")
                uploaded.append(self.upload_file("{}/{}".format(name.rstrip("/"), relative), full))
        return uploaded

    # -- child runs and the run's end -------------------------------------------------------

    def child_run(self, name=None, run_id=None, outputs=None):
        """Start a child run; what it logs is kept with it, and it ends when it is completed."""
        with self._lock:
            self._children += 1
            child_id = run_id or "{}_{}".format(self.id, self._children)
        if not _RUN_ID.fullmatch(child_id):
            raise _user_error("invalid run id {!r}: up to 512 letters, digits, '_', '-' or '.', "
                              "not starting with '.'".format(child_id))
        child = Run(child_id, self.experiment.name, self._telemetry, self._uploads_dir,
                    parent=self, name=name)
        child._write({"kind": "child", "name": name or ""})
        return child

    def complete(self, _set_status=True):
        """A child run ends Completed; the run itself completes when its script exits 0."""
        if self.parent is not None:
            self._write({"kind": "status", "status": "Completed"})

    def fail(self, error_details=None, error_code=None, _set_status=True):
        """Mark the run failed; the run ends Failed even if the script exits 0."""
        if self.parent is not None:
            self._write({"kind": "status", "status": "Failed",
                         "error": str(error_details or "Run.fail() called")})
        else:
            self._write({"kind": "fail", "error": str(error_details or "Run.fail() called"),
                         "error_code": error_code})

    def cancel(self):
        if self.parent is not None:
            self._write({"kind": "status", "status": "Canceled"})

    def flush(self, timeout_seconds=300):
        """Nothing to do: every event is written when it is logged."""

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc_value, traceback):
        if exc_type is None:
            self.complete()
        else:
            self.fail(error_details=exc_value)
        return False

    # -- plumbing -------------------------------------------------------------------------------

    def _metric(self, name, metric_type, value, description, step=None):
        if not isinstance(name, str) or not name:
            raise _user_error("metric name must be a non-empty string, got {!r}".format(name))
        with self._lock:
            if name not in self._metric_names and len(self._metric_names) >= MAX_METRIC_NAMES:
                raise _user_error("Run {} already has {} metric names, Azure ML's limit; {!r} would "
                                  "be one more".format(self.id, MAX_METRIC_NAMES, name))
            stepped = self._stepped.setdefault(name, step is not None)
            if stepped != (step is not None):
                raise _user_error("If step is specified for a metric it must be specified for all "
                                  "values (metric {!r})".format(name))
            self._metric_names.add(name)
        event = {"kind": "metric", "name": name, "type": metric_type, "value": value}
        if description:
            event["description"] = str(description)
        if step is not None:
            event["step"] = step
        self._write(event)

    def _artifact_metric(self, name, schema_type, value, description):
        if isinstance(value, str):
            try:
                value = json.loads(value)
            except ValueError:
                raise _user_error("Invalid JSON provided")
        if not isinstance(value, dict):
            raise _user_error("Invalid JSON provided")
        self._metric(name, schema_type, value, description)

    def _write(self, event):
        if self.parent is not None:
            event["run"] = self.id
        self._telemetry.write(event)

    def _copy_upload(self, name, path):
        with open(path, "rb") as handle:
            self._write_upload(name, handle.read())

    def _write_upload(self, name, content):
        relative = _safe_upload_path(name)
        target = os.path.join(self._uploads_dir,
                              child_uploads_folder(self.id) if self.parent else "", relative)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        # Several ranks of a distributed run may upload the same name at once, from containers
        # whose pids can be alike: each writes a part of its own, and the last rename wins whole.
        partial = "%s.%s.partial" % (target, os.urandom(8).hex())
        with open(partial, "wb") as handle:
            handle.write(content)
        os.replace(partial, target)
        self._write({"kind": "upload", "name": relative})


def child_uploads_folder(run_id):
    """The folder, under the uploads folder, of a child run's uploads: a digest of its id, which
    may be any text and longer than a file name may be. (The host, which cannot import this
    module, computes the same in telemetry.py.)"""
    return "child-" + hashlib.sha256(run_id.encode("utf-8", "surrogatepass")).hexdigest()[:32]


def _safe_name(name):
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", str(name)).strip("._") or "image"


def _safe_upload_path(name):
    parts = [part for part in str(name).replace("\\", "/").split("/") if part not in ("", ".")]
    if not parts or ".." in parts:
        raise _user_error("invalid artifact name {!r}".format(name))
    return "/".join(parts)


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
        if method in ("upload_file", "upload_files", "upload_folder"):
            return lambda name, *args, **kwargs: print(
                "Attempted to track file {} at {}".format(name, args[0] if args else ""))
        if method in ("tag", "set_tags", "remove_tags", "add_properties", "complete", "fail",
                      "flush", "cancel"):
            return lambda *args, **kwargs: None
        if method in ("get_tags", "get_properties"):
            return lambda: {}
        if method == "child_run":
            return lambda *args, **kwargs: _OfflineRun()
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
        uploads = os.environ.get("AMLOCAL_UPLOADS_DIR") or os.path.join(
            os.path.dirname(telemetry), "uploads")
        _current = Run(run_id, os.environ.get("AZUREML_ARM_PROJECT_NAME", ""),
                       _TelemetryWriter(telemetry), uploads)
        return _current
    if not allow_offline:
        from azureml.exceptions import RunEnvironmentException
        try:
            error = RunEnvironmentException("not inside an amlocal or Azure ML run")
        except TypeError:  # azureml-core's own takes no message: it has one of its own
            error = RunEnvironmentException()
        raise error
    return _OfflineRun()


def get_context_for_azureml_core(cls, allow_offline=True, used_for_context_manager=False, **kwargs):
    """Replacement for azureml-core's Run.get_context in runs without an emulator endpoint
    (AMLOCAL_IN_RUN_SDK=0, see sitecustomize)."""
    return get_context(allow_offline=allow_offline)
