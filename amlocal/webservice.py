"""Web services shaped as in azureml-core (azureml.core.webservice), run in Docker on this machine.

    service = Model.deploy(ws, "mnist-svc", [model], inference_config,
                           AciWebservice.deploy_configuration(cpu_cores=1, memory_gb=1,
                                                              auth_enabled=True))
    service.wait_for_deployment(show_output=True)
    service.run(json.dumps({"data": images}))      # or POST service.scoring_uri yourself
    service.get_logs(); service.get_keys(); service.regen_key("Primary"); service.delete()
    Webservice(ws, "mnist-svc"); Webservice.list(ws); ws.webservices

Every kind of service (LocalWebservice, AciWebservice, AksWebservice) is a container of the
local Docker engine (backends/local/services.py) reachable on http://127.0.0.1:<port> only;
the kinds differ as on Azure in their deployment configuration and in what they offer: keys
(`auth_enabled`, on by default for AKS) for ACI and AKS, `reload()` for LocalWebservice.
A service outlives the Python process that deployed it.

States are Azure ML's: Transitioning (starting), Healthy (the server answers), Unhealthy (it did
answer, then its container stopped), Failed (it never answered: an init() that raised; its
traceback is in get_logs()). `state` is read from the containers each time it is asked.

Errors are azureml-core's WebserviceException (a subclass of amlocal's errors, so the CLI shows
one line); unsupported Azure options (TLS, virtual networks, customer-managed keys, DNS labels)
raise UserErrorException rather than being dropped.
"""

import datetime
import json

from amlocal.errors import AmlocalError
from amlocal.model_errors import UserErrorException, WebserviceException

_UNSUPPORTED_ACI = ("ssl_enabled", "ssl_cert_pem_file", "ssl_key_pem_file", "ssl_cname",
                    "dns_name_label", "cmk_vault_base_url", "cmk_key_name", "cmk_key_version",
                    "vnet_name", "subnet_name")


def _services(workspace):
    """The local services of a workspace's run history (loads the Docker side on first use)."""
    if getattr(workspace, "_home", None) is None:
        raise WebserviceException(f"amlocal's web services need amlocal's Workspace "
                                  f"(Workspace.from_config()), got {type(workspace).__name__}")
    from amlocal.backends.local.services import LocalServices

    return LocalServices(workspace._home)


def _translated(call, *args, **kwargs):
    """Run a call into the services, raising amlocal's errors as WebserviceException."""
    try:
        return call(*args, **kwargs)
    except WebserviceException:
        raise
    except AmlocalError as error:
        raise WebserviceException(str(error)) from None


# -- deployment configurations -------------------------------------------------------------------

class WebserviceDeploymentConfiguration:
    """What kind of service to deploy, and with which resources and keys."""

    _webservice_type = None

    def __init__(self, cpu_cores=None, memory_gb=None, auth_enabled=False, tags=None,
                 properties=None, description=None, port=None, primary_key=None,
                 secondary_key=None):
        self.cpu_cores = cpu_cores
        self.memory_gb = memory_gb
        self.auth_enabled = auth_enabled
        self.tags = tags
        self.properties = properties
        self.description = description
        self.port = port
        self.primary_key = primary_key
        self.secondary_key = secondary_key

    def validate_configuration(self):
        from amlocal.backends.local.service_settings import checked_resources

        _translated(checked_resources, self.port, self.cpu_cores, self.memory_gb)
        if self.tags is not None and not isinstance(self.tags, dict):
            raise WebserviceException("Error, tags must be a dict")


class LocalWebserviceDeploymentConfiguration(WebserviceDeploymentConfiguration):
    _webservice_type = "Local"


class AciServiceDeploymentConfiguration(WebserviceDeploymentConfiguration):
    _webservice_type = "ACI"


class AksServiceDeploymentConfiguration(WebserviceDeploymentConfiguration):
    _webservice_type = "AKS"


def _refuse_unsupported(options):
    for option, value in options.items():
        if value:
            raise UserErrorException(
                f"{option} is not supported by amlocal: local services serve plain HTTP on "
                "127.0.0.1 only, with no virtual network, TLS or DNS name")


