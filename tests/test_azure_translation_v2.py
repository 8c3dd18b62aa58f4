"""The Azure translation for SDK v2 (azure-ai-ml, `--sdk v2`), up to its seam: the contract specs
(contract_specs.py) become real azure-ai-ml entities, checked against golden files
(tests/golden/azure_v2/<spec>.yaml) and field by field, and the dry runs of `amlocal run` and
`amlocal sweep --sdk v2`. test_azure_backend_v2.py submits them. No network, no Azure account.

AMLOCAL_UPDATE_GOLDEN=1 rewrites the golden files (then review the diff).
"""

import dataclasses
import hashlib
import json
import os
import re
import shlex
from pathlib import Path

import pytest
import yaml

pytest.importorskip("azure.ai.ml")

from azure.ai.ml.entities import AmlCompute, Environment  # noqa: E402
from azure.ai.ml.entities._builders.command import Command  # noqa: E402

from amlocal.backends.azure import AzureBackend, translate_v2  # noqa: E402
from amlocal.backends.azure.dockerfiles import RUN_HISTORY_REQUIREMENT  # noqa: E402
from amlocal.backends.base import RunSpec  # noqa: E402
from amlocal.errors import UserInputError  # noqa: E402
from conftest import REPO  # noqa: E402
from contract_specs import SPECS, TARGETS  # noqa: E402
from fake_azure_v2 import SWEEP, in_empty_folder, invoke, v2_backend  # noqa: E402,F401 (a fixture)

# azure-ai-ml's own schemas use a marshmallow parameter marshmallow 4 drops; not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore:The `context` parameter is deprecated")

GOLDEN = Path(__file__).parent / "golden" / "azure_v2"
MNIST = REPO / "tests" / "data" / "mnist-10k"
def dry_run(root, name, home):
    return v2_backend(home).dry_run(SPECS[name](root)), SPECS[name](root).validated()


def normalized(document, root):
    """The document with the test's root folder written as <root>, and azure-ai-ml's patch
    release as <version> (the extra pins its minor release)."""
    text = json.dumps(document).replace(str(Path(root).resolve()), "<root>")
    return json.loads(text.replace(f"azure-ai-ml {translate_v2.SDK_VERSION} ",
                                   "azure-ai-ml <version> "))


# -- golden files ------------------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(SPECS))
def test_each_contract_spec_translates_to_its_golden_command_job(name, tmp_path, amlocal_home,
                                                                 in_empty_folder):
    document, _ = dry_run(tmp_path / "specs", name, amlocal_home)
    actual = normalized(document, tmp_path / "specs")
    golden_file = GOLDEN / f"{name}.yaml"
    if os.environ.get("AMLOCAL_UPDATE_GOLDEN"):
        golden_file.parent.mkdir(parents=True, exist_ok=True)
        golden_file.write_text(yaml.safe_dump(actual, sort_keys=True, width=1 << 16))
    expected = yaml.safe_load(golden_file.read_text())

    # Field by field first, so a difference names its field; then the whole document.
    for field in sorted(set(expected["job"]) | set(actual["job"])):
        assert actual["job"].get(field) == expected["job"].get(field), f"job.{field}"
    for field in sorted(set(expected) | set(actual)):
        assert actual.get(field) == expected.get(field), field


# -- every RunSpec field, where azure-ai-ml reads it ------------------------------------------

def _arguments_of(command, script):
    """The script's arguments in a job's command, its ${{inputs.x}} bindings written back as
    the data references they came from."""
    tokens = shlex.split(command)
    rest = tokens[tokens.index("python") + 2:]
    assert tokens[tokens.index("python") + 1] == script
    return [re.sub(r"\$\{\{inputs\.(\w+)\}\}", r"$AZUREML_DATAREFERENCE_\1", token)
            for token in rest]


def _check_source_dir(spec, document):
    assert document["job"]["code"] == str(spec.source_dir) == document["source_directory"]
    assert document["snapshot"]["files"] == 2


def _check_script(spec, document):
    assert f" python {spec.script}" in " " + document["job"]["command"]


