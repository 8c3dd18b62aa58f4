"""The one Run interface that every backend implements (the run spec it takes is in spec.py).

A backend `submit`s a `RunSpec` and returns a `RunHandle`; everything else (the CLI, the SDK-shaped
classes, tests) talks to the handle. Backends never print: they report progress as the typed events
below, through the `on_event` callback given to `submit`/`wait`, and the caller renders them.
"""

import abc
import collections
import json
import os
from dataclasses import dataclass
from pathlib import Path

# The run spec lives in spec.py; its names are part of the interface, so they import from here too.
from amlocal.backends.spec import (  # noqa: F401
    DATAREFERENCE_PREFIX, DEFAULT_EXPERIMENT, DEFAULT_RECIPE, EXECUTORS, SPEC_VERSION,
    DistributionSpec, EnvironmentSpec, RecordedSpec, RunSpec, referenced_inputs,
    substitute_data_references)
# How Azure ML v1's run configuration spells a spec's distribution, both ways.
from amlocal.backends.distribution import distribution_of, run_configuration_fields  # noqa: F401
from amlocal.errors import UserInputError

STAGES = ("Preparing", "Scaling", "Running", "PostProcessing")
# Metrics named so are a run's system metrics (its CPU, memory and GPU use, sampled by its
# driver: local/system_metrics.py), as MLflow names its own; the rest are the script's.
SYSTEM_METRIC_PREFIX = "system/"


# Events a backend reports while a run advances. The CLI renders them; tests collect them.

@dataclass(frozen=True)
class StageStarted:
    run_id: str
    stage: str
    detail: str = ""


@dataclass(frozen=True)
class StageFinished:
    run_id: str
    stage: str
    status: str
    duration_s: float
    detail: str = ""


@dataclass(frozen=True)
class StatusChanged:
    run_id: str
    status: str


@dataclass(frozen=True)
class LogLine:
    run_id: str
    source: str  # "build" (image build output) or "driver" (the script's stdout/stderr)
    line: str


def download_target(name, output_file_path=None):
    """Where download_file(name, output_file_path) writes, as azureml-core's Run decides: the path
    given, the file's base name in it if it is a folder, else the base name in the current folder."""
    target = Path(output_file_path) if output_file_path else Path.cwd() / Path(name).name
    return target / Path(name).name if target.is_dir() else target


def downloads_under(names, prefix=None, append_prefix=True):
    """[(run file name, its path under the download folder)] for the names under prefix, as
    download_files writes them: the whole name, or (append_prefix=False) the name less the prefix."""
    return [(name, name if append_prefix or not prefix else name[len(prefix):].lstrip("/"))
            for name in names if not prefix or name.startswith(prefix)]


def ignore_event(event):
    """The default event sink."""


# A sweep's parent keeps each child's hyperparameters as a tag named this prefix + the child's id.
HYPERPARAMETER_TAG_PREFIX = "_aml_system_"
# How many of the driver log's last lines get_log_tail gives by default.
LOG_TAIL_LINES = 500


def numeric_values(metric_records, metric_name):
    """The numeric values among metric records (get_metric_records()) of one name, in order."""
    return [record["value"] for record in metric_records
            if record["name"] == metric_name and isinstance(record["value"], (int, float))
            and not isinstance(record["value"], bool)]


def tail_lines(path, count=LOG_TAIL_LINES, max_bytes=8 << 20):
    """(the last `count` lines of a text file, whether earlier text was left out); (None, False)
    if there is no such file. Reads backwards from the end, at most `max_bytes`."""
    try:
        with open(path, "rb") as handle:
            position = handle.seek(0, os.SEEK_END)
            data = b""
            while position > 0 and data.count(b"\n") <= count and len(data) < max_bytes:
                step = min(1 << 16, position)
                position -= step
                handle.seek(position)
                data = handle.read(step) + data
    except FileNotFoundError:
        return None, False
    lines = data.decode("utf-8", errors="replace").splitlines()
    if position > 0 and len(lines) > 1:
        lines = lines[1:]  # reading started inside a line
    return lines[-count:], position > 0 or len(lines) > count