def _deploy(workspace, name, models, inference_config, deployment_config=None, overwrite=False,
            show_output=False):
    """Model.deploy: start the service (its image built or found first); the Webservice."""
    if inference_config is None:
        raise WebserviceException("Error, amlocal needs an inference_config (the entry script "
                                  "and its environment) to deploy a model")
    deployment_config = deployment_config or AciWebservice.deploy_configuration()
    if not isinstance(deployment_config, WebserviceDeploymentConfiguration):
        raise WebserviceException("Error, provided deployment configuration must be a "
                                  "deploy_configuration() of LocalWebservice, AciWebservice or "
                                  "AksWebservice")
    deployment_config.validate_configuration()
    if not models:
        raise WebserviceException("Error, amlocal deploys one or more registered models "
                                  "(models=[Model(ws, name)])")
    if getattr(workspace, "_azure_config", None):  # a workspace on Azure ML: ACI, for real
        from amlocal.azure_webservice import deploy_on_azure

        return deploy_on_azure(workspace, name, models, inference_config, deployment_config,
                               overwrite)
    services = _services(workspace)
    record = _translated(
        services.deploy, name, [(model.name, model.version) for model in models],
        inference_config.entry_script, inference_config.source_directory,
        kind=deployment_config._webservice_type,
        environment=inference_config._environment_spec(), port=deployment_config.port,
        cpu_cores=deployment_config.cpu_cores, memory_gb=deployment_config.memory_gb,
        auth_enabled=deployment_config.auth_enabled,
        env_vars=getattr(inference_config.environment, "environment_variables", None),
        tags=deployment_config.tags, description=deployment_config.description,
        overwrite=overwrite, on_line=print if show_output else (lambda line: None))
    if deployment_config.primary_key:
        services.regen_key(name, "Primary", deployment_config.primary_key)
    if deployment_config.secondary_key:
        services.regen_key(name, "Secondary", deployment_config.secondary_key)
    return _CLASSES[record["kind"]](workspace, name)


# -- services ------------------------------------------------------------------------------------

