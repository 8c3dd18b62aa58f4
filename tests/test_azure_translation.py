"""The Azure translation, up to the seam: the contract specs (contract_specs.py, which the local
backend runs in test_contract.py) become real azureml-core objects, checked against golden files
(tests/golden/azure/<spec>.json) field by field. No network, no Azure account.

AMLOCAL_UPDATE_GOLDEN=1 rewrites the golden files (then review the diff).
"""

import dataclasses
import json
import os
from pathlib import Path

import pytest

pytest.importorskip("azureml.core")

from azureml.core import Environment, ScriptRunConfig  # noqa: E402
from azureml.core.runconfig import DataReferenceConfiguration  # noqa: E402

from amlocal.backends.azure import AzureBackend  # noqa: E402
from amlocal.backends.azure import translate_v1  # noqa: E402
from amlocal.backends.base import EnvironmentSpec, RunSpec  # noqa: E402
from amlocal.errors import UserInputError  # noqa: E402
from contract_specs import SPECS, TARGETS, USER_DOCKERFILE, create_targets  # noqa: E402

GOLDEN = Path(__file__).parent / "golden" / "azure"


def dry_run(root, name, home):
    backend = AzureBackend(home=home, workspace_config=None)
    create_targets(backend.store)
    return backend.dry_run(SPECS[name](root)), SPECS[name](root).validated()


def normalized(document, root):
    """The document with the test's root folder written as <root>."""
    return json.loads(json.dumps(document).replace(str(Path(root).resolve()), "<root>"))


@pytest.fixture
def in_empty_folder(tmp_path, monkeypatch):
    """No config.json is found from here (the dry run names no workspace)."""
    folder = tmp_path / "cwd"
    folder.mkdir()
    monkeypatch.chdir(folder)
    return folder


@pytest.mark.parametrize("name", sorted(SPECS))
def test_each_contract_spec_translates_to_its_golden_submission(name, tmp_path, amlocal_home,
                                                                in_empty_folder):
    document, _ = dry_run(tmp_path / "specs", name, amlocal_home)
    actual = normalized(document, tmp_path / "specs")
    golden_file = GOLDEN / f"{name}.json"
    if os.environ.get("AMLOCAL_UPDATE_GOLDEN"):
        golden_file.parent.mkdir(parents=True, exist_ok=True)
        golden_file.write_text(json.dumps(actual, indent=2, sort_keys=True) + "\n")
    expected = json.loads(golden_file.read_text())

    # Field by field first, so a difference names its field; then the whole document.
    for field in sorted(set(expected["run_configuration"]) | set(actual["run_configuration"])):
        assert actual["run_configuration"].get(field) == expected["run_configuration"].get(field), \
            f"run_configuration.{field}"
    for field in sorted(set(expected) | set(actual)):
        assert actual.get(field) == expected.get(field), field


# What each RunSpec field becomes in the submission. Every field has a check, and the contract
# specs between them give every field a value other than its default.
def _check_source_dir(spec, document):
    assert document["source_directory"] == str(spec.source_dir)
    assert document["snapshot"]["files"] == 2


def _check_script(spec, document):
    assert document["run_configuration"]["script"] == spec.script == document["script"]


def _check_arguments(spec, document):
    expected = [argument.replace("${AZUREML_DATAREFERENCE_labels}", "$AZUREML_DATAREFERENCE_labels")
                for argument in spec.arguments]
    assert document["run_configuration"]["arguments"] == expected


def _check_experiment(spec, document):
    assert document["experiment"] == spec.experiment


def _check_inputs(spec, document):
    references = document["run_configuration"]["dataReferences"]
    assert set(references) == set(spec.inputs)
    uploads = {upload["input"]: upload for upload in document["uploads"]}
    for name, path in spec.inputs.items():
        assert references[name]["mode"] == "mount"
        assert references[name]["dataStoreName"] == "workspaceblobstore"
        assert uploads[name]["from"] == str(path)
        assert references[name]["pathOnDataStore"] == uploads[name]["path_on_datastore"]
        assert uploads[name]["target_path"].startswith(f"amlocal-inputs/{name}/")
        if path.is_file():
            assert uploads[name]["path_on_datastore"].endswith("/" + path.name)


