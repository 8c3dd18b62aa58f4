"""`Model.deploy` on a workspace on Azure ML (amlocal.Workspace.from_config naming one): the
deployment goes to Azure Container Instances through azureml-core, translated as the command
line's `services deploy --backend azure` is (deploy_v1.py), and the service is the object below,
whose every question goes to Azure through the session."""

from amlocal.model_errors import WebserviceException
# amlocal's errors raised as azureml-core's WebserviceException, as for local services.
from amlocal.webservice import _translated as _as_webservice_errors


class AzureAciWebservice:
    """An ACI service on Azure ML, as Model.deploy on a workspace on Azure gives it: already
    waited for (Healthy, or the state Azure settled in, with its error)."""

    compute_type = "ACI"

    def __init__(self, session, result):
        self._session = session
        self.name = result["name"]
        self.state = result["state"]
        self.scoring_uri = result["scoring_uri"]
        self.swagger_uri = result["swagger_uri"]
        self.error = result["error"]

    def __repr__(self):
        return (f"AciWebservice(name={self.name}, state={self.state}, "
                f"scoring_uri={self.scoring_uri}) on Azure ML")

    def wait_for_deployment(self, show_output=False, timeout_sec=None):
        """The deployment was waited for when made; raise, as azureml-core does, if it failed."""
        if show_output:
            print(f"{self.name}: {self.state}")
        if self.state != "Healthy":
            raise WebserviceException(f"Service deployment polling reached non-successful "
                                      f"terminal state, current service state: {self.state}. "
                                      f"Error: {self.error}")

    def get_logs(self, num_lines=5000, init=False):
        return _as_webservice_errors(self._session.webservice_logs, self.name)


def deploy_on_azure(workspace, name, models, inference_config, deployment_config, overwrite):
    """Deploy `models` (amlocal Models, by name and version in the Azure ML workspace) to ACI."""
    from amlocal.backends.azure.deploy_v1 import translate_deployment
    from amlocal.backends.base import EnvironmentSpec

    if deployment_config._webservice_type != "ACI" or deployment_config.port is not None:
        raise WebserviceException("Error, on a workspace on Azure ML amlocal deploys to ACI: give "
                                  "AciWebservice.deploy_configuration(...) (without port)")
    environment = inference_config.environment
    deployment = _as_webservice_errors(
        translate_deployment, name, [(model.name, model.version) for model in models],
        inference_config.entry_script, inference_config.source_directory,
        inference_config._environment_spec() or EnvironmentSpec(),
        cpu_cores=deployment_config.cpu_cores, memory_gb=deployment_config.memory_gb,
        auth_enabled=deployment_config.auth_enabled, tags=deployment_config.tags,
        description=deployment_config.description,
        primary_key=deployment_config.primary_key, secondary_key=deployment_config.secondary_key,
        environment_variables=getattr(environment, "environment_variables", None),
        overwrite=overwrite)
    session = _as_webservice_errors(workspace._backend().session)
    return AzureAciWebservice(session, _as_webservice_errors(session.deploy_webservice, deployment))
