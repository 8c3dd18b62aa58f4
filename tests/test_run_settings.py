"""Tests for the pure run builders: backends/local/run_settings.py and RunSpec in backends/base.py."""

from dataclasses import replace
from pathlib import Path

import pytest

from amlocal.backends.base import EnvironmentSpec, RunSpec, substitute_data_references
from amlocal.backends.local.jobs import LocalRun
from amlocal.backends.local.run_settings import container_settings, process_settings
from amlocal.errors import UserInputError

RUN_ID = "mnist_1700000000_0a1b2c3d"
EXPERIMENT = "mnist"
# Arguments as a user writes them: the input references alone, with braces, and inside a larger
# argument, next to plain arguments that must pass through untouched.
ARGUMENTS = (
    "--data=$AZUREML_DATAREFERENCE_train",
    "--labels", "${AZUREML_DATAREFERENCE_labels}",
    "--pair=${AZUREML_DATAREFERENCE_train}/images:$AZUREML_DATAREFERENCE_labels",
    "--epochs", "3",
    "--note=$HOME stays",
)


def run_of(run_dir, script="train.py", arguments=(), inputs=None, **spec_fields):
    """The run an executor is given: a spec (only the fields the settings read) in a folder."""
    spec = RunSpec(source_dir=Path("/src"), script=script, arguments=arguments,
                   inputs=inputs or {}, **spec_fields)
    return LocalRun(id=RUN_ID, experiment=EXPERIMENT, spec=spec, run_dir=Path(run_dir))


# -- container_settings ----------------------------------------------------------------------

def test_container_settings_for_a_run_with_two_inputs():
    run = run_of("/home/u/.amlocal/runs/" + RUN_ID, arguments=ARGUMENTS,
                 inputs={"train": Path("/data/mnist/train"), "labels": Path("/data/mnist/labels")})
    settings = container_settings(
        run, image="amlocal/chainer:0123456789abcdef", working_dir="/home/u/.amlocal/runs/wd",
        runtime_dir="/opt/amlocal/runtime", user="1000:1000")

    run_dir = "/home/u/.amlocal/runs/" + RUN_ID
    assert settings == {
        "image": "amlocal/chainer:0123456789abcdef",
        "command": [
            "python", "-I", "-S", "/amlocal/runtime/amlocal_launch.py",
            "--output", "/amlocal/output/script_output.txt", "--",
            "python", "train.py",
            "--data=/amlocal/inputs/train",
            "--labels", "/amlocal/inputs/labels",
            "--pair=/amlocal/inputs/train/images:/amlocal/inputs/labels",
            "--epochs", "3",
            "--note=$HOME stays",
        ],
        "working_dir": "/amlocal/wd",
        "environment": {
            "AZUREML_RUN_ID": RUN_ID,
            "AZUREML_ARM_PROJECT_NAME": EXPERIMENT,
            "AZUREML_ARM_WORKSPACE_NAME": "local",
            "AZUREML_OUTPUT_DIRECTORY": "./outputs",
            "AZUREML_DATAREFERENCE_labels": "/amlocal/inputs/labels",
            "AZUREML_DATAREFERENCE_train": "/amlocal/inputs/train",
            "AMLOCAL_TELEMETRY_FILE": "/amlocal/telemetry/events.jsonl",
            "PYTHONPATH": "/amlocal/runtime",
            "PYTHONUNBUFFERED": "1",
            "HOME": "/tmp",
        },
        "mounts": [
            {"Type": "bind", "Source": "/home/u/.amlocal/runs/wd", "Target": "/amlocal/wd",
             "ReadOnly": False},
            {"Type": "bind", "Source": f"{run_dir}/outputs", "Target": "/amlocal/wd/outputs",
             "ReadOnly": False},
            {"Type": "bind", "Source": f"{run_dir}/logs", "Target": "/amlocal/wd/logs",
             "ReadOnly": False},
            {"Type": "bind", "Source": f"{run_dir}/telemetry", "Target": "/amlocal/telemetry",
             "ReadOnly": False},
            {"Type": "bind", "Source": "/opt/amlocal/runtime", "Target": "/amlocal/runtime",
             "ReadOnly": True},
            {"Type": "bind", "Source": f"{run_dir}/driver_output", "Target": "/amlocal/output",
             "ReadOnly": False},
            {"Type": "bind", "Source": "/data/mnist/labels", "Target": "/amlocal/inputs/labels",
             "ReadOnly": True},
            {"Type": "bind", "Source": "/data/mnist/train", "Target": "/amlocal/inputs/train",
             "ReadOnly": True},
        ],
        "log_config": {"Type": "none", "Config": {}},
        "network_mode": "none",
        "init": True,
        "labels": {"amlocal.run_id": RUN_ID},
        "name": f"amlocal-{RUN_ID}",
        "detach": True,
        "user": "1000:1000",
        "security_opt": ["no-new-privileges"],
        "pids_limit": 2048,
        "cap_drop": ["ALL"],
        "read_only": True,
        "tmpfs": {"/tmp": "rw,exec,nosuid,nodev,mode=1777"},
    }


