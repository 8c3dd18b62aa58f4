"""Submitting runs to the emulator with the real azureml-core 1.61: Experiment.submit(ScriptRunConfig)
runs the script on the local backend (its stages, queue, executors and history), and
wait_for_completion(show_output=True) streams its output and ends with its status.

Most tests send the project as a zip (the `zip_submission` fixture sets
AML_FORCE_EXECUTE_WITH_ZIP=true: startrun); azureml-core still uploads a snapshot beside it,
through the blob route. test_a_run_submitted_with_its_snapshot_runs_from_it takes the default
path (snapshotrun).
"""

import io
import json
import os
import subprocess
import sys
import time
import zipfile

import pytest
import requests

from conftest import write_script

pytest.importorskip("azureml.core", reason="the azure extra (CI installs it)")

from azureml.core import Environment, Experiment, ScriptRunConfig  # noqa: E402
from azureml.core.compute import AmlCompute, ComputeTarget  # noqa: E402
from azureml.core.runconfig import DataReferenceConfiguration  # noqa: E402
from azureml.exceptions import ActivityFailedException, ComputeTargetException  # noqa: E402
from azureml.exceptions import ExperimentExecutionException  # noqa: E402

import amlocal.emulator  # noqa: E402
from amlocal.backends.history.store import BUILD_LOG, RunStore  # noqa: E402
from amlocal.errors import UserInputError  # noqa: E402
from amlocal.service.environments import local_environment  # noqa: E402
from amlocal.service.errors import ServiceError  # noqa: E402
from amlocal.service.execution import unpack_project  # noqa: E402

WS_PATH = ("/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/amlocal/providers"
           "/Microsoft.MachineLearningServices/workspaces/local")
CLUSTER = "cpu-cluster"

SCRIPT = """\
import os, sys
from azureml.core.run import Run
run = Run.get_context()
print("hello from the script", sys.argv[1:])
for accuracy in (0.5, 0.75):
    run.log("Accuracy", accuracy)
run.tag("team", "vision")
os.makedirs("outputs", exist_ok=True)
with open("outputs/x.txt", "w") as out:
    out.write("weights")
print("the script ends with GREETING", os.environ.get("GREETING"))
"""


@pytest.fixture
def zip_submission(emulator, monkeypatch):
    monkeypatch.setenv("AML_FORCE_EXECUTE_WITH_ZIP", "true")


@pytest.fixture(scope="module")
def workspace(emulator):
    ws = amlocal.emulator.workspace()
    try:
        ComputeTarget(ws, CLUSTER)
    except ComputeTargetException:
        ComputeTarget.create(ws, CLUSTER, AmlCompute.provisioning_configuration(
            vm_size="STANDARD_D1_V2", max_nodes=2)).wait_for_completion(show_output=False)
    return ws


def host_python(name="host-python"):
    """The environment that runs on this host's Python (the process executor): user-managed
    dependencies on Azure's default image, Docker off."""
    environment = Environment(name)
    environment.python.user_managed_dependencies = True
    return environment


def script_config(source, environment, arguments=("--epochs", 2), script="train.py"):
    config = ScriptRunConfig(source_directory=str(source), script=script,
                             arguments=list(arguments), compute_target=CLUSTER,
                             environment=environment)
    config.run_config.environment_variables = {"GREETING": "hello"}
    return config


def runs_show(emulator, run_id):
    return subprocess.run([sys.executable, "-m", "amlocal", "runs", "show", run_id, "--json"],
                          env={**os.environ, "AMLOCAL_HOME": str(emulator.home)},
                          capture_output=True, text=True, timeout=120)