def _check_environment(spec, document):
    dockerfile = document["environment"]["dockerfile"]
    environment = document["run_configuration"]["environment"]
    assert environment["docker"]["baseDockerfile"] == dockerfile
    assert environment["docker"]["baseImage"] is None
    assert environment["python"]["userManagedDependencies"] is True
    assert "COPY amlocal-pip" not in dockerfile and "COPY requirements.txt" not in dockerfile
    assert dockerfile.rstrip().endswith(f"pip install --no-cache-dir '{translate_v1.RUN_HISTORY_REQUIREMENT}'")
    for package in spec.environment.pip_packages:
        assert f"'{package}'" in dockerfile or f" {package} " in dockerfile + " "
    if spec.environment.base_image:
        assert f"ARG BASE_IMAGE={spec.environment.base_image}\n" in dockerfile
    if spec.environment.dockerfile:
        assert dockerfile.startswith("FROM python:3.11-slim-bookworm\n")
        assert document["environment"]["name"] == "amlocal-custom"
    else:
        recipe = translate_v1.gpu_environment(spec).recipe
        assert document["environment"]["name"] == f"amlocal-{recipe}"


def _check_executor(spec, document):
    assert document["run_configuration"]["docker"]["useDocker"] is True
    process_note = any("executor 'process'" in note for note in document["notes"])
    assert process_note == (spec.executor == "process")


def _check_compute(spec, document):
    assert document["run_configuration"]["target"] == spec.compute == document["compute"]["name"]
    target = next(target for target in TARGETS if target.name == spec.compute)
    provisioning = document["compute"]["provisioning"]
    assert provisioning["vmSize"] == target.vm_size
    assert provisioning["vmPriority"] == target.vm_priority
    assert provisioning["scaleSettings"]["maxNodeCount"] == target.max_nodes
    assert provisioning["scaleSettings"]["minNodeCount"] == target.min_nodes


def _check_node_count(spec, document):
    assert document["run_configuration"]["nodeCount"] == spec.node_count


def _check_max_run_duration_seconds(spec, document):
    assert document["run_configuration"]["maxRunDurationSeconds"] == spec.max_run_duration_seconds


def _check_tags(spec, document):
    assert document["tags"] == spec.tags


def _check_environment_variables(spec, document):
    assert document["run_configuration"]["environmentVariables"] == spec.environment_variables


def _check_run_as_root(spec, document):
    # Azure ML runs the script as its image's user (root in its base images) with Docker's
    # defaults: there is nothing to translate, and the document must not mention it.
    assert "run_as_root" not in json.dumps(document)


def _check_use_gpu(spec, document):
    assert any(note.startswith("use_gpu") for note in document["notes"]) == spec.use_gpu
    if spec.use_gpu and spec.environment.dockerfile is None:
        assert document["environment"]["name"] == "amlocal-chainer-gpu"


def _check_distribution(spec, document):
    configuration = document["run_configuration"]
    distribution = spec.distribution
    if distribution is None:
        assert configuration["framework"] == "Python" and configuration["communicator"] == "None"
    elif distribution.kind == "mpi":
        assert configuration["communicator"] == "IntelMpi"
        assert configuration["mpi"] == {"processCountPerNode": distribution.process_count_per_node,
                                        "nodeCount": spec.node_count}
    else:
        assert configuration["framework"] == "PyTorch"
        assert configuration["communicator"] == distribution.communication_backend.lower()
        assert configuration["pytorch"] == {
            "communicationBackend": distribution.communication_backend.lower(),
            "processCount": spec.node_count * distribution.process_count_per_node,
            "nodeCount": spec.node_count}
    assert configuration["nodeCount"] == spec.node_count


FIELD_CHECKS = {
    "source_dir": _check_source_dir, "script": _check_script, "arguments": _check_arguments,
    "experiment": _check_experiment, "inputs": _check_inputs, "environment": _check_environment,
    "executor": _check_executor, "compute": _check_compute, "node_count": _check_node_count,
    "max_run_duration_seconds": _check_max_run_duration_seconds, "tags": _check_tags,
    "environment_variables": _check_environment_variables, "use_gpu": _check_use_gpu,
    "run_as_root": _check_run_as_root, "distribution": _check_distribution,
}


def test_every_run_spec_field_has_a_check_and_a_contract_spec_that_sets_it(tmp_path):
    fields = {field.name: field for field in dataclasses.fields(RunSpec)}
    assert set(FIELD_CHECKS) == set(fields)
    default = RunSpec(source_dir=tmp_path, script="x.py")
    specs = [function(tmp_path / name) for name, function in SPECS.items()]
    for name in fields:
        if name in ("source_dir", "script"):
            continue  # required: every spec sets them
        assert any(getattr(spec, name) != getattr(default, name) for spec in specs), name
    for name in ("recipe", "pip_packages", "base_image", "dockerfile"):
        assert any(getattr(spec.environment, name) != getattr(EnvironmentSpec(), name)
                   for spec in specs), f"environment.{name}"


@pytest.mark.parametrize("name", sorted(SPECS))
def test_each_run_spec_field_arrives_where_azure_reads_it(name, tmp_path, amlocal_home,
                                                          in_empty_folder):
    document, spec = dry_run(tmp_path, name, amlocal_home)
    for field, check in FIELD_CHECKS.items():
        try:
            check(spec, document)
        except AssertionError as error:
            raise AssertionError(f"RunSpec.{field}: {error}") from None


