"""`Run`: azureml.core.Run on the submitting side (and `Run.get_context()` for scripts).

A Run wraps a backend's run handle with SDK v1's methods and return shapes: get_details() with
azureml-core's keys, get_metrics() with its value shapes (one value, or a list of them; rows and
tables as {column: [values]}; images as their aml://artifactId URI), wait_for_completion() that
streams output and raises ActivityFailedException when the run failed.
"""

import importlib.util
import json
import os
import time
from pathlib import Path

from amlocal.backends import run_page_url
from amlocal.backends import status as run_status
from amlocal.backends.base import (DistributionSpec, LogLine, StageFinished, StageStarted,
                                   downloads_under, run_configuration_fields)
from amlocal.errors import AmlocalError, RunFailedError
from amlocal.validation import check_key_values

_ARTIFACT_TYPES = ("image",)
_LOG_PREFIXES = ("azureml-logs/", "logs/")


class ActivityFailedException(RunFailedError):
    """A run waited for ended Failed (or Canceled): azureml.exceptions' name for it."""


class ExperimentExecutionException(AmlocalError):
    """Streaming a run's output was interrupted; the run goes on."""


def _runtime_module():
    """The run-side API (backends/local/runtime/amlocal_run.py), importable in and out of runs."""
    try:
        import amlocal_run  # on the path inside a run
        return amlocal_run
    except ImportError:
        from amlocal.backends import run_side_api_path
        spec = importlib.util.spec_from_file_location("amlocal_run", run_side_api_path())
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module


def azure_metrics(records, run_id):
    """get_metrics()'s shapes from the logged records: {name: value or [values]}."""
    by_name = {}
    for record in records:
        by_name.setdefault(record["name"], []).append(record)
    metrics = {}
    for name, logged in by_name.items():
        kind = logged[0]["type"]
        values = [record["value"] for record in logged]
        if kind in ("row", "table"):
            columns = {}
            for value in values:
                for column, cells in value.items():
                    columns.setdefault(column, []).extend(cells if kind == "table" else [cells])
            metrics[name] = columns
        elif kind in _ARTIFACT_TYPES:
            uris = [f"aml://artifactId/ExperimentRun/dcid.{run_id}/{value['file']}" for value in values]
            metrics[name] = uris[0] if len(uris) == 1 else uris
        else:
            metrics[name] = values[0] if len(values) == 1 else values
    return metrics


