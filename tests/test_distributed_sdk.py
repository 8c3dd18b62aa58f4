"""Distributed runs as the SDK v1 user writes them: MpiConfiguration / PyTorchConfiguration given
to ScriptRunConfig, the estimator form (Chainer(node_count=2, distributed_training=Mpi())), the
command line's --distribution, the dry run, and what the emulator makes of azureml-core's run
definition. azureml-core 1.61 and azureml-train-core are the reference: signatures, the run
configuration they serialize and the errors they raise are compared with theirs, live.
"""

import dataclasses
import inspect
import json

import pytest

from amlocal.backends.base import DistributionSpec, EnvironmentSpec
from amlocal.core import Experiment, ScriptRunConfig, Workspace
from amlocal.core.compute import AmlCompute, ComputeTarget
from amlocal.core.runconfig import (DockerConfiguration, MpiConfiguration, PyTorchConfiguration,
                                    RunConfiguration, TensorflowConfiguration)
from amlocal.errors import UserInputError
from amlocal.exceptions import RunConfigurationException, TrainingException
from amlocal.service.execution import run_spec as emulator_run_spec
from amlocal.train.dnn import Chainer, Gloo, Mpi, Nccl, ParameterServer
from amlocal.train.estimator import Estimator
from conftest import REPO, write_script
from contract_specs import SPECS
from test_bad_input import assert_one_line_error
from test_cli import invoke
from test_emulator_submit import (CLUSTER, host_python, runs_show, workspace,  # noqa: F401
                                  zip_submission)

azure_runconfig = pytest.importorskip("azureml.core.runconfig")
azure_dnn = pytest.importorskip("azureml.train.dnn")
from azureml.core import ScriptRunConfig as AzureScriptRunConfig  # noqa: E402
from azureml.core._serialization_utils import _serialize_to_dict  # noqa: E402
from azureml.train.estimator import Estimator as AzureEstimator  # noqa: E402

DISTRIBUTED_FIELDS = ("framework", "communicator", "nodeCount", "mpi", "pytorch")


def parameters(callable_):
    return [(p.name, p.default, p.kind) for p in inspect.signature(callable_).parameters.values()]


@pytest.mark.parametrize("ours, theirs", [
    (MpiConfiguration, azure_runconfig.MpiConfiguration),
    (PyTorchConfiguration, azure_runconfig.PyTorchConfiguration),
    (TensorflowConfiguration, azure_runconfig.TensorflowConfiguration),
    (ScriptRunConfig, AzureScriptRunConfig),
    (Mpi, azure_dnn.Mpi), (Gloo, azure_dnn.Gloo), (Nccl, azure_dnn.Nccl),
    (ParameterServer, azure_dnn.ParameterServer),
], ids=["MpiConfiguration", "PyTorchConfiguration", "TensorflowConfiguration", "ScriptRunConfig",
        "Mpi", "Gloo", "Nccl", "ParameterServer"])
def test_the_shapes_take_azureml_cores_arguments(ours, theirs):
    assert parameters(ours) == parameters(theirs)


def test_the_estimators_take_the_distributed_arguments_with_azures_defaults():
    names = ("node_count", "process_count_per_node", "distributed_backend", "distributed_training")
    ours = {name: default for name, default, _ in parameters(Estimator.__init__)}
    theirs = {name: default for name, default, _ in parameters(azure_dnn.Chainer.__init__)}
    assert {name: ours[name] for name in names} == {name: theirs[name] for name in names}


def our_fields(config):
    return config.run_config._distributed_fields()


def their_fields(config):
    document = _serialize_to_dict(config.run_config)
    return {name: document[name] for name in DISTRIBUTED_FIELDS}


@pytest.mark.parametrize("make", [
    lambda module: module.MpiConfiguration(process_count_per_node=2, node_count=3),
    lambda module: module.MpiConfiguration(),
    lambda module: module.PyTorchConfiguration(communication_backend="Gloo", process_count=4,
                                               node_count=2),
    lambda module: module.PyTorchConfiguration(node_count=2),
], ids=["mpi 2x3", "mpi default", "pytorch gloo 4 over 2", "pytorch nccl default count"])
def test_script_run_config_sets_the_run_configuration_as_azureml_core_does(make, tmp_path):
    ours = ScriptRunConfig(str(tmp_path), "train.py", distributed_job_config=make(
        __import__("amlocal.core.runconfig", fromlist=["x"])))
    theirs = AzureScriptRunConfig(str(tmp_path), "train.py",
                                  distributed_job_config=make(azure_runconfig))
    assert our_fields(ours) == their_fields(theirs)


