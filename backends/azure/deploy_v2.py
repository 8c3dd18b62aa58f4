"""A web service deployment (what deploy_v1.py sends to ACI) as azure-ai-ml's managed online
endpoint and deployment: `ManagedOnlineEndpoint` + `ManagedOnlineDeployment`, SDK v2's
successor of ACI (which v2 cannot deploy to).

Pure, like deploy_v1.py: real azure-ai-ml entities, no network. The session (session_v2.py,
`deploy_online`) creates the endpoint, then the deployment with all its traffic; a dry run prints
both as azure-ai-ml serializes them.

What maps and what does not, against ACI:

* the model: one registered model per deployment (`azureml:NAME:VERSION`, or `@latest`); ACI
  takes several, v2 refuses more than one (register them as one model folder);
* the entry script and its folder: `CodeConfiguration(code=..., scoring_script=...)`;
* the environment: the recipe's Dockerfile made self-contained as for runs, with Azure ML's
  inference server (azureml-inference-server-http, `azmlinfsrv`) installed and started on port
  5001, its routes named in the environment's inference_config;
* CPU cores and memory: ACI's container limits become the smallest VM size that holds them
  (`instance_type`), one instance;
* authentication: a managed online endpoint always asks for a key (auth_mode "key"), and makes
  its keys itself.
"""

import hashlib
from dataclasses import dataclass, field

from azure.ai.ml.entities import (BuildContext, CodeConfiguration, Environment,
                                  ManagedOnlineDeployment, ManagedOnlineEndpoint)

from amlocal.backends.azure.dockerfiles import environment_dockerfile
from amlocal.backends.azure.errors import TranslationError
from amlocal.backends.azure.translate_v2 import (BUILD_CONTEXT, SDK_NAME, SDK_VERSION,
                                                 serialized, written_build_context)
from amlocal.validation import usable_path

INFERENCE_SERVER = "azureml-inference-server-http"
INFERENCE_PORT = 5001
DEPLOYMENT_NAME = "amlocal"
# Managed online endpoints' general purpose sizes, smallest first: (name, cores, memory GB).
INSTANCE_TYPES = (("Standard_DS2_v2", 2, 7), ("Standard_DS3_v2", 4, 14),
                  ("Standard_DS4_v2", 8, 28), ("Standard_DS5_v2", 16, 56))
DEFAULT_INSTANCE_TYPE = "Standard_DS3_v2"
_ROUTES = {"liveness_route": {"port": INFERENCE_PORT, "path": "/"},
           "readiness_route": {"port": INFERENCE_PORT, "path": "/"},
           "scoring_route": {"port": INFERENCE_PORT, "path": "/score"}}


@dataclass
class OnlineDeployment:
    """The endpoint and its one deployment, and the Dockerfile of the deployment's image."""

    endpoint: ManagedOnlineEndpoint
    deployment: ManagedOnlineDeployment
    dockerfile: str
    notes: list = field(default_factory=list)

    def build_context(self):
        """A context manager: (endpoint, deployment), the deployment's environment built from a
        real folder holding the Dockerfile while the block runs."""
        return written_build_context(self.dockerfile, [self.deployment.environment],
                                     (self.endpoint, self.deployment))

    def describe(self):
        """The dry run, as plain JSON-ready data (the entities as azure-ai-ml serializes them)."""
        environment = self.deployment.environment
        return {"sdk": f"{SDK_NAME} {SDK_VERSION} (Azure ML SDK v2)",
                "service": self.endpoint.name, "compute_type": "managed online endpoint",
                "models": [self.deployment.model],
                "entry_script": self.deployment.code_configuration.scoring_script,
                "source_directory": str(self.deployment.code_configuration.code),
                "environment": {"name": environment.name, "version": environment.version,
                                "dockerfile": self.dockerfile},
                "endpoint": serialized(self.endpoint),
                "deployment": serialized(self.deployment), "notes": list(self.notes)}