def test_a_submitted_script_runs_on_the_local_backend_and_its_output_streams(
        emulator, workspace, zip_submission, tmp_path, capsys):
    source = write_script(tmp_path / "src", "train.py", SCRIPT)
    run = Experiment(workspace, "submitted").submit(script_config(source, host_python()),
                                                    tags={"submitted": "yes"})
    details = run.wait_for_completion(show_output=True)

    printed = capsys.readouterr().out
    assert "hello from the script ['--epochs', '2']" in printed
    assert "the script ends with GREETING hello" in printed  # the last line, read after the end
    assert details["status"] == "Completed" and run.get_status() == "Completed"
    assert run.get_metrics() == {"Accuracy": [0.5, 0.75]}
    assert run.get_tags()["team"] == "vision" and run.get_tags()["submitted"] == "yes"
    assert "outputs/x.txt" in run.get_file_names()
    run.download_file("outputs/x.txt", str(tmp_path / "x.txt"))
    assert (tmp_path / "x.txt").read_text() == "weights"
    definition = run.get_details()["runDefinition"]
    assert (definition["script"], definition["arguments"], definition["target"]) == \
        ("train.py", ["--epochs", 2], CLUSTER)
    assert definition["environment"]["name"] == "host-python"
    assert definition["environmentVariables"] == {"GREETING": "hello"}
    shown = runs_show(emulator, run.id)
    assert shown.returncode == 0, shown.stderr
    record = json.loads(shown.stdout)
    assert (record["id"], record["status"], record["experiment"], record["compute"],
            record["executor"]) == (run.id, "Completed", "submitted", CLUSTER, "process")


def test_a_failing_script_ends_failed_with_its_error(emulator, workspace, zip_submission, tmp_path):
    source = write_script(tmp_path / "src", "train.py",
                          "print('about to fail')\nraise SystemExit('the data is not there')\n")
    run = Experiment(workspace, "submitted").submit(script_config(source, host_python()))
    with pytest.raises(ActivityFailedException, match="exited with code 1"):
        run.wait_for_completion(show_output=True)
    assert run.get_status() == "Failed"
    assert "the data is not there" in run.get_details()["error"]["error"]["message"]


def test_cancel_during_running_cancels_the_local_run(emulator, workspace, zip_submission,
                                                     tmp_path):
    source = write_script(tmp_path / "src", "train.py",
                          "import time\nprint('started', flush=True)\ntime.sleep(120)\n")
    run = Experiment(workspace, "submitted").submit(script_config(source, host_python()))
    deadline = time.monotonic() + 120
    while run.get_status() != "Running":
        assert time.monotonic() < deadline, run.get_status()
        time.sleep(0.2)
    run.cancel()
    details = run.wait_for_completion(show_output=False, raise_on_error=False)
    assert details["status"] == "Canceled"


def test_what_is_not_emulated_is_refused_naming_it_and_nothing_is_created(
        emulator, workspace, zip_submission, tmp_path):
    source = write_script(tmp_path / "src", "train.py", "print('never runs')\n")
    environment = Environment("needs-conda")
    environment.python.conda_dependencies.add_conda_package("mkl=2023.1")
    store = RunStore(emulator.home)
    before = {record["id"] for record in store.list_runs()}
    with pytest.raises(ExperimentExecutionException, match=r"conda packages \(mkl=2023\.1\)"):
        Experiment(workspace, "submitted").submit(script_config(source, environment))
    config = script_config(source, host_python())
    # (An MPI or PyTorch job is a distributed run; TensorFlow's parameter servers are not emulated.)
    config.run_config.communicator = "ParameterServer"
    with pytest.raises(ExperimentExecutionException, match="ParameterServer communicator"):
        Experiment(workspace, "submitted").submit(config)
    config = script_config(source, host_python())
    config.run_config.target = "no-such-cluster"
    with pytest.raises(ExperimentExecutionException, match="no-such-cluster"):
        Experiment(workspace, "submitted").submit(config)
    assert {record["id"] for record in store.list_runs()} == before


def test_a_run_id_that_is_taken_is_refused_and_that_run_is_left_whole(
        emulator, workspace, zip_submission, tmp_path):
    source = write_script(tmp_path / "src", "train.py", SCRIPT)
    first = Experiment(workspace, "submitted").submit(script_config(source, host_python()))
    first.wait_for_completion()
    with pytest.raises(ExperimentExecutionException, match="already exists"):
        Experiment(workspace, "submitted").submit(script_config(source, host_python()),
                                                  run_id=first.id)
    assert "outputs/x.txt" in first.get_file_names()
    assert first.get_metrics() == {"Accuracy": [0.5, 0.75]}


