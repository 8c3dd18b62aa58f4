"""A run spec, translated into the azure-ai-ml (Azure ML SDK v2) entities an expert writes by hand.

Pure, like translate_v1.py beside it: the same validated RunSpec in, real azure-ai-ml entities out
(`command()` with an `Environment` built from a `BuildContext`, `Input`s, `MpiDistribution` or
`PyTorchDistribution`, an `AmlCompute` to create where the workspace lacks it; a sweep as
`command_job.sweep(...)`), never touching the network, a workspace or an account. The backend
(jobs_v2.py) hands what it returns to the one seam that does (session_v2.py); a dry run prints
it as azure-ai-ml serializes it (the YAML `az ml job create --file` reads).

How the parts of a RunSpec arrive, against v1's:

* the environment: the same self-contained Dockerfile (dockerfiles.py) as a build context, a
  folder holding it that is written when submitting; the environment is named amlocal-<recipe>
  and versioned by the Dockerfile's hash, so an unchanged one is built once;
* named inputs: uploaded where v1 uploads them (run_parts.py), then `Input(type="uri_folder")`
  (`uri_file` for a file) read-only mounts of that datastore path; `$AZUREML_DATAREFERENCE_NAME`
  (or `${...}`) in the arguments becomes `${{inputs.NAME}}`, and the command sets
  AZUREML_DATAREFERENCE_NAME as v1's data references do, so a script that reads the variable
  runs unchanged;
* the command line: a shell command (v2 has no argument list): the script and its arguments
  shell-quoted, the `${{inputs.NAME}}` bindings left for Azure to substitute;
* node_count and distribution: `instance_count` and `distribution=MpiDistribution(...)` or
  `PyTorchDistribution(...)` (ranks per node as process_count_per_instance);
* max_run_duration_seconds: `limits.timeout`; tags and the experiment as the job's.
"""

import contextlib
import hashlib
import io
import json
import logging
import re
import shlex
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import yaml

import azure.ai.ml
from azure.ai.ml import Input, MpiDistribution, PyTorchDistribution, command
from azure.ai.ml import sweep as v2_sweep
from azure.ai.ml.entities import AmlCompute, BuildContext, Environment

from amlocal.backends.azure.dockerfiles import environment_dockerfile, gpu_environment
from amlocal.backends.azure.errors import TranslationError
from amlocal.backends.azure.run_parts import (DEFAULT_DATASTORE, check_compute_name,
                                              existing_cluster_note, run_notes,
                                              uploads_of)
from amlocal.backends.base import DATAREFERENCE_PREFIX

SDK_NAME = "azure-ai-ml"
SDK_VERSION = azure.ai.ml.__version__
# Where the environment's build context is, until submitting writes it (Submission.build_context).
BUILD_CONTEXT = "<a folder holding the Dockerfile shown, written when submitting>"
# Azure's read-only mount, what v1's data references in mode "mount" give.
INPUT_MODE = "ro_mount"

# azure-ai-ml logs a warning for each experimental class its own serialization uses (schemas a
# user never names): noise in a dry run, nothing to act on.
logging.getLogger("azure.ai.ml._utils._experimental").setLevel(logging.ERROR)

_DATAREFERENCE = re.compile(r"\$(?:\{" + DATAREFERENCE_PREFIX + r"([A-Za-z0-9_]+)\}|"
                            + DATAREFERENCE_PREFIX + r"([A-Za-z0-9_]+))")
_TIERS = {"dedicated": "dedicated", "lowpriority": "low_priority"}


@dataclass(frozen=True)
class ComputePlan:
    """The AmlCompute cluster a job goes to, and the entity to create it from where the
    workspace lacks it (None: it must exist)."""

    name: str
    provisioning: AmlCompute = None  # (named as v1's ComputePlan names it)
    source: str = ""

    @property
    def vm_size(self):
        return self.provisioning.size if self.provisioning is not None else None

    @property
    def max_nodes(self):
        return self.provisioning.max_instances if self.provisioning is not None else None

    def describe(self):
        if self.provisioning is None:
            return {"name": self.name, "type": "AmlCompute", "create_if_missing": False,
                    "provisioning": None,
                    "note": existing_cluster_note(self.name)}
        return {"name": self.name, "type": "AmlCompute", "create_if_missing": True,
                "provisioning": serialized(self.provisioning), "from": self.source}