def test_a_run_configuration_is_not_distributed_until_asked(tmp_path):
    ours = ScriptRunConfig(str(tmp_path), "train.py")
    assert our_fields(ours) == their_fields(AzureScriptRunConfig(str(tmp_path), "train.py"))
    assert ours._to_spec("e").distribution is None


@pytest.mark.parametrize("config, expected", [
    (MpiConfiguration(process_count_per_node=2, node_count=3),
     (3, DistributionSpec("mpi", 2))),
    (PyTorchConfiguration(communication_backend="Gloo", process_count=4, node_count=2),
     (2, DistributionSpec("pytorch", 2, "Gloo"))),
    (PyTorchConfiguration(node_count=2), (2, DistributionSpec("pytorch", 1, "Nccl"))),
])
def test_the_spec_gets_the_node_count_and_distribution(config, expected, tmp_path):
    spec = ScriptRunConfig(str(tmp_path), "train.py", distributed_job_config=config)._to_spec("e")
    assert (spec.node_count, spec.distribution) == expected


def their_error(make):
    with pytest.raises(Exception) as caught:
        make()
    return caught.value.message


@pytest.mark.parametrize("ours, theirs", [
    (lambda source: PyTorchConfiguration(communication_backend="Mpi"),
     lambda source: azure_runconfig.PyTorchConfiguration(communication_backend="Mpi")),
    (lambda source: ScriptRunConfig(source, "train.py", distributed_job_config="mpi"),
     lambda source: AzureScriptRunConfig(source, "train.py", distributed_job_config="mpi")),
], ids=["unknown backend", "not a configuration"])
def test_script_run_config_refuses_what_azureml_core_refuses_in_its_words(ours, theirs, tmp_path):
    with pytest.raises(RunConfigurationException) as caught:
        ours(str(tmp_path))
    assert str(caught.value) == their_error(lambda: theirs(str(tmp_path)))


def test_what_amlocal_cannot_run_is_refused_in_one_line(tmp_path):
    with pytest.raises(RunConfigurationException, match="TensorflowConfiguration .* not emulated"):
        ScriptRunConfig(str(tmp_path), "train.py",
                        distributed_job_config=TensorflowConfiguration(worker_count=2))
    # azureml-core accepts a process count that does not split over the nodes; every node runs
    # the same number of processes, so amlocal says so before anything starts.
    config = ScriptRunConfig(str(tmp_path), "train.py", distributed_job_config=PyTorchConfiguration(
        process_count=3, node_count=2))
    with pytest.raises(UserInputError, match="process_count 3 is not a whole multiple of its "
                                             "node_count 2"):
        config._to_spec("e")


CHAINER_CASES = {
    "mpi, ranks from Mpi()": dict(node_count=2, process_count_per_node=1,
                                  distributed_training="Mpi(2)"),
    "mpi from distributed_backend": dict(node_count=2, process_count_per_node=3,
                                         distributed_backend="mpi"),
    "mpi from MpiConfiguration": dict(node_count=2, distributed_training="MpiConfiguration(2, 3)"),
}
REFUSED = {
    "Gloo on Chainer": dict(distributed_training="Gloo()"),
    "gloo backend": dict(distributed_backend="gloo"),
    "no nodes": dict(node_count=0),
    "no ranks": dict(process_count_per_node=0),
    "nodes without a distribution": dict(node_count=2),
    "ranks without a distribution": dict(process_count_per_node=2),
    "Mpi() and distributed_backend": dict(distributed_training="Mpi()", distributed_backend="mpi"),
}


def chainer(module, runconfig, source, compute, **arguments):
    """A Chainer estimator of `module` (azureml.train.dnn or amlocal.train.dnn), its
    distributed_training given as source text (each SDK's own Mpi, Gloo, MpiConfiguration)."""
    training = arguments.pop("distributed_training", None)
    if training is not None:
        names = {"Mpi": module.Mpi, "Gloo": module.Gloo,
                 "MpiConfiguration": runconfig.MpiConfiguration}
        arguments["distributed_training"] = eval(training, names)  # noqa: S307 (test cases)
    return module.Chainer(str(source), entry_script="train.py", **compute, **arguments)


