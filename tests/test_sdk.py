"""The Azure ML SDK v1 shape, end to end: submit from Python, log everything from the script,
read it back through get_metrics, the CLI and the report; the how-to's walkthrough on both
executors."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from amlocal.core import Environment, Experiment, ScriptRunConfig, Workspace
from amlocal.core.runconfig import DockerConfiguration
from amlocal.exceptions import ActivityFailedException
from amlocal.errors import UserInputError
from conftest import MNIST_DIR, REPO, write_script
from test_cli import invoke, last_json

EVERY_METHOD = """
import os, tempfile
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt
from azureml.core.run import Run

run = Run.get_context()
for epoch, accuracy in enumerate([0.5, 0.75, 0.875]):
    run.log("accuracy", accuracy, description="test accuracy", step=epoch)
run.log("learning rate", 0.01)
run.log_list("losses", [0.9, 0.5, 0.25])
run.log_row("per class", label="cat", precision=0.75)
run.log_row("per class", label="dog", precision=0.5)
run.log_table("confusion counts", {"true": [0, 1], "predicted": [0, 0]})
figure = plt.figure()
plt.plot([1, 2, 3], [3, 1, 2])
run.log_image("loss curve", plot=plt)
with open("digit.png", "wb") as handle:
    figure.savefig(handle, format="png")
run.log_image("digit", path="digit.png")
run.log_confusion_matrix("confusion", {"schema_type": "confusion_matrix", "schema_version": "1.0.0",
                         "data": {"class_labels": ["cat", "dog"], "matrix": [[3, 1], [0, 4]]}})
run.log_accuracy_table("accuracy table", '{"schema_type": "accuracy_table", "schema_version": "1.0.1", "data": {"probability_tables": [[[1, 0, 1, 0]]], "percentile_tables": [[[1, 0, 1, 0]]], "probability_thresholds": [0.5], "percentile_thresholds": [50], "class_labels": ["cat"]}}')
run.tag("stage", "dev")
run.set_tags({"team": "vision", "temp": "x"})
run.remove_tags(["temp"])
run.add_properties({"git_sha": "abc123"})
assert run.get_tags() == {"stage": "dev", "team": "vision"}
with open("notes.txt", "w") as handle:
    handle.write("uploaded")
