"""Azure ML faked where the network begins for SDK v2: an MLClient (and the blob container a
datastore upload writes to) over an in-memory workspace, handed to the real AzureSessionV2
(backends/azure/session_v2.py). Everything before it is real: the translation to azure-ai-ml
entities, the session's calls, the local run history, the CLI. The style is tests/fake_azure.py's:
the workspace records what was sent."""

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
from azure.core.exceptions import ResourceExistsError, ResourceNotFoundError
from click.testing import CliRunner

from amlocal.backends.azure import AzureBackend, session_v2 as session_v2_module
from amlocal.backends.azure.translate_v2 import serialized
from amlocal.cli.main import cli
from contract_specs import create_targets

# A sweep as amlocal's HyperDriveConfig._sweep() gives it (what `amlocal sweep` sends).
SWEEP = {"generator_config": {"name": "RANDOM", "properties": {"seed": 7}, "parameter_space": {
             "batchsize": ["choice", [[64, 128]]], "--lr": ["loguniform", [-6, -1]]}},
         "policy_config": {"name": "Bandit", "properties": {
             "evaluation_interval": 2, "delay_evaluation": 0, "slack_factor": 0.1}},
         "primary_metric_config": {"name": "Accuracy", "goal": "maximize"},
         "max_total_runs": 8, "max_concurrent_runs": 2, "max_duration_minutes": 60}


def v2_backend(home):
    """An Azure backend on SDK v2 over `home`, with the contract specs' compute targets."""
    backend = AzureBackend(home=home, workspace_config=None, sdk="v2")
    create_targets(backend.store)
    return backend



STUDIO = ("https://ml.azure.com/runs/{name}?wsid=/subscriptions/sub-1/resourcegroups/rg-ml/"
          "workspaces/ws-prod&tid=tenant-1")


class FakeWorkspaceV2:
    """What a workspace on Azure holds, in memory: clusters, blobs, jobs, models."""

    def __init__(self):
        self.clusters = {}  # name -> vm size
        self.created = {}  # name -> the AmlCompute entity sent
        self.blobs = {}  # (datastore, blob name) -> bytes
        self.submitted = {}  # job name -> {experiment, job (as serialized), dockerfile}
        self.statuses = {}  # job name -> [statuses still to report]; the last one stays
        self.tags = {}
        self.canceled = []
        self.models = []
        self.endpoints = {}
        self.deployments = {}


class _Poller:
    def __init__(self, value=None):
        self._value = value

    def result(self):
        return self._value


class _Jobs:
    def __init__(self, workspace):
        self.workspace = workspace

    def create_or_update(self, job, experiment_name=None):
        if job.name in self.workspace.submitted and experiment_name is None:  # an update
            self.workspace.tags[job.name] = dict(job.tags or {})
            return job
        build = Path((job.trial if job.type == "sweep" else job).environment.build.path)
        self.workspace.submitted[job.name] = {
            "experiment": experiment_name, "job": serialized(job),
            "dockerfile": (build / "Dockerfile").read_text(),
            "build_context": sorted(path.name for path in build.iterdir())}
        self.workspace.statuses.setdefault(job.name, ["Queued"])
        self.workspace.tags[job.name] = dict(job.tags or {})
        return SimpleNamespace(name=job.name, status="Starting",
                               studio_url=STUDIO.format(name=job.name))

    def get(self, name):
        if name not in self.workspace.submitted:
            raise ResourceNotFoundError(f"job {name} not found")
        statuses = self.workspace.statuses[name]
        status = statuses.pop(0) if len(statuses) > 1 else statuses[0]
        return SimpleNamespace(name=name, status=status, studio_url=STUDIO.format(name=name),
                               tags=dict(self.workspace.tags.get(name, {})), properties={})

    def begin_cancel(self, name):
        self.workspace.canceled.append(name)
        self.workspace.statuses[name] = ["CancelRequested", "Canceled"]
        return _Poller()

    def list(self, parent_job_name=None):
        return []