@pytest.mark.parametrize("case", sorted(CHAINER_CASES))
def test_the_estimator_form_distributes_as_azure_train_core_does(case, tmp_path):
    import amlocal.core.runconfig as our_runconfig
    import amlocal.train.dnn as our_dnn

    arguments = CHAINER_CASES[case]
    theirs = chainer(azure_dnn, azure_runconfig, tmp_path, {"vm_size": "STANDARD_D2_V2"},
                     **arguments)
    document = _serialize_to_dict(theirs.run_config)
    spec = chainer(our_dnn, our_runconfig, tmp_path, {"compute_target": "cpu-cluster"},
                   **arguments)._to_spec("e")
    # Azure runs run_config.nodeCount nodes of mpi.processCountPerNode ranks each.
    assert spec.node_count == document["nodeCount"]
    assert spec.distribution == DistributionSpec("mpi", document["mpi"]["processCountPerNode"])
    assert document["communicator"] in ("Mpi", "IntelMpi")


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_the_estimator_form_refuses_what_azure_train_core_refuses_in_its_words(case, tmp_path):
    import amlocal.core.runconfig as our_runconfig
    import amlocal.train.dnn as our_dnn

    expected = their_error(lambda: chainer(azure_dnn, azure_runconfig, tmp_path,
                                           {"vm_size": "STANDARD_D2_V2"}, **REFUSED[case]))
    with pytest.raises(TrainingException) as caught:
        chainer(our_dnn, our_runconfig, tmp_path, {"compute_target": "cpu-cluster"},
                **REFUSED[case])
    assert str(caught.value) == expected


def test_the_generic_estimator_takes_gloo_and_nccl_as_pytorch_jobs(tmp_path):
    for backend in (Gloo, Nccl):
        spec = Estimator(str(tmp_path), entry_script="train.py", compute_target="cpu-cluster",
                         node_count=2, distributed_training=backend())._to_spec("e")
        assert spec.distribution == DistributionSpec("pytorch", 1, backend.__name__)
    document = _serialize_to_dict(AzureEstimator(
        str(tmp_path), entry_script="train.py", vm_size="STANDARD_D2_V2", node_count=2,
        distributed_training=azure_dnn.Gloo()).run_config)
    assert (document["framework"], document["communicator"]) == ("pytorch", "Gloo")
    with pytest.raises(TrainingException, match="ParameterServer .* not emulated"):
        Estimator(str(tmp_path), entry_script="train.py", node_count=2,
                  distributed_training=ParameterServer(worker_count=2))


def test_the_estimator_form_and_script_run_config_give_the_contract_spec(tmp_path):
    """So both have the one golden Azure translation (tests/golden/azure/mpi_two_nodes.json)."""
    contract = SPECS["mpi_two_nodes"](tmp_path)
    estimator = Chainer(contract.source_dir, entry_script="probe.py", compute_target="cpu-cluster",
                        node_count=2, distributed_training=Mpi(process_count_per_node=2))
    script_run = ScriptRunConfig(contract.source_dir, "probe.py", compute_target="cpu-cluster",
                                 max_run_duration_seconds=None,
                                 distributed_job_config=MpiConfiguration(process_count_per_node=2,
                                                                         node_count=2))

    assert estimator._to_spec("contract-mpi") == contract
    # (ScriptRunConfig's environment is its own argument: Azure's default image, not Chainer's.)
    assert script_run._to_spec("contract-mpi").environment.recipe == "python"
    assert dataclasses.replace(script_run._to_spec("contract-mpi"),
                               environment=EnvironmentSpec()) == contract


def test_a_run_shows_its_distribution_in_its_run_definition_as_azure_does(amlocal_home, tmp_path):
    workspace = Workspace.from_config(path=str(amlocal_home))
    ComputeTarget.create(workspace, "cpu2", AmlCompute.provisioning_configuration(
        vm_size="STANDARD_D1_V2", max_nodes=2))
    source = write_script(tmp_path / "src", "train.py", "print('rank')\n")
    config = ScriptRunConfig(str(source), "train.py", compute_target="cpu2",
                             docker_runtime_config=DockerConfiguration(use_docker=False),
                             distributed_job_config=MpiConfiguration(process_count_per_node=1,
                                                                     node_count=2))
    run = Experiment(workspace, "distributed").submit(config)
    run.wait_for_completion()

    definition = run.get_details()["runDefinition"]
    expected = their_fields(AzureScriptRunConfig(
        str(source), "train.py", distributed_job_config=azure_runconfig.MpiConfiguration(
            process_count_per_node=1, node_count=2)))
    assert {name: definition[name] for name in DISTRIBUTED_FIELDS} == expected


# -- the emulator: azureml-core's run definition becomes the spec's distribution ----------------

