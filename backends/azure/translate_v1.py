"""A run spec, translated into the azureml-core (Azure ML SDK v1) objects an expert writes by hand.

Pure: it builds real azureml-core objects (`Environment.from_dockerfile`, `RunConfiguration`,
`DataReferenceConfiguration`, `ScriptRunConfig`, `AmlCompute.provisioning_configuration`) and
never touches the network, a workspace or an Azure account. What it returns is what
backends/azure/backend.py hands to the one seam that does (session.py), and what a dry run prints.

This is the only module that knows SDK v1's shapes; a translation to azure-ai-ml (SDK v2) would
sit beside it as translate_v2.py, taking the same RunSpec.

How the parts of a RunSpec arrive on Azure:

* the environment: the Dockerfile the local backend builds from docker/<recipe>/ (or the user's),
  made self-contained, because Azure builds it from its text alone: the `COPY amlocal-pip/` line
  (the host's pip settings, which may carry credentials) becomes an empty pip configuration, the
  `COPY requirements.txt` line writes the run's pip packages in place, an explicit base image
  becomes the `BASE_IMAGE` default, and azureml-core is installed last so that
  `Run.get_context()` reaches run history on Azure;
* named inputs: each local path is uploaded to the workspace's default datastore under
  amlocal-inputs/<name>/<hash of its content> (so an unchanged input is uploaded once) and
  mounted as a data reference named <name>, so `$AZUREML_DATAREFERENCE_<name>` means the same on
  Azure as locally;
* the compute target: an AmlCompute cluster of the run's compute name; where the local history
  has a target of that name, its VM size, node counts, idle time and priority are the
  provisioning configuration used if the cluster has to be created.
"""

import re
from dataclasses import dataclass, field

import azureml.core
from azureml.core import Environment, ScriptRunConfig
from azureml.core._serialization_utils import _serialize_to_dict
from azureml.core.compute import AmlCompute
from azureml.core.runconfig import (DataReferenceConfiguration, DockerConfiguration,
                                    MpiConfiguration, PyTorchConfiguration)
from azureml.core.script_run_config import get_run_config_from_script_run

# The SDK-free parts both translations share, named here too for the callers of v1's.
from amlocal.backends.azure.dockerfiles import (ENVIRONMENT_PREFIX,  # noqa: F401
                                                RUN_HISTORY_REQUIREMENT, azure_dockerfile,
                                                environment_dockerfile, gpu_environment,
                                                recipe_dockerfile_text)
from amlocal.backends.azure.errors import TranslationError  # noqa: F401 (deploy_v1 and callers)
from amlocal.backends.azure.run_parts import (DEFAULT_DATASTORE, INPUTS_PREFIX,  # noqa: F401
                                              InputUpload, check_compute_name, content_hash,
                                              existing_cluster_note, input_upload, run_notes,
                                              uploads_of)
from amlocal.backends.base import DATAREFERENCE_PREFIX

SDK_NAME = "azureml-core"
SDK_VERSION = azureml.core.VERSION

_BRACED_REFERENCE = re.compile(r"\$\{" + DATAREFERENCE_PREFIX + r"([A-Za-z0-9_]+)\}(?![A-Za-z0-9_])")


@dataclass(frozen=True)
class ComputePlan:
    """The AmlCompute target a run goes to, and how to create it if the workspace lacks it."""

    name: str
    provisioning: object = None  # AmlComputeProvisioningConfiguration, or None: must exist
    source: str = ""  # where the provisioning settings came from

    @property
    def vm_size(self):
        return self.provisioning.vm_size if self.provisioning is not None else None

    @property
    def max_nodes(self):
        return (self.provisioning.scale_settings.maximum_node_count
                if self.provisioning is not None else None)

    def describe(self, subscription_id=None):
        if self.provisioning is None:
            return {"name": self.name, "type": "AmlCompute", "create_if_missing": False,
                    "provisioning": None,
                    "note": existing_cluster_note(self.name)}
        payload = AmlCompute._build_create_payload(self.provisioning, None, subscription_id)
        return {"name": self.name, "type": "AmlCompute", "create_if_missing": True,
                "provisioning": payload["properties"]["properties"], "from": self.source}


@dataclass
class Submission:
    """Everything `Experiment(workspace, experiment).submit(config, tags=tags)` needs."""

    experiment: str
    config: ScriptRunConfig
    environment: Environment
    dockerfile: str
    compute: ComputePlan
    uploads: tuple = ()
    tags: dict = field(default_factory=dict)
    notes: tuple = ()

    def run_configuration(self):
        """The run configuration as azureml-core serializes it into the run definition."""
        return _serialize_to_dict(get_run_config_from_script_run(self.config))

    def describe(self, subscription_id=None):
        """The dry run: exactly what would be submitted, as plain JSON-ready data."""
        return {
            "sdk": f"{SDK_NAME} {SDK_VERSION} (Azure ML SDK v1)",
            "experiment": self.experiment,
            "source_directory": str(self.config.source_directory),
            "script": self.config.script,
            "arguments": list(self.config.arguments),
            "tags": dict(self.tags),
            "run_configuration": self.run_configuration(),
            "environment": {"name": self.environment.name, "dockerfile": self.dockerfile},
            "compute": self.compute.describe(subscription_id),
            "uploads": [upload.describe() for upload in self.uploads],
            "notes": list(self.notes),
        }


# -- the parts ---------------------------------------------------------------------------------