def test_container_settings_without_user_or_inputs_run_as_the_image_user():
    settings = container_settings(run_of("/r", script="sub/train.py"), image="img",
                                  working_dir="/w", runtime_dir="/rt")

    assert "user" not in settings
    assert settings["command"][-3:] == ["--", "python", "sub/train.py"]
    assert [m["Target"] for m in settings["mounts"]] == [
        "/amlocal/wd", "/amlocal/wd/outputs", "/amlocal/wd/logs", "/amlocal/telemetry",
        "/amlocal/runtime", "/amlocal/output"]
    assert not any(name.startswith("AZUREML_DATAREFERENCE_") for name in settings["environment"])


def test_container_settings_for_a_run_as_root_keep_no_new_privileges_and_the_pids_limit():
    def settings(**spec_fields):
        return container_settings(run_of("/r", **spec_fields), image="img", working_dir="/w",
                                  runtime_dir="/rt", user="0:0")

    confined, as_root = settings(), settings(run_as_root=True)

    assert {key: value for key, value in confined.items()
            if key not in ("cap_drop", "read_only", "tmpfs")} == as_root
    assert as_root["security_opt"] == ["no-new-privileges"] and as_root["pids_limit"] == 2048


# -- process_settings ------------------------------------------------------------------------

def make_process_settings(base_environment, arguments=ARGUMENTS):
    run = run_of("/h/runs/r1", arguments=arguments,
                 inputs={"train": Path("/data/mnist/train"), "labels": Path("/data/mnist/labels")})
    return process_settings(run, python="/usr/bin/python3", working_dir=Path("/h/runs/r1/wd"),
                            runtime_dir=Path("/opt/amlocal/runtime"),
                            base_environment=base_environment)


def test_process_settings_use_host_paths_and_keep_the_inherited_pythonpath_after_the_runtime():
    base = {"PATH": "/usr/bin", "PYTHONPATH": "/opt/site:/opt/more", "AZUREML_RUN_ID": "stale",
            "LC_ALL": "C.UTF-8", "https_proxy": "http://proxy:3128",
            "AWS_SECRET_ACCESS_KEY": "fake", "AMLOCAL_STOP_GRACE_S": "5", "GITHUB_TOKEN": "fake"}
    given = dict(base)

    settings = make_process_settings(base)

    assert settings == {
        "args": [
            "/usr/bin/python3", "-I", "-S", "/opt/amlocal/runtime/amlocal_launch.py",
            "--output", "/h/runs/r1/driver_output/script_output.txt",
            "--exit-status", "/h/runs/r1/driver_output/exit_status", "--",
            "/usr/bin/python3", "train.py",
            "--data=/data/mnist/train",
            "--labels", "/data/mnist/labels",
            "--pair=/data/mnist/train/images:/data/mnist/labels",
            "--epochs", "3",
            "--note=$HOME stays",
        ],
        "cwd": "/h/runs/r1/wd",
        "env": {
            "PATH": "/usr/bin",
            "LC_ALL": "C.UTF-8",
            "https_proxy": "http://proxy:3128",
            "AZUREML_RUN_ID": RUN_ID,
            "AZUREML_ARM_PROJECT_NAME": EXPERIMENT,
            "AZUREML_ARM_WORKSPACE_NAME": "local",
            "AZUREML_OUTPUT_DIRECTORY": "./outputs",
            "AZUREML_DATAREFERENCE_labels": "/data/mnist/labels",
            "AZUREML_DATAREFERENCE_train": "/data/mnist/train",
            "AMLOCAL_TELEMETRY_FILE": "/h/runs/r1/telemetry/events.jsonl",
            "PYTHONPATH": "/opt/amlocal/runtime:/opt/site:/opt/more",
            "PYTHONUNBUFFERED": "1",
        },
    }
    assert base == given, "the caller's environment must not change"


