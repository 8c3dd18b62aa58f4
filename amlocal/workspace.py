"""`Workspace`: azureml-core's entry point, for the one local workspace (the run history).

`Workspace.from_config()` looks for a workspace configuration file the way azureml-core does
(config.json or project.json, in .azureml/, aml_config/ or the folder itself, from the given path
or the current folder up through its parents). With none, it returns the local workspace: the run
history under $AMLOCAL_HOME (default ~/.amlocal), named "local". A configuration file that names
an Azure ML workspace gives that workspace: runs submitted in it go to Azure ML through the Azure
backend (the `azure` extra; WorkspaceException says what to install without it), and are recorded
in the same local history. Compute targets, datastores and models stay local ones: a compute
target defined here is how the Azure backend creates the cluster of that name if the workspace
lacks it. Workspace.get("local") is always the local workspace.
"""

import json
import os

from amlocal.errors import UserInputError
from amlocal.workspace_config import WorkspaceConfigError, find_config, read_config

LOCAL_WORKSPACE = "local"
# The local workspace's Azure-shaped names, the ones the emulator (`amlocal serve`) serves it
# under: notebooks print them as strings, and a config.json or Workspace(...) naming them is this
# workspace, not one on Azure.
LOCAL_SUBSCRIPTION_ID = "00000000-0000-0000-0000-000000000000"
LOCAL_RESOURCE_GROUP = "amlocal"
LOCAL_LOCATION = "local"


def _names_local(subscription_id, resource_group):
    return ((subscription_id, resource_group) in ((None, None), ("", ""))
            or (str(subscription_id).lower() == LOCAL_SUBSCRIPTION_ID
                and str(resource_group).lower() == LOCAL_RESOURCE_GROUP))


def _names_an_emulator(config_file):
    """Whether a config file is one a running emulator wrote (it names its endpoint): runs in
    that workspace go through azureml-core to the emulator, as they would to Azure."""
    try:
        with open(config_file, encoding="utf-8") as handle:
            return "endpoint" in json.load(handle)
    except (OSError, ValueError, TypeError):
        return False


class WorkspaceException(UserInputError):
    """The workspace asked for is not the local one, or its configuration file is unusable."""

    @property
    def message(self):
        return str(self)


def _azure_unavailable(what):
    return WorkspaceException(
        f"{what} names an Azure ML workspace: amlocal reaches one through its configuration file "
        "(Workspace.from_config() with the workspace's config.json, or `amlocal run --backend "
        "azure`); Workspace.get('local') is the local workspace")


