"""A distributed run in Azure ML v1's run-configuration terms, both ways.

azureml-core does not keep "this is an MPI job" in one place: ScriptRunConfig's
distributed_job_config and the estimators' distributed_training set the run configuration's
`framework`, `communicator`, `nodeCount` and its `mpi` or `pytorch` section, and that is what a run
definition carries (what `amlocal serve` receives, what `get_details()["runDefinition"]` shows).
`distribution_of` reads those fields (as azureml-core serializes them) into a DistributionSpec;
`run_configuration_fields` writes a DistributionSpec back as Azure shows it. The SDK shapes and
the emulator both read through here, so one set of rules decides what a distributed run is.
"""

from amlocal.backends.spec import DistributionSpec
from amlocal.errors import UserInputError

# The communicators that start an MPI job: ScriptRunConfig(MpiConfiguration) writes IntelMpi, an
# estimator's Mpi() writes Mpi, RunConfiguration(communicator="OpenMpi") is the third spelling.
MPI_COMMUNICATORS = ("intelmpi", "openmpi", "mpi")
# PyTorchConfiguration writes its backend (lower case) as the communicator; Gloo() and Nccl()
# write their class names.
PYTORCH_COMMUNICATORS = ("nccl", "gloo")
# The frameworks a run of a Python script may name (an MPI job's is Python, a PyTorch job's
# PyTorch; the estimators write them in lower case).
FRAMEWORKS = ("python", "pytorch")


def _section(configuration, name):
    section = configuration.get(name)
    if section is None:
        return {}
    if not isinstance(section, dict):
        raise UserInputError(f"the run configuration's {name!r} section must be an object")
    return section


def distribution_of(configuration):
    """The DistributionSpec of a run configuration (a dict with azureml-core's camelCase keys:
    framework, communicator, nodeCount, mpi, pytorch), or None for a run that is not distributed.

    UserInputError names what cannot be emulated (TensorFlow's parameter servers, another
    communicator) or a PyTorch process count that does not split evenly over the nodes.
    """
    framework = str(configuration.get("framework") or "Python")
    communicator = str(configuration.get("communicator") or "None")
    if framework.lower() not in FRAMEWORKS:
        raise UserInputError(f"the {framework} framework is not emulated by amlocal (a run is a "
                             "Python script; distributed runs are MPI or PyTorch)")
    kind = communicator.lower()
    if kind == "none":
        return None
    if kind in MPI_COMMUNICATORS:
        ranks = _section(configuration, "mpi").get("processCountPerNode", 1)
        return DistributionSpec(kind="mpi", process_count_per_node=ranks)
    if kind in PYTORCH_COMMUNICATORS:
        node_count = configuration.get("nodeCount") or 1
        process_count = _section(configuration, "pytorch").get("processCount")
        if process_count is None:  # PyTorchConfiguration's default: one process per node
            ranks = 1
        elif (not isinstance(process_count, int) or isinstance(process_count, bool)
              or not isinstance(node_count, int) or process_count % node_count
              or process_count < node_count):
            raise UserInputError(f"PyTorchConfiguration's process_count {process_count!r} is not "
                                 f"a whole multiple of its node_count {node_count!r}: every node "
                                 "runs the same number of processes")
        else:
            ranks = process_count // node_count
        return DistributionSpec(kind="pytorch", process_count_per_node=ranks,
                                communication_backend=kind.capitalize())
    raise UserInputError(f"distributed training with the {communicator} communicator is not "
                         "emulated by amlocal: use MpiConfiguration or PyTorchConfiguration")


def run_configuration_fields(distribution, node_count):
    """The run configuration's distributed fields for a DistributionSpec (None: not
    distributed) over node_count nodes, as azureml-core serializes what
    ScriptRunConfig(distributed_job_config=...) sets."""
    fields = {"framework": "Python", "communicator": "None", "nodeCount": node_count,
              "mpi": {"processCountPerNode": 1, "nodeCount": 1},
              "pytorch": {"communicationBackend": "nccl", "processCount": None, "nodeCount": 1},
              "tensorflow": {"workerCount": 1, "parameterServerCount": 1}}
    if distribution is None:
        return fields
    ranks = distribution.process_count_per_node
    if distribution.kind == "mpi":
        fields.update(communicator="IntelMpi",
                      mpi={"processCountPerNode": ranks, "nodeCount": node_count})
    else:
        backend = (distribution.communication_backend or "Nccl").lower()
        fields.update(framework="PyTorch", communicator=backend,
                      pytorch={"communicationBackend": backend,
                               "processCount": node_count * ranks, "nodeCount": node_count})
    return fields