def environment_for(environment_spec):
    """(Environment, Dockerfile text) for an EnvironmentSpec: from docker/<recipe>/Dockerfile,
    or the spec's own Dockerfile."""
    name, dockerfile = environment_dockerfile(environment_spec)
    environment = Environment.from_dockerfile(name, dockerfile)
    # The image is the environment: Azure runs `python` from it, adding no conda layer.
    environment.python.user_managed_dependencies = True
    return environment, dockerfile


def compute_plan(name, local_target=None):
    """The AmlCompute target `name`; `local_target` (a local TargetSpec of that name, if the
    history has one) gives the settings to create it with."""
    check_compute_name(name)
    if local_target is None:
        return ComputePlan(name=name)
    provisioning = AmlCompute.provisioning_configuration(
        vm_size=local_target.vm_size, vm_priority=local_target.vm_priority,
        min_nodes=local_target.min_nodes, max_nodes=local_target.max_nodes,
        idle_seconds_before_scaledown=local_target.idle_seconds_before_scaledown)
    return ComputePlan(name=name, provisioning=provisioning,
                       source=f"local compute target {name!r} (amlocal compute show {name})")


def azure_arguments(arguments):
    """Script arguments with `${AZUREML_DATAREFERENCE_x}` written as `$AZUREML_DATAREFERENCE_x`,
    the form azureml-core's DataReference gives (str(reference)) and Azure substitutes."""
    return [_BRACED_REFERENCE.sub(lambda match: f"${DATAREFERENCE_PREFIX}{match.group(1)}", arg)
            for arg in arguments]


def translate(spec, local_target=None, datastore=DEFAULT_DATASTORE):
    """The Submission for a validated RunSpec.

    `local_target` is the local compute target named like spec.compute, if there is one;
    `datastore` the name of the workspace's default datastore.
    """
    environment, dockerfile = environment_for(gpu_environment(spec, local_target))
    compute = compute_plan(spec.compute, local_target)
    uploads = uploads_of(spec, datastore)

    # As an expert writes it: ScriptRunConfig with the target, environment and limits, then the
    # run configuration's node count, variables and data references.
    config = ScriptRunConfig(source_directory=str(spec.source_dir), script=spec.script,
                             arguments=azure_arguments(spec.arguments), compute_target=compute.name,
                             environment=environment,
                             max_run_duration_seconds=spec.max_run_duration_seconds,
                             docker_runtime_config=DockerConfiguration(use_docker=True),
                             distributed_job_config=distributed_job_config(spec))
    config.run_config.node_count = spec.node_count
    config.run_config.environment_variables = dict(sorted(spec.environment_variables.items()))
    config.run_config.data_references = {
        upload.name: DataReferenceConfiguration(datastore_name=upload.datastore, mode="mount",
                                                path_on_datastore=upload.path_on_datastore)
        for upload in uploads}
    notes = run_notes(spec, compute.vm_size, environment.name)
    return Submission(experiment=spec.experiment, config=config, environment=environment,
                      dockerfile=dockerfile, compute=compute, uploads=uploads,
                      tags=dict(spec.tags), notes=tuple(notes))


def distributed_job_config(spec):
    """The distributed_job_config an expert gives ScriptRunConfig for the spec's distribution
    (None without one): MpiConfiguration or PyTorchConfiguration, over spec.node_count nodes."""
    distribution = spec.distribution
    if distribution is None:
        return None
    if distribution.kind == "mpi":
        return MpiConfiguration(process_count_per_node=distribution.process_count_per_node,
                                node_count=spec.node_count)
    return PyTorchConfiguration(communication_backend=distribution.communication_backend,
                                process_count=spec.node_count * distribution.process_count_per_node,
                                node_count=spec.node_count)


# -- sweeps (HyperDrive) ----------------------------------------------------------------------

def hyperdrive_config(submission, sweep):
    """azureml-train-core's HyperDriveConfig for a sweep (HyperDriveConfig._sweep() of amlocal's)
    over the translated ScriptRunConfig: the same search space, policy, primary metric and limits.
    """
    from azureml.train import hyperdrive

    samplings = {"RANDOM": hyperdrive.RandomParameterSampling,
                 "GRID": hyperdrive.GridParameterSampling,
                 "BayesianOptimization": hyperdrive.BayesianParameterSampling}
    generator = sweep["generator_config"]
    sampling = samplings[generator["name"]](generator["parameter_space"],
                                            properties=generator.get("properties"))
    policy_config = sweep["policy_config"]
    properties = policy_config.get("properties") or {}
    policies = {"Bandit": lambda: hyperdrive.BanditPolicy(**properties),
                "MedianStopping": lambda: hyperdrive.MedianStoppingPolicy(**properties),
                "TruncationSelection": lambda: hyperdrive.TruncationSelectionPolicy(**properties),
                "Default": hyperdrive.NoTerminationPolicy}
    metric = sweep["primary_metric_config"]
    return hyperdrive.HyperDriveConfig(
        run_config=submission.config, hyperparameter_sampling=sampling,
        policy=policies[policy_config["name"]](), primary_metric_name=metric["name"],
        primary_metric_goal=hyperdrive.PrimaryMetricGoal.from_str(metric["goal"]),
        max_total_runs=sweep["max_total_runs"], max_concurrent_runs=sweep["max_concurrent_runs"],
        max_duration_minutes=sweep["max_duration_minutes"])


def describe_hyperdrive(config):
    """The HyperDrive configuration as azureml-train-core sends it (its JSON parts)."""
    return {
        "generator_config": config._generator_config,
        "policy_config": config._policy_config,
        "primary_metric_config": config._primary_metric_config,
        "max_total_runs": config._max_total_runs,
        "max_concurrent_runs": config._max_concurrent_runs,
        "max_duration_minutes": config._max_duration_minutes,
        "platform": config._platform,
    }