@pytest.mark.parametrize("inherited", [{}, {"PYTHONPATH": ""}])
def test_process_settings_without_an_inherited_pythonpath_put_only_the_runtime_on_it(inherited):
    settings = make_process_settings({"PATH": "/usr/bin", **inherited})

    assert settings["env"]["PYTHONPATH"] == "/opt/amlocal/runtime"


def test_a_pythonpath_given_for_the_run_goes_after_the_runtime_and_before_the_inherited_one():
    def pythonpath(settings):
        return (settings.get("env") or settings["environment"])["PYTHONPATH"]

    in_process = process_settings(
        run_of("/r", environment_variables={"PYTHONPATH": "src:lib"}), python="python3",
        working_dir=Path("/w"), runtime_dir=Path("/rt"),
        base_environment={"PYTHONPATH": "/inherited"})
    in_container = container_settings(
        run_of("/r", environment_variables={"PYTHONPATH": "src"}), image="img", working_dir="/w",
        runtime_dir="/rt")

    assert pythonpath(in_process) == "/rt:src:lib:/inherited"
    assert pythonpath(in_container) == "/amlocal/runtime:src"


# -- data references in arguments --------------------------------------------------------------

@pytest.mark.parametrize("argument, expected", [
    ("$AZUREML_DATAREFERENCE_x", "/in/x"),
    ("${AZUREML_DATAREFERENCE_x}", "/in/x"),
    ("--data=$AZUREML_DATAREFERENCE_x", "--data=/in/x"),
    ("--data=${AZUREML_DATAREFERENCE_x}/train.csv", "--data=/in/x/train.csv"),
    ("$AZUREML_DATAREFERENCE_x,$AZUREML_DATAREFERENCE_y_2", "/in/x,/in/y_2"),
    ("$AZUREML_OUTPUT_DIRECTORY", "$AZUREML_OUTPUT_DIRECTORY"),
])
def test_substitute_data_references(argument, expected):
    assert substitute_data_references([argument], {"x": "/in/x", "y_2": "/in/y_2"}) == [expected]


def test_a_brace_that_is_not_part_of_the_reference_is_kept():
    # As a shell expands $AZUREML_DATAREFERENCE_x on Azure: only ${...} braces belong to it.
    assert substitute_data_references(["{$AZUREML_DATAREFERENCE_x}"], {"x": "/in/x"}) == ["{/in/x}"]


# -- RunSpec.validated ---------------------------------------------------------------------------

@pytest.fixture
def project(tmp_path):
    """A source folder with a script, an input folder, and a file outside the source folder."""
    source = tmp_path / "src"
    (source / "sub").mkdir(parents=True)
    (source / "train.py").write_text("print('hi')\n")
    (source / "sub" / "train.py").write_text("print('hi')\n")
    (tmp_path / "data").mkdir()
    (tmp_path / "outside.py").write_text("print('out')\n")
    return tmp_path


def spec_in(project, **changes):
    good = RunSpec(source_dir=project / "src", script="train.py",
                   arguments=("--data", "$AZUREML_DATAREFERENCE_mnist"),
                   inputs={"mnist": project / "data"})
    return replace(good, **changes)