class Workspace:
    """The local workspace: compute targets and runs in the run history on this machine.

    Attributes as in azureml-core: name ("local"), subscription_id (all zeros: no Azure
    subscription is involved), resource_group ("amlocal"), location ("local"), compute_targets.
    """

    def __init__(self, subscription_id=None, resource_group=None, workspace_name=LOCAL_WORKSPACE,
                 auth=None, _location=None, _disable_service_check=False, _workspace_id=None,
                 sku="basic", tags=None, _cloud="AzureCloud"):
        if not _names_local(subscription_id, resource_group):
            raise _azure_unavailable(f"Workspace(subscription_id={subscription_id!r}, "
                                     f"resource_group={resource_group!r}, ...)")
        if workspace_name != LOCAL_WORKSPACE:
            raise WorkspaceException(f"no workspace named {workspace_name!r}: amlocal has one "
                                     f"workspace, {LOCAL_WORKSPACE!r}")
        from amlocal.backends import default_home

        self.name = LOCAL_WORKSPACE
        self.subscription_id = LOCAL_SUBSCRIPTION_ID
        self.resource_group = LOCAL_RESOURCE_GROUP
        self.location = LOCAL_LOCATION
        self.tags = tags
        self.sku = sku
        self._home = default_home()

    def __repr__(self):
        return (f"Workspace.get(name={self.name!r}, subscription_id={self.subscription_id!r}, "
                f"resource_group={self.resource_group!r})")

    @staticmethod
    def from_config(path=None, auth=None, _logger=None, _file_name=None):
        """The workspace named by the configuration file found from `path`; local when none is."""
        found = find_config(path if path is not None else ".", _file_name)
        if found is None:
            return Workspace()
        try:
            subscription_id, resource_group, workspace_name = read_config(found)
        except WorkspaceConfigError as error:
            raise WorkspaceException(str(error)) from None
        if not _names_local(subscription_id, resource_group) or _names_an_emulator(found):
            return Workspace._on_azure(found, subscription_id, resource_group, workspace_name)
        return Workspace(workspace_name=workspace_name)

    @classmethod
    def _on_azure(cls, config_file, subscription_id, resource_group, workspace_name):
        """The Azure ML workspace a configuration file names; runs submitted in it go to Azure.

        Nothing is asked of Azure here: the workspace is opened (and signed in to) when the
        first run is submitted.
        """
        from amlocal.backends.azure.errors import require_sdk
        from amlocal.backends import default_home

        try:
            require_sdk()
        except UserInputError as error:
            raise WorkspaceException(
                f"the configuration file {config_file} names the Azure ML workspace "
                f"{workspace_name!r} (subscription {subscription_id!r}, resource group "
                f"{resource_group!r}), and {error}") from None
        workspace = cls.__new__(cls)
        workspace.name = workspace_name
        workspace.subscription_id = subscription_id
        workspace.resource_group = resource_group
        workspace.location = None
        workspace.tags = None
        workspace.sku = "basic"
        workspace._home = default_home()
        workspace._azure_config = config_file
        return workspace

    @staticmethod
    def get(name, auth=None, subscription_id=None, resource_group=None, location=None,
            cloud="AzureCloud", id=None):
        """The local workspace (name "local"); an Azure subscription or another name is refused."""
        return Workspace(subscription_id, resource_group, name)

    @property
    def compute_targets(self):
        """{name: ComputeTarget} of this workspace (the built-in `local` is not one)."""
        from amlocal.compute import ComputeTarget

        return {target.name: target for target in ComputeTarget.list(self)}

    def _backend(self):
        """The backend runs of this workspace go to (imported on first use): the local one, or
        for a workspace on Azure ML the Azure one; both record runs in the local history."""
        from amlocal.backends import get_backend

        if getattr(self, "_azure_config", None):
            return get_backend("azure", home=self._home, workspace_config=self._azure_config)
        return get_backend("local", home=self._home)

    def get_run(self, run_id):
        """The run with this id, of whichever experiment."""
        from amlocal.experiment import Experiment
        from amlocal.run import run_of

        handle = self._backend().get_run(run_id)
        return run_of(Experiment(self, handle.get_details()["experiment"]), handle)

    @property
    def experiments(self):
        """{name: Experiment} of the experiments that have runs."""
        from amlocal.experiment import Experiment

        names = {record["experiment"] for record in self._backend().list_runs()}
        return {name: Experiment(self, name, _skip_name_validation=True) for name in sorted(names)}

    @property
    def models(self):
        """{name: Model} of the registered models, each at its latest version."""
        from amlocal.model import Model

        return {model.name: model for model in Model.list(self, latest=True)}

    @property
    def webservices(self):
        """{name: Webservice} of the services deployed from this workspace (as their kinds)."""
        from amlocal.webservice import Webservice

        return {service.name: service for service in Webservice.list(self)}

    def get_mlflow_tracking_uri(self, _with_auth=False):
        """The URI an MLflow client uses to log into and read this workspace's run history
        (`mlflow.set_tracking_uri(ws.get_mlflow_tracking_uri())`): `amlocal serve` must be
        running for it (EmulatorNotRunningError, in one line, otherwise). This process's
        MLFLOW_TRACKING_TOKEN is set to the workspace's token, which MLflow sends."""
        from amlocal.emulator import mlflow_tracking_uri, serving_home

        config = getattr(self, "_azure_config", None)
        if config and serving_home(config):  # an emulator's workspace: the emulator serves it
            home, endpoint = serving_home(config)
            return mlflow_tracking_uri(endpoint, home)
        if config:
            raise WorkspaceException(
                f"workspace {self.name!r} is on Azure ML: its MLflow tracking URI comes from "
                "azureml-core with azureml-mlflow (azureml.core.Workspace."
                "get_mlflow_tracking_uri())")
        return mlflow_tracking_uri(home=self._home)

    def get_default_datastore(self):
        from amlocal.datastore import Datastore

        return Datastore(self)

    @property
    def datastores(self):
        from amlocal.datastore import DEFAULT_DATASTORE, Datastore

        root = self._home / "datastores"
        names = {DEFAULT_DATASTORE} | ({path.name for path in root.iterdir() if path.is_dir()}
                                       if root.is_dir() else set())
        return {name: Datastore(self, name) for name in sorted(names)}

    def write_config(self, path=None, file_name=None):
        """Write a config.json that names the local workspace (in path/.azureml/)."""
        folder = os.path.join(path or ".", ".azureml")
        os.makedirs(folder, exist_ok=True)
        target = os.path.join(folder, file_name or "config.json")
        with open(target, "w", encoding="utf-8") as handle:
            json.dump({"subscription_id": None, "resource_group": None,
                       "workspace_name": LOCAL_WORKSPACE}, handle, indent=4)
        return target
