"""A web service deployment, translated into the azureml-core (Azure ML SDK v1) objects of
`Model.deploy(ws, name, models, inference_config, AciWebservice.deploy_configuration(...))`.

Pure, like translate_v1.py: it builds real azureml-core objects (`InferenceConfig`,
`AciWebservice.deploy_configuration`, the `Environment`) and the request body azureml-core
sends for them (`AciServiceDeploymentConfiguration._build_create_payload`, the SDK's own
serialization), and never touches the network, a workspace or an Azure account. The session
(session.py, `deploy_webservice`) makes the real call; a dry run prints `describe()`.

How the parts of a deployment arrive on Azure:

* the models: by id (`name:version`) among the workspace's registered models (a model that a
  run on Azure registered is there; one registered on this machine only is not);
* the entry script and its folder: azureml-core uploads the whole source folder as a tar.gz
  (every file, .amlignore or not) and a driver program it generates around the entry script,
  as workspace artifacts; the payload names them by the `aml://artifact/...` URLs the uploads
  return, so a dry run shows where they go, not their URLs;
* the environment: the recipe's Dockerfile made self-contained as for runs
  (translate_v1.azure_dockerfile), with Azure ML's inference server (azureml-defaults) among
  its pip packages, since the image is the environment (user-managed dependencies).
"""

import os
from dataclasses import dataclass, field
from pathlib import Path

from azureml.core import Environment
# After azureml.core, which it needs imported first (a circular import otherwise).
from azureml._model_management._util import (environment_image_payload_template,  # noqa: I100
                                             webservice_name_validation)
from azureml.core.model import InferenceConfig
from azureml.core.webservice import AciWebservice
from azureml.exceptions import WebserviceException

from amlocal.backends.azure.translate_v1 import (ENVIRONMENT_PREFIX, SDK_NAME, SDK_VERSION,
                                                 TranslationError, azure_dockerfile,
                                                 recipe_dockerfile_text)
from amlocal.errors import UserInputError
from amlocal.validation import usable_path

# What a deployment's image needs on Azure: the inference server that calls init() and run().
INFERENCE_REQUIREMENT = "azureml-defaults~=1.61.0"
# The payload's placeholders for what only the uploads (at deploy time) name.
DRIVER_PROGRAM = "<driver program azureml-core generates around the entry script>"
SOURCE_ARCHIVE = "<source folder as a tar.gz, named when uploaded>"
UPLOADED_URL = "aml://artifact/<assigned when uploaded>"
LATEST_VERSION = "<latest version in the workspace>"


@dataclass(frozen=True)
class ModelReference:
    """A model registered in the Azure ML workspace; version None: its latest version."""

    name: str
    version: int = None

    @property
    def id(self):
        """The id as azureml-core's Model.id gives it, the latest version written as such."""
        return f"{self.name}:{self.version if self.version is not None else LATEST_VERSION}"


@dataclass
class Deployment:
    """Everything `Model.deploy(ws, name, models, inference_config, deployment_config,
    overwrite)` needs, with the models as references the session resolves in the workspace."""

    name: str
    models: tuple
    inference_config: InferenceConfig
    deployment_config: object  # AciServiceDeploymentConfiguration
    dockerfile: str
    overwrite: bool = False
    notes: list = field(default_factory=list)

    @property
    def source_directory(self):
        return Path(self.inference_config.source_directory)

    def environment_image_request(self, model_ids=None):
        """The `environmentImageRequest` as InferenceConfig._build_environment_image_request
        builds it, with the artifacts it would upload written as placeholders."""
        payload = dict(environment_image_payload_template, assets=[], modelIds=list(
            model_ids if model_ids is not None else (model.id for model in self.models)))
        # What InferenceConfig._handle_assets tells the inference server, besides uploading.
        source_name, script = self.inference_config._get_entry_script_path()
        environment = self.inference_config.environment
        _set_variables(environment, {
            **(environment.environment_variables or {}),
            "AZUREML_SOURCE_DIRECTORY": source_name,
            "AZUREML_ENTRY_SCRIPT": os.path.join(source_name, script).replace(os.sep, "/")})
        payload["driverProgram"] = DRIVER_PROGRAM
        payload["assets"] = [
            {"id": DRIVER_PROGRAM, "url": UPLOADED_URL, "mimeType": "application/x-python"},
            {"id": SOURCE_ARCHIVE, "url": UPLOADED_URL, "mimeType": "application/octet-stream",
             "unpack": True}]
        payload["environment"] = Environment._serialize_to_dict(environment)
        return payload

    def payload(self):
        """The body of azureml-core's POST to the workspace's services (ACI), as it builds it."""
        return self.deployment_config._build_create_payload(
            self.name, self.environment_image_request(), overwrite=self.overwrite)

    def uploads(self):
        """What azureml-core uploads before the request: the source folder and the driver."""
        files, size = _folder_content(self.source_directory)
        return [{"what": "source folder", "from": str(self.source_directory),
                 "as": SOURCE_ARCHIVE, "files": files, "bytes": size},
                {"what": "driver program", "as": DRIVER_PROGRAM,
                 "from": f"entry script {self.inference_config.entry_script}"}]

    def describe(self):
        """The dry run: what would be uploaded and sent, as plain JSON-ready data."""
        payload = self.payload()
        return {
            "sdk": f"{SDK_NAME} {SDK_VERSION} (Azure ML SDK v1)",
            "service": self.name,
            "compute_type": payload["computeType"],
            "models": [model.id for model in self.models],
            "entry_script": self.inference_config.entry_script,
            "source_directory": str(self.source_directory),
            "environment": {"name": self.inference_config.environment.name,
                            "dockerfile": self.dockerfile},
            "uploads": self.uploads(),
            "payload": payload,
            "notes": list(self.notes),
        }