@dataclass
class Submission:
    """Everything `MLClient.jobs.create_or_update(job, experiment_name=...)` needs; `sweep`
    (a Sweep over `job`) is what is sent instead where the run is a sweep."""

    experiment: str
    job: object  # azure.ai.ml's Command, from command()
    environment: Environment
    dockerfile: str
    compute: ComputePlan
    uploads: tuple = ()
    tags: dict = field(default_factory=dict)
    notes: tuple = ()
    sweep: object = None  # azure.ai.ml's Sweep

    @property
    def entity(self):
        """What is submitted: the sweep job, or the command job."""
        return self.sweep if self.sweep is not None else self.job

    def build_context(self):
        """A context manager: the entity to submit, its environment's build context a real
        folder (holding the Dockerfile) while the block runs (see written_build_context)."""
        # A sweep's trial holds a copy of the command job's environment.
        environments = [self.environment] + (
            [self.sweep.trial.environment] if self.sweep is not None else [])
        return written_build_context(self.dockerfile, environments, self.entity)

    def describe(self):
        """The dry run: what would be sent, as plain JSON-ready data (the job as azure-ai-ml
        serializes it)."""
        document = {
            "sdk": f"{SDK_NAME} {SDK_VERSION} (Azure ML SDK v2)",
            "experiment": self.experiment,
            "source_directory": str(self.job.code),
            "command": self.job.command,
            "tags": dict(self.tags),
            "job": serialized(self.job),
            "environment": {"name": self.environment.name, "version": self.environment.version,
                            "dockerfile": self.dockerfile},
            "compute": self.compute.describe(),
            "uploads": [upload.describe() for upload in self.uploads],
            "notes": list(self.notes),
        }
        if self.sweep is not None:
            document["sweep_job"] = serialized(self.sweep)
        return document


@contextlib.contextmanager
def written_build_context(dockerfile, environments, entity):
    """Yield `entity` with its `environments`' build context a temporary folder holding
    `dockerfile`; the placeholder (BUILD_CONTEXT) again after the block."""
    with tempfile.TemporaryDirectory(prefix="amlocal-build-context-") as folder:
        (Path(folder) / "Dockerfile").write_text(dockerfile)
        for environment in environments:
            environment.build.path = folder
        try:
            yield entity
        finally:
            for environment in environments:
                environment.build.path = BUILD_CONTEXT


def serialized(entity):
    """An azure-ai-ml entity as the SDK serializes it to YAML (`dump`), read back as data. A
    node from a builder (command(), .sweep()) is written as the job it submits."""
    if getattr(type(entity), "_to_job", None) is not None:
        entity = entity._to_job()
    stream = io.StringIO()
    entity.dump(stream)
    if stream.getvalue():
        return yaml.safe_load(stream.getvalue())
    # An endpoint dumps to files only; its _to_dict() is what dump() would write.
    return json.loads(json.dumps(entity._to_dict()))


def to_yaml(document):
    """Data as YAML, in the order given (how a dry run prints a serialized entity)."""
    return yaml.safe_dump(document, sort_keys=False, allow_unicode=True, width=1 << 16)  # a command stays on one line


# -- the parts ---------------------------------------------------------------------------------

def environment_for(environment_spec, extra_packages=(), suffix=""):
    """(Environment, Dockerfile text): an environment built on Azure from the Dockerfile v1
    sends, versioned by its content."""
    name, dockerfile = environment_dockerfile(environment_spec, extra_packages, suffix)
    version = hashlib.sha256(dockerfile.encode()).hexdigest()[:16]
    return Environment(name=name, version=version, build=BuildContext(path=BUILD_CONTEXT)), dockerfile


def compute_plan(name, local_target=None):
    """The AmlCompute target `name`; `local_target` (the local TargetSpec of that name, if the
    history has one) gives the cluster to create if the workspace lacks it."""
    check_compute_name(name)
    if local_target is None:
        return ComputePlan(name=name)
    cluster = AmlCompute(name=name, size=local_target.vm_size,
                         tier=_TIERS.get(local_target.vm_priority, local_target.vm_priority),
                         min_instances=local_target.min_nodes,
                         max_instances=local_target.max_nodes,
                         idle_time_before_scale_down=local_target.idle_seconds_before_scaledown)
    return ComputePlan(name=name, provisioning=cluster,
                       source=f"local compute target {name!r} (amlocal compute show {name})")