class Run:
    """A submitted run of an experiment."""

    def __init__(self, experiment, run_id, outputs=None, _handle=None, **kwargs):
        from amlocal.experiment import Experiment

        if not isinstance(experiment, Experiment):
            raise AmlocalError("Run(experiment, run_id) needs an amlocal Experiment")
        self.experiment = experiment
        self.id = run_id
        self._handle = _handle or experiment._backend().get_run(run_id)

    def __repr__(self):
        return (f"Run(Experiment: {self.experiment.name}, Id: {self.id}, Type: {self.type}, "
                f"Status: {self.get_status()})")

    # -- script side ----------------------------------------------------------------------------

    @classmethod
    def get_context(cls, allow_offline=True, used_for_context_manager=False, **kwargs):
        """Inside a run: the run the script belongs to. Elsewhere: an offline run that prints."""
        return _runtime_module().get_context(allow_offline=allow_offline)

    @classmethod
    def get_submitted_run(cls, **kwargs):
        return cls.get_context(allow_offline=False)

    # -- what it is -----------------------------------------------------------------------------

    @property
    def number(self):
        return self._handle.get_details()["number"]

    @property
    def status(self):
        return self.get_status()

    @property
    def display_name(self):
        details = self._handle.get_details()
        return details.get("display_name") or details["id"]

    @property
    def type(self):
        return "azureml.scriptrun"

    @property
    def tags(self):
        return self.get_tags()

    @property
    def properties(self):
        return self.get_properties()

    @property
    def parent(self):
        parent_id = self._handle.get_details().get("parent_id")
        return Run(self.experiment, parent_id) if parent_id else None

    def get_status(self):
        return self._handle.get_status()

    def get_detailed_status(self):
        return self._handle.get_detailed_status()

    def get_details(self):
        """azureml-core's shape: runId, target, status, startTimeUtc, endTimeUtc, ..."""
        details = self._handle.get_details()
        distribution = details.get("distribution")
        result = {
            "runId": details["id"],
            "target": details["compute"],
            "status": details["status"],
            "startTimeUtc": details["started_at"],
            "endTimeUtc": details["ended_at"],
            "properties": details["properties"],
            "inputDatasets": [],
            "outputDatasets": [],
            "runDefinition": {
                "script": details["script"],
                "arguments": details["arguments"],
                "target": details["compute"],
                # framework, communicator, nodeCount, mpi, pytorch: as Azure shows them
                **run_configuration_fields(distribution and DistributionSpec(**distribution),
                                           details.get("node_count", 1)),
                "maxRunDurationSeconds": details.get("max_run_duration_seconds"),
                "environment": details["environment"],
                "dataReferences": {name: {"pathOnCompute": None, "hostPath": path}
                                   for name, path in details["inputs"].items()},
                "executor": details["executor"],
            },
            "logFiles": {name: str(Path(details["run_dir"]) / name)
                         for name in self.get_file_names() if name.startswith(_LOG_PREFIXES)},
            "submittedBy": os.environ.get("USER", "local user"),
        }
        if details["error"]:
            result["error"] = {"error": {"code": "UserError" if details["exit_code"] else "ServiceError",
                                         "message": details["error"]}}
        return result

    def get_details_with_logs(self):
        details = self.get_details()
        details["logFiles"] = {name: Path(path).read_text(errors="replace")
                               for name, path in details["logFiles"].items()}
        return details

    def get_portal_url(self):
        """Where to look at the run: its Azure ML studio page, or for a local run its page in
        the amlocal UI while one serves its history (`amlocal ui`), else its folder."""
        details = self._handle.get_details()
        if details.get("portal_url"):
            return details["portal_url"]
        run_dir = Path(details["run_dir"])
        # a local run's folder is <history>/runs/<folder>
        return run_page_url(details["id"], run_dir.parent.parent) or run_dir.as_uri()

    # -- waiting --------------------------------------------------------------------------------

    def wait_for_completion(self, show_output=False, wait_post_processing=False,
                            raise_on_error=True):
        """Wait for the run to end; with show_output, stream its stages and output as they come.

        Returns get_details(). Raises ActivityFailedException when the run ended Failed (or
        Canceled) and raise_on_error is true. Ctrl-C stops waiting, not the run.
        """
        printer = _AzureStylePrinter(self) if show_output else (lambda event: None)
        if show_output:
            print(f"RunId: {self.id}")
            print(f"Web View: {self.get_portal_url()}")
        try:
            self._handle.wait(on_event=printer)
        except KeyboardInterrupt:
            raise ExperimentExecutionException(
                "The output streaming for the run interrupted.\nBut the run is still executing on "
                "the compute target. \nDetails for canceling the run can be found here: "
                "https://aka.ms/aml-docs-cancel-run") from None
        details = self.get_details()
        if show_output:
            print("\nExecution Summary\n=================")
            print(f"RunId: {self.id}")
            print(f"Web View: {self.get_portal_url()}")
            if "error" in details:
                print(f"\nError:\n{json.dumps(details['error'], indent=4)}")
            print()
        if raise_on_error and details["status"] in (run_status.FAILED, run_status.CANCELED):
            raise ActivityFailedException(
                f"ActivityFailedException:\n\tMessage: Activity Failed:\n"
                f"{json.dumps(details.get('error', {'error': {'message': details['status']}}), indent=4)}",
                run_id=self.id, status=details["status"])
        return details

    # -- metrics, files, logs ------------------------------------------------------------------

    def get_metrics(self, name=None, recursive=False, run_type=None, populate=False):
        """{name: value} (or {run id: {...}} with recursive=True, the run's children included)."""
        metrics = azure_metrics(self._handle.get_metric_records(), self.id)
        if name is not None:
            metrics = {name: metrics[name]} if name in metrics else {}
        if not recursive:
            return metrics
        result = {self.id: metrics}
        for child in self.get_children(recursive=True):
            result[child.id] = child.get_metrics(name=name)
        return result

    def get_file_names(self):
        return self._handle.get_file_names()

    def download_file(self, name, output_file_path=None, _validate_checksum=False):
        self._handle.download_file(name, output_file_path)

    def download_files(self, prefix=None, output_directory=None, output_paths=None,
                       batch_size=100, append_prefix=True, timeout_seconds=None):
        """Download the run's files under prefix; with append_prefix=False the prefix is cut off
        the local paths. Returns the local paths."""
        if output_paths is None:
            return [str(path) for path in
                    self._handle.download_files(prefix, output_directory, append_prefix)]
        names = [name for name, _relative in downloads_under(self.get_file_names(), prefix)]
        if len(output_paths) != len(names):
            raise AmlocalError(f"output_paths has {len(output_paths)} entries for {len(names)} files")
        for name, target in zip(names, output_paths):  # each where the caller named it
            self._handle.download_file(name, target)
        return [str(Path(target)) for target in output_paths]

    def get_all_logs(self, destination=None):
        """Download the run's log files into destination (default ./user_logs); return the paths."""
        directory = Path(destination or "user_logs")
        return [str(path) for prefix in _LOG_PREFIXES
                for path in self._handle.download_files(prefix, directory)]

    # -- control --------------------------------------------------------------------------------

    def cancel(self):
        self._handle.cancel()

    def get_children(self, recursive=False, tags=None, properties=None, type=None, status=None,
                     _rehydrate_runs=True):
        children = []
        for handle in self._handle.get_children():
            child = Run(self.experiment, handle.id, _handle=handle)
            children.append(child)
            if recursive:
                children.extend(child.get_children(recursive=True))
        return [child for child in children
                if (status is None or child.get_status() == status)
                and _matches_tags(child.get_tags(), tags)]

    # -- tags, properties, models --------------------------------------------------------------

    def tag(self, key, value=None):
        self.set_tags({key: value})

    def set_tags(self, tags):
        tags = check_key_values(tags, "tag")
        check_key_values({**self.get_tags(), **tags}, "tag")  # at most 50 in all
        self._handle.set_tags(tags)

    def remove_tags(self, tags):
        self._handle.set_tags({}, remove=tags)

    def get_tags(self):
        return self._handle.get_details()["tags"]

    def add_properties(self, properties):
        properties = check_key_values(properties, "property")
        check_key_values({**self.get_properties(), **properties}, "property")
        self._handle.add_properties(properties)

    def get_properties(self):
        return self._handle.get_details()["properties"]

    def register_model(self, model_name, model_path=None, tags=None, properties=None,
                       model_framework=None, model_framework_version=None, description=None,
                       datasets=None, sample_input_dataset=None, sample_output_dataset=None,
                       resource_configuration=None, **kwargs):
        """Register a file (or folder) of this run's as a model, where the run's backend keeps
        models (a run on Azure ML: in its Azure ML workspace); returns the Model."""
        from amlocal.model import register_model_from_run

        return register_model_from_run(
            self.experiment.workspace, self._handle, model_name, model_path=model_path, tags=tags,
            properties=properties, model_framework=model_framework,
            model_framework_version=model_framework_version, description=description,
            datasets=datasets, sample_input_dataset=sample_input_dataset,
            sample_output_dataset=sample_output_dataset,
            resource_configuration=resource_configuration, **kwargs)