def emulated(config, tmp_path):
    """The RunSpec `amlocal serve` makes of the run configuration azureml-core sends for a
    ScriptRunConfig or an estimator (its environment made this host's Python: environments are
    not what is tested here)."""
    from azureml.core import Environment
    from azureml.core.script_run_config import get_run_config_from_script_run

    run_config = (get_run_config_from_script_run(config)
                  if isinstance(config, AzureScriptRunConfig) else config.run_config)
    run_config.environment = Environment("host-python")
    run_config.environment.python.user_managed_dependencies = True
    configuration = json.loads(json.dumps(_serialize_to_dict(run_config)))
    return emulator_run_spec(None, "submitted", configuration, tmp_path)


@pytest.mark.parametrize("make, expected", [
    (lambda source: AzureScriptRunConfig(source, "train.py", distributed_job_config=(
        azure_runconfig.MpiConfiguration(process_count_per_node=2, node_count=2))),
     (2, DistributionSpec("mpi", 2))),
    (lambda source: AzureScriptRunConfig(source, "train.py", distributed_job_config=(
        azure_runconfig.PyTorchConfiguration(communication_backend="Gloo", process_count=4,
                                              node_count=2))),
     (2, DistributionSpec("pytorch", 2, "Gloo"))),
    (lambda source: azure_dnn.Chainer(source, entry_script="train.py", vm_size="STANDARD_D2_V2",
                                      node_count=2, distributed_training=azure_dnn.Mpi()),
     (2, DistributionSpec("mpi", 1))),
    (lambda source: AzureEstimator(source, entry_script="train.py", vm_size="STANDARD_D2_V2",
                                   node_count=2, distributed_training=azure_dnn.Nccl()),
     (2, DistributionSpec("pytorch", 1, "Nccl"))),
    (lambda source: AzureScriptRunConfig(source, "train.py"), (1, None)),
], ids=["ScriptRunConfig mpi", "ScriptRunConfig pytorch", "Chainer Mpi()", "Estimator Nccl()",
        "not distributed"])
def test_the_emulator_reads_the_distribution_of_azureml_cores_run_definition(make, expected,
                                                                            tmp_path):
    write_script(tmp_path, "train.py", "print('hi')\n")
    spec = emulated(make(str(tmp_path)), tmp_path)
    assert (spec.node_count, spec.distribution) == expected
    assert spec.validated().distribution == expected[1]


def test_an_mpi_job_submitted_through_the_emulator_is_recorded_with_its_distribution(
        emulator, workspace, zip_submission, tmp_path):
    from azureml.core import Experiment as AzureExperiment

    source = write_script(tmp_path / "src", "train.py", "print('a rank')\n")
    config = AzureScriptRunConfig(
        source_directory=str(source), script="train.py", compute_target=CLUSTER,
        environment=host_python(),
        distributed_job_config=azure_runconfig.MpiConfiguration(process_count_per_node=1,
                                                                node_count=2))
    run = AzureExperiment(workspace, "distributed").submit(config)
    run.wait_for_completion()

    shown = runs_show(emulator, run.id)
    assert shown.returncode == 0, shown.stderr
    record = json.loads(shown.stdout)
    assert (record["node_count"], record["distribution"]) == (
        2, {"kind": "mpi", "process_count_per_node": 1, "communication_backend": None})
    definition = run.get_details()["runDefinition"]
    assert (definition["communicator"], definition["nodeCount"], definition["mpi"]) == (
        "IntelMpi", 2, {"processCountPerNode": 1, "nodeCount": 2})


def test_the_emulator_refuses_parameter_servers_and_uneven_process_counts(tmp_path):
    from amlocal.service.errors import ServiceError

    write_script(tmp_path, "train.py", "print('hi')\n")
    parameter_servers = AzureScriptRunConfig(str(tmp_path), "train.py", distributed_job_config=(
        azure_runconfig.TensorflowConfiguration(worker_count=2)))
    uneven = AzureScriptRunConfig(str(tmp_path), "train.py", distributed_job_config=(
        azure_runconfig.PyTorchConfiguration(process_count=3, node_count=2)))
    for config, message in ((parameter_servers, "TensorFlow framework is not emulated"),
                            (uneven, "process_count 3 is not a whole multiple")):
        with pytest.raises(ServiceError, match=message) as caught:
            emulated(config, tmp_path)
        assert caught.value.status == 400


def test_our_run_configuration_object_distributes_like_the_emulator_reads_it(tmp_path):
    config = RunConfiguration(communicator="OpenMpi")
    config.node_count = 2
    config.mpi.process_count_per_node = 3
    spec = ScriptRunConfig(str(tmp_path), "train.py", run_config=config)._to_spec("e")
    assert (spec.node_count, spec.distribution) == (2, DistributionSpec("mpi", 3))