run.upload_file("results/notes.txt", "notes.txt")
run.upload_files(["results/a.txt", "outputs/b.txt"], ["notes.txt", "notes.txt"])
os.makedirs("folder/sub", exist_ok=True)
open("folder/sub/c.txt", "w").write("c")
run.upload_folder("bundle", "folder")
child = run.child_run(name="fold-1")
child.log("fold accuracy", 0.8)
child.complete()
failed_child = run.child_run(name="fold-2")
failed_child.fail(error_details="diverged")
run.flush()
run.complete()
print("logged everything")
"""


@pytest.fixture
def workspace(amlocal_home):
    return Workspace.from_config(path=str(amlocal_home))


def submit(workspace, source, script="train.py", **config):
    config.setdefault("docker_runtime_config", DockerConfiguration(use_docker=False))
    run = Experiment(workspace, "sdk").submit(
        ScriptRunConfig(source_directory=str(source), script=script, **config))
    return run


@pytest.mark.parametrize("in_run_sdk", ["1", "0"], ids=["azureml-core's run", "stand-in"])
def test_every_script_side_method_lands_in_the_run(workspace, tmp_path, monkeypatch, in_run_sdk):
    # This Python has azureml-core: its own run talks to the run's emulator endpoint; with
    # AMLOCAL_IN_RUN_SDK=0 the stand-in's API writes the same into the run folder.
    monkeypatch.setenv("AMLOCAL_IN_RUN_SDK", in_run_sdk)
    source = write_script(tmp_path / "src", "train.py", EVERY_METHOD)
    run = submit(workspace, source)

    details = run.wait_for_completion()
    metrics = run.get_metrics()

    assert details["status"] == "Completed"
    assert metrics["accuracy"] == [0.5, 0.75, 0.875] and metrics["learning rate"] == 0.01
    assert metrics["losses"] == [0.9, 0.5, 0.25]
    assert metrics["per class"] == {"label": ["cat", "dog"], "precision": [0.75, 0.5]}
    assert metrics["confusion counts"] == {"true": [0, 1], "predicted": [0, 0]}
    assert metrics["confusion"]["data"]["matrix"] == [[3, 1], [0, 4]]
    assert metrics["accuracy table"]["data"]["class_labels"] == ["cat"]
    # azureml-core keeps the plot's name as given (loss curve_<time>.png), the stand-in makes
    # it a file name (loss_curve_<ms>.png).
    prefix = f"aml://artifactId/ExperimentRun/dcid.{run.id}/"
    assert metrics["loss curve"].startswith((prefix + "loss_curve_", prefix + "loss curve_"))
    assert run.get_tags() == {"stage": "dev", "team": "vision"}
    assert run.get_properties() == {"git_sha": "abc123"}
    files = run.get_file_names()
    assert {"results/notes.txt", "results/a.txt", "outputs/b.txt", "bundle/sub/c.txt"} <= set(files)
    # An image given by path keeps its file's name through azureml-core (digit.png) and gets a
    # time in the stand-in's (digit_<ms>.png).
    images = [name for name in files if name.startswith(("loss_curve_", "loss curve_", "digit"))]
    assert len(images) == 2
    run.download_file(images[0], str(tmp_path / "image.png"))
    assert (tmp_path / "image.png").read_bytes().startswith(b"\x89PNG")

    # azureml-core names a child after its parent ("<parent's name>>fold-1"), as Azure shows it.
    children = {child.display_name.rpartition(">")[2]: child for child in run.get_children()}
    assert children["fold-1"].get_status() == "Completed"
    assert children["fold-1"].get_metrics() == {"fold accuracy": 0.8}
    assert children["fold-2"].get_status() == "Failed"
    assert run.get_metrics(recursive=True)[children["fold-1"].id] == {"fold accuracy": 0.8}

    cli_metrics = last_json(invoke("runs", "metrics", run.id, "--json"))
    assert cli_metrics["accuracy"] == [0.5, 0.75, 0.875]
    assert cli_metrics["per class"] == [{"label": "cat", "precision": 0.75},
                                        {"label": "dog", "precision": 0.5}]
    report = invoke("runs", "report", run.id, "-o", tmp_path / "report")
    assert report.exit_code == 0, report.output
    html = (tmp_path / "report" / "index.html").read_text()
    for name in ("accuracy", "learning rate", "losses", "per class", "confusion counts",
                 "confusion", "accuracy table", "loss curve", "digit"):
        assert name in html
    assert html.count("data:image/png;base64,") >= 4  # curves, confusion matrix and both images


def test_wait_for_completion_streams_output_and_raises_on_failure(workspace, tmp_path, capsys):
    source = write_script(tmp_path / "src", "train.py", "print('almost there')\nraise SystemExit(7)\n")
    run = submit(workspace, source)

    with pytest.raises(ActivityFailedException) as raised:
        run.wait_for_completion(show_output=True)
    shown = capsys.readouterr().out

    assert f"RunId: {run.id}" in shown and "Streaming azureml-logs/70_driver_log.txt" in shown
    assert "almost there" in shown and "Execution Summary" in shown
    assert "train.py exited with code 7" in str(raised.value)
    assert run.get_details()["error"]["error"]["message"].startswith("train.py exited with code 7")
    assert run.wait_for_completion(raise_on_error=False)["status"] == "Failed"


def test_run_details_files_logs_and_tags_from_the_submitting_side(workspace, tmp_path):
    source = write_script(tmp_path / "src", "train.py",
                          "import os, sys\nos.makedirs('outputs/sub', exist_ok=True)\n"
                          "open('outputs/sub/w.txt', 'w').write(sys.argv[1])\n")
    run = submit(workspace, source, arguments=["--lr", 0.1])
    run.wait_for_completion()

    details = run.get_details()
    run.tag("reviewed")
    run.set_tags({"owner": "me"})
    run.add_properties({"approved": "yes"})
    with pytest.raises(UserInputError):
        run.add_properties({"approved": "no"})
    downloaded = run.download_files(prefix="outputs/", output_directory=str(tmp_path / "dl"),
                                    append_prefix=False)
    logs = run.get_all_logs(destination=str(tmp_path / "logs"))

    assert set(details) >= {"runId", "target", "status", "startTimeUtc", "endTimeUtc", "properties",
                            "inputDatasets", "outputDatasets", "runDefinition", "logFiles",
                            "submittedBy"}
    assert details["runDefinition"]["arguments"] == ["--lr", "0.1"]
    assert run.get_tags() == {"reviewed": "", "owner": "me"}
    assert downloaded == [str(tmp_path / "dl" / "sub" / "w.txt")]
    assert Path(downloaded[0]).read_text() == "--lr"
    assert any(path.endswith("azureml-logs/70_driver_log.txt") for path in logs)
    assert workspace.get_run(run.id).get_status() == "Completed"
    assert [r.id for r in Experiment(workspace, "sdk").get_runs()] == [run.id]
    assert [r.id for r in Experiment(workspace, "sdk").get_runs(tags={"owner": "me"})] == [run.id]


def test_download_files_and_get_all_logs_never_write_through_a_link_in_the_folder(workspace,
                                                                                 tmp_path):
    source = write_script(tmp_path / "src", "train.py",
                          "import os\nos.makedirs('outputs/sub', exist_ok=True)\n"
                          "open('outputs/sub/w.txt', 'w').write('weights')\n")
    run = submit(workspace, source)
    run.wait_for_completion()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    folder = tmp_path / "dl"
    folder.mkdir()
    # A link where a run file's folder would go (the run's names are the script's to choose).
    for name in ("outputs", "azureml-logs"):
        (folder / name).symlink_to(elsewhere)

    with pytest.raises(UserInputError, match="link"):
        run.download_files(prefix="outputs/", output_directory=str(folder))
    with pytest.raises(UserInputError, match="link"):
        run.get_all_logs(destination=str(folder))

    assert list(elsewhere.iterdir()) == []


def test_datastore_path_as_mount_is_a_read_only_named_input(workspace, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "rows.csv").write_text("1,2\n")
    datastore = workspace.get_default_datastore()
    datastore.upload(src_dir=str(data), target_path="tables", overwrite=True, show_progress=False)
    source = write_script(tmp_path / "src", "train.py", """
