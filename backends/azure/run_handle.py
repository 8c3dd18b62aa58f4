"""The one Run interface over a run submitted to Azure ML (`AzureRunHandle`): its record is in the
local run history; status, logs, metrics, files and cancel go to Azure through the backend's
session (SDK v1's, or v2's for a v2 job), and what it learns (status, error, tags) is mirrored
into the local record. backend.py makes these handles."""

import json
import queue
import tempfile
import threading
import time
from pathlib import Path

from amlocal.backends import status as run_status
from amlocal.backends.azure.errors import redact, redact_data
from amlocal.backends.base import (LogLine, RunHandle, StatusChanged, download_target,
                                   downloads_under, ignore_event)
from amlocal.backends.history.run_folder import name_parts
from amlocal.backends.history.store import run_details
from amlocal.errors import IllegalTransitionError
from amlocal.validation import setting

BACKEND_NAME = "azure"  # AzureBackend.name, the backend these runs are recorded under
# The run property that holds the Azure side of a run the emulator of this same history ran
# (AzureBackend._record).
AZURE_PROPERTY = "amlocal.azure"
DRIVER_LOGS = ("user_logs/std_log.txt", "azureml-logs/70_driver_log.txt")


def _poll_interval():
    return setting("AMLOCAL_AZURE_POLL_S", 10.0, 0, 3600)