def instance_type(cpu_cores=None, memory_gb=None):
    """The smallest VM size holding `cpu_cores` and `memory_gb` (the default size without)."""
    if cpu_cores is None and memory_gb is None:
        return DEFAULT_INSTANCE_TYPE
    for name, cores, memory in INSTANCE_TYPES:
        if (cpu_cores or 0) <= cores and (memory_gb or 0) <= memory:
            return name
    raise TranslationError(f"no managed online endpoint size amlocal knows holds {cpu_cores} "
                           f"cores and {memory_gb} GB (the largest: {INSTANCE_TYPES[-1][0]})")


def service_environment(environment_spec):
    """(Environment, Dockerfile): the run's translation of the recipe, with Azure ML's inference
    server installed and started, versioned by the Dockerfile's content."""
    name, dockerfile = environment_dockerfile(environment_spec, (INFERENCE_SERVER,), "-inference")
    dockerfile += ("# amlocal: Azure ML's inference server calls the entry script's init() and "
                   "run()\n"
                   f'CMD ["azmlinfsrv", "--port", "{INFERENCE_PORT}"]\n')
    version = hashlib.sha256(dockerfile.encode()).hexdigest()[:16]
    return Environment(name=name, version=version, build=BuildContext(path=BUILD_CONTEXT),
                       inference_config=_ROUTES), dockerfile


def translate_online_deployment(name, models, entry_script, source_dir, environment_spec, *,
                                cpu_cores=None, memory_gb=None, auth_enabled=False, tags=None,
                                description=None, primary_key=None, secondary_key=None,
                                environment_variables=None, overwrite=False):
    """The OnlineDeployment of registered `models` ((name, version or None) pairs, one of them)
    as the managed online endpoint `name`; TranslationError for what v2 cannot take. The
    keyword arguments are deploy_v1.translate_deployment's."""
    if len(models) != 1:
        raise TranslationError(
            f"a managed online deployment serves one model, not {len(models)}: register the "
            "models' files as one model, or deploy with --sdk v1 (ACI takes several)")
    if primary_key or secondary_key:
        raise TranslationError("a managed online endpoint makes its own keys: leave the keys "
                               "out (`az ml online-endpoint get-credentials` shows them)")
    source = usable_path(source_dir, "source_directory").resolve()
    if not (source / entry_script).resolve().is_relative_to(source) \
            or not (source / entry_script).is_file():
        raise TranslationError(f"entry_script {str(entry_script)!r} is not a file in {source}")
    model_name, version = models[0]
    environment, dockerfile = service_environment(environment_spec)
    endpoint = ManagedOnlineEndpoint(name=name, auth_mode="key", description=description,
                                     tags=dict(tags) if tags else None)
    deployment = ManagedOnlineDeployment(
        name=DEPLOYMENT_NAME, endpoint_name=name,
        model=f"azureml:{model_name}:{version}" if version is not None else
        f"azureml:{model_name}@latest",
        code_configuration=CodeConfiguration(code=str(source), scoring_script=str(entry_script)),
        environment=environment, instance_type=instance_type(cpu_cores, memory_gb),
        instance_count=1,
        environment_variables=dict(sorted((environment_variables or {}).items())),
        tags=dict(tags) if tags else None)
    notes = [f"the deployment runs on one {deployment.instance_type} instance"
             + (f", the smallest size holding {cpu_cores} cores and {memory_gb} GB"
                if cpu_cores or memory_gb else " (no CPU or memory asked for)")]
    if not auth_enabled:
        notes.append("a managed online endpoint always asks for a key (auth_mode key): ACI "
                     "without --auth is open, this endpoint is not")
    if overwrite:
        notes.append("overwrite: create_or_update replaces an endpoint and deployment of the "
                     "same names")
    notes.append("the model is the workspace's registered model of this name: register it on "
                 "Azure first")
    return OnlineDeployment(endpoint=endpoint, deployment=deployment, dockerfile=dockerfile,
                            notes=notes)