def test_the_submission_is_made_of_real_azureml_core_objects(tmp_path):
    spec = SPECS["arguments_and_inputs"](tmp_path).validated()
    target = next(target for target in TARGETS if target.name == "cpu-cluster")

    submission = translate_v1.translate(spec, local_target=target, datastore="mystore")

    assert isinstance(submission.config, ScriptRunConfig)
    assert isinstance(submission.environment, Environment)
    assert submission.config.run_config.environment is submission.environment
    assert submission.config.run_config.target == "cpu-cluster"
    reference = submission.config.run_config.data_references["train"]
    assert isinstance(reference, DataReferenceConfiguration)
    assert (reference.data_store_name, reference.mode) == ("mystore", "mount")
    assert [upload.datastore for upload in submission.uploads] == ["mystore", "mystore"]
    assert submission.compute.provisioning.vm_size == "STANDARD_D2_V2"
    assert submission.compute.provisioning.scale_settings.idle_seconds_before_scaledown == 120


def test_the_upload_path_follows_the_inputs_content(tmp_path):
    folder = tmp_path / "data"
    folder.mkdir()
    (folder / "a.txt").write_text("one")
    first = translate_v1.input_upload("data", folder)
    assert translate_v1.input_upload("data", folder) == first
    (folder / "a.txt").write_text("two")
    assert translate_v1.input_upload("data", folder).target_path != first.target_path
    (folder / "a.txt").write_text("one")
    (folder / "a.txt").rename(folder / "b.txt")  # same bytes, another name: another upload
    assert translate_v1.input_upload("data", folder).target_path != first.target_path


def test_the_host_pip_settings_never_reach_the_azure_dockerfile():
    recipe = translate_v1.recipe_dockerfile_text("chainer")
    assert "COPY amlocal-pip/ /tmp/amlocal-pip/" in recipe  # what the local build copies

    dockerfile = translate_v1.azure_dockerfile(recipe, pip_packages=("scikit-learn>=1.2", "a b"))

    assert not [line for line in dockerfile.splitlines()
                if line.startswith("COPY") and "amlocal-pip" in line]
    assert "RUN mkdir -p /tmp/amlocal-pip && : > /tmp/amlocal-pip/pip.conf" in dockerfile
    # Shell-quoted, so a version range is not a redirection.
    assert "RUN printf '%s\\n' 'scikit-learn>=1.2' 'a b' > /tmp/requirements.txt" in dockerfile


def test_a_base_image_made_on_this_machine_cannot_go_to_azure():
    recipe = translate_v1.recipe_dockerfile_text("python")
    with pytest.raises(UserInputError, match="exists only on this machine"):
        translate_v1.azure_dockerfile(recipe, base_image="amlocal/base:bookworm")
    with pytest.raises(UserInputError, match="no `ARG BASE_IMAGE` line"):
        translate_v1.azure_dockerfile(USER_DOCKERFILE, base_image="python:3.12")


def test_compute_local_is_refused_with_what_to_give_instead(tmp_path):
    spec = dataclasses.replace(SPECS["minimal"](tmp_path), compute="local").validated()
    with pytest.raises(UserInputError, match="AmlCompute cluster, not on 'local'.*--compute NAME"):
        translate_v1.translate(spec)


def test_a_cluster_unknown_here_is_used_as_it_is_in_the_workspace(tmp_path, amlocal_home,
                                                                   in_empty_folder):
    spec = dataclasses.replace(SPECS["minimal"](tmp_path), compute="big-cluster")
    document = AzureBackend(home=amlocal_home).dry_run(spec)
    assert document["compute"]["provisioning"] is None
    assert document["compute"]["create_if_missing"] is False
    assert document["run_configuration"]["target"] == "big-cluster"


def test_the_dry_run_names_the_workspace_of_a_config_file_without_contacting_it(
        tmp_path, amlocal_home, in_empty_folder):
    (in_empty_folder / ".azureml").mkdir()
    (in_empty_folder / ".azureml" / "config.json").write_text(json.dumps(
        {"subscription_id": "00000000-1111-2222-3333-444444444444", "resource_group": "rg-ml",
         "workspace_name": "ws-prod"}))
    backend = AzureBackend(home=amlocal_home)
    create_targets(backend.store)

    document = backend.dry_run(SPECS["minimal"](tmp_path))

    assert document["workspace"] == {
        "config_file": str(in_empty_folder / ".azureml" / "config.json"),
        "subscription_id": "00000000-1111-2222-3333-444444444444", "resource_group": "rg-ml",
        "workspace_name": "ws-prod"}
    assert not any("no workspace configuration file" in note for note in document["notes"])
