"""The seam: the one class through which amlocal talks to Azure ML (with azureml-core).

Everything before this class is pure and tested with real azureml-core objects
(translate_v1.py); everything in it makes requests. Each method is one azureml-core call (or a
few that belong together), takes and returns plain data or the translation's objects, and turns
azureml-core's exceptions into amlocal's, redacted. Tests replace this class with a fake of the
same methods, and fake nothing beyond it.

Authentication is azureml-core's own (`Workspace.from_config(auth=None)`): the Azure CLI's
login (`az login`), else a service principal from AZUREML_SERVICE_PRINCIPAL_ID /
AZUREML_SERVICE_PRINCIPAL_PASSWORD / AZUREML_SERVICE_PRINCIPAL_TENANT_ID or a managed identity,
else an interactive (device code) sign-in. Credentials stay inside azureml-core: amlocal never
reads or stores them.

A workspace config that an emulator wrote (`amlocal serve`: <home>/emulator/config.json, with
its "endpoint") is the emulator's workspace: the session signs in with amlocal.emulator.auth
(the emulator's own tokens, never a login), and every azureml-core call it makes runs with the
emulator's blob route (EmulatorWorkspace.use_blob_route), since the SDK's datastore uploads,
artifact downloads and log streaming go to the emulator's blob host through its https proxy.
Only that host is routed there, so a proxy the user has for other hosts keeps working in the
rest of the process.
"""

import contextlib
import io
import tempfile
from pathlib import Path

from amlocal.backends.azure.errors import (AzureAuthenticationError, AzureComputeError,
                                           AzureConfigError, AzureError, redact, require_sdk)


class _LineWriter(io.TextIOBase):
    """A text stream that hands each complete line written to it to `on_line`."""

    def __init__(self, on_line):
        self._on_line = on_line
        self._pending = ""

    def writable(self):
        return True

    def write(self, text):
        self._pending += text
        *lines, self._pending = self._pending.split("\n")
        for line in lines:
            self._on_line(redact(line.rstrip("\r")))
        return len(text)

    def close_pending(self):
        if self._pending:
            self._on_line(redact(self._pending))
            self._pending = ""


@contextlib.contextmanager
def _azure_call(what):
    """Turn azureml-core's (and its HTTP stack's) exceptions into amlocal's, redacted."""
    from azureml.exceptions import (AuthenticationException, ComputeTargetException,
                                    UserErrorException, WorkspaceException)
    try:
        yield
    except AuthenticationException as error:
        raise AzureAuthenticationError(
            f"{what}: Azure sign-in failed ({_message(error)}); sign in with `az login`, or set "
            "AZUREML_SERVICE_PRINCIPAL_ID, AZUREML_SERVICE_PRINCIPAL_PASSWORD and "
            "AZUREML_SERVICE_PRINCIPAL_TENANT_ID for a service principal") from None
    except ComputeTargetException as error:
        raise AzureComputeError(f"{what}: {_message(error)}") from None
    except WorkspaceException as error:
        raise AzureConfigError(redact(f"{what}: {_message(error)}")) from None
    except UserErrorException as error:
        raise AzureError(f"{what}: {_message(error)}") from None
    except KeyboardInterrupt:
        raise
    except Exception as error:  # the HTTP stack's errors are many; Azure's message is what matters
        raise AzureError(f"{what}: {type(error).__name__}: {_message(error)}") from None


def _message(error):
    message = getattr(error, "message", None) or str(error)
    return redact(" ".join(str(message).split()))


class EmulatorWorkspace:
    """The emulator (`amlocal serve`) that wrote a workspace config, and what reaching it
    needs: its endpoint, its run history, and its blob route."""

    def __init__(self, home, endpoint):
        self.home = Path(home)
        self.endpoint = endpoint
        self._routed = False

    @classmethod
    def of_config(cls, config_path):
        """The EmulatorWorkspace of `config_path`, or None for an Azure ML workspace's config."""
        from amlocal.emulator import serving_home

        found = serving_home(config_path)
        return cls(*found) if found else None

    def use_blob_route(self):
        """Send azureml-core's blob traffic to the emulator's https route, for this process:
        only the blob host goes to its proxy (BLOB_PROXY_VARIABLE, whatever HTTPS_PROXY the
        user has), the emulator's address goes direct and its CA joins the bundle in use, so
        every other host is reached as before. Set once; nothing to put back."""
        if not self._routed:
            from amlocal.emulator import use_blob_route

            use_blob_route(self.endpoint, self.home, keep_https=True)
            self._routed = True

    def auth(self):
        """amlocal.emulator.auth for this emulator (EmulatorNotRunningError when it does not
        answer: the message says to start `amlocal serve`)."""
        from amlocal.emulator import auth

        self.use_blob_route()
        return auth(self.endpoint, self.home)


