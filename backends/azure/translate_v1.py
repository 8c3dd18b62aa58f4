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

import hashlib
import re
import shlex
from dataclasses import dataclass, field, replace
from pathlib import Path

import azureml.core
from azureml.core import Environment, ScriptRunConfig
from azureml.core._serialization_utils import _serialize_to_dict
from azureml.core.compute import AmlCompute
from azureml.core.runconfig import (DataReferenceConfiguration, DockerConfiguration,
                                    MpiConfiguration, PyTorchConfiguration)
from azureml.core.script_run_config import get_run_config_from_script_run

from amlocal.backends.base import DATAREFERENCE_PREFIX
from amlocal.backends.recipes import gpu_build, recipe_dir
from amlocal.errors import UserInputError

SDK_NAME = "azureml-core"
SDK_VERSION = azureml.core.VERSION
DEFAULT_DATASTORE = "workspaceblobstore"  # Azure ML's default datastore, unless a user changed it
INPUTS_PREFIX = "amlocal-inputs"
ENVIRONMENT_PREFIX = "amlocal-"
# What the image needs for Run.get_context() to reach run history on Azure (SDK v1's last line).
RUN_HISTORY_REQUIREMENT = "azureml-core~=1.61.0"
# Images that exist only on the machine that made them (`amlocal base-image build`).
_LOCAL_ONLY_IMAGE_PREFIX = "amlocal/"

_COPY_PIP_SETTINGS = re.compile(r"^COPY\s+amlocal-pip/?\s+(\S+?)/?\s*$", re.MULTILINE)
_COPY_REQUIREMENTS = re.compile(r"^COPY\s+requirements\.txt\s+(\S+)\s*$", re.MULTILINE)
_BASE_IMAGE_ARG = re.compile(r"^ARG\s+BASE_IMAGE(=\S*)?\s*$", re.MULTILINE)
_BRACED_REFERENCE = re.compile(r"\$\{" + DATAREFERENCE_PREFIX + r"([A-Za-z0-9_]+)\}(?![A-Za-z0-9_])")


class TranslationError(UserInputError):
    """The run spec asks for something that cannot be sent to Azure as it is."""


@dataclass(frozen=True)
class InputUpload:
    """One named input: a local path, and where in the datastore it goes."""

    name: str
    source: Path
    datastore: str
    target_path: str  # the folder in the datastore the upload writes into
    is_file: bool

    @property
    def path_on_datastore(self):
        """What the data reference points at: the folder, or the file inside it."""
        return f"{self.target_path}/{self.source.name}" if self.is_file else self.target_path

    def describe(self):
        return {"input": self.name, "from": str(self.source), "datastore": self.datastore,
                "target_path": self.target_path, "path_on_datastore": self.path_on_datastore,
                "mode": "mount"}


@dataclass(frozen=True)
class ComputePlan:
    """The AmlCompute target a run goes to, and how to create it if the workspace lacks it."""

    name: str
    provisioning: object = None  # AmlComputeProvisioningConfiguration, or None: must exist
    source: str = ""  # where the provisioning settings came from

    @property
    def vm_size(self):
        return self.provisioning.vm_size if self.provisioning is not None else None

    def describe(self, subscription_id=None):
        if self.provisioning is None:
            return {"name": self.name, "type": "AmlCompute", "create_if_missing": False,
                    "provisioning": None,
                    "note": f"an existing compute target {self.name!r} in the workspace is used; "
                            "there is no local compute target of that name to create it from "
                            f"(`amlocal compute create {self.name} --vm-size ...` defines one)"}
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