import os, sys
folder = sys.argv[2]
print("read", open(os.path.join(folder, "rows.csv")).read().strip())
print("same as env", folder == os.environ["AZUREML_DATAREFERENCE_" + sys.argv[1]])
""")
    reference = datastore.path("tables").as_mount()

    run = submit(workspace, source, arguments=[reference.data_reference_name, reference])
    run.wait_for_completion()
    log = "\n".join(Path(path).read_text() for path in run.get_all_logs(str(tmp_path / "logs"))
                    if path.endswith("70_driver_log.txt"))

    assert str(reference) == f"$AZUREML_DATAREFERENCE_{reference.data_reference_name}"
    assert "read 1,2" in log and "same as env True" in log


@pytest.mark.docker
def test_environments_from_pip_requirements_and_from_a_dockerfile(workspace, docker_client, tmp_path):
    requirements = tmp_path / "requirements.txt"
    requirements.write_text("six\n")
    source = write_script(tmp_path / "src", "train.py",
                          "import six, os\nprint('six', six.__version__, os.environ.get('FLAVOUR'))\n")
    from_requirements = Environment.from_pip_requirements("with-six", str(requirements))
    from amlocal.backends.local.images import resolve_base_image
    base, _ = resolve_base_image(docker_client)
    dockerfile = (f"FROM {base}\nRUN python3 -m venv /opt/venv && /opt/venv/bin/pip --version\n"
                  "ENV PATH=/opt/venv/bin:$PATH FLAVOUR=custom\nCOPY amlocal-pip/ /tmp/amlocal-pip/\n"
                  "RUN PIP_CONFIG_FILE=/tmp/amlocal-pip/pip.conf pip install six\n")
    from_dockerfile = Environment.from_dockerfile("custom", dockerfile)

    first = submit(workspace, source, environment=from_requirements,
                   docker_runtime_config=DockerConfiguration(use_docker=True))
    second = submit(workspace, source, environment=from_dockerfile,
                    docker_runtime_config=DockerConfiguration(use_docker=True))

    assert first.wait_for_completion()["status"] == "Completed"
    assert second.wait_for_completion()["status"] == "Completed"
    assert first._handle.get_details()["image"].startswith("amlocal/python:")
    assert second._handle.get_details()["image"].startswith("amlocal/custom:")
    second_log = (Path(second._handle.run_dir) / "azureml-logs" / "70_driver_log.txt").read_text()
    assert "custom" in second_log


def test_conda_packages_and_unsupported_configs_are_refused_clearly(workspace, tmp_path):
    env = Environment("needs-conda")
    env.python.conda_dependencies.add_conda_package("mkl")
    source = write_script(tmp_path / "src", "train.py", "print('hi')\n")

    with pytest.raises(UserInputError, match="have no conda"):
        submit(workspace, source, environment=env)
    with pytest.raises(UserInputError, match="reserved for curated environments"):
        Environment("AzureML-Minimal")
    with pytest.raises(UserInputError, match=r"command=\.\.\.\) is not supported"):
        ScriptRunConfig(source_directory=str(source), command=["python", "train.py"])


@pytest.mark.parametrize("use_docker", [True, False], ids=["docker", "process"])
def test_the_how_to_walkthrough_trains_registers_and_downloads(amlocal_home, docker_client, tmp_path,
                                                               use_docker):
    environment = dict(os.environ, AMLOCAL_ALLOW_OVERCOMMIT="1", AMLOCAL_EMULATE_GPUS="1")
    command = [sys.executable, str(REPO / "examples" / "chainer_mnist_walkthrough.py"),
               "--data-dir", str(MNIST_DIR), "--epochs", "3"] + ([] if use_docker else ["--no-docker"])

    outputs = [subprocess.run(command, cwd=tmp_path, env=environment, capture_output=True, text=True,
                              timeout=600) for _ in range(2)]

    for result in outputs:
        assert result.returncode == 0, result.stderr[-3000:]
    assert "Registered model chainer-dnn-mnist version 1" in outputs[0].stdout
    assert "Registered model chainer-dnn-mnist version 2" in outputs[1].stdout
    assert "Found existing compute target." in outputs[1].stdout
    assert "epoch 3/3" in outputs[0].stdout
    with np.load(tmp_path / "model" / "model.npz") as model:
        assert model["predictor/l1/W"].shape == (100, 784)
    accuracies = json.loads(invoke("runs", "list", "--json").stdout)
    assert all(run["status"] == "Completed" for run in accuracies)
