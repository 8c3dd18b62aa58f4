"""The run specs every backend is held to: one contract, run here against each backend.

The local backend runs each spec and the script reports what it got (test_contract.py); the
Azure backend translates each up to the seam, checked against golden files
(test_azure_translation.py). Between them the specs set every RunSpec field to something other
than its default. Specs are made under a given root with fixed file contents, so everything
derived from them (content hashes, snapshot sizes) is the same on every machine; golden files
write that root as <root>.
"""

from pathlib import Path

from amlocal.backends.base import DistributionSpec, EnvironmentSpec, RunSpec
from amlocal.backends.local.compute import TargetSpec

# Reports what the run got: its arguments, some environment variables, and its inputs.
PROBE = """\
import json, os, sys

prefix = "AZUREML_DATAREFERENCE_"
inputs = {}
for key, path in sorted(os.environ.items()):
    if key.startswith(prefix):
        inputs[key[len(prefix):]] = (sorted(os.listdir(path)) if os.path.isdir(path)
                                     else open(path).read())
seen = {"argv": sys.argv[1:],
        "env": {key: os.environ.get(key) for key in ("CONTRACT_GREETING", "CONTRACT_LEVEL")},
        "inputs": inputs,
        "references": {key[len(prefix):]: value for key, value in os.environ.items()
                       if key.startswith(prefix)}}
os.makedirs("outputs", exist_ok=True)
with open("outputs/seen.json", "w") as handle:
    json.dump(seen, handle)
print("probe done")
"""

USER_DOCKERFILE = """\
FROM python:3.11-slim-bookworm
COPY requirements.txt /tmp/requirements.txt
RUN python -m pip install --no-cache-dir -r /tmp/requirements.txt
"""

# Local compute targets the specs run on (and the Azure translation creates clusters from).
TARGETS = (
    TargetSpec(name="cpu-cluster", vm_size="STANDARD_D2_V2", max_nodes=2, min_nodes=0,
               idle_seconds_before_scaledown=120, allow_overcommit=True),
    TargetSpec(name="gpu-cluster", vm_size="STANDARD_NC6", max_nodes=1, min_nodes=0,
               vm_priority="lowpriority", allow_overcommit=True, emulate_gpus=True),
)


def _source(root):
    source = Path(root) / "src"
    source.mkdir(parents=True, exist_ok=True)
    (source / "probe.py").write_text(PROBE)
    (source / "helper.txt").write_text("kept in the snapshot\n")
    return source


def _inputs(root):
    train = Path(root) / "data" / "train"
    train.mkdir(parents=True, exist_ok=True)
    (train / "a.csv").write_text("x,y\n1,2\n")
    (train / "b.csv").write_text("x,y\n3,4\n")
    labels = Path(root) / "data" / "labels.txt"
    labels.write_text("cat\ndog\n")
    return {"train": train, "labels": labels}


def minimal(root):
    return RunSpec(source_dir=_source(root), script="probe.py", compute="cpu-cluster")


def arguments_and_inputs(root):
    return RunSpec(
        source_dir=_source(root), script="probe.py", compute="cpu-cluster",
        experiment="contract-inputs", inputs=_inputs(root),
        arguments=("--train", "$AZUREML_DATAREFERENCE_train", "--labels=${AZUREML_DATAREFERENCE_labels}",
                   "--epochs", "3", "--note", "spaces stay one argument"))


def environment_and_limits(root):
    return RunSpec(
        source_dir=_source(root), script="probe.py", compute="cpu-cluster",
        experiment="contract-environment", node_count=2, max_run_duration_seconds=600,
        tags={"team": "vision", "stage": "contract"},
        environment_variables={"CONTRACT_GREETING": "hello world", "CONTRACT_LEVEL": "3"},
        environment=EnvironmentSpec(recipe="python", pip_packages=("numpy", "click>=8.1"),
                                    base_image="python:3.12-slim-bookworm"))


def dockerfile_gpu_process(root):
    return RunSpec(
        source_dir=_source(root), script="probe.py", compute="gpu-cluster", use_gpu=True,
        executor="process", experiment="contract-gpu", run_as_root=True,
        environment=EnvironmentSpec(recipe="python", pip_packages=("numpy",),
                                    dockerfile=USER_DOCKERFILE))


def gpu_recipe(root):
    return RunSpec(source_dir=_source(root), script="probe.py", compute="gpu-cluster",
                   use_gpu=True, experiment="contract-gpu-recipe",
                   environment=EnvironmentSpec(recipe="chainer"))


def mpi_two_nodes(root):
    return RunSpec(source_dir=_source(root), script="probe.py", compute="cpu-cluster",
                   experiment="contract-mpi", node_count=2,
                   distribution=DistributionSpec(kind="mpi", process_count_per_node=2))


def pytorch_two_nodes(root):
    return RunSpec(source_dir=_source(root), script="probe.py", compute="cpu-cluster",
                   experiment="contract-pytorch", node_count=2,
                   distribution=DistributionSpec(kind="pytorch", communication_backend="gloo"))


SPECS = {function.__name__: function for function in (
    minimal, arguments_and_inputs, environment_and_limits, dockerfile_gpu_process, gpu_recipe,
    mpi_two_nodes, pytorch_two_nodes)}


def create_targets(store):
    """The TARGETS in a run history (a RunStore)."""
    from amlocal.backends.local.compute import ComputeTargets

    targets = ComputeTargets(store)
    for target in TARGETS:
        if target.name not in targets.names():
            targets.create(target)
    return targets