def content_hash(path):
    """A short digest of a file's or folder's content (names and bytes), for upload paths."""
    path = Path(path)
    digest = hashlib.sha256()
    files = [path] if path.is_file() else sorted(
        (candidate for candidate in path.rglob("*") if candidate.is_file()),
        key=lambda candidate: candidate.relative_to(path).as_posix())
    for file in files:
        name = file.name if file == path else file.relative_to(path).as_posix()
        file_digest = hashlib.sha256()
        with open(file, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                file_digest.update(block)
        digest.update(b"file\0" + name.encode() + b"\0" + file_digest.digest())
    return digest.hexdigest()[:16]


def input_upload(name, source, datastore=DEFAULT_DATASTORE):
    source = Path(source)
    return InputUpload(name=name, source=source, datastore=datastore,
                       target_path=f"{INPUTS_PREFIX}/{name}/{content_hash(source)}",
                       is_file=source.is_file())


def azure_dockerfile(dockerfile, pip_packages=(), base_image=None):
    """The Dockerfile Azure builds: `dockerfile` (the local recipe's or the user's text) made
    self-contained, with azureml-core added for run history. See the module docstring."""
    if base_image:
        if base_image.startswith(_LOCAL_ONLY_IMAGE_PREFIX):
            raise TranslationError(
                f"base image {base_image} exists only on this machine (amlocal made it): Azure "
                "cannot pull it; leave --base-image out to use the recipe's public base, or push "
                "the image to a registry Azure can reach and name it there")
        if not _BASE_IMAGE_ARG.search(dockerfile):
            raise TranslationError(f"the Dockerfile has no `ARG BASE_IMAGE` line, so base image "
                                   f"{base_image} cannot be applied to it")
        dockerfile = _BASE_IMAGE_ARG.sub(f"ARG BASE_IMAGE={base_image}", dockerfile)
    dockerfile = _COPY_PIP_SETTINGS.sub(
        lambda match: (f"# amlocal: the host's pip settings stay on the host; Azure's build uses "
                       f"its own\nRUN mkdir -p {match.group(1)} && : > {match.group(1)}/pip.conf"),
        dockerfile)
    requirements = " ".join(shlex.quote(package) for package in pip_packages)
    dockerfile = _COPY_REQUIREMENTS.sub(
        lambda match: ("# amlocal: the run's pip packages (requirements.txt of the local build)\n"
                       + (f"RUN printf '%s\\n' {requirements} > {match.group(1)}" if requirements
                          else f"RUN : > {match.group(1)}")),
        dockerfile)
    return (dockerfile.rstrip("\n") + "\n\n"
            "# amlocal: Run.get_context() reaches Azure ML run history through azureml-core\n"
            f"RUN python -m pip install --no-cache-dir {shlex.quote(RUN_HISTORY_REQUIREMENT)}\n")


def environment_for(environment_spec):
    """(Environment, Dockerfile text) for an EnvironmentSpec: from docker/<recipe>/Dockerfile,
    or the spec's own Dockerfile."""
    own = environment_spec.dockerfile is not None
    dockerfile = azure_dockerfile(
        environment_spec.dockerfile if own else recipe_dockerfile_text(environment_spec.recipe),
        environment_spec.pip_packages, environment_spec.base_image)
    name = ENVIRONMENT_PREFIX + ("custom" if own else environment_spec.recipe)
    environment = Environment.from_dockerfile(name, dockerfile)
    # The image is the environment: Azure runs `python` from it, adding no conda layer.
    environment.python.user_managed_dependencies = True
    return environment, dockerfile


def compute_plan(name, local_target=None):
    """The AmlCompute target `name`; `local_target` (a local TargetSpec of that name, if the
    history has one) gives the settings to create it with."""
    if name == "local":
        raise TranslationError(
            "the Azure backend runs on an AmlCompute cluster, not on 'local': give "
            "--compute NAME (compute_target=NAME), a cluster in the workspace or one defined "
            "with `amlocal compute create NAME --vm-size ...`")
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


def gpu_environment(spec, local_target=None):
    """The run's EnvironmentSpec, with the recipe's GPU build where the run asks for GPUs (as the
    local backend chooses it for nodes with real GPUs: Azure's GPU sizes have real ones)."""
    environment = spec.environment
    gpu_recipe = gpu_build(environment.recipe)
    if (spec.use_gpu and environment.dockerfile is None and gpu_recipe
            and (local_target is None or local_target.size.gpus > 0)):
        return replace(environment, recipe=gpu_recipe)
    return environment


def translate(spec, local_target=None, datastore=DEFAULT_DATASTORE):
    """The Submission for a validated RunSpec.

    `local_target` is the local compute target named like spec.compute, if there is one;
    `datastore` the name of the workspace's default datastore.
    """
    notes = []
    environment, dockerfile = environment_for(gpu_environment(spec, local_target))
    compute = compute_plan(spec.compute, local_target)
    uploads = tuple(input_upload(name, spec.inputs[name], datastore) for name in sorted(spec.inputs))

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
    if spec.executor == "process":
        notes.append("executor 'process' is local-only: on AmlCompute the script runs in the "
                     "environment's Docker image")
    if spec.use_gpu:
        notes.append("use_gpu: the GPUs come from the compute target's VM size "
                     f"({compute.vm_size or 'that of the existing cluster'}); the environment "
                     f"is {environment.name}")
    if spec.node_count > 1 and spec.distribution is None:
        notes.append(f"node_count {spec.node_count}: AmlCompute allocates that many nodes; with no "
                     "distribution (--distribution mpi or pytorch) amlocal translates no "
                     "distributed job configuration")
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


def recipe_dockerfile_text(recipe):
    """The text of docker/<recipe>/Dockerfile, as the local backend builds from it."""
    return (recipe_dir(recipe) / "Dockerfile").read_text()



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