class Webservice:
    """A deployed service; `Webservice(ws, name)` gives it as its own kind (AciWebservice, ...)."""

    _webservice_type = None

    def __new__(cls, workspace, name):
        if cls is Webservice:
            cls = _CLASSES[_record_of(_services(workspace), name)["kind"]]
        return super().__new__(cls)

    def __init__(self, workspace, name):
        self.workspace = workspace
        self.name = name
        self._services = _services(workspace)
        self._record = _record_of(self._services, name)
        if self._webservice_type is not None and self._record["kind"] != self._webservice_type:
            raise WebserviceException(f"WebserviceNotFound: {name} is a {self._record['kind']} "
                                      f"service, not {self._webservice_type}")

    def __repr__(self):
        return (f"{type(self).__name__}(workspace={self.workspace!r}, name={self.name}, "
                f"image_id={self.image_id}, compute_type={self.compute_type}, "
                f"state={self.state}, scoring_uri={self.scoring_uri}, tags={self.tags})")

    # What the record says; `state` and `error` are looked up afresh on each read.
    def _refreshed(self):
        self._record = _translated(self._services.status, self.name)
        return self._record

    @property
    def state(self):
        return self._refreshed()["state"]

    @property
    def error(self):
        return self._refreshed()["error"]

    @property
    def compute_type(self):
        return self._record["kind"]

    @property
    def image_id(self):
        return self._record["image"]

    @property
    def tags(self):
        return self._record["tags"]

    @property
    def description(self):
        return self._record["description"]

    @property
    def auth_enabled(self):
        return self._record["auth_enabled"]

    @property
    def port(self):
        return self._record["port"]

    @property
    def models(self):
        models = self._record["settings"]["models"]
        return [f"{model['name']}:{model['version']}" for model in models]

    @property
    def created_time(self):
        return datetime.datetime.fromtimestamp(self._record["created_at"], datetime.timezone.utc)

    @property
    def updated_time(self):
        return datetime.datetime.fromtimestamp(self._record["updated_at"], datetime.timezone.utc)

    @property
    def scoring_uri(self):
        from amlocal.backends.local.service_settings import scoring_uri

        return scoring_uri(self._record)

    @property
    def swagger_uri(self):
        from amlocal.backends.local.service_settings import swagger_uri

        return swagger_uri(self._record)

    def update_deployment_state(self):
        self._refreshed()

    def wait_for_deployment(self, show_output=False, timeout_sec=None):
        """Wait until the service is Healthy; WebserviceException if it ends otherwise."""
        def progress(record):
            if show_output:
                print(record["state"] if record["state"] != "Transitioning" else ".", end="",
                      flush=True)

        record = _translated(self._services.wait, self.name, timeout_sec, on_state=progress)
        self._record = record
        if show_output:
            print()
        if record["state"] != "Healthy":
            raise WebserviceException(
                "Service deployment polling reached non-successful terminal state, current "
                f"service state: {record['state']}\nMore information can be found using "
                f"'.get_logs()'\nError:\n{record['error']}")
        print(f"{self.compute_type} service creation operation finished, operation \"Succeeded\"")

    def run(self, input_data):
        """POST input_data (text; anything else as JSON) to /score; the answer, decoded."""
        if not self.scoring_uri:
            raise WebserviceException(
                "Error attempting to call webservice, scoring_uri unavailable. This could be due "
                f"to a failed deployment, or the service is not ready yet.\nCurrent State: "
                f"{self.state}\nErrors: {self.error}")
        if isinstance(input_data, bytes):
            input_data = input_data.decode("utf-8")
        elif not isinstance(input_data, str):
            input_data = json.dumps(input_data)
        status, body = _translated(self._services.invoke, self.name, input_data)
        if status != 200:
            raise WebserviceException(
                "Received bad response from service. More information can be found by calling "
                f"`.get_logs()` on the webservice object.\nResponse Code: {status}\n"
                f"Content: {body}")
        return json.loads(body)

    def get_logs(self, num_lines=5000, init=False):
        """The scoring container's log (the server's and the entry script's output)."""
        return _translated(self._services.logs, self.name, num_lines)

    def get_keys(self):
        """(primary key, secondary key)."""
        keys = self._refreshed()["keys"]
        return keys.get("primaryKey"), keys.get("secondaryKey")

    def regen_key(self, key, set_key=None):
        """Regenerate the 'Primary' or 'Secondary' key (or set it to `set_key`)."""
        if key not in ("Primary", "Secondary"):
            raise WebserviceException("Error, key must be Primary or Secondary.")
        self._record = _translated(self._services.regen_key, self.name, key, set_key)

    def _update(self, models=None, inference_config=None, cpu_cores=None, memory_gb=None,
                auth_enabled=None, tags=None, description=None):
        source = {}
        if inference_config is not None:
            source = {"entry_script": inference_config.entry_script,
                      "source_dir": inference_config.source_directory,
                      "environment": inference_config._environment_spec()}
        self._record = _translated(
            self._services.update, self.name,
            models=None if models is None else [(model.name, model.version) for model in models],
            cpu_cores=cpu_cores, memory_gb=memory_gb, auth_enabled=auth_enabled, tags=tags,
            description=description, **source)

    def delete(self):
        """Remove the service: its containers, files and record."""
        _translated(self._services.delete, self.name)

    def serialize(self):
        record = self._refreshed()
        return {"name": self.name, "computeType": self.compute_type, "state": record["state"],
                "error": record["error"], "scoringUri": self.scoring_uri,
                "swaggerUri": self.swagger_uri, "port": self.port, "imageId": self.image_id,
                "models": self.models, "authEnabled": self.auth_enabled, "tags": self.tags,
                "description": self.description, "createdTime": self.created_time.isoformat(),
                "updatedTime": self.updated_time.isoformat()}

    @staticmethod
    def list(workspace, compute_type=None, image_name=None, image_id=None, model_name=None,
             model_id=None, tags=None, properties=None):
        """The workspace's services, as their kinds, filtered as azureml-core filters them."""
        services = []
        for record in _translated(_services(workspace).records.list):
            models = record["settings"]["models"]
            if compute_type and record["kind"] != compute_type:
                continue
            if model_name and all(model["name"] != model_name for model in models):
                continue
            if model_id and all(f"{m['name']}:{m['version']}" != model_id for m in models):
                continue
            if tags and not _has_tags(record["tags"], tags):
                continue
            services.append(_CLASSES[record["kind"]](workspace, record["name"]))
        return services


def _record_of(services, name):
    from amlocal.backends.history.services import ServiceNotFoundError

    try:
        return services.records.get(name)
    except ServiceNotFoundError:
        raise WebserviceException(f"WebserviceNotFound: Webservice with name {name} not found "
                                  "in provided workspace") from None


def _has_tags(recorded, wanted):
    """azureml-core's tag filter: [key] or [key, value] items, all of which must match."""
    for item in wanted:
        key, *value = item if isinstance(item, (list, tuple)) else [item]
        if key not in recorded or (value and recorded[key] != value[0]):
            return False
    return True