def _set_variables(environment, variables):
    """Set an Environment's variables. Its setter logs a deprecation meant for runs (whose
    variables belong in RunConfiguration); a deployment's container has no other place."""
    environment._environment_variables = variables


def _folder_content(folder):
    """(files, bytes) of everything under `folder` as a tar of it holds it: links are taken as
    links, never followed (the folder is the user's, its links may point anywhere)."""
    files = size = 0
    for parent, _, names in os.walk(folder):
        for name in names:
            files += 1
            path = Path(parent, name)
            size += path.lstat().st_size if not path.is_symlink() else 0
    return files, size


def model_references(models):
    """ModelReferences of (name, version or None) pairs, each model once."""
    references = []
    for name, version in models:
        reference = ModelReference(name, version)
        if reference in references:
            raise UserInputError(f"model {reference.id} is given twice")
        references.append(reference)
    if not references:
        raise UserInputError("a deployment needs one or more registered models")
    return tuple(references)


def deployment_environment(environment_spec):
    """(Environment, Dockerfile) of a service's image: the run's translation of the recipe (or
    the spec's own Dockerfile), with the inference server among its pip packages."""
    own = environment_spec.dockerfile is not None
    dockerfile = azure_dockerfile(
        environment_spec.dockerfile if own else recipe_dockerfile_text(environment_spec.recipe),
        (*environment_spec.pip_packages, INFERENCE_REQUIREMENT), environment_spec.base_image)
    environment = Environment.from_dockerfile(
        f"{ENVIRONMENT_PREFIX}{'custom' if own else environment_spec.recipe}-inference", dockerfile)
    environment.python.user_managed_dependencies = True
    _set_variables(environment, {})
    return environment, dockerfile


def _inference_config(entry_script, source_dir, environment):
    """azureml-core's InferenceConfig, which checks the entry script (a .py file with a usable
    name); before it, that the script is a file inside the folder, the one thing uploaded."""
    source = usable_path(source_dir, "source_directory").resolve()
    script = usable_path(entry_script, "entry_script")
    if not source.is_dir():
        raise TranslationError(f"source_directory {str(source_dir)!r} is not a folder")
    if not (source / script).resolve().is_relative_to(source):
        raise TranslationError(f"entry_script {str(entry_script)!r} is not inside the source "
                               f"folder {source}")
    if not (source / script).is_file():
        raise TranslationError(f"entry_script {str(entry_script)!r} is not a file in {source}")
    try:
        return InferenceConfig(entry_script=str(script), source_directory=str(source),
                               environment=environment)
    except WebserviceException as error:
        raise TranslationError(" ".join(error.message.split())) from None


def translate_deployment(name, models, entry_script, source_dir, environment_spec, *,
                         cpu_cores=None, memory_gb=None, auth_enabled=False, tags=None,
                         description=None, primary_key=None, secondary_key=None,
                         environment_variables=None, overwrite=False):
    """The Deployment of registered `models` ((name, version or None) pairs) as the ACI
    service `name`; UserInputError (TranslationError) for what Azure would refuse."""
    try:
        webservice_name_validation(name)
    except WebserviceException as error:
        raise TranslationError(f"service name {name!r}: {error.message}") from None
    references = model_references(models)
    environment, dockerfile = deployment_environment(environment_spec)
    if environment_variables:
        _set_variables(environment, dict(sorted(environment_variables.items())))
    inference_config = _inference_config(entry_script, source_dir, environment)
    try:
        deployment_config = AciWebservice.deploy_configuration(
            cpu_cores=cpu_cores, memory_gb=memory_gb, auth_enabled=auth_enabled,
            tags=dict(tags) if tags else None, description=description,
            primary_key=primary_key, secondary_key=secondary_key)
        deployment_config.validate_configuration()
    except WebserviceException as error:
        raise TranslationError(f"ACI deployment configuration: {error.message}") from None
    notes = []
    if cpu_cores is None or memory_gb is None:
        notes.append("CPU cores or memory not given: Azure applies its ACI defaults (0.1 cores, "
                     "0.5 GB) to what the request leaves null")
    if any(reference.version is None for reference in references):
        notes.append("a model given without :VERSION is deployed at its latest version in the "
                     "workspace, looked up when deploying")
    notes.append("the models are the workspace's registered models of these ids: register them "
                 "on Azure first (a run on Azure's run.register_model does)")
    return Deployment(name=name, models=references, inference_config=inference_config,
                      deployment_config=deployment_config, dockerfile=dockerfile,
                      overwrite=overwrite, notes=notes)