class NotAvailableError(UserInputError):
    """What a backend cannot do (a dry run of a local run, a model registry on Azure, ...)."""


def not_available(what, backend_name):
    return NotAvailableError(f"{what} is not available on the {backend_name} backend")


class RunHandle(abc.ABC):
    """A submitted run, as every backend exposes it.

    Callers above backends/ (the CLI, the SDK classes, the report) use nothing else of a run:
    tests/test_run_interface.py checks that every method they call is declared here.
    """

    id: str
    backend_name = "unknown"  # the name of the backend that ran it, for error messages

    @abc.abstractmethod
    def get_status(self):
        """The run's current status, one of backends.status.ALL_STATUSES."""

    @abc.abstractmethod
    def get_details(self, refresh=True):
        """The run record as a JSON-ready dict: id, experiment, status, exit_code, error,
        stages, tags, properties, ...

        refresh=False: as the run history last recorded it, without asking a remote service
        (for a backend whose runs run elsewhere; the others always read their own record).
        """

    @abc.abstractmethod
    def get_detailed_status(self):
        """{'status': the status, 'details': why the run waits, as Azure ML words it, or ''}."""

    @abc.abstractmethod
    def get_status_history(self):
        """[(status, unix time)] of every status the run has had, oldest first."""

    @abc.abstractmethod
    def wait(self, on_event=ignore_event, timeout=None):
        """Block until the run reaches a terminal status; return get_details().

        Raises TimeoutError when `timeout` seconds pass first.
        """

    @abc.abstractmethod
    def follow(self, deadline=None):
        """Yield the run's events (StageStarted, StageFinished, StatusChanged, LogLine) as it
        advances, until it ends; the last one is the StatusChanged to its terminal status.

        Raises TimeoutError once time.monotonic() passes `deadline`.
        """

    @abc.abstractmethod
    def stream_logs(self, follow=False):
        """Yield the driver log's lines; with follow=True keep yielding until the run ends."""

    def get_log_tail(self, count=LOG_TAIL_LINES):
        """{'name': the driver log's run file name, 'lines': its last `count` lines,
        'truncated': whether earlier lines were left out}, or None if the run has no driver log.

        This default reads stream_logs(); a backend that can read the end alone overrides it.
        """
        lines = collections.deque(maxlen=count + 1)
        lines.extend(self.stream_logs())
        if not lines:
            return None
        truncated = len(lines) > count
        return {"name": "driver log", "lines": list(lines)[-count:], "truncated": truncated}

    @abc.abstractmethod
    def cancel(self, force=False, reason=None):
        """Ask the run to stop. Returns at once; the run goes CancelRequested, then Canceled.

        force=True (a second Ctrl-C) kills a script this process runs at once instead of after
        its grace period; `reason` becomes the run's error. Canceling an ended run does nothing.
        """

    @abc.abstractmethod
    def get_metrics(self):
        """{metric name: [values in logging order]}."""

    @abc.abstractmethod
    def get_metric_records(self):
        """[{name, position, type, value, step, description, logged_at, damaged}]: every logged
        value in logging order, with its metric type; position: its index among the values of its
        name; logged_at: a unix time or None; damaged: the stored value could not be decoded (it
        is then its text)."""

    @abc.abstractmethod
    def get_file_names(self):
        """Names (posix paths) of the run's files: outputs/..., logs/..., azureml-logs/..."""

    @abc.abstractmethod
    def get_file_sizes(self):
        """{run file name: its size in bytes, or None where the backend cannot tell}."""

    @abc.abstractmethod
    def open_file(self, name):
        """Run file `name`, open for reading in binary at its start (a context manager), its bytes
        checked against what the run left where the backend recorded that; UserInputError if the
        run has no such file, RunRecordCorruptedError if it is damaged."""

    @abc.abstractmethod
    def download_file(self, name, output_file_path=None):
        """Copy one run file to output_file_path (default: its base name in the current folder)."""

    @abc.abstractmethod
    def download_files(self, prefix=None, output_directory=None, append_prefix=True):
        """Copy the run files under prefix into output_directory, keeping their paths (less the
        prefix, with append_prefix=False); return the paths written."""

    @abc.abstractmethod
    def get_children(self):
        """Handles of the run's child runs, oldest first."""

    def get_child_summaries(self):
        """For a sweep's parent: each child's {run_id, hyperparameters, best_primary_metric,
        last_primary_metric, intervals, status, error}, oldest first. Read through this interface
        only, so that every front door (the CLI, the SDK's HyperDriveRun, the report) shows the
        same; UserInputError for a run that is not a sweep."""
        parent = self.get_details()
        if not parent.get("sweep"):
            raise UserInputError(f"run {self.id} is not a sweep")
        metric = parent["sweep"]["primary_metric_config"]
        best = max if metric["goal"] == "maximize" else min
        summaries = []
        for child in self.get_children():
            details = child.get_details()
            values = numeric_values(child.get_metric_records(), metric["name"])
            tag = parent["tags"].get(HYPERPARAMETER_TAG_PREFIX + child.id)
            summaries.append({
                "run_id": child.id,
                "hyperparameters": json.loads(tag) if tag else None,
                "best_primary_metric": best(values) if values else None,
                "last_primary_metric": values[-1] if values else None,
                "intervals": len(values),
                "status": details["status"],
                "error": details["error"],
            })
        return summaries

    @abc.abstractmethod
    def set_tags(self, tags, remove=()):
        """Add or change tags and remove the ones named in `remove`; return the tags."""

    @abc.abstractmethod
    def add_properties(self, properties):
        """Add properties; return them. Properties are immutable: one already set to another
        value is refused (UserInputError), one set to the same value again changes nothing."""

    def register_model(self, model_name, model_path=None, **metadata):
        """Register a file or folder of the run's (model_path, a run file name or a folder of
        them; None: model_name) as a model where this run's backend keeps models; `metadata`:
        tags, properties, description, framework, framework_version. Returns the model's record,
        at least {name, version, id}. This default: the backend keeps no models."""
        raise not_available("registering a run's files as a model", self.backend_name)


