"""Azure ML faked at the one seam (backends/azure/session.py, where the network begins), shared by
the Azure backend's tests and the Run interface's contract suite: everything before the seam is
real (the translation to azureml-core objects, the local run history, the CLI, the SDK's Run)."""

import json
from pathlib import Path

import pytest
from azureml.core._serialization_utils import _serialize_to_dict
from azureml.core.script_run_config import get_run_config_from_script_run

from amlocal.backends.azure import session as session_module
from amlocal.backends.azure.errors import redact

PORTAL = ("https://ml.azure.com/runs/{run_id}?wsid=/subscriptions/sub-1/resourcegroups/rg-ml/"
          "workspaces/ws-prod&tid=tenant-1")


class FakeAzure:
    """What a workspace on Azure holds, in memory: clusters, datastore files, runs."""

    def __init__(self):
        self.clusters = {}  # name -> vm size
        self.created = {}  # name -> provisioning configuration
        self.uploads = []
        self.submitted = {}  # run id -> {experiment, run_configuration, tags, source_directory}
        self.statuses = {}  # run id -> [statuses still to report]; the last one stays
        self.logs = {}  # run id -> lines wait_for_completion prints
        self.metrics = {}
        self.files = {}  # run id -> {name: bytes}
        self.tags = {}
        self.properties = {}
        self.models = []
        self.canceled = []
        self.errors = {}  # method name -> exception to raise
        self.details_extra = {}  # run id -> fields get_details adds (error, logFiles, ...)


class FakeSession:
    """The seam, faked: the same methods as AzureSession, over a FakeAzure."""

    def __init__(self, azure, config_path="config.json"):
        self.azure = azure
        self.config_path = config_path

    def _maybe_fail(self, method):
        if method in self.azure.errors:
            raise self.azure.errors[method]

    def workspace_info(self):
        self._maybe_fail("workspace_info")
        return {"subscription_id": "sub-1", "resource_group": "rg-ml", "workspace_name": "ws-prod",
                "location": "westeurope"}

    def default_datastore(self):
        return "workspaceblobstore"

    def compute_vm_size(self, name):
        return self.azure.clusters.get(name)

    def create_compute(self, name, provisioning):
        self._maybe_fail("create_compute")
        self.azure.created[name] = provisioning
        self.azure.clusters[name] = provisioning.vm_size

    def upload_input(self, upload):
        self.azure.uploads.append(upload)

    def submit(self, experiment, config, tags, run_id):
        self._maybe_fail("submit")
        self.azure.submitted[run_id] = {
            "experiment": experiment, "tags": tags,
            "source_directory": config.source_directory,
            "run_configuration": _serialize_to_dict(get_run_config_from_script_run(config))}
        self.azure.statuses.setdefault(run_id, ["Queued"])
        return {"run_id": run_id, "status": "Starting", "portal_url": PORTAL.format(run_id=run_id)}

    def _status(self, run_id):
        statuses = self.azure.statuses[run_id]
        return statuses.pop(0) if len(statuses) > 1 else statuses[0]

    def run_details(self, run_id):
        return {"runId": run_id, "status": self._status(run_id), **self.azure.details_extra.get(run_id, {})}

    def wait_for_completion(self, run_id, on_line):
        for line in self.azure.logs.get(run_id, []):
            on_line(redact(line))
        self.azure.statuses[run_id] = [self.azure.statuses[run_id][-1]]

    def cancel(self, run_id):
        self.azure.canceled.append(run_id)
        self.azure.statuses[run_id] = ["CancelRequested", "Canceled"]

    def metrics(self, run_id):
        return self.azure.metrics.get(run_id, {})

    def file_names(self, run_id):
        return sorted(self.azure.files.get(run_id, {}))

    def download_file(self, run_id, name, output_file_path):
        Path(output_file_path).write_bytes(self.azure.files[run_id][name])

    def read_text_file(self, run_id, name):
        return self.azure.files[run_id][name].decode()

    def set_tags(self, run_id, tags, remove=()):
        current = self.azure.tags.setdefault(run_id, {})
        current.update(tags)
        for key in remove:
            current.pop(key, None)
        return dict(current)

    def add_properties(self, run_id, properties):
        self.azure.properties.setdefault(run_id, {}).update(properties)
        return dict(self.azure.properties[run_id])

    def children(self, run_id):
        return []

    def register_model(self, run_id, model_name, model_path=None, **kwargs):
        self.azure.models.append((run_id, model_name, model_path))
        return {"name": model_name, "version": len(self.azure.models), "id": f"{model_name}:1"}


@pytest.fixture
def azure(monkeypatch, tmp_path):
    """A fake Azure behind the seam, and a config.json naming its workspace in the current folder."""
    fake = FakeAzure()
    monkeypatch.setattr(session_module, "AzureSession", lambda config_path: FakeSession(fake, config_path))
    project = tmp_path / "project"
    (project / ".azureml").mkdir(parents=True)
    (project / ".azureml" / "config.json").write_text(json.dumps(
        {"subscription_id": "sub-1", "resource_group": "rg-ml", "workspace_name": "ws-prod"}))
    monkeypatch.chdir(project)
    return fake


