"""`ScriptRunConfig` and `RunConfiguration`: what to run, where, in which environment.

Both become an amlocal RunSpec when an Experiment submits them (`_to_spec`), the one form every
backend takes. DataReferences among the arguments become the run's named inputs.
"""

from amlocal.backends.base import RunSpec
from amlocal.datastore import DataReference, collect_inputs
from amlocal.environment import Environment
from amlocal.errors import UserInputError

MAX_DURATION_SECONDS_DEFAULT = 2592000  # azureml-core's default: 30 days


class DockerConfiguration:
    """use_docker=False runs the script as a local process (amlocal's process executor)."""

    def __init__(self, use_docker=False, shared_volumes=True, arguments=None, shm_size="2g"):
        self.use_docker = use_docker
        self.shared_volumes = shared_volumes
        self.arguments = arguments or []
        self.shm_size = shm_size


class RunConfiguration:
    """The parts of azureml-core's RunConfiguration a local run uses."""

    def __init__(self, script=None, arguments=None, framework=None, communicator=None,
                 conda_dependencies=None, _history_enabled=None, _path=None, _name=None,
                 command=None):
        self.script = script
        self.arguments = list(arguments or [])
        self.target = "local"
        self.node_count = 1
        self.max_run_duration_seconds = None
        self.environment = Environment("amlocal-default")
        if conda_dependencies is not None:
            self.environment.python.conda_dependencies = conda_dependencies
        self.environment_variables = {}
        self.data_references = {}
        self.docker = DockerConfiguration(use_docker=True)


def target_name(compute_target):
    """A compute target given as an object, a name, or None (the local machine)."""
    if compute_target is None:
        return "local"
    if isinstance(compute_target, str):
        return compute_target
    name = getattr(compute_target, "name", None)
    if not name:
        raise UserInputError(f"compute_target must be a ComputeTarget, its name or 'local', got "
                             f"{compute_target!r}")
    return name


class ScriptRunConfig:
    """A script, its arguments, a compute target and an environment."""

    def __init__(self, source_directory, script=None, arguments=None, run_config=None,
                 _telemetry_values=None, compute_target=None, environment=None,
                 distributed_job_config=None, resume_from=None,
                 max_run_duration_seconds=MAX_DURATION_SECONDS_DEFAULT, command=None,
                 docker_runtime_config=None):
        if command is not None:
            raise UserInputError("ScriptRunConfig(command=...) is not supported by amlocal: give "
                                 "script= and arguments=")
        if distributed_job_config is not None:
            raise UserInputError("distributed jobs are not emulated: ask for node_count nodes in "
                                 "the run configuration instead")
        self.source_directory = source_directory
        self.script = script
        self.arguments = list(arguments or [])
        self.run_config = run_config or RunConfiguration()
        if compute_target is not None:
            self.run_config.target = compute_target
        if environment is not None:
            self.run_config.environment = environment
        if max_run_duration_seconds is not None:
            self.run_config.max_run_duration_seconds = max_run_duration_seconds
        if docker_runtime_config is not None:
            self.run_config.docker = docker_runtime_config

    def _to_spec(self, experiment_name, tags=None):
        if not self.script:
            raise UserInputError("ScriptRunConfig needs a script")
        config = self.run_config
        inputs = {}
        arguments = collect_inputs(self.arguments, inputs)
        for name, reference in config.data_references.items():
            if isinstance(reference, DataReference):
                inputs[name] = reference.host_path
        return RunSpec(
            source_dir=self.source_directory, script=self.script, arguments=tuple(arguments),
            experiment=experiment_name, inputs=inputs,
            environment=config.environment._to_spec(),
            executor=None if config.docker.use_docker else "process",
            compute=target_name(config.target), node_count=config.node_count,
            max_run_duration_seconds=config.max_run_duration_seconds, tags=dict(tags or {}),
            environment_variables=dict(config.environment_variables,
                                       **config.environment.environment_variables))
