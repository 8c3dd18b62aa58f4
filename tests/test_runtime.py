"""Tests for the run-side API (backends/local/runtime/): what a training script gets from
`Run.get_context()` and what it writes to the run's telemetry file.

Scripts run in a real subprocess, set up as amlocal sets up a run: PYTHONPATH=<runtime dir>,
AZUREML_RUN_ID and AMLOCAL_TELEMETRY_FILE, in a Python without azureml-core (conftest's
python_without_azureml: the test Python may have the `azure` extra).
"""

import json
import os
import subprocess
import textwrap

import numpy
import pytest

from amlocal.backends.local.lifecycle import RUNTIME_DIR
from conftest import python_without_azureml

RUN_ID = "mnist_1700000000_0a1b2c3d"


def run_script(tmp_path, body, *, in_run=True, extra_path=(), extra_environment=None):
    """Run `body` as a training script; return (stdout, telemetry events without timestamps)."""
    source = tmp_path / "src"
    source.mkdir(exist_ok=True)
    (source / "train.py").write_text(textwrap.dedent(body))
    telemetry = tmp_path / "telemetry" / "events.jsonl"
    environment = {name: value for name, value in os.environ.items()
                   if name != "PYTHONPATH" and not name.startswith(("AZUREML_", "AMLOCAL_"))}
    environment["PYTHONPATH"] = os.pathsep.join([str(RUNTIME_DIR), *map(str, extra_path)])
    if in_run:
        telemetry.parent.mkdir()
        environment.update(AZUREML_RUN_ID=RUN_ID, AZUREML_ARM_PROJECT_NAME="mnist",
                           AMLOCAL_TELEMETRY_FILE=str(telemetry))
    environment.update(extra_environment or {})
    result = subprocess.run([python_without_azureml(), "train.py"], cwd=source, env=environment,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stdout, read_events(telemetry)


def read_events(telemetry):
    if not telemetry.exists():
        return []
    events = [json.loads(line) for line in telemetry.read_text().splitlines()]
    for event in events:
        assert isinstance(event.pop("t"), float)
    return events


def scalar(name, value, **extra):
    return {"kind": "metric", "name": name, "type": "scalar", "value": value, **extra}


# -- getting the run -------------------------------------------------------------------------

def test_both_azureml_imports_give_the_current_run_without_azureml_installed(tmp_path):
    stdout, events = run_script(tmp_path, """
        from azureml.core.run import Run
        from azureml.core import Run as CoreRun
        run = Run.get_context()
        assert CoreRun is Run
        assert CoreRun.get_context() is run  # one run per process
        print(run.id, run.experiment.name)
        run.log("accuracy", 0.5)
    """)

    assert stdout == f"{RUN_ID} mnist\n"
    assert events == [scalar("accuracy", 0.5)]


def test_azureml_is_really_absent_from_the_test_python():
    # The test above would prove nothing if this Python could import azureml-core itself.
    result = subprocess.run([python_without_azureml(), "-c", "import azureml"], capture_output=True,
                            env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"})
    assert result.returncode != 0


# -- what the script logs ------------------------------------------------------------------------

def test_logging_methods_write_the_matching_telemetry_events(tmp_path):
    _, events = run_script(tmp_path, """
        from azureml.core import Run
        run = Run.get_context()
        run.log("loss", 0.25, description="training loss", step=3)
        run.log("loss", 0.125, step=4)
        run.log_list("curve", [1, 2.5, "x", None, True])
        run.log_list("nothing", [])
        run.log_row("per_epoch", epoch=1, loss=0.5)
        run.log_table("confusion", {"label": [0, 1], "count": [7, 9]})
        run.tag("stage", "dev")
        run.tag("reviewed")
        run.set_tags({"team": "vision", "epochs": 2})
        run.add_properties({"git_sha": "abc123", "n": 4})
        run.fail(error_details="bad data")
        assert run.get_tags() == {"stage": "dev", "reviewed": "", "team": "vision", "epochs": "2"}
        assert run.get_properties() == {"git_sha": "abc123", "n": "4"}
    """)

    assert events == [
        scalar("loss", 0.25, description="training loss", step=3),
        scalar("loss", 0.125, step=4),
        {"kind": "metric", "name": "curve", "type": "list", "value": [1, 2.5, "x", None, True]},
        {"kind": "metric", "name": "per_epoch", "type": "row", "value": {"epoch": 1, "loss": 0.5}},
        {"kind": "metric", "name": "confusion", "type": "table",
         "value": {"label": [0, 1], "count": [7, 9]}},
        {"kind": "tags", "tags": {"stage": "dev"}},
        {"kind": "tags", "tags": {"reviewed": ""}},
        {"kind": "tags", "tags": {"team": "vision", "epochs": "2"}},
        {"kind": "properties", "properties": {"git_sha": "abc123", "n": "4"}},
        {"kind": "fail", "error": "bad data", "error_code": None},
    ]


def test_values_are_converted_as_azureml_core_converts_them(tmp_path):
    _, events = run_script(tmp_path, """
        import numpy as np
        from azureml.core import Run

        class Thing:
            def __repr__(self):
                return "Thing()"

        run = Run.get_context()
        for value in (np.float32(0.25), np.int32(7), np.bool_(True), np.float64(1.5),
                      np.uint8(3), np.str_("adam"), np.int64(7), Thing(), [1, 2], 3, "text", None):
            run.log("value", value)
    """)

    values = [event["value"] for event in events]
    assert values == [0.25, 7, True, 1.5, 3, "adam", repr(numpy.int64(7)), "Thing()", "[1, 2]", 3,
                      "text", None]
    assert [type(value) for value in values[:3]] == [float, int, bool]


@pytest.mark.parametrize("call, error", [
    ('run.log_list("curve", [1, {"a": 1}])', "Value of type <class 'dict'> is not supported"),
    ('run.log_list("curve", [numpy.int64(1)])', "Value of type <class 'numpy.int64'> is not supported"),
    ('run.log_table("t", {"a": [1, 2], "b": [1]})',
     "Columns must have the same length, column a had length 2, however, column b had length 1."),
    ('run.log_row("r", a=[1, 2])', "Rows cannot contain list values, column a contains a list."),
    ('run.log_list("curve", [2 ** 400])', "Number size of type [<class 'int'>] is out of range bits"),
    ('run.log_image("plot")', "Invalid parameters, one of path and plot is required as input"),
    ('run.log_confusion_matrix("cm", "{not json")', "Invalid JSON provided"),
    ('run.log("loss", 1, step=1); run.log("loss", 2)',
     "If step is specified for a metric it must be specified for all values"),
    ('[run.log("m%d" % i, i) for i in range(51)]', "already has 50 metric names"),
    ('run.log_row("wide", **{"c%d" % i: i for i in range(16)})', "has 16 columns"),
    ('run.set_tags({"t%d" % i: "x" for i in range(51)})', "at most 50 tags"),
    ('run.tag("k" * 101, "v")', "is over Azure ML's limit of 100 characters"),
    ('run.add_properties({"a": "1"}); run.add_properties({"a": "2"})', "cannot be changed"),
])
def test_values_azureml_rejects_raise_its_error(tmp_path, call, error):
    stdout, _events = run_script(tmp_path, f"""
        import numpy
        from azureml.core import Run
        from azureml.exceptions import AzureMLException
        run = Run.get_context()
        try:
            {call}
        except AzureMLException as raised:
            print(type(raised).__name__, raised)
    """)

    assert error in stdout and stdout.split()[0] in ("AzureMLException", "UserErrorException")


# -- outside a run -----------------------------------------------------------------------------

def test_outside_a_run_get_context_gives_an_offline_run_that_prints(tmp_path):
    stdout, events = run_script(tmp_path, """
        from azureml.core.run import Run
        run = Run.get_context()
        print(run.id)
        run.log("accuracy", 0.5)
        run.log_list("curve", [1, 2])
        run.tag("stage", "dev")
        run.complete()
        try:
            Run.get_context(allow_offline=False)
        except Exception as error:
            print(type(error).__name__, error)
    """, in_run=False)

    assert stdout == ("OfflineRun_local\n"
                      "Attempted to log scalar metric accuracy:\n0.5\n"
                      "Attempted to log list metric curve:\n[1, 2]\n"
                      "RunEnvironmentException not inside an amlocal or Azure ML run\n")
    assert events == []


# -- living with other site customisations and with azureml-core -------------------------------

def test_another_sitecustomize_later_on_the_path_still_runs(tmp_path):
    other = tmp_path / "other-site"
    other.mkdir()
    (other / "sitecustomize.py").write_text("import os\nos.environ['OTHER_SITECUSTOMIZE'] = 'ran'\n")

    stdout, events = run_script(tmp_path, """
        import os
        from azureml.core import Run
        print(os.environ.get("OTHER_SITECUSTOMIZE"))
        Run.get_context().log("accuracy", 0.5)
    """, extra_path=[other])

    assert stdout == "ran\n"
    assert events == [scalar("accuracy", 0.5)]


FAKE_AZUREML_CORE = {
    "azureml/__init__.py": "",
    "azureml/core/__init__.py": "from azureml.core.run import Run\n",
    "azureml/core/run.py": textwrap.dedent("""
        class Run:
            FROM_FAKE_AZUREML_CORE = True

            @classmethod
            def get_context(cls, allow_offline=True, used_for_context_manager=False, **kwargs):
                return "REAL"
    """),
}


def fake_azureml_core(site):
    """Write FAKE_AZUREML_CORE into the folder `site`; return it, for a run's extra path."""
    for relative, text in FAKE_AZUREML_CORE.items():
        (site / relative).parent.mkdir(parents=True, exist_ok=True)
        (site / relative).write_text(text)
    return site


def test_without_an_emulator_endpoint_only_get_context_is_redirected(tmp_path):
    # AMLOCAL_IN_RUN_SDK=0: the run has no AZUREML_SERVICE_ENDPOINT.
    site = fake_azureml_core(tmp_path / "site-packages")

    stdout, events = run_script(tmp_path, """
        import azureml.core.run
        from azureml.core import Run
        run = Run.get_context()
        print(Run is azureml.core.run.Run, Run.FROM_FAKE_AZUREML_CORE)
        print(azureml.core.run.__file__)
        print(type(run).__module__, run.id)
        run.log("accuracy", 0.5)
    """, extra_path=[site])

    assert stdout.splitlines() == [
        "True True", str(site / "azureml" / "core" / "run.py"), f"amlocal_run {RUN_ID}"]
    assert events == [scalar("accuracy", 0.5)]


def test_with_azureml_core_installed_its_own_get_context_is_left_alone(tmp_path):
    # azureml-core's Run.get_context() is the SDK's live run, talking to the run's emulator
    # endpoint (tests/test_emulator_inrun.py): the stand-in stays off the path.
    site = fake_azureml_core(tmp_path / "site-packages")

    stdout, events = run_script(tmp_path, """
        import azureml.core.run
        from azureml.core import Run
        print(Run is azureml.core.run.Run, Run.FROM_FAKE_AZUREML_CORE)
        print(azureml.core.run.__file__)
        print(Run.get_context())
    """, extra_path=[site], extra_environment={"AZUREML_SERVICE_ENDPOINT": "http://127.0.0.1:1"})

    assert stdout.splitlines() == [
        "True True", str(site / "azureml" / "core" / "run.py"), "REAL"]
    assert events == []