def post_project(emulator, zip_bytes, run_id="submitted_1_abcdef01"):
    """startrun as azureml-core sends it, with a project zip of the test's making."""
    definition = {"Configuration": {"script": "train.py", "target": CLUSTER,
                                    "environment": {"name": "x", "python": {
                                        "userManagedDependencies": True}}}}
    return requests.post(
        f"{emulator.endpoint}/execution/v1.0{WS_PATH}/experiments/submitted/startrun",
        params={"runId": run_id}, headers=amlocal.emulator.auth().get_authentication_header(),
        files=[("runDefinitionFile", ("definition.json", json.dumps(definition))),
               ("projectZipFile", ("project.zip", zip_bytes))], timeout=60)


def zip_of(*members):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for info, data in members:
            archive.writestr(info, data)
    return buffer.getvalue()


def symlink_member(name, target):
    info = zipfile.ZipInfo(name)
    info.external_attr = (0o120777 << 16)
    return info, target


@pytest.mark.parametrize("members, refusal", [
    ([("../escaped.py", "x")], "outside the project folder"),
    ([("/etc/escaped.py", "x")], "outside the project folder"),
    ([symlink_member("train.py", "/etc/passwd")], "symbolic link"),
    ([("train.py", "a"), ("train.py", "b")], "twice"),
])
def test_a_project_zip_that_reaches_outside_is_refused(emulator, workspace, members, refusal):
    answer = post_project(emulator, zip_of(*members))
    assert answer.status_code == 400, answer.text
    assert refusal in answer.json()["error"]["message"]
    assert not (emulator.home / "emulator" / "escaped.py").exists()
    with pytest.raises(Exception):
        RunStore(emulator.home).get_status("submitted_1_abcdef01")


def test_an_environment_asking_pip_for_chainer_is_built_on_the_chainer_recipe():
    # As Environment._to_spec does for amlocal's own SDK shapes: pip's chainer 7.8.1 would come
    # with NumPy 2, where it does not import.
    def asking(*pip):
        return {"name": "c", "python": {"condaDependencies": {"dependencies": [
            "python=3.6.2", {"pip": list(pip)}]}}}

    local = local_environment(asking("chainer==7.8.1", "pytest"))
    assert (local.spec.recipe, local.spec.pip_packages) == ("chainer", ("pytest",))
    assert "built on amlocal's chainer recipe" in "\n".join(local.spec.build_notes)
    with pytest.raises(ServiceError, match=r"chainer==5.1.0: amlocal builds chainer 7.8.1 only"):
        local_environment(asking("chainer==5.1.0"))


def test_a_zip_bomb_is_refused_before_it_is_unpacked(tmp_path):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("train.py", b"\0" * (64 << 20))
    with pytest.raises(ServiceError, match="zip bomb"):
        unpack_project(buffer.getvalue(), tmp_path / "project")
    assert not any((tmp_path / "project").rglob("*"))


def test_azure_images_map_to_the_local_base_and_conda_only_packages_are_refused():
    environment = {"name": "AzureML-sklearn", "python": {"condaDependencies": {"dependencies": [
        "python=3.8.13", "pip", {"pip": ["scikit-learn==1.0", "--extra-index-url https://x/"]}]}},
        "docker": {"baseImage": "mcr.microsoft.com/azureml/openmpi4.1.0-ubuntu20.04:1"},
        "environmentVariables": {"A": "1"}}
    local = local_environment(environment)
    assert (local.executor, local.spec.recipe, local.spec.base_image, local.spec.pip_packages,
            local.variables) == ("docker", "python", None, ("scikit-learn==1.0",), {"A": "1"})
    notes = "\n".join(local.spec.build_notes)
    for said in ("curated", "cannot be pulled here", "Ubuntu 20.04 there, Debian 12 here",
                 "Open MPI 4.1.0 there", "Python 3.8.13 there", "--extra-index-url"):
        assert said in notes

    own_image = local_environment({"name": "i", "docker": {"baseImage": "pytorch/pytorch:2"}})
    assert own_image.spec.base_image == "pytorch/pytorch:2"
    dockerfile = local_environment({"name": "d", "python": {"userManagedDependencies": True},
                                    "docker": {"baseDockerfile": "FROM scratch\n"}})
    assert (dockerfile.executor, dockerfile.spec.dockerfile) == ("docker", "FROM scratch\n")
    with pytest.raises(ServiceError, match=r"conda packages \(conda-forge::mkl\)"):
        local_environment({"name": "c", "python": {"condaDependencies": {"dependencies": [
            "python=3.10", "conda-forge::mkl"]}}})


