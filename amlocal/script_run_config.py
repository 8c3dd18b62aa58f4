"""`ScriptRunConfig` and `RunConfiguration`: what to run, where, in which environment.

Both become an amlocal RunSpec when an Experiment submits them (`_to_spec`), the one form every
backend takes. DataReferences among the arguments become the run's named inputs. A
distributed_job_config (MpiConfiguration, PyTorchConfiguration) sets the run configuration's
framework, communicator, node_count and mpi or pytorch section as azureml-core's does, and the
spec's distribution is read from those (backends/distribution.py).
"""

from amlocal.backends.base import RunSpec, distribution_of
from amlocal.datastore import DataReference, collect_inputs
from amlocal.environment import Environment
from amlocal.errors import UserInputError
from amlocal.model_errors import UserErrorException

MAX_DURATION_SECONDS_DEFAULT = 2592000  # azureml-core's default: 30 days
SUPPORTED_PYTORCH_BACKENDS = ("nccl", "gloo")


class RunConfigurationException(UserErrorException):
    """azureml.exceptions.RunConfigurationException: a run configuration azureml-core refuses."""


class MpiConfiguration:
    """An MPI job: process_count_per_node ranks on each of node_count nodes (mpirun starts them)."""

    def __init__(self, process_count_per_node=1, node_count=1):
        self.process_count_per_node = process_count_per_node
        self.node_count = node_count


class PyTorchConfiguration:
    """A PyTorch job: process_count processes in all (default: one per node) over node_count
    nodes, meeting through torch.distributed's communication_backend, "Nccl" or "Gloo"."""

    def __init__(self, communication_backend="Nccl", process_count=None, node_count=1):
        if str(communication_backend).lower() not in SUPPORTED_PYTORCH_BACKENDS:
            raise RunConfigurationException(
                f"{communication_backend} is not a supported backend. 'communication_backend' "
                "must be 'Nccl' or 'Gloo'.")
        self.communication_backend = str(communication_backend).lower()
        self.process_count = process_count
        self.node_count = node_count


class TensorflowConfiguration:
    """TensorFlow's parameter-server job, named so that code importing it loads; amlocal does
    not emulate parameter servers, so ScriptRunConfig refuses it as a distributed_job_config."""

    def __init__(self, worker_count=1, parameter_server_count=1):
        self.worker_count = worker_count
        self.parameter_server_count = parameter_server_count


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
        self.framework = framework or "Python"
        self.communicator = communicator or "None"
        self.mpi = MpiConfiguration()
        self.pytorch = PyTorchConfiguration()
        self.tensorflow = TensorflowConfiguration()
        self.target = "local"
        self.node_count = 1
        self.max_run_duration_seconds = None
        self.environment = Environment("amlocal-default")
        if conda_dependencies is not None:
            self.environment.python.conda_dependencies = conda_dependencies
        self.environment_variables = {}
        self.data_references = {}
        self.docker = DockerConfiguration(use_docker=True)

    def _distributed_fields(self):
        """framework, communicator, nodeCount and the mpi and pytorch sections, as azureml-core
        serializes them."""
        return {"framework": self.framework, "communicator": self.communicator,
                "nodeCount": self.node_count,
                "mpi": {"processCountPerNode": self.mpi.process_count_per_node,
                        "nodeCount": self.mpi.node_count},
                "pytorch": {"communicationBackend": self.pytorch.communication_backend,
                            "processCount": self.pytorch.process_count,
                            "nodeCount": self.pytorch.node_count}}

    def _set_distribution(self, distributed_job_config):
        """What ScriptRunConfig(distributed_job_config=...) sets, as azureml-core sets it."""
        if isinstance(distributed_job_config, TensorflowConfiguration):
            raise RunConfigurationException(
                "TensorflowConfiguration (TensorFlow's parameter servers) is not emulated by "
                "amlocal: use MpiConfiguration or PyTorchConfiguration")
        if isinstance(distributed_job_config, MpiConfiguration):
            self.mpi, self.framework, self.communicator = distributed_job_config, "Python", "IntelMpi"
        elif isinstance(distributed_job_config, PyTorchConfiguration):
            self.pytorch, self.framework = distributed_job_config, "PyTorch"
            self.communicator = distributed_job_config.communication_backend
        else:
            raise RunConfigurationException(
                "'distributed_job_config' must be an 'azureml.core.runconfig.TensorflowConfiguration', "
                "'azureml.core.runconfig.MpiConfiguration', or "
                "'azureml.core.runconfig.PyTorchConfiguration' object.")
        self.node_count = distributed_job_config.node_count


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
        if distributed_job_config is not None:
            self.run_config._set_distribution(distributed_job_config)

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
            distribution=distribution_of(config._distributed_fields()),
            max_run_duration_seconds=config.max_run_duration_seconds, tags=dict(tags or {}),
            environment_variables=dict(config.environment_variables,
                                       **config.environment.environment_variables))
