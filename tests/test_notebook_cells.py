"""The Azure Chainer notebook's own cells, with `azureml` changed to `amlocal` in the imports
(issue 13, item 5): the workspace's names print, diagnostics are accepted, conda specifications
round-trip through files and build with pip, Azure's base images map to the local base, and
RunDetails shows a run."""

import json
from pathlib import Path

import pytest

from amlocal.core import Environment, Experiment, ScriptRunConfig, Workspace
from amlocal.core.runconfig import CondaDependencies, DockerConfiguration
from amlocal.errors import UserInputError
from amlocal.widgets import RunDetails
from conftest import write_script

AZURE_GPU_IMAGE = "mcr.microsoft.com/azureml/openmpi3.1.2-cuda10.1-cudnn7-ubuntu18.04"


@pytest.fixture
def ws(amlocal_home):
    return Workspace.from_config(path=str(amlocal_home))


def test_the_first_cell_prints_the_workspace_names_as_strings(ws, capsys):
    from amlocal.telemetry import set_diagnostics_collection

    set_diagnostics_collection(send_diagnostics=True)
    print("Workspace name: " + ws.name, "Azure region: " + ws.location,
          "Subscription id: " + ws.subscription_id, "Resource group: " + ws.resource_group,
          sep="\n")

    captured = capsys.readouterr()
    assert "Workspace name: local\nAzure region: local\n" in captured.out
    assert "Resource group: amlocal" in captured.out
    assert "nothing is sent" in captured.err


def test_the_local_names_are_the_local_workspace_again(ws, tmp_path):
    # Code that rebuilds the workspace from its names, or from the config it wrote, stays local.
    again = Workspace(ws.subscription_id, ws.resource_group, ws.name)
    assert again._home == ws._home and not getattr(again, "_azure_config", None)
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"subscription_id": ws.subscription_id,
                                  "resource_group": ws.resource_group, "workspace_name": ws.name}))
    assert not getattr(Workspace.from_config(path=str(config)), "_azure_config", None)
    written = ws.write_config(path=str(tmp_path / "project"))
    assert Workspace.from_config(path=written).name == "local"


def test_primary_metric_goal_is_where_the_notebook_imports_it():
    from amlocal.train.hyperdrive.run import PrimaryMetricGoal
    from amlocal.train.hyperdrive.runconfig import PrimaryMetricGoal as defined

    assert PrimaryMetricGoal is defined and PrimaryMetricGoal.MAXIMIZE.name == "MAXIMIZE"


def test_a_conda_specification_round_trips_through_its_file(tmp_path):
    created = CondaDependencies.create(pip_packages=["numpy", "chainer==7.8.1"],
                                       python_version="3.11")
    created.add_channel("conda-forge")
    path = tmp_path / "myenv.yml"
    path.write_text(created.serialize_to_string())

    env = Environment.from_conda_specification(name="myenv", file_path=str(path))
    read = env.python.conda_dependencies

    assert read.pip_packages == ["numpy", "chainer==7.8.1"]
    assert read.get_python_version() == "3.11" and read.conda_channels == ["conda-forge"]
    saved = Path(read.save_to_file(str(tmp_path / "out"), "again.yml"))
    assert saved.read_text() == path.read_text()
    assert env._to_spec().pip_packages == ("numpy",)  # chainer is the chainer recipe's


def test_an_environment_asking_for_chainer_is_built_on_the_chainer_recipe(tmp_path):
    # Chainer 7.8.1 is an sdist that plain `pip install` cannot build (docker/chainer says why):
    # the notebook's conda file, which lists it under pip, gets the recipe that builds it.
    spec = tmp_path / "conda.yml"
    spec.write_text("dependencies:\n- python=3.11\n- pip:\n  - chainer==7.8.1\n  - six\n")
    built = Environment.from_conda_specification("chainer-env", str(spec))._to_spec()
    assert (built.recipe, built.pip_packages) == ("chainer", ("six",))
    assert "built on amlocal's chainer recipe, which installs chainer==7.8.1" in built.build_notes[0]

    bare = CondaDependencies.create(pip_packages=["Chainer>=7"])
    env = Environment("any-chainer")
    env.python.conda_dependencies = bare
    assert env._to_spec().recipe == "chainer" and env._to_spec().pip_packages == ()
    spec.write_text("dependencies:\n- pip:\n  - chainer==5.1.0\n")
    with pytest.raises(UserInputError, match=r"asks for chainer==5.1.0: amlocal builds chainer "
                                             r"7.8.1 only \(docker/chainer\)"):
        Environment.from_conda_specification("old-chainer", str(spec))._to_spec()
    spec.write_text("dependencies:\n- pip:\n  - chainer==\n")
    with pytest.raises(UserInputError, match="'chainer==' is not a pip requirement"):
        Environment.from_conda_specification("typo", str(spec))._to_spec()