@pytest.mark.docker
def test_a_pip_requirements_environment_is_built_on_the_local_base_in_docker(
        emulator, workspace, zip_submission, docker_client, tmp_path, capsys):
    source = write_script(tmp_path / "src", "train.py", SCRIPT)
    requirements = tmp_path / "requirements.txt"
    requirements.write_text("# nothing: the local base has what the script needs\n")
    environment = Environment.from_pip_requirements("pip-env", str(requirements))
    run = Experiment(workspace, "submitted-docker").submit(script_config(source, environment))
    details = run.wait_for_completion(show_output=True)

    printed = capsys.readouterr().out
    assert details["status"] == "Completed", details.get("error")
    assert "the script ends with GREETING hello" in printed
    assert run.get_metrics() == {"Accuracy": [0.5, 0.75]}
    assert "outputs/x.txt" in run.get_file_names()
    record = json.loads(runs_show(emulator, run.id).stdout)
    assert record["executor"] == "docker"
    build_log = (RunStore(emulator.home).run_dir(run.id) / BUILD_LOG).read_text()
    assert "Azure's base image mcr.microsoft.com/azureml/" in build_log
    assert "the base's 3.11 here" in build_log


def test_creating_a_run_under_a_taken_id_leaves_the_existing_run_folder(amlocal_home):
    store = RunStore(amlocal_home)
    fill = lambda folder: folder.mkdir()  # noqa: E731
    run_id = store.create_run(experiment="e", executor="process", compute="local", spec={},
                              fill_snapshot=fill, run_id="e_1_abcdef01")
    (store.run_dir(run_id) / "outputs" / "model.txt").write_text("weights")
    with pytest.raises(Exception):
        store.create_run(experiment="e", executor="process", compute="local", spec={},
                         fill_snapshot=fill, run_id=run_id)
    assert (store.run_dir(run_id) / "outputs" / "model.txt").read_text() == "weights"
    with pytest.raises(UserInputError, match="already exists"):
        store.check_new_run_id(run_id)
    with pytest.raises(UserInputError, match="invalid run id"):
        store.check_new_run_id("../elsewhere")


def test_a_run_submitted_with_its_snapshot_runs_from_it(emulator, workspace, monkeypatch,
                                                        tmp_path, capsys):
    """snapshotrun: azureml-core uploads the snapshot, then names it (no zip)."""
    monkeypatch.delenv("AML_FORCE_EXECUTE_WITH_ZIP", raising=False)
    source = write_script(tmp_path / "src", "train.py", SCRIPT)
    run = Experiment(workspace, "submitted").submit(script_config(source, host_python()))
    assert run.wait_for_completion(show_output=True)["status"] == "Completed"
    assert "the script ends with GREETING hello" in capsys.readouterr().out
    assert run.get_metrics() == {"Accuracy": [0.5, 0.75]}
    assert run.get_details()["properties"]["ContentSnapshotId"]
    assert "snapshotrun" in emulator.request_log() and "getblob" in emulator.request_log()


def test_a_data_reference_to_the_datastore_is_an_input_of_the_run(
        emulator, workspace, zip_submission, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "digits.txt").write_text("0 1 2\n")
    datastore = workspace.get_default_datastore()
    datastore.upload(src_dir=str(data), target_path="inputs/digits", overwrite=True)
    source = write_script(tmp_path / "src", "train.py", """\
import os, sys
folder = sys.argv[sys.argv.index("--data") + 1]
print("read", open(os.path.join(folder, "digits.txt")).read().strip())
print("same", folder == os.environ["AZUREML_DATAREFERENCE_digits"])
""")
    config = script_config(source, host_python(),
                           arguments=["--data", "$AZUREML_DATAREFERENCE_digits"])
    config.run_config.data_references = {"digits": DataReferenceConfiguration(
        datastore_name=datastore.name, mode="mount", path_on_datastore="inputs/digits")}
    run = Experiment(workspace, "submitted").submit(config)
    run.wait_for_completion()
    log = run.get_details_with_logs()["logFiles"]["azureml-logs/70_driver_log.txt"]
    assert "read 0 1 2" in log and "same True" in log