class AzureRunHandle(RunHandle):
    """A run submitted to Azure ML, as the one Run interface; its record is in the local history."""

    backend_name = BACKEND_NAME

    def __init__(self, backend, run_id):
        self.backend = backend
        self.store = backend.store
        self.id = run_id

    def __repr__(self):
        return f"AzureRunHandle({self.id!r})"

    @property
    def _session(self):
        return self.backend.session()

    # -- status ----------------------------------------------------------------------------------

    def mirror(self, observed, error=None):
        """Record a status seen on Azure, through the state machine (the moves in between are
        the ones the run made while nobody looked). A status that cannot follow the recorded one
        (an old answer) is ignored."""
        status = run_status.from_azure(observed) if observed else None
        if status is None or self.store.get_run(self.id)["backend"] != BACKEND_NAME:
            return  # (a run the emulator ran in this history: its local driver records it)
        try:
            steps = run_status.path_to(self.store.get_status(self.id), status)
        except IllegalTransitionError:
            return
        for step in steps:
            fields = {"error": redact(error)} if error and step == run_status.FAILED else {}
            self.store.try_set_status(self.id, step, **fields)

    def refresh(self):
        """Ask Azure for the run's status (and error) and record them; returns Azure's details."""
        details = self._session.run_details(self.id)
        self.mirror(details.get("status"), error=_error_message(details))
        return details

    def get_status(self):
        if not run_status.is_terminal(self.store.get_status(self.id)):
            self.refresh()
        return self.store.get_status(self.id)

    def get_detailed_status(self):
        return {"status": self.get_status(), "details": ""}

    def get_status_history(self):
        """The statuses amlocal saw (Azure's own history is on the portal)."""
        self.store.get_status(self.id)
        return self.store.status_history(self.id)

    def get_details(self, refresh=True):
        """The run record, as the local backend gives it, plus `portal_url` and `workspace`;
        with refresh=True a run that has not ended is first looked up on Azure."""
        if refresh and not run_status.is_terminal(self.store.get_status(self.id)):
            self.refresh()
        record = self.store.get_run(self.id)
        azure = azure_part(record)
        details = run_details(record, self.store.run_dir(self.id))
        if record["backend"] == BACKEND_NAME:
            # What Azure keeps (nodes, stages, the exit code) is on the portal, not mirrored
            # here; a run the emulator of this history ran has its local record's.
            details.update(nodes=[], preemptions=0, image=azure.get("environment"),
                           exit_code=None, stages=[])
        return redact_data({
            **details,
            "portal_url": azure.get("portal_url"),
            "workspace": azure.get("workspace"),
            "uploads": azure.get("uploads", []),
        })

    def wait(self, on_event=ignore_event, timeout=None):
        """Follow the run to its end: its output streamed as azureml-core's
        wait_for_completion(show_output=True) streams it (LogLine events), or, with a timeout,
        its status polled until then."""
        if timeout is None:
            # As azureml-core does, a run that has ended still shows its output.
            self._session.wait_for_completion(
                self.id, lambda line: on_event(LogLine(self.id, "driver", line)))
        else:
            deadline = time.monotonic() + timeout
            while not run_status.is_terminal(self.get_status()):
                if time.monotonic() > deadline:
                    raise TimeoutError(f"run {self.id} is still {self.store.get_status(self.id)}")
                time.sleep(min(_poll_interval(), max(0.0, deadline - time.monotonic())))
        details = self.get_details(refresh=True)
        on_event(StatusChanged(self.id, details["status"]))
        return details

    def follow(self, deadline=None):
        """The run's output as LogLine events, then its final StatusChanged; with a deadline,
        only its status, polled until then (Azure's stream cannot be given up midway)."""
        if deadline is not None:
            self.wait(timeout=max(0.0, deadline - time.monotonic()))
        else:
            for line in self._follow_lines():
                yield LogLine(self.id, "driver", line)
        yield StatusChanged(self.id, self.get_status())

    def stream_logs(self, follow=False):
        if follow:
            yield from self._follow_lines()
            return
        names = set(self.get_file_names())
        for name in DRIVER_LOGS:
            if name in names:
                yield from redact(self._session.read_text_file(self.id, name)).splitlines()
                return

    def _follow_lines(self):
        lines = queue.Queue()
        done = object()

        def follow():
            try:
                self._session.wait_for_completion(self.id, lines.put)
            finally:
                lines.put(done)

        threading.Thread(target=follow, name=f"amlocal-azure-{self.id}", daemon=True).start()
        while (line := lines.get()) is not done:
            yield line

    def cancel(self, force=False, reason=None):
        """Ask Azure to cancel the run (CancelRequested, then Canceled when Azure says so)."""
        if run_status.is_terminal(self.store.get_status(self.id)):
            return
        self._session.cancel(self.id)
        self.store.try_set_status(self.id, run_status.CANCEL_REQUESTED,
                                  **({"error": reason} if reason else {}))

    # -- metrics, files, tags ---------------------------------------------------------------------

    def get_metrics(self):
        return {name: value if isinstance(value, list) else [value]
                for name, value in self._session.metrics(self.id).items()}

    def get_metric_records(self):
        records = []
        for name, value in self._session.metrics(self.id).items():
            if isinstance(value, dict):
                records.append(_metric_record(name, "table", value, 0))
                continue
            for position, item in enumerate(value if isinstance(value, list) else [value]):
                records.append(_metric_record(name, "scalar", item, position))
        return records

    def get_file_names(self):
        return sorted(self._session.file_names(self.id))

    def get_file_sizes(self):
        """Azure lists names only: sizes are unknown (None) without downloading each file."""
        return {name: None for name in self.get_file_names()}

    def open_file(self, name):
        """The file, downloaded from Azure into a temporary file that is gone once closed."""
        with tempfile.TemporaryDirectory(prefix="amlocal-azure-file-") as folder:
            target = Path(folder) / "file"
            self._session.download_file(self.id, name, target)
            return open(target, "rb")  # the open file outlives its name (POSIX)

    def download_file(self, name, output_file_path=None):
        target = download_target(name, output_file_path)
        target.parent.mkdir(parents=True, exist_ok=True)
        self._session.download_file(self.id, name, target)
        return target

    def download_files(self, prefix=None, output_directory=None, append_prefix=True):
        root = Path(output_directory) if output_directory else Path.cwd()
        downloads = downloads_under(self.get_file_names(), prefix, append_prefix)
        for _name, relative in downloads:
            name_parts(relative)  # a name the script gave that would leave `root` is refused
        return [self.download_file(name, root / relative) for name, relative in downloads]

    def get_children(self):
        """Child runs of an Azure run stay in Azure ML (its portal page lists them): amlocal's
        history holds the runs it submitted."""
        return []

    def set_tags(self, tags, remove=()):
        remote = self._session.set_tags(self.id, tags, remove)
        self.store.update_tags(self.id, tags, remove)
        return remote

    def add_properties(self, properties):
        remote = self._session.add_properties(self.id, properties)
        self.store.add_properties(self.id, properties)
        return remote

    def register_model(self, model_name, model_path=None, framework=None, framework_version=None,
                       **metadata):
        """Register a file of the run's as a model in the Azure ML workspace: {name, version, id}."""
        if framework is not None:
            metadata.update(model_framework=framework)
        if framework_version is not None:
            metadata.update(model_framework_version=framework_version)
        return self._session.register_model(self.id, model_name, model_path=model_path,
                                            **{key: value for key, value in metadata.items()
                                               if value is not None})


def azure_part(record):
    """The Azure side of a run record: its spec's, or the property of a run the emulator of
    this history ran."""
    if AZURE_PROPERTY in record["properties"]:
        return json.loads(record["properties"][AZURE_PROPERTY])
    return record["spec"].get("azure", {})


def _metric_record(name, kind, value, position):
    return {"name": name, "position": position, "type": kind, "value": value, "step": None,
            "description": "", "logged_at": None, "damaged": False}


def _error_message(details):
    error = details.get("error") or {}
    inner = error.get("error", error) if isinstance(error, dict) else {}
    message = inner.get("message") if isinstance(inner, dict) else None
    return redact(message) if message else None