def _check_arguments(spec, document):
    expected = [re.sub(r"\$\{(AZUREML_DATAREFERENCE_\w+)\}", r"$\1", argument)
                for argument in spec.arguments]
    assert _arguments_of(document["job"]["command"], spec.script) == expected


def _check_experiment(spec, document):
    assert document["job"]["experiment_name"] == spec.experiment == document["experiment"]


def _check_inputs(spec, document):
    inputs = document["job"]["inputs"]
    assert set(inputs) == set(spec.inputs)
    uploads = {upload["input"]: upload for upload in document["uploads"]}
    variables = shlex.split(document["job"]["command"])[:len(spec.inputs)]
    for name, path in spec.inputs.items():
        assert inputs[name]["type"] == ("uri_file" if path.is_file() else "uri_folder")
        assert inputs[name]["mode"] == "ro_mount"
        assert inputs[name]["path"] == ("azureml://datastores/workspaceblobstore/paths/"
                                        + uploads[name]["path_on_datastore"])
        assert uploads[name]["from"] == str(path)
        assert uploads[name]["target_path"].startswith(f"amlocal-inputs/{name}/")
        # The script's environment names the input as v1's data references do.
        assert f"AZUREML_DATAREFERENCE_{name}=${{{{inputs.{name}}}}}" in variables


def _check_environment(spec, document):
    dockerfile = document["environment"]["dockerfile"]
    environment = document["job"]["environment"]
    assert environment["build"] == {"path": translate_v2.BUILD_CONTEXT}
    assert environment["version"] == hashlib.sha256(dockerfile.encode()).hexdigest()[:16]
    assert "COPY amlocal-pip" not in dockerfile and "COPY requirements.txt" not in dockerfile
    assert dockerfile.rstrip().endswith(f"pip install --no-cache-dir '{RUN_HISTORY_REQUIREMENT}'")
    for package in spec.environment.pip_packages:
        assert f"'{package}'" in dockerfile or f" {package} " in dockerfile + " "
    if spec.environment.base_image:
        assert f"ARG BASE_IMAGE={spec.environment.base_image}\n" in dockerfile
    if spec.environment.dockerfile:
        assert dockerfile.startswith("FROM python:3.11-slim-bookworm\n")
        assert environment["name"] == "amlocal-custom"
    else:
        gpu = spec.use_gpu and spec.environment.recipe == "chainer"
        assert environment["name"] == f"amlocal-{spec.environment.recipe}{'-gpu' if gpu else ''}"


def _check_executor(spec, document):
    process_note = any("executor 'process'" in note for note in document["notes"])
    assert process_note == (spec.executor == "process")


def _check_compute(spec, document):
    assert document["job"]["compute"] == f"azureml:{spec.compute}"
    assert document["compute"]["name"] == spec.compute
    target = next(target for target in TARGETS if target.name == spec.compute)
    cluster = document["compute"]["provisioning"]
    assert (cluster["type"], cluster["name"], cluster["size"]) == ("amlcompute", spec.compute,
                                                                   target.vm_size)
    assert cluster["tier"] == {"dedicated": "dedicated",
                               "lowpriority": "low_priority"}[target.vm_priority]
    assert (cluster["min_instances"], cluster["max_instances"]) == (target.min_nodes,
                                                                    target.max_nodes)
    assert cluster["idle_time_before_scale_down"] == target.idle_seconds_before_scaledown


def _check_node_count(spec, document):
    assert document["job"]["resources"]["instance_count"] == spec.node_count


def _check_max_run_duration_seconds(spec, document):
    assert document["job"].get("limits", {}).get("timeout") == spec.max_run_duration_seconds


def _check_tags(spec, document):
    assert document["job"]["tags"] == spec.tags == document["tags"]


def _check_environment_variables(spec, document):
    assert document["job"]["environment_variables"] == spec.environment_variables


def _check_run_as_root(spec, document):
    # Azure ML runs the script as its image's user: nothing to translate, nothing said.
    assert "run_as_root" not in json.dumps(document)


