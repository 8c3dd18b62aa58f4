"""Inside a local run, the unmodified azureml-core's Run.get_context() is the SDK's live run
(`_SubmittedRun`), talking to the emulator endpoint the run's driver serves (a Unix socket in the
run's folder, relayed to 127.0.0.1 by the launcher) with a token for that run alone; a Python or
image without azureml-core keeps the stand-in. Both land in the same run history."""

import json
import os
import signal
import subprocess
import sys
import textwrap

import pytest

from amlocal.backends.history.store import RunStore
from amlocal.backends.local.processes import process_alive
from conftest import write_script
from test_cli import invoke, last_json, wait_for

pytest.importorskip("azureml.core", reason="the azure extra (CI installs it)")

from azureml.core import Experiment, Run  # noqa: E402

import amlocal.emulator  # noqa: E402
from amlocal.backends.base import RunSpec  # noqa: E402
from amlocal.backends.local import LocalBackend  # noqa: E402

AMLOCAL = [sys.executable, "-c", "from amlocal.cli.main import main; main()"]

SCRIPT = """\
import os
from azureml.core.run import Run
run = Run.get_context()
print("context", type(run).__name__, flush=True)
run.log("Accuracy", 0.5)
run.log("Accuracy", 0.75)
run.log_list("losses", [0.9, 0.5])
run.log_row("roc", fpr=0.1, tpr=0.8)
run.log_table("summary", {"epoch": [1, 2], "loss": [0.5, 0.25]})
run.tag("team", "vision")
run.add_properties({"commit": "abc123"})
child = run.child_run(name="fold-1")
child.log("fold_accuracy", 0.6)
child.tag("fold", "1")
child.complete()
print("child", child.id, flush=True)
"""

EXPECTED_METRICS = {"Accuracy": [0.5, 0.75], "losses": [0.9, 0.5],
                    "roc": {"fpr": 0.1, "tpr": 0.8}, "summary": {"epoch": [1, 2], "loss": [0.5, 0.25]}}


def submit(home, source, script="train.py", **spec):
    handle = LocalBackend(home).submit(RunSpec(source_dir=source, script=script,
                                               experiment="inrun", executor="process", **spec))
    details = handle.wait(timeout=120)
    return handle, details


def driver_log(handle):
    return (handle.run_dir / "azureml-logs" / "70_driver_log.txt").read_text()