class Backend(abc.ABC):
    """Where runs execute. Found by name through amlocal.backends.get_backend."""

    name: str

    @property
    @abc.abstractmethod
    def home(self):
        """The folder of the run history this backend keeps its records in."""

    @abc.abstractmethod
    def submit(self, spec, on_event=ignore_event, detach=False):
        """Start a run of `spec` and return its RunHandle.

        With detach=False the run is driven by this process (it ends if this process is killed);
        with detach=True it is handed to a process of its own and outlives the caller.
        """

    def submit_sweep(self, template, sweep, detach=True):
        """Start a hyperparameter sweep: a parent run whose children are runs of `template` (a
        RunSpec) with sampled hyperparameters; `sweep` is HyperDriveConfig._sweep(). Returns the
        parent's handle. This default: the backend runs no sweeps."""
        raise not_available("a hyperparameter sweep", self.name)

    def dry_run(self, spec):
        """What submit(spec) would send, as JSON-ready data, touching nothing. This default: the
        backend has no dry run (it shows what would go to Azure ML)."""
        raise NotAvailableError("--dry-run shows what would be submitted to Azure ML: use it "
                                "with --backend azure")

    def dry_run_sweep(self, template, sweep):
        """dry_run of a sweep whose children run `template`."""
        raise NotAvailableError("--dry-run shows what would be submitted to Azure ML: use it "
                                "with --backend azure")

    @abc.abstractmethod
    def get_run(self, run_id):
        """The handle of an existing run; RunNotFoundError if there is none."""

    @abc.abstractmethod
    def list_runs(self, experiment=None, limit=None):
        """Run records (dicts, newest first)."""

    def models(self):
        """The backend's ModelRegistry (backends/registries.py). This default: it keeps none."""
        raise not_available("a model registry", self.name)

    def compute_targets(self):
        """The backend's ComputeTargetRegistry (backends/registries.py). This default: it has
        none."""
        raise not_available("compute targets", self.name)