def _check_use_gpu(spec, document):
    assert any(note.startswith("use_gpu") for note in document["notes"]) == spec.use_gpu
    if spec.use_gpu and spec.environment.dockerfile is None:
        assert document["environment"]["name"] == "amlocal-chainer-gpu"


def _check_distribution(spec, document):
    distribution = spec.distribution
    job = document["job"]
    if distribution is None:
        assert "distribution" not in job
        return
    assert job["distribution"] == {"type": distribution.kind,
                                   "process_count_per_instance":
                                       distribution.process_count_per_node}
    assert job["resources"]["instance_count"] == spec.node_count
    backend_note = any(note.startswith("communication backend") for note in document["notes"])
    assert backend_note == (distribution.kind == "pytorch")


FIELD_CHECKS = {
    "source_dir": _check_source_dir, "script": _check_script, "arguments": _check_arguments,
    "experiment": _check_experiment, "inputs": _check_inputs, "environment": _check_environment,
    "executor": _check_executor, "compute": _check_compute, "node_count": _check_node_count,
    "max_run_duration_seconds": _check_max_run_duration_seconds, "tags": _check_tags,
    "environment_variables": _check_environment_variables, "use_gpu": _check_use_gpu,
    "run_as_root": _check_run_as_root, "distribution": _check_distribution,
}


def test_every_run_spec_field_has_a_v2_check():
    assert set(FIELD_CHECKS) == {field.name for field in dataclasses.fields(RunSpec)}


@pytest.mark.parametrize("name", sorted(SPECS))
def test_each_run_spec_field_arrives_where_azure_ai_ml_reads_it(name, tmp_path, amlocal_home,
                                                                in_empty_folder):
    document, spec = dry_run(tmp_path, name, amlocal_home)
    for field, check in FIELD_CHECKS.items():
        try:
            check(spec, document)
        except AssertionError as error:
            raise AssertionError(f"RunSpec.{field}: {error}") from None


@pytest.mark.parametrize("name", sorted(SPECS))
def test_v1_and_v2_send_the_same_dockerfile_and_upload_paths(name, tmp_path, amlocal_home,
                                                              in_empty_folder):
    pytest.importorskip("azureml.core")
    v2, _ = dry_run(tmp_path, name, amlocal_home)
    v1 = AzureBackend(home=amlocal_home, sdk="v1").dry_run(SPECS[name](tmp_path))
    assert v2["environment"]["dockerfile"] == v1["environment"]["dockerfile"]
    assert v2["environment"]["name"] == v1["environment"]["name"]
    assert v2["uploads"] == v1["uploads"]


def test_the_submission_is_made_of_real_azure_ai_ml_entities(tmp_path):
    spec = SPECS["arguments_and_inputs"](tmp_path).validated()
    target = next(target for target in TARGETS if target.name == "cpu-cluster")

    submission = translate_v2.translate(spec, local_target=target, datastore="mystore")

    assert isinstance(submission.job, Command)
    assert isinstance(submission.environment, Environment)
    assert submission.job.environment is submission.environment
    assert isinstance(submission.compute.provisioning, AmlCompute)
    assert submission.job.inputs["train"].path == (
        "azureml://datastores/mystore/paths/" + submission.uploads[1].path_on_datastore)
    with submission.build_context() as entity:
        folder = Path(entity.environment.build.path)
        assert (folder / "Dockerfile").read_text() == submission.dockerfile
    assert not folder.exists()
    assert submission.environment.build.path == translate_v2.BUILD_CONTEXT


@pytest.mark.parametrize("argument, piece", [
    ("plain", "plain"),
    ("two words", "'two words'"),
    ("$HOME", "'$HOME'"),  # the shell never expands what the user wrote
    ("it's", "'it'\"'\"'s'"),
    ("", "''"),
    ("$AZUREML_DATAREFERENCE_data", "${{inputs.data}}"),
    ("--in=${AZUREML_DATAREFERENCE_data}/x y", "--in=${{inputs.data}}'/x y'"),
])
def test_arguments_become_one_shell_word_each(argument, piece):
    assert translate_v2.command_argument(argument) == piece
    bound = piece.replace("${{inputs.data}}", "/mnt/data")
    assert shlex.split(bound) == [argument.replace("$AZUREML_DATAREFERENCE_data", "/mnt/data")
                                  .replace("${AZUREML_DATAREFERENCE_data}", "/mnt/data")]