def amlocal_json(*args):
    result = subprocess.run([*AMLOCAL, *args, "--json"], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


@pytest.fixture(scope="module")
def logged(emulator, tmp_path_factory):
    """A process-executor run of SCRIPT (its Python is this one, which has azureml-core)."""
    source = write_script(tmp_path_factory.mktemp("src"), "train.py", SCRIPT)
    handle, details = submit(emulator.home, source)
    return handle, details


def test_in_a_run_get_context_is_the_sdks_submitted_run(emulator, logged):
    handle, details = logged

    log = driver_log(handle)
    assert details["status"] == "Completed", details["error"]
    assert "context _SubmittedRun" in log
    assert f"/runs/{handle.id}/batch 200" in emulator.request_log()  # the run's driver logs its requests


def test_what_the_sdk_logged_reads_back_through_amlocal_and_the_emulator(emulator, logged):
    handle, _ = logged

    shown = amlocal_json("runs", "show", handle.id)
    metrics = amlocal_json("runs", "metrics", handle.id)
    through_sdk = Run(Experiment(amlocal.emulator.workspace(), "inrun"), handle.id)

    assert shown["tags"] == {"team": "vision"} and shown["properties"] == {"commit": "abc123"}
    assert metrics == {"Accuracy": [0.5, 0.75], "losses": [[0.9, 0.5]],
                       "roc": [{"fpr": 0.1, "tpr": 0.8}],
                       "summary": [{"epoch": [1, 2], "loss": [0.5, 0.25]}]}
    assert through_sdk.get_metrics() == EXPECTED_METRICS
    assert through_sdk.get_tags() == {"team": "vision"}


def test_a_child_run_made_in_the_run_is_recorded_under_it(emulator, logged):
    handle, _ = logged

    children = list(Run(Experiment(amlocal.emulator.workspace(), "inrun"), handle.id)
                    .get_children())

    assert len(children) == 1
    child = children[0]
    assert f"child {child.id}" in driver_log(handle)
    assert child.get_status() == "Completed"
    assert child.get_metrics() == {"fold_accuracy": 0.6}
    assert child.get_tags() == {"fold": "1"}
    record = LocalBackend(emulator.home).get_run(child.id).get_details()
    # azureml-core names a child "<parent's name>>fold-1"; the parent has no name.
    assert record["parent_id"] == handle.id and record["display_name"] == ">fold-1"
    statuses = [status for status, _at in LocalBackend(emulator.home).store.status_history(child.id)]
    assert statuses == ["NotStarted", "Preparing", "Queued", "Running", "Finalizing", "Completed"]


def test_a_runs_token_cannot_touch_another_run(emulator, logged, tmp_path):
    other, _ = logged
    source = write_script(tmp_path / "src", "train.py", textwrap.dedent("""
        import os
        from azureml.core.run import Run
        run = Run.get_context()
        for attempt in ("tag", "read"):
            try:
                other = Run(run.experiment, os.environ["OTHER_RUN"])
                other.tag("stolen", "yes") if attempt == "tag" else other.get_tags()
                print(attempt, "allowed", flush=True)
            except Exception as error:
                print(attempt, "refused", type(error).__name__, "AuthorizationFailed" in str(error),
                      flush=True)
        run.tag("own", "fine")
    """))

    handle, details = submit(emulator.home, source, environment_variables={"OTHER_RUN": other.id})

    log = driver_log(handle)
    assert details["status"] == "Completed", details["error"]
    assert "tag refused" in log and "read refused" in log, log
    assert "AuthorizationFailed" in emulator.request_log() or " 403 " in emulator.request_log()
    assert LocalBackend(emulator.home).get_run(other.id).get_details()["tags"] == {"team": "vision"}
    assert details["tags"] == {"own": "fine"}


def test_run_fail_in_the_script_fails_the_run_with_its_message(emulator, tmp_path):
    source = write_script(tmp_path / "src", "train.py", textwrap.dedent("""
        from azureml.core.run import Run
        Run.get_context().fail(error_details="the data was bad")
    """))

    _handle, details = submit(emulator.home, source)

    assert details["status"] == "Failed"
    assert details["exit_code"] == 0
    assert "the data was bad" in details["error"]


def test_metrics_not_yet_sent_when_the_script_ends_are_kept(emulator, tmp_path):
    # azureml-core sends metrics from a thread, once a second; a script that ends right after
    # logging (no complete()) keeps them, as on Azure ML.
    source = write_script(tmp_path / "src", "train.py", textwrap.dedent("""
        from azureml.core.run import Run
        run = Run.get_context()
        for step in range(100):
            run.log("loss", 1.0 / (step + 1))
    """))

    handle, details = submit(emulator.home, source)

    assert details["status"] == "Completed", details["error"]
    assert len(handle.get_metrics()["loss"]) == 100


def test_the_endpoint_works_from_a_run_folder_deeper_than_a_socket_path(emulator, tmp_path):
    # A Unix socket's path holds 108 bytes; a run folder's path may be far longer.
    deep_home = tmp_path.joinpath(*["a-rather-long-folder-name"] * 6) / "home"
    source = write_script(tmp_path / "src", "train.py", textwrap.dedent("""
        from azureml.core.run import Run
        run = Run.get_context()
        print("context", type(run).__name__, flush=True)
        run.log("deep", 1)
    """))

    handle, details = submit(deep_home, source)

    assert len(str(handle.run_dir / "emulator" / "api.sock")) > 108
    assert details["status"] == "Completed", details["error"]
    assert "context _SubmittedRun" in driver_log(handle)
    assert handle.get_metrics() == {"deep": [1]}


def test_a_driver_that_adopts_the_run_serves_its_endpoint_again(amlocal_home, tmp_path):
    # The script logs, its driver is killed, a new driver adopts the run (recovery.py): what the
    # script logs after that still reaches the run history, at the same address.
    go = tmp_path / "go"
    source = write_script(tmp_path / "src", "train.py", textwrap.dedent("""
        import os, sys, time
        from azureml.core.run import Run
        run = Run.get_context()
        run.log("phase", 1)
        run.flush()
        print("started", flush=True)
        deadline = time.time() + 120
        while not os.path.exists(sys.argv[1]) and time.time() < deadline:
            time.sleep(0.1)
        run.log("phase", 2)
        run.tag("adopted", "yes")
    """))
    run_id = last_json(invoke("run", source, "--script", "train.py", "--executor", "process",
                              "--detach", "--json", "--", go))["id"]
    store = RunStore()
    wait_for(lambda: "started" in invoke("runs", "logs", run_id).stdout, timeout=120)
    supervisor = store.get_run(run_id)["driver_pid"]

    os.kill(supervisor, signal.SIGKILL)
    wait_for(lambda: not process_alive(supervisor), timeout=10)
    invoke("runs", "show", run_id)  # hands the run to a new driver
    wait_for(lambda: store.get_run(run_id)["driver_pid"] != supervisor, timeout=30)
    wait_for(lambda: (store.run_dir(run_id) / "emulator" / "api.sock").exists(), timeout=30)
    go.touch()
    waited = last_json(invoke("runs", "wait", run_id, "--json"))

    assert waited["status"] == "Completed", waited["error"]
    assert waited["tags"] == {"adopted": "yes"}
    assert last_json(invoke("runs", "metrics", run_id, "--json")) == {"phase": [1, 2]}


def test_without_the_in_run_sdk_the_stand_in_takes_the_call(emulator, tmp_path, monkeypatch):
    monkeypatch.setenv("AMLOCAL_IN_RUN_SDK", "0")
    source = write_script(tmp_path / "src", "train.py", textwrap.dedent("""
        import os
        from azureml.core.run import Run
        run = Run.get_context()
        print("context", type(run).__module__, "AZUREML_RUN_TOKEN" in os.environ, flush=True)
        run.log("standin", 1)
    """))

    handle, details = submit(emulator.home, source)

    assert details["status"] == "Completed", details["error"]
    assert "context amlocal_run False" in driver_log(handle)
    assert handle.get_metrics() == {"standin": [1]}


def test_a_run_with_a_huge_time_limit_gets_a_token_azureml_core_can_read(emulator, tmp_path):
    # The first token lasts as long as the run may, within what a datetime holds.
    source = write_script(tmp_path / "src", "train.py", textwrap.dedent("""
        from azureml.core.run import Run
        Run.get_context().log("long", 1)
    """))

    handle, details = submit(emulator.home, source, max_run_duration_seconds=2**63 - 1)

    assert details["status"] == "Completed", details["error"]
    assert handle.get_metrics() == {"long": [1]}


def test_a_proxy_and_azureml_variables_of_the_submitters_shell_do_not_get_in_the_way(
        emulator, tmp_path, monkeypatch):
    # The process executor passes the proxy settings on (a download needs them): the endpoint on
    # 127.0.0.1 is added to NO_PROXY. AZUREML_* of the shell are not passed on: amlocal sets them.
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")
    monkeypatch.setenv("http_proxy", "http://127.0.0.1:9")
    monkeypatch.setenv("NO_PROXY", "corp.example")
    monkeypatch.setenv("AZUREML_RUN_TOKEN", "not-a-token")
    source = write_script(tmp_path / "src", "train.py", textwrap.dedent("""
        import os
        from azureml.core.run import Run
        print("no_proxy", os.environ["NO_PROXY"], flush=True)
        Run.get_context().log("through", 1)
    """))

    handle, details = submit(emulator.home, source)

    assert details["status"] == "Completed", details["error"]
    assert "no_proxy corp.example,127.0.0.1" in driver_log(handle)
    assert handle.get_metrics() == {"through": [1]}


def test_the_endpoint_is_gone_once_the_run_has_ended(emulator, logged):
    handle, _ = logged

    assert not (handle.run_dir / "emulator").exists()


# -- docker ---------------------------------------------------------------------------------------

DOCKER_SCRIPT = """\
import socket
from azureml.core.run import Run
run = Run.get_context()
print("context", type(run).__module__, type(run).__name__, flush=True)
run.log("Accuracy", 0.98)
run.log_list("losses", [0.5, 0.25])
run.tag("where", "container")
try:
    socket.create_connection(("1.1.1.1", 53), timeout=2)
    print("network reachable", flush=True)
except OSError:
    print("network unreachable", flush=True)
"""


def docker_submit(home, source, *pip):
    spec = RunSpec(source_dir=source, script="train.py", experiment="inrun", executor="docker")
    if pip:
        from dataclasses import replace

        spec = replace(spec, environment=replace(spec.environment, pip_packages=list(pip)))
    handle = LocalBackend(home).submit(spec)
    return handle, handle.wait(timeout=600)


@pytest.mark.docker
def test_a_docker_run_without_azureml_core_keeps_the_stand_in(emulator, docker_client, tmp_path):
    source = write_script(tmp_path / "src", "train.py", DOCKER_SCRIPT)

    handle, details = docker_submit(emulator.home, source)

    log = driver_log(handle)
    assert details["status"] == "Completed", details["error"]
    assert "context amlocal_run Run" in log
    assert "network unreachable" in log
    assert handle.get_metrics() == {"Accuracy": [0.98], "losses": [[0.5, 0.25]]}


@pytest.mark.docker
def test_a_docker_run_whose_image_has_azureml_core_gets_the_sdks_run(emulator, docker_client,
                                                                     tmp_path):
    # The image is the one tests/test_docker_runs.py builds (chainer recipe + azureml-core).
    source = write_script(tmp_path / "src", "train.py", DOCKER_SCRIPT)

    handle, details = docker_submit(emulator.home, source, "azureml-core")

    log = driver_log(handle)
    assert details["status"] == "Completed", details["error"]
    assert "context azureml.core.run _SubmittedRun" in log
    assert "network unreachable" in log  # its only way out is the relay to its endpoint
    assert handle.get_metrics() == {"Accuracy": [0.98], "losses": [[0.5, 0.25]]}
    assert details["tags"] == {"where": "container"}
    through_sdk = Run(Experiment(amlocal.emulator.workspace(), "inrun"), handle.id)
    assert through_sdk.get_metrics() == {"Accuracy": 0.98, "losses": [0.5, 0.25]}