def _matches_tags(run_tags, wanted):
    if not wanted:
        return True
    if isinstance(wanted, dict):
        return all(run_tags.get(key) == str(value) for key, value in wanted.items())
    if isinstance(wanted, str):
        return wanted in run_tags
    return all(tag in run_tags for tag in wanted)


class _AzureStylePrinter:
    """Renders run events as wait_for_completion(show_output=True) shows them."""

    def __init__(self, run):
        self.run = run
        self.streaming = None

    def __call__(self, event):
        if isinstance(event, StageStarted):
            print(f"[{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}] {event.stage}"
                  + (f": {event.detail}" if event.detail else ""))
        elif isinstance(event, StageFinished):
            print(f"[{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}] {event.stage} "
                  f"{event.status} in {event.duration_s:.2f} s")
        elif isinstance(event, LogLine):
            log = "azureml-logs/20_image_build_log.txt" if event.source == "build" \
                else "azureml-logs/70_driver_log.txt"
            if self.streaming != log:
                self.streaming = log
                print(f"\nStreaming {log}\n{'=' * (len(log) + 10)}\n")
            print(event.line)


def run_of(experiment, handle):
    """The SDK object for a run: a HyperDriveRun for a sweep's parent, else a Run."""
    if handle.get_details().get("sweep"):
        from amlocal.train.hyperdrive.run import HyperDriveRun
        return HyperDriveRun(experiment, handle.id, _handle=handle)
    return Run(experiment, handle.id, _handle=handle)