def test_an_argument_azure_would_read_as_a_binding_is_refused():
    with pytest.raises(UserInputError, match="reads as a binding of its own"):
        translate_v2.command_argument("${{inputs.other}}")


def test_compute_local_is_refused_with_what_to_give_instead(tmp_path):
    spec = dataclasses.replace(SPECS["minimal"](tmp_path), compute="local").validated()
    with pytest.raises(UserInputError, match="AmlCompute cluster, not on 'local'"):
        translate_v2.translate(spec)


# -- sweeps ------------------------------------------------------------------------------------

def test_a_sweep_is_the_command_job_swept_with_the_same_sampling_policy_and_limits(
        tmp_path, amlocal_home, in_empty_folder):
    spec = SPECS["arguments_and_inputs"](tmp_path)

    document = v2_backend(amlocal_home).dry_run_sweep(spec, SWEEP)

    sweep = document["sweep_job"]
    assert sweep["type"] == "sweep" and sweep["compute"] == "azureml:cpu-cluster"
    assert sweep["sampling_algorithm"] == {"type": "random", "seed": 7}
    assert sweep["early_termination"] == {"type": "bandit", "evaluation_interval": 2,
                                          "delay_evaluation": 0, "slack_factor": 0.1}
    assert sweep["objective"] == {"primary_metric": "Accuracy", "goal": "maximize"}
    assert sweep["limits"] == {"max_total_trials": 8, "max_concurrent_trials": 2,
                               "timeout": 3600}
    assert sweep["search_space"] == {"batchsize": {"type": "choice", "values": [64, 128]},
                                     "lr": {"type": "loguniform", "min_value": -6,
                                            "max_value": -1}}
    assert sweep["experiment_name"] == "contract-inputs"
    assert set(sweep["inputs"]) == {"train", "labels"}
    # Each trial gets the hyperparameters as v1's children do: --NAME VALUE after the arguments.
    assert sweep["trial"]["command"].endswith(
        "'spaces stay one argument' --batchsize ${{search_space.batchsize}} "
        "--lr ${{search_space.lr}}")


@pytest.mark.parametrize("expression, expected", [
    (["randint", [5]], {"type": "randint", "upper": 5}),
    (["uniform", [0, 1]], {"type": "uniform", "min_value": 0, "max_value": 1}),
    (["quniform", [0, 10, 2]], {"type": "quniform", "min_value": 0, "max_value": 10, "q": 2}),
    (["qloguniform", [0, 1, 1]], {"type": "qloguniform", "min_value": 0, "max_value": 1, "q": 1}),
    (["normal", [0, 1]], {"type": "normal", "mu": 0, "sigma": 1}),
    (["qnormal", [0, 1, 1]], {"type": "qnormal", "mu": 0, "sigma": 1, "q": 1}),
    (["lognormal", [0, 1]], {"type": "lognormal", "mu": 0, "sigma": 1}),
    (["qlognormal", [0, 1, 1]], {"type": "qlognormal", "mu": 0, "sigma": 1, "q": 1}),
])
def test_each_parameter_expression_has_its_search_space_twin(expression, expected, tmp_path):
    sweep = dict(SWEEP, generator_config={"name": "GRID", "parameter_space": {"x": expression}})
    spec = SPECS["minimal"](tmp_path).validated()
    document = translate_v2.translate_sweep(spec, sweep).describe()["sweep_job"]
    assert document["search_space"] == {"x": expected}
    assert document["sampling_algorithm"] == {"type": "grid"}