def test_conda_only_packages_and_bad_files_are_refused_in_one_line(tmp_path):
    spec = tmp_path / "conda.yml"
    spec.write_text("name: e\ndependencies:\n- python=3.6.2\n- scipy=1.5\n- pip:\n  - six\n")
    env = Environment.from_conda_specification("needs-scipy", str(spec))
    with pytest.raises(UserInputError, match=r"asks for conda packages \(scipy=1.5\)"):
        env._to_spec()

    spec.write_text("dependencies: [\n")
    with pytest.raises(UserInputError, match="is not valid YAML"):
        Environment.from_conda_specification("broken", str(spec))
    spec.write_text("dependencies:\n- pip: six\n")
    with pytest.raises(UserInputError, match="pip entry must be a list"):
        Environment.from_conda_specification("broken", str(spec))
    with pytest.raises(UserInputError, match="cannot read the conda specification"):
        Environment.from_conda_specification("missing", str(tmp_path / "nowhere.yml"))


def test_an_azure_base_image_builds_on_the_local_base_and_the_build_log_says_so(ws, tmp_path):
    spec = tmp_path / "conda.yml"
    spec.write_text("name: chainer\nchannels: [conda-forge]\ndependencies:\n- python=3.6.2\n"
                    "- pip:\n  - --index-url https://example.invalid/simple\n")
    env = Environment.from_conda_specification("chainer-env", str(spec))
    env.docker.base_image = AZURE_GPU_IMAGE
    assert env._to_spec().base_image is None  # the local base, not a pull that cannot work
    source = write_script(tmp_path / "src", "train.py", "print('trained')\n")

    run = Experiment(ws, "cells").submit(ScriptRunConfig(
        source_directory=str(source), script="train.py", arguments=["--epochs", 1],
        environment=env, docker_runtime_config=DockerConfiguration(use_docker=False)))
    run.wait_for_completion()

    with run._handle.open_file("azureml-logs/20_image_build_log.txt") as handle:
        build_log = handle.read().decode()
    assert f"Azure's base image {AZURE_GPU_IMAGE} cannot be pulled here" in build_log
    assert "Ubuntu 18.04 there, Debian 12 here" in build_log
    assert "Python 3.6.2 there (the conda specification's)" in build_log
    assert "pip options (--index-url https://example.invalid/simple) are not used" in build_log
    assert run.get_details()["runDefinition"]["arguments"] == ["--epochs", "1"]


def test_run_details_shows_a_run_as_text_and_as_html(ws, tmp_path, capsys):
    source = write_script(tmp_path / "src", "train.py", """
from azureml.core.run import Run
run = Run.get_context()
for value in (0.5, 0.75):
    run.log("Accuracy", value)
run.log("label", "<b>bold</b>")
""")
    run = Experiment(ws, "cells").submit(ScriptRunConfig(
        source_directory=str(source), script="train.py",
        docker_runtime_config=DockerConfiguration(use_docker=False)))
    run.wait_for_completion()

    summary = RunDetails(run).show()  # not a notebook: plain text
    printed = capsys.readouterr().out

    assert summary["status"] == "Completed" and summary["metrics"]["Accuracy"] == 0.75
    assert f"Run {run.id} (experiment cells): Completed" in printed and "Accuracy: 0.75" in printed
    page = RunDetails._html(summary, "/tmp/report/index.html")
    assert "&lt;b&gt;bold&lt;/b&gt;" in page and "<b>bold</b>" not in page
    assert 'href="file:///tmp/report/index.html"' in page
    report = RunDetails(run)._write_report()
    assert Path(report).read_text().count(run.id) >= 1