class AzureSession:
    """One Azure ML workspace, named by a config.json, reached through azureml-core."""

    def __init__(self, config_path, auth=None):
        require_sdk()
        self.config_path = str(config_path)
        self.emulator = EmulatorWorkspace.of_config(config_path)
        self._auth = auth
        self._workspace = None
        self._runs = {}

    def _route(self):
        """On an emulator's workspace, its blob route (set once, for the process)."""
        if self.emulator:
            self.emulator.use_blob_route()

    @contextlib.contextmanager
    def _call(self, what):
        """One azureml-core call: its errors as amlocal's (_azure_call), made on the route."""
        self._route()
        with _azure_call(what):
            yield

    # -- the workspace ---------------------------------------------------------------------------

    def _ws(self):
        if self._workspace is None:
            from azureml.core import Workspace
            if self._auth is None and self.emulator is not None:
                self._auth = self.emulator.auth()
            with self._call(f"opening the workspace named in {self.config_path}"):
                self._workspace = Workspace.from_config(path=self.config_path, auth=self._auth)
        return self._workspace

    def workspace_info(self):
        """{subscription_id, resource_group, workspace_name, location} (signs in on first use)."""
        ws = self._ws()
        with self._call("reading the workspace"):
            return {"subscription_id": ws.subscription_id, "resource_group": ws.resource_group,
                    "workspace_name": ws.name, "location": ws.location}

    def default_datastore(self):
        with self._call("reading the workspace's default datastore"):
            return self._ws().get_default_datastore().name

    # -- compute ---------------------------------------------------------------------------------

    def compute_vm_size(self, name):
        """The VM size of the workspace's compute target `name`; None if there is none.

        Raises AzureComputeError if `name` is a compute target of another kind than AmlCompute.
        """
        from azureml.core.compute import AmlCompute, ComputeTarget
        from azureml.exceptions import ComputeTargetException
        workspace = self._ws()
        self._route()
        try:
            target = ComputeTarget(workspace=workspace, name=name)
        except ComputeTargetException:
            return None
        if not isinstance(target, AmlCompute):
            raise AzureComputeError(f"compute target {name!r} is a {target.type}, not an AmlCompute "
                                    "cluster: give the name of a cluster")
        return target.vm_size

    def create_compute(self, name, provisioning):
        """Create AmlCompute `name` from a provisioning configuration and wait until it exists."""
        from azureml.core.compute import ComputeTarget
        with self._call(f"creating compute target {name!r}"):
            target = ComputeTarget.create(self._ws(), name, provisioning)
            target.wait_for_completion(show_output=False)
            if getattr(target, "provisioning_state", None) == "Failed":
                errors = getattr(target, "provisioning_errors", None)
                raise AzureComputeError(f"creating compute target {name!r} failed: {errors}")

    # -- inputs ----------------------------------------------------------------------------------

    def upload_input(self, upload):
        """Upload one named input (translate_v1.InputUpload); files already there are kept."""
        from azureml.core import Datastore
        with self._call(f"uploading input {upload.name!r} to datastore {upload.datastore!r}"):
            datastore = Datastore.get(self._ws(), upload.datastore)
            if upload.is_file:
                datastore.upload_files([str(upload.source)], target_path=upload.target_path,
                                       overwrite=False, show_progress=False)
            else:
                datastore.upload(src_dir=str(upload.source), target_path=upload.target_path,
                                 overwrite=False, show_progress=False)

    # -- runs ------------------------------------------------------------------------------------

    def submit(self, experiment, config, tags, run_id):
        """Experiment.submit; returns {run_id, status, portal_url}."""
        from azureml.core import Experiment
        with self._call(f"submitting run {run_id} to experiment {experiment!r}"):
            run = Experiment(self._ws(), experiment).submit(config, tags=tags or None, run_id=run_id)
            self._runs[run.id] = run
            return {"run_id": run.id, "status": run.get_status(),
                    "portal_url": run.get_portal_url()}

    def submit_hyperdrive(self, experiment, config, tags):
        """Experiment.submit of a HyperDriveConfig; returns {run_id, status, portal_url}."""
        from azureml.core import Experiment
        with self._call(f"submitting a HyperDrive run to experiment {experiment!r}"):
            run = Experiment(self._ws(), experiment).submit(config, tags=tags or None)
            self._runs[run.id] = run
            return {"run_id": run.id, "status": run.get_status(),
                    "portal_url": run.get_portal_url()}

    def _run(self, run_id):
        if run_id not in self._runs:
            from azureml.core import Run
            with self._call(f"finding run {run_id}"):
                self._runs[run_id] = Run.get(self._ws(), run_id)
        return self._runs[run_id]

    def run_details(self, run_id):
        """Run.get_details() (status, startTimeUtc, endTimeUtc, error, ...), logFiles left out:
        their URLs carry SAS tokens."""
        with self._call(f"reading run {run_id}"):
            details = dict(self._run(run_id).get_details())
        details.pop("logFiles", None)
        return details

    def portal_url(self, run_id):
        with self._call(f"reading run {run_id}"):
            return self._run(run_id).get_portal_url()

    def wait_for_completion(self, run_id, on_line):
        """Run.wait_for_completion(show_output=True), its output handed line by line to
        `on_line` (redacted). Ctrl-C stops waiting (KeyboardInterrupt), not the run.

        It is what wait_for_completion(show_output=True) does, with the output stream handed
        to azureml-core rather than sys.stdout redirected: whatever `on_line` prints (to this
        process's stdout, from this thread or another) must not come back as run output."""
        writer = _LineWriter(on_line)
        run = self._run(run_id)
        try:
            with self._call(f"following run {run_id}"):
                run._stream_run_output(file_handle=writer, wait_post_processing=False,
                                       raise_on_error=False)
        finally:
            writer.close_pending()

    def cancel(self, run_id):
        with self._call(f"canceling run {run_id}"):
            self._run(run_id).cancel()

    def metrics(self, run_id):
        """Run.get_metrics(): {name: value, or [values] for a name logged more than once}."""
        with self._call(f"reading the metrics of run {run_id}"):
            return self._run(run_id).get_metrics()

    def file_names(self, run_id):
        with self._call(f"listing the files of run {run_id}"):
            return list(self._run(run_id).get_file_names())

    def download_file(self, run_id, name, output_file_path):
        with self._call(f"downloading {name} of run {run_id}"):
            self._run(run_id).download_file(name, output_file_path=str(output_file_path))

    def read_text_file(self, run_id, name):
        with tempfile.TemporaryDirectory(prefix="amlocal-azure-") as folder:
            target = Path(folder) / Path(name).name
            self.download_file(run_id, name, target)
            return target.read_text(errors="replace")

    def set_tags(self, run_id, tags, remove=()):
        with self._call(f"tagging run {run_id}"):
            run = self._run(run_id)
            if tags:
                run.set_tags(dict(tags))
            if remove:
                run.remove_tags(list(remove))
            return dict(run.get_tags())

    def add_properties(self, run_id, properties):
        with self._call(f"adding properties to run {run_id}"):
            run = self._run(run_id)
            run.add_properties(dict(properties))
            return dict(run.get_properties())

    def children(self, run_id):
        with self._call(f"listing the child runs of {run_id}"):
            return [child.id for child in self._run(run_id).get_children()]

    def register_model(self, run_id, model_name, model_path=None, **kwargs):
        """Run.register_model; returns {name, version, id}."""
        with self._call(f"registering model {model_name!r} from run {run_id}"):
            model = self._run(run_id).register_model(model_name=model_name,
                                                     model_path=model_path, **kwargs)
            return {"name": model.name, "version": model.version, "id": model.id}

    # -- web services ----------------------------------------------------------------------------

    def deploy_webservice(self, deployment, timeout_s=None, on_line=None):
        """Model.deploy of a deploy_v1.Deployment (ACI), waited for until it settles or
        `timeout_s` passes; returns {name, state, scoring_uri, swagger_uri, error}.

        The models are the workspace's registered models of the deployment's ids, the latest
        version for one given without; azureml-core uploads the source folder itself. What it
        prints meanwhile goes to `on_line` (redacted), never to this process's stdout."""
        from azureml.core import Model
        from azureml.exceptions import WebserviceException
        workspace = self._ws()
        writer = _LineWriter(on_line or (lambda line: None))
        with self._call(f"deploying web service {deployment.name!r}"), \
                contextlib.redirect_stdout(writer):
            models = [Model(workspace, name=model.name, version=model.version)
                      for model in deployment.models]
            service = Model.deploy(workspace, deployment.name, models, deployment.inference_config,
                                   deployment.deployment_config, overwrite=deployment.overwrite)
            try:
                service.wait_for_deployment(show_output=False, timeout_sec=timeout_s)
                error = None
            except WebserviceException as failure:  # a state that is not Healthy, and why
                error = _message(failure)
            writer.close_pending()
            return {"name": service.name, "state": service.state,
                    "scoring_uri": service.scoring_uri, "swagger_uri": service.swagger_uri,
                    "error": error}

    def webservice_logs(self, name):
        """The service's container log (Webservice.get_logs())."""
        from azureml.core.webservice import Webservice
        with self._call(f"reading the logs of web service {name!r}"):
            return redact(Webservice(self._ws(), name).get_logs())