def command_argument(argument):
    """One script argument as a piece of a shell command: its text shell-quoted, each data
    reference `$AZUREML_DATAREFERENCE_x` (or `${...}`) a `${{inputs.x}}` binding."""
    if "${{" in argument:
        raise TranslationError(f"argument {argument!r} holds '${{{{', which an azure-ai-ml "
                               "command reads as a binding of its own: leave it out, or use "
                               "--sdk v1")
    pieces, position = [], 0
    for match in _DATAREFERENCE.finditer(argument):
        if match.start() > position:
            pieces.append(shlex.quote(argument[position:match.start()]))
        pieces.append("${{inputs.%s}}" % (match.group(1) or match.group(2)))
        position = match.end()
    if position < len(argument) or not pieces:
        pieces.append(shlex.quote(argument[position:]))
    return "".join(pieces)


def command_line(spec, uploads, extra_arguments=()):
    """The job's shell command: each input's AZUREML_DATAREFERENCE_ variable, then `python` on
    the script with its arguments (and a sweep's `--NAME ${{inputs.NAME}}` pairs)."""
    variables = [f"{DATAREFERENCE_PREFIX}{upload.name}=${{{{inputs.{upload.name}}}}}"
                 for upload in uploads]
    arguments = [command_argument(argument) for argument in spec.arguments]
    return " ".join([*variables, "python", shlex.quote(spec.script), *arguments,
                     *extra_arguments])


def job_inputs(uploads):
    """The job's inputs: each upload's datastore path, mounted read-only."""
    return {upload.name: Input(type="uri_file" if upload.is_file else "uri_folder",
                               path=upload.datastore_uri, mode=INPUT_MODE)
            for upload in uploads}


def distribution_for(spec):
    """azure-ai-ml's distribution for the spec's (None without one)."""
    distribution = spec.distribution
    if distribution is None:
        return None
    if distribution.kind == "mpi":
        return MpiDistribution(process_count_per_instance=distribution.process_count_per_node)
    return PyTorchDistribution(process_count_per_instance=distribution.process_count_per_node)


def _distribution_notes(spec):
    distribution = spec.distribution
    if distribution is None or distribution.kind != "pytorch":
        return []
    return [f"communication backend {distribution.communication_backend}: azure-ai-ml's "
            "PyTorchDistribution has no such setting (v1's PyTorchConfiguration has); Azure "
            "sets MASTER_ADDR, MASTER_PORT, WORLD_SIZE and RANK, and the script's "
            f"init_process_group chooses the backend ({distribution.communication_backend.lower()})"]


def translate(spec, local_target=None, datastore=DEFAULT_DATASTORE, search_space=None):
    """The Submission for a validated RunSpec (a sweep's template, with `search_space`: the
    hyperparameters as inputs, each passed as `--NAME ${{inputs.NAME}}`).

    `local_target` is the local compute target named like spec.compute, if there is one;
    `datastore` the name of the workspace's default datastore.
    """
    environment, dockerfile = environment_for(gpu_environment(spec, local_target))
    compute = compute_plan(spec.compute, local_target)
    uploads = uploads_of(spec, datastore)
    inputs = job_inputs(uploads)
    extra_arguments = []
    for flag, name, expression in search_space or ():
        inputs[name] = expression
        extra_arguments += [shlex.quote(flag), "${{inputs.%s}}" % name]
    job = command(code=str(spec.source_dir), command=command_line(spec, uploads, extra_arguments),
                  environment=environment, compute=compute.name, inputs=inputs,
                  environment_variables=dict(sorted(spec.environment_variables.items())),
                  instance_count=spec.node_count, distribution=distribution_for(spec),
                  experiment_name=spec.experiment, tags=dict(spec.tags))
    if spec.max_run_duration_seconds is not None:
        job.set_limits(timeout=spec.max_run_duration_seconds)
    notes = run_notes(spec, compute.vm_size, environment.name) + _distribution_notes(spec)
    return Submission(experiment=spec.experiment, job=job, environment=environment,
                      dockerfile=dockerfile, compute=compute, uploads=uploads,
                      tags=dict(spec.tags), notes=tuple(notes))