@pytest.mark.parametrize("policy, expected", [
    ({"name": "MedianStopping", "properties": {"evaluation_interval": 1, "delay_evaluation": 5}},
     {"type": "median_stopping", "evaluation_interval": 1, "delay_evaluation": 5}),
    ({"name": "TruncationSelection", "properties": {"truncation_percentage": 20,
                                                    "evaluation_interval": 1,
                                                    "delay_evaluation": 0}},
     {"type": "truncation_selection", "truncation_percentage": 20, "evaluation_interval": 1,
      "delay_evaluation": 0}),
    ({"name": "Default"}, None),
])
def test_each_early_termination_policy_has_its_twin(policy, expected, tmp_path):
    sweep = dict(SWEEP, policy_config=policy,
                 generator_config={"name": "BayesianOptimization",
                                   "parameter_space": {"x": ["uniform", [0, 1]]}})
    spec = SPECS["minimal"](tmp_path).validated()
    document = translate_v2.translate_sweep(spec, sweep).describe()["sweep_job"]
    assert document.get("early_termination") == expected
    assert document["sampling_algorithm"] == {"type": "bayesian"}


# -- the command line ----------------------------------------------------------------------------

def test_the_done_when_dry_run_prints_the_command_job(amlocal_home, in_empty_folder):
    result = invoke("run", REPO / "trainer", "--script", "chainer_mnist.py", "--backend", "azure",
                    "--sdk", "v2", "--compute", "gpu-cluster", "--dry-run",
                    "--input", f"mnist={MNIST}",
                    "--", "--epochs", "10", "--data-dir", "$AZUREML_DATAREFERENCE_mnist")

    assert result.exit_code == 0, result.output
    text = result.stdout
    assert text.startswith("Dry run: nothing is sent to Azure ML. The job, as azure-ai-ml ")
    job = yaml.safe_load(text.split("Command job, as azure-ai-ml serializes it:\n")[1]
                         .split("\nNotes:")[0])
    assert job["type"] == "command" and job["compute"] == "azureml:gpu-cluster"
    assert job["command"].endswith("python chainer_mnist.py --epochs 10 --data-dir "
                                   "${{inputs.mnist}}")
    assert job["inputs"]["mnist"]["type"] == "uri_folder"
    assert job["environment"]["name"] == "amlocal-chainer"
    assert "Environment amlocal-chainer (version " in text
    assert "FROM ${BASE_IMAGE} AS build" in text  # the recipe's Dockerfile, in full
    assert "experimental" not in result.output  # azure-ai-ml's notes on its own classes
    document = json.loads(invoke("run", REPO / "trainer", "--script", "chainer_mnist.py",
                                 "--backend", "azure", "--sdk", "v2", "--compute", "gpu-cluster",
                                 "--dry-run", "--json", "--input", f"mnist={MNIST}").stdout)
    recipe = (REPO / "docker" / "chainer" / "Dockerfile").read_text()
    assert document["environment"]["dockerfile"].startswith(recipe.split("COPY")[0])
    assert document["workspace"] is None
    assert not list((amlocal_home / "runs").iterdir())  # nothing recorded


def test_the_sweep_dry_run_prints_the_sweep_job(amlocal_home, in_empty_folder):
    result = invoke("sweep", REPO / "trainer", "--script", "chainer_mnist.py", "--backend",
                    "azure", "--sdk", "v2", "--compute", "gpu-cluster", "--dry-run",
                    "--input", f"mnist={MNIST}", "--param", "batchsize=choice(64,128)",
                    "--param", "lr=loguniform(-6,-1)", "--policy",
                    "bandit(slack_factor=0.1,evaluation_interval=2)", "--metric", "Accuracy",
                    "--goal", "maximize", "--max-total-runs", "8", "--max-concurrent-runs", "2",
                    "--", "--epochs", "3", "--data-dir", "$AZUREML_DATAREFERENCE_mnist")

    assert result.exit_code == 0, result.output
    sweep = yaml.safe_load(result.stdout.split("one per sampled configuration):\n")[1]
                           .split("\nCommand job,")[0])
    assert sweep["type"] == "sweep"
    assert sweep["objective"] == {"goal": "maximize", "primary_metric": "Accuracy"}
    assert sweep["early_termination"]["type"] == "bandit"
    assert sweep["limits"]["max_total_trials"] == 8
    assert "--data-dir ${{inputs.mnist}} --batchsize ${{search_space.batchsize}}" in \
        sweep["trial"]["command"]