@pytest.mark.parametrize("changes, message", [
    ({"source_dir": "missing-folder"}, r"source folder not found: .*missing-folder"),
    ({"script": "nope.py"}, r"script nope.py not found in .*src"),
    ({"script": "sub"}, r"script sub not found in"),
    ({"script": "../outside.py"}, r"script \.\./outside\.py is outside the source folder"),
    ({"script": "sub/../../outside.py"}, r"is outside the source folder"),
    ({"experiment": "bad name"}, r"invalid experiment name 'bad name'"),
    ({"experiment": "_leading"}, r"invalid experiment name '_leading'"),
    ({"experiment": ""}, r"invalid experiment name ''"),
    ({"experiment": "x" * 256}, r"invalid experiment name"),
    ({"inputs": {"": "data"}, "arguments": ()}, r"invalid input name ''"),
    ({"inputs": {"my-data": "data"}, "arguments": ()}, r"invalid input name 'my-data'"),
    ({"inputs": {"mnist": "no/such/path"}}, r"input mnist: path does not exist: no/such/path"),
    ({"arguments": ("--data=${AZUREML_DATAREFERENCE_other}",)},
     r"refers to input 'other', which is not given \(add --input other=PATH\)"),
    ({"executor": "kubernetes"}, r"unknown executor 'kubernetes': use one of docker, process"),
])
def test_validated_rejects_bad_input_naming_the_problem(project, monkeypatch, changes, message):
    monkeypatch.chdir(project)  # relative input paths are taken from the current folder
    with pytest.raises(UserInputError, match=message):
        spec_in(project, **changes).validated()


@pytest.mark.parametrize("experiment", ["a", "Mnist-2024_v1", "0" + "x" * 254])
def test_validated_accepts_azure_ml_experiment_names(project, experiment):
    assert spec_in(project, experiment=experiment).validated().experiment == experiment


def test_validated_normalises_a_good_spec(project, monkeypatch):
    monkeypatch.chdir(project)
    spec = RunSpec(
        source_dir="src", script="./sub//../sub/train.py",
        arguments=["--data", "${AZUREML_DATAREFERENCE_mnist}", "--epochs", "2"],
        experiment="mnist-1", inputs={"mnist": "data"},
        environment=EnvironmentSpec(recipe="chainer", pip_packages=["pandas"]),
        executor="process", tags={"team": "vision"})

    assert spec.validated() == RunSpec(
        source_dir=project / "src", script="sub/train.py",
        arguments=("--data", "${AZUREML_DATAREFERENCE_mnist}", "--epochs", "2"),
        experiment="mnist-1", inputs={"mnist": project / "data"},
        environment=EnvironmentSpec(recipe="chainer", pip_packages=("pandas",)),
        executor="process", compute="local", tags={"team": "vision"})


def test_validated_expands_the_home_folder(project, monkeypatch):
    monkeypatch.setenv("HOME", str(project))

    spec = spec_in(project, source_dir="~/src", inputs={"mnist": "~/data"}).validated()

    assert spec.source_dir == project / "src"
    assert spec.inputs == {"mnist": project / "data"}


def test_validated_turns_non_string_arguments_into_strings(project):
    # validated() ends with str(argument) for every argument, as Azure ML accepts ['--epochs', 5].
    spec = spec_in(project, arguments=("--epochs", 5), inputs={}).validated()

    assert spec.arguments == ("--epochs", "5")


@pytest.mark.parametrize("executor", [None, "docker"])
def test_run_as_root_is_refused_to_a_submitter_who_is_not_root(project, monkeypatch, executor):
    # Files a root script writes could not be chowned back by a non-root amlocal.
    monkeypatch.setattr("os.getuid", lambda: 1000)

    with pytest.raises(UserInputError, match=r"^--run-as-root needs amlocal itself to run as root"):
        spec_in(project, run_as_root=True, executor=executor).validated()
    assert spec_in(project, run_as_root=True, executor="process").validated().run_as_root