# -- sweeps ----------------------------------------------------------------------------------

_SAMPLINGS = {"RANDOM": "random", "GRID": "grid", "BayesianOptimization": "bayesian"}
# v1's parameter expressions (amlocal.train.hyperdrive, as HyperDriveConfig._sweep() gives them:
# [name, [arguments]]) as azure-ai-ml's search space classes, argument for argument.
_EXPRESSIONS = {
    "choice": lambda values: v2_sweep.Choice(values=list(values)),
    "randint": lambda upper: v2_sweep.Randint(upper=upper),
    "uniform": lambda low, high: v2_sweep.Uniform(min_value=low, max_value=high),
    "quniform": lambda low, high, q: v2_sweep.QUniform(min_value=low, max_value=high, q=q),
    "loguniform": lambda low, high: v2_sweep.LogUniform(min_value=low, max_value=high),
    "qloguniform": lambda low, high, q: v2_sweep.QLogUniform(min_value=low, max_value=high, q=q),
    "normal": lambda mu, sigma: v2_sweep.Normal(mu=mu, sigma=sigma),
    "qnormal": lambda mu, sigma, q: v2_sweep.QNormal(mu=mu, sigma=sigma, q=q),
    "lognormal": lambda mu, sigma: v2_sweep.LogNormal(mu=mu, sigma=sigma),
    "qlognormal": lambda mu, sigma, q: v2_sweep.QLogNormal(mu=mu, sigma=sigma, q=q),
}
_POLICIES = {"Bandit": v2_sweep.BanditPolicy, "MedianStopping": v2_sweep.MedianStoppingPolicy,
             "TruncationSelection": v2_sweep.TruncationSelectionPolicy}


def search_space(parameter_space):
    """(flag, input name, search space expression) for each hyperparameter of a v1 parameter
    space: v1 passes each as `--NAME VALUE` (or as its key, where that starts with '-'); v2
    binds it to an input, whose name is the key without dashes."""
    space = []
    for key, (function, arguments) in parameter_space.items():
        name = key.lstrip("-").replace("-", "_")
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
            raise TranslationError(f"hyperparameter {key!r} cannot be an azure-ai-ml input name "
                                   "(letters, digits and '_', not starting with a digit)")
        flag = key if key.startswith("-") else f"--{key}"
        space.append((flag, name, _EXPRESSIONS[function](*arguments)))
    return space


def translate_sweep(spec, sweep, local_target=None, datastore=DEFAULT_DATASTORE):
    """The Submission of a sweep (HyperDriveConfig._sweep() of amlocal's) over the spec's
    command job: `command_job.sweep(...)` with the same sampling, early termination policy,
    primary metric and limits."""
    generator = sweep["generator_config"]
    submission = translate(spec, local_target, datastore,
                           search_space=search_space(generator["parameter_space"]))
    properties = generator.get("properties") or {}
    samplings = {"random": v2_sweep.RandomSamplingAlgorithm,
                 "bayesian": v2_sweep.BayesianSamplingAlgorithm,
                 "grid": v2_sweep.GridSamplingAlgorithm}
    kind = _SAMPLINGS[generator["name"]]
    seeded = kind == "random" and properties.get("seed") is not None
    sampling = samplings[kind](seed=properties["seed"]) if seeded else samplings[kind]()
    policy_config = sweep["policy_config"]
    policy = (None if policy_config["name"] == "Default"
              else _POLICIES[policy_config["name"]](**(policy_config.get("properties") or {})))
    metric = sweep["primary_metric_config"]
    sweep_job = submission.job.sweep(
        primary_metric=metric["name"], goal=metric["goal"], sampling_algorithm=sampling,
        compute=submission.compute.name, early_termination_policy=policy)
    sweep_job.set_limits(max_total_trials=sweep["max_total_runs"],
                         max_concurrent_trials=sweep["max_concurrent_runs"],
                         timeout=sweep["max_duration_minutes"] * 60)
    sweep_job.experiment_name = spec.experiment
    sweep_job.tags = dict(spec.tags)
    submission.sweep = sweep_job
    if kind != "random" and properties.get("seed") is not None:
        submission.notes += (f"seed {properties['seed']}: azure-ai-ml takes a seed for random "
                             "sampling only",)
    return submission
