"""The one seam to Azure ML for SDK v2: every `MLClient` call amlocal makes is here (the
`azure-v2` extra, azure-ai-ml), as session.py holds every azureml-core call for v1.

Its methods are the ones the Azure backend and its run handle ask of a session (session.py's),
over a workspace's jobs, compute, datastores, models and online endpoints; what they take is
what translate_v2.py builds (pure), and what they return is plain data. Errors come back as
amlocal's (errors.py), redacted.

Signing in: azure-identity's DefaultAzureCredential (`az login`, or AZURE_CLIENT_ID,
AZURE_CLIENT_SECRET and AZURE_TENANT_ID for a service principal, or a managed identity).
"""

import contextlib
import time
from pathlib import Path

from amlocal.backends.azure.errors import (INSTALL_HINT, AzureAuthenticationError,
                                           AzureComputeError, AzureConfigError, AzureError,
                                           AzureSdkMissingError, redact, require_sdk,
                                           require_v2_sdk)
from amlocal.backends.status import is_terminal
from amlocal.validation import setting

# What run_details answers for a job that reports no status yet.
_UNKNOWN = "NotStarted"


def _poll_interval():
    return setting("AMLOCAL_AZURE_POLL_S", 10.0, 0, 3600)


def _message(error):
    message = getattr(error, "message", None) or str(error)
    return redact(" ".join(str(message).split()))


@contextlib.contextmanager
def _azure_call(what):
    """Turn azure-ai-ml's (and azure-core's) exceptions into amlocal's, redacted."""
    from azure.core.exceptions import ClientAuthenticationError, HttpResponseError
    try:
        yield
    except ClientAuthenticationError as error:
        raise AzureAuthenticationError(
            f"{what}: Azure sign-in failed ({_message(error)}); sign in with `az login`, or set "
            "AZURE_CLIENT_ID, AZURE_CLIENT_SECRET and AZURE_TENANT_ID for a service "
            "principal") from None
    except HttpResponseError as error:
        raise AzureError(f"{what}: {_message(error)}") from None
    except (KeyboardInterrupt, AzureError):
        raise
    except Exception as error:  # azure-ai-ml's validation errors are many; its message matters
        raise AzureError(f"{what}: {type(error).__name__}: {_message(error)}") from None