class LocalWebservice(Webservice):
    """A service for trying a model out: no keys; `reload()` takes a changed entry script."""

    _webservice_type = "Local"

    @staticmethod
    def deploy_configuration(port=None):
        """A local service on 127.0.0.1:port (None: a free port the engine picks)."""
        config = LocalWebserviceDeploymentConfiguration(port=port)
        config.validate_configuration()
        return config

    def get_keys(self):
        raise NotImplementedError("Local web services do not support auth keys.")

    def regen_key(self, key, set_key=None):
        raise NotImplementedError("Local web services do not support auth keys.")

    def reload(self, wait=False):
        """Restart the service on a new copy of its source folder, without rebuilding its image."""
        self._record = _translated(self._services.reload, self.name)
        if wait:
            self.wait_for_deployment()

    def update(self, models=None, image_config=None, deployment_config=None, wait=False,
               inference_config=None):
        if image_config is not None or (deployment_config is not None and deployment_config.port
                                        not in (None, self.port)):
            raise UserErrorException("amlocal's LocalWebservice.update takes models and an "
                                     "inference_config; a new port needs a new deployment")
        self._update(models=models, inference_config=inference_config)
        if wait:
            self.wait_for_deployment()


class AciWebservice(Webservice):
    """A service as Azure Container Instances runs one (here: a local container)."""

    _webservice_type = "ACI"

    @staticmethod
    def deploy_configuration(cpu_cores=None, memory_gb=None, tags=None, properties=None,
                             description=None, location=None, auth_enabled=None, ssl_enabled=None,
                             enable_app_insights=None, ssl_cert_pem_file=None,
                             ssl_key_pem_file=None, ssl_cname=None, dns_name_label=None,
                             primary_key=None, secondary_key=None, collect_model_data=None,
                             cmk_vault_base_url=None, cmk_key_name=None, cmk_key_version=None,
                             vnet_name=None, subnet_name=None):
        """Resources (cores, GiB: limits of the container), keys (auth_enabled), tags."""
        given = locals()
        _refuse_unsupported({option: given[option] for option in _UNSUPPORTED_ACI})
        config = AciServiceDeploymentConfiguration(
            cpu_cores=cpu_cores, memory_gb=memory_gb, auth_enabled=bool(auth_enabled), tags=tags,
            properties=properties, description=description, primary_key=primary_key,
            secondary_key=secondary_key)
        config.validate_configuration()
        return config

    def update(self, image=None, tags=None, properties=None, description=None, auth_enabled=None,
               ssl_enabled=None, ssl_cert_pem_file=None, ssl_key_pem_file=None, ssl_cname=None,
               enable_app_insights=None, models=None, inference_config=None):
        _refuse_unsupported({"image": image, "ssl_enabled": ssl_enabled,
                             "ssl_cert_pem_file": ssl_cert_pem_file,
                             "ssl_key_pem_file": ssl_key_pem_file, "ssl_cname": ssl_cname})
        self._update(models=models, inference_config=inference_config, auth_enabled=auth_enabled,
                     tags=tags, description=description)


class AksWebservice(Webservice):
    """A service as Azure Kubernetes Service runs one (here: one local container, no replicas)."""

    _webservice_type = "AKS"

    @staticmethod
    def deploy_configuration(autoscale_enabled=None, autoscale_min_replicas=None,
                             autoscale_max_replicas=None, autoscale_refresh_seconds=None,
                             autoscale_target_utilization=None, collect_model_data=None,
                             auth_enabled=None, cpu_cores=None, memory_gb=None,
                             enable_app_insights=None, scoring_timeout_ms=None,
                             replica_max_concurrent_requests=None, max_request_wait_time=None,
                             num_replicas=None, primary_key=None, secondary_key=None, tags=None,
                             properties=None, description=None, **scheduling):
        """Resources and keys (auth_enabled defaults to True, as on AKS); the replica, autoscale
        and probe settings are accepted and not emulated (one container serves)."""
        config = AksServiceDeploymentConfiguration(
            cpu_cores=cpu_cores, memory_gb=memory_gb,
            auth_enabled=True if auth_enabled is None else bool(auth_enabled), tags=tags,
            properties=properties, description=description, primary_key=primary_key,
            secondary_key=secondary_key)
        config.validate_configuration()
        return config

    def update(self, auth_enabled=None, cpu_cores=None, memory_gb=None, tags=None,
               properties=None, description=None, models=None, inference_config=None,
               **scheduling):
        self._update(models=models, inference_config=inference_config, cpu_cores=cpu_cores,
                     memory_gb=memory_gb, auth_enabled=auth_enabled, tags=tags,
                     description=description)


_CLASSES = {"Local": LocalWebservice, "ACI": AciWebservice, "AKS": AksWebservice}