# -- the command line ---------------------------------------------------------------------------

@pytest.fixture
def source(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no config.json above: the dry run names no workspace
    return write_script(tmp_path / "src", "train.py", "print('hi')\n")


def dry_run(source, *options):
    result = invoke("run", source, "--script", "train.py", "--backend", "azure",
                    "--compute", "cpu-cluster", "--dry-run", *options)
    assert result.exit_code == 0, result.output
    return result.stdout


def test_the_dry_run_shows_an_mpi_job_as_azure_receives_it(amlocal_home, source):
    options = ("--node-count", "2", "--distribution", "mpi", "--processes-per-node", "2")
    text = dry_run(source, *options)
    document = json.loads(dry_run(source, *options, "--json"))

    assert ("Distribution:    mpi (MpiConfiguration): 2 process(es) on each of 2 node(s), 4 ranks "
            "started by mpirun") in text
    assert '"communicator": "IntelMpi"' in text
    assert '"mpi": {\n    "processCountPerNode": 2,\n    "nodeCount": 2\n  }' in text
    configuration = document["run_configuration"]
    assert (configuration["framework"], configuration["nodeCount"]) == ("Python", 2)
    assert configuration["mpi"] == {"processCountPerNode": 2, "nodeCount": 2}


def test_the_dry_run_shows_a_pytorch_job_as_azure_receives_it(amlocal_home, source):
    options = ("--node-count", "2", "--distribution", "pytorch", "--processes-per-node", "2",
               "--communication-backend", "Gloo")
    text = dry_run(source, *options)
    configuration = json.loads(dry_run(source, *options, "--json"))["run_configuration"]

    assert "Distribution:    pytorch (PyTorchConfiguration, gloo): 4 process(es) over 2 node(s)" \
        in text
    assert '"pytorch": {\n    "communicationBackend": "gloo",' in text
    assert (configuration["framework"], configuration["communicator"]) == ("PyTorch", "gloo")
    assert configuration["pytorch"] == {"communicationBackend": "gloo", "processCount": 4,
                                        "nodeCount": 2}


def test_without_distribution_the_dry_run_shows_none(amlocal_home, source):
    text = dry_run(source, "--node-count", "2")
    assert "Distribution:" not in text and '"communicator": "None"' in text


@pytest.mark.parametrize("options, message", [
    (["--processes-per-node", "2"], "--processes-per-node needs --distribution mpi or pytorch"),
    (["--communication-backend", "gloo"],
     "--communication-backend needs --distribution mpi or pytorch"),
    (["--distribution", "mpi", "--communication-backend", "gloo"],
     "--communication-backend is a PyTorch setting: use it with --distribution pytorch"),
    (["--distribution", "horovod"], "'horovod' is not one of 'mpi', 'pytorch'"),
    (["--distribution", "mpi", "--processes-per-node", "0"], "0 is not in the range 1<=x<=64"),
    (["--distribution", "pytorch", "--communication-backend", "mpi"],
     "'mpi' is not one of 'nccl', 'gloo'"),
])
@pytest.mark.parametrize("command", ["run", "sweep"])
def test_bad_distribution_options_get_one_line(amlocal_home, source, command, options, message):
    sweep = ["--param", "lr=choice(1,2)", "--metric", "Accuracy", "--goal", "maximize",
             "--max-total-runs", "2"] if command == "sweep" else []
    result = invoke(command, source, "--script", "train.py", *sweep, *options)
    assert_one_line_error(result, containing=message)
    assert not (amlocal_home / "runs").exists() or not list((amlocal_home / "runs").iterdir())


def test_the_distributed_trainer_goes_to_azure_as_an_mpi_job(amlocal_home, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = invoke("run", REPO / "trainer", "--script", "chainer_mnist_distributed.py",
                    "--backend", "azure", "--compute", "cpu-cluster", "--node-count", "2",
                    "--distribution", "mpi", "--dry-run", "--json",
                    "--input", f"mnist={REPO / 'tests' / 'data' / 'mnist-10k'}",
                    "--", "--epochs", "5", "--data-dir", "$AZUREML_DATAREFERENCE_mnist")
    assert result.exit_code == 0, result.output
    configuration = json.loads(result.stdout)["run_configuration"]
    assert configuration["script"] == "chainer_mnist_distributed.py"
    assert (configuration["communicator"], configuration["nodeCount"]) == ("IntelMpi", 2)
    assert configuration["mpi"] == {"processCountPerNode": 1, "nodeCount": 2}