class AzureSessionV2:
    """One Azure ML workspace, named by a config.json, reached through azure-ai-ml's MLClient.

    `ml_client`: an MLClient (or a stand-in with its operations) to use instead of one made
    from the configuration file on first use; `blob_container`: datastore name -> the blob
    container client an upload writes to (default: azure-storage-blob's, see _blob_container);
    `run_history`: the v1 session (session.AzureSession) that reads a job's metrics and files.
    """

    def __init__(self, config_path, ml_client=None, blob_container=None, run_history=None):
        from amlocal.backends.azure.session import EmulatorWorkspace

        self.config_path = str(config_path)
        if ml_client is None:
            require_v2_sdk()
            if EmulatorWorkspace.of_config(config_path) is not None:
                raise AzureConfigError(
                    f"{config_path} names the emulator's workspace (amlocal serve), which answers "
                    "the REST operations SDK v1 uses: use --sdk v1 with it, or a config.json of "
                    "an Azure ML workspace for --sdk v2")
        self._client = ml_client
        self._container_of = blob_container or self._blob_container
        self._history = run_history

    def _ml(self):
        if self._client is None:
            from azure.ai.ml import MLClient
            from azure.identity import DefaultAzureCredential
            with _azure_call(f"opening the workspace named in {self.config_path}"):
                self._client = MLClient.from_config(credential=DefaultAzureCredential(),
                                                    path=self.config_path)
        return self._client

    # -- the workspace ---------------------------------------------------------------------------

    def workspace_info(self):
        """{subscription_id, resource_group, workspace_name, location}."""
        client = self._ml()
        with _azure_call("reading the workspace"):
            workspace = client.workspaces.get(client.workspace_name)
            return {"subscription_id": client.subscription_id,
                    "resource_group": client.resource_group_name,
                    "workspace_name": client.workspace_name, "location": workspace.location}

    def default_datastore(self):
        with _azure_call("reading the workspace's default datastore"):
            return self._ml().datastores.get_default().name

    # -- compute ---------------------------------------------------------------------------------

    def compute_vm_size(self, name):
        """The VM size of the workspace's compute `name`; None if there is none. Raises
        AzureComputeError if it is a compute of another kind than an AmlCompute cluster."""
        from azure.core.exceptions import ResourceNotFoundError
        with _azure_call(f"reading compute target {name!r}"):
            try:
                compute = self._ml().compute.get(name)
            except ResourceNotFoundError:
                return None
        if compute.type != "amlcompute":
            raise AzureComputeError(f"compute target {name!r} is a {compute.type}, not an "
                                    "AmlCompute cluster: give the name of a cluster")
        return compute.size

    def create_compute(self, name, cluster):
        """Create the AmlCompute entity `cluster` and wait until it exists."""
        with _azure_call(f"creating compute target {name!r}"):
            self._ml().compute.begin_create_or_update(cluster).result()

    # -- inputs ----------------------------------------------------------------------------------

    def upload_input(self, upload):
        """Upload one named input (run_parts.InputUpload) to its datastore path, as v1's
        session does; files already there are kept."""
        from azure.core.exceptions import ResourceExistsError
        source = Path(upload.source)
        files = [source] if upload.is_file else sorted(p for p in source.rglob("*") if p.is_file())
        with _azure_call(f"uploading input {upload.name!r} to datastore {upload.datastore!r}"):
            container = self._container_of(upload.datastore)
            for file in files:
                relative = file.name if upload.is_file else file.relative_to(source).as_posix()
                with open(file, "rb") as data:
                    try:
                        container.upload_blob(f"{upload.target_path}/{relative}", data,
                                              overwrite=False)
                    except ResourceExistsError:
                        pass  # the path holds a hash of the content: the same bytes

    def _blob_container(self, datastore_name):
        """The blob container behind a datastore, with the datastore's own credential (its
        account key or SAS token), or the signed-in identity's where it keeps none."""
        from azure.storage.blob import ContainerClient
        client = self._ml()
        datastore = client.datastores.get(datastore_name, include_secrets=True)
        credentials = getattr(datastore, "credentials", None)
        secret = getattr(credentials, "account_key", None) or getattr(credentials, "sas_token", None)
        account_url = f"{datastore.protocol}://{datastore.account_name}.blob.{datastore.endpoint}"
        return ContainerClient(account_url, datastore.container_name,
                               credential=secret or client._credential)

    # -- jobs ------------------------------------------------------------------------------------

    def submit_job(self, job, experiment):
        """jobs.create_or_update of a command or sweep job (named already); returns
        {run_id, status, portal_url}."""
        with _azure_call(f"submitting job {job.name} to experiment {experiment!r}"):
            created = self._ml().jobs.create_or_update(job, experiment_name=experiment)
            return {"run_id": created.name, "status": created.status,
                    "portal_url": created.studio_url}

    def _job(self, run_id):
        with _azure_call(f"reading job {run_id}"):
            return self._ml().jobs.get(run_id)

    def run_details(self, run_id):
        """The job's status and, where it failed, its error, in v1's shape (get_details())."""
        job = self._job(run_id)
        details = {"runId": job.name, "status": job.status or _UNKNOWN}
        error = getattr(job, "error", None)
        if error:
            details["error"] = {"error": {"message": redact(getattr(error, "message", error))}}
        return details

    def portal_url(self, run_id):
        return self._job(run_id).studio_url

    def wait_for_completion(self, run_id, on_line):
        """Poll the job until it ends, handing each status it reports to `on_line` (its log
        is in the studio, or `amlocal runs logs` once it ends: azure-ai-ml's stream writes to
        this process's stdout only)."""
        last = None
        while True:
            status = self.run_details(run_id)["status"]
            if status != last:
                on_line(f"Job {run_id}: {status}")
                last = status
            if is_terminal(status):
                return
            time.sleep(_poll_interval())

    def cancel(self, run_id):
        with _azure_call(f"canceling job {run_id}"):
            self._ml().jobs.begin_cancel(run_id)

    def _run_history(self, what, run_id):
        """The v1 session over the same workspace: a v2 job is a run of the run history
        azureml-core reads (metrics, files), which azure-ai-ml has no call for."""
        if self._history is None:
            try:
                require_sdk()
            except AzureSdkMissingError:
                raise AzureError(
                    f"{what} of job {run_id}: azure-ai-ml has no call for it; with the `azure` "
                    f"extra ({INSTALL_HINT}) amlocal reads it through azureml-core, or see the "
                    f"job in the studio: {self.portal_url(run_id)}") from None
            from amlocal.backends.azure.session import AzureSession
            self._history = AzureSession(self.config_path)
        return self._history

    def metrics(self, run_id):
        return self._run_history("reading the metrics", run_id).metrics(run_id)

    def file_names(self, run_id):
        return self._run_history("listing the files", run_id).file_names(run_id)

    def download_file(self, run_id, name, output_file_path):
        self._run_history(f"downloading {name}", run_id).download_file(run_id, name,
                                                                       output_file_path)

    def read_text_file(self, run_id, name):
        return self._run_history(f"reading {name}", run_id).read_text_file(run_id, name)

    def _update_job(self, run_id, change, what):
        job = self._job(run_id)
        change(job)
        with _azure_call(f"{what} job {run_id}"):
            return self._ml().jobs.create_or_update(job)

    def set_tags(self, run_id, tags, remove=()):
        def change(job):
            job.tags = {**{key: value for key, value in (job.tags or {}).items()
                           if key not in remove}, **dict(tags)}
        return dict(self._update_job(run_id, change, "tagging").tags or {})

    def add_properties(self, run_id, properties):
        def change(job):
            job.properties = {**(job.properties or {}), **dict(properties)}
        return dict(self._update_job(run_id, change, "adding properties to").properties or {})

    def children(self, run_id):
        with _azure_call(f"listing the child jobs of {run_id}"):
            return [child.name for child in self._ml().jobs.list(parent_job_name=run_id)]

    def register_model(self, run_id, model_name, model_path=None, **kwargs):
        """A model from the job's outputs (models.create_or_update); returns {name, version, id}."""
        from azure.ai.ml.entities import Model
        path = f"azureml://jobs/{run_id}/outputs/artifacts/paths/{model_path or 'outputs'}"
        tags = {key: str(value) for key, value in kwargs.items() if value is not None}
        with _azure_call(f"registering model {model_name!r} from job {run_id}"):
            model = self._ml().models.create_or_update(
                Model(name=model_name, path=path, type="custom_model", tags=tags or None))
            return {"name": model.name, "version": model.version,
                    "id": f"{model.name}:{model.version}"}

    # -- online endpoints ------------------------------------------------------------------------

    def deploy_online(self, endpoint, deployment):
        """Create the managed online endpoint, then its deployment with all traffic; returns
        {name, state, scoring_uri, error}."""
        client = self._ml()
        with _azure_call(f"creating online endpoint {endpoint.name!r}"):
            client.online_endpoints.begin_create_or_update(endpoint).result()
        with _azure_call(f"deploying {deployment.name!r} to online endpoint {endpoint.name!r}"):
            client.online_deployments.begin_create_or_update(deployment).result()
            endpoint.traffic = {deployment.name: 100}
            created = client.online_endpoints.begin_create_or_update(endpoint).result()
        return {"name": created.name, "state": created.provisioning_state,
                "scoring_uri": created.scoring_uri, "error": None}