class _Compute:
    def __init__(self, workspace):
        self.workspace = workspace

    def get(self, name):
        if name not in self.workspace.clusters:
            raise ResourceNotFoundError(f"compute {name} not found")
        return SimpleNamespace(name=name, type="amlcompute", size=self.workspace.clusters[name])

    def begin_create_or_update(self, cluster):
        self.workspace.created[cluster.name] = cluster
        self.workspace.clusters[cluster.name] = cluster.size
        return _Poller(cluster)


class FakeContainer:
    """A datastore's blob container: uploads land in the workspace's blobs."""

    def __init__(self, workspace, datastore):
        self.workspace = workspace
        self.datastore = datastore

    def upload_blob(self, name, data, overwrite=False):
        key = (self.datastore, name)
        if key in self.workspace.blobs and not overwrite:
            raise ResourceExistsError(f"blob {name} exists")
        self.workspace.blobs[key] = data.read()


class FakeMLClient:
    """The MLClient operations AzureSessionV2 uses, over a FakeWorkspaceV2."""

    subscription_id = "sub-1"
    resource_group_name = "rg-ml"
    workspace_name = "ws-prod"

    def __init__(self, workspace):
        self.workspace = workspace
        self.workspaces = SimpleNamespace(get=lambda name: SimpleNamespace(location="westeurope"))
        self.datastores = SimpleNamespace(
            get_default=lambda: SimpleNamespace(name="workspaceblobstore"))
        self.compute = _Compute(workspace)
        self.jobs = _Jobs(workspace)
        self.models = SimpleNamespace(create_or_update=self._register)
        self.online_endpoints = SimpleNamespace(begin_create_or_update=self._endpoint)
        self.online_deployments = SimpleNamespace(begin_create_or_update=self._deployment)

    def _register(self, model):
        self.workspace.models.append(model)
        return SimpleNamespace(name=model.name, version=str(len(self.workspace.models)))

    def _endpoint(self, endpoint):
        self.workspace.endpoints[endpoint.name] = serialized(endpoint)
        return _Poller(SimpleNamespace(name=endpoint.name, provisioning_state="Succeeded",
                                       scoring_uri=f"https://{endpoint.name}.inference.ml/score"))

    def _deployment(self, deployment):
        self.workspace.deployments[deployment.name] = serialized(deployment)
        return _Poller(deployment)


@pytest.fixture
def azure_v2(monkeypatch, tmp_path):
    """A fake Azure ML workspace behind the v2 seam, and a config.json naming it in the current
    folder."""
    workspace = FakeWorkspaceV2()
    monkeypatch.setattr(session_v2_module, "AzureSessionV2",
                        _factory(session_v2_module.AzureSessionV2, workspace))
    project = tmp_path / "project"
    (project / ".azureml").mkdir(parents=True)
    (project / ".azureml" / "config.json").write_text(json.dumps(
        {"subscription_id": "sub-1", "resource_group": "rg-ml", "workspace_name": "ws-prod"}))
    monkeypatch.chdir(project)
    return workspace


def _factory(session_class, workspace):
    def make(config_path, ml_client=None, blob_container=None):
        return session_class(config_path, ml_client=FakeMLClient(workspace),
                             blob_container=lambda datastore: FakeContainer(workspace, datastore))
    return make


def invoke(*args):
    """`amlocal ARGS` in this process (click's runner)."""
    return CliRunner().invoke(cli, [str(arg) for arg in args], catch_exceptions=False)


@pytest.fixture
def in_empty_folder(tmp_path, monkeypatch):
    """No config.json (nor amlocal.toml) is found from here."""
    folder = tmp_path / "cwd"
    folder.mkdir()
    monkeypatch.chdir(folder)
    monkeypatch.delenv("AMLOCAL_AZURE_SDK", raising=False)
    return folder
