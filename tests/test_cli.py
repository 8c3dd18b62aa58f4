"""The command line through CliRunner, against a real run history and real subprocess runs.

These use the process executor, so they need no Docker engine; test_docker_runs.py covers the
docker executor the same way.
"""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from click.testing import CliRunner

from amlocal.cli.main import cli
from conftest import MNIST_DIR, TRAINER_DIR, write_script

DATA_ARGS = ["--data-dir", "$AZUREML_DATAREFERENCE_mnist"]
AMLOCAL = [sys.executable, "-m", "amlocal"]


def invoke(*args):
    return CliRunner().invoke(cli, [str(arg) for arg in args], catch_exceptions=False)


def last_json(result):
    return json.loads(result.stdout.strip().splitlines()[-1])


def run_json(*args):
    """`amlocal run ... --json`; returns (result, run record)."""
    result = invoke("run", *args[:-1], "--json", *args[-1])
    return result, last_json(result)


def train_mnist(epochs=3, executor="process"):
    return run_json(TRAINER_DIR, "--script", "chainer_mnist.py", "--executor", executor,
                    "--experiment", "chainer-mnist", "--input", f"mnist={MNIST_DIR}",
                    ["--", "--epochs", epochs, *DATA_ARGS])


def wait_for(predicate, timeout=30, interval=0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout} s")


def test_process_run_trains_chainer_mnist_and_keeps_everything(amlocal_home, tmp_path):
    result, record = train_mnist(epochs=3)

    assert result.exit_code == 0, result.output
    assert record["status"] == "Completed" and record["exit_code"] == 0 and record["error"] is None
    assert [(stage["name"], stage["status"]) for stage in record["stages"]] == [
        ("Preparing", "Completed"), ("Scaling", "Completed"), ("Running", "Completed"),
        ("PostProcessing", "Completed")]
    assert all(stage["duration_s"] is not None for stage in record["stages"])
    assert "epoch 3/3" in result.stdout  # the script's output streamed to the user

    metrics = last_json(invoke("runs", "metrics", record["id"], "--json"))
    assert len(metrics["Accuracy"]) == 3 and len(metrics["Loss"]) == 3
    assert metrics["Accuracy"][-1] >= 0.88
    assert metrics["Batch size"] == [100] and metrics["Epochs"] == [3]

    files = last_json(invoke("runs", "files", record["id"], "--json"))
    assert {"outputs/model.npz", "azureml-logs/70_driver_log.txt"} <= set(files)

    downloaded = invoke("runs", "download", record["id"], "--prefix", "outputs/", "-o", tmp_path)
    assert downloaded.exit_code == 0, downloaded.output
    with np.load(tmp_path / "outputs" / "model.npz") as model:
        assert model["predictor/l1/W"].shape == (100, 784)

    logs = invoke("runs", "logs", record["id"])
    assert "epoch 3/3" in logs.stdout
    listed = last_json(invoke("runs", "list", "--json"))
    assert [run["id"] for run in listed] == [record["id"]]


def test_run_history_is_read_back_by_a_new_process(amlocal_home):
    _result, record = train_mnist(epochs=1)

    shown = subprocess.run([*AMLOCAL, "runs", "show", record["id"], "--json"], capture_output=True,
                           text=True, env=os.environ, check=True)
    details = json.loads(shown.stdout)
    assert details["status"] == "Completed"
    assert [stage["name"] for stage in details["stages"]] == [
        "Preparing", "Scaling", "Running", "PostProcessing"]
    metrics = json.loads(subprocess.run([*AMLOCAL, "runs", "metrics", record["id"], "--json"],
                                        capture_output=True, text=True, check=True).stdout)
    assert len(metrics["Accuracy"]) == 1


def test_failing_script_fails_the_run_with_exit_code_and_log_tail(amlocal_home, tmp_path):
    source = write_script(tmp_path / "src", "train.py",
                          "import sys\nprint('loading data')\nsys.exit(3)\n")

    result, record = run_json(source, "--script", "train.py", "--executor", "process", [])

    assert result.exit_code == 1
    assert record["status"] == "Failed" and record["exit_code"] == 3
    assert "train.py exited with code 3" in record["error"] and "loading data" in record["error"]
    stages = {stage["name"]: stage["status"] for stage in record["stages"]}
    assert stages["Running"] == "Failed" and stages["PostProcessing"] == "Completed"
    assert "exited with code 3" in result.stderr


def test_run_fail_called_by_the_script_fails_the_run(amlocal_home, tmp_path):
    source = write_script(tmp_path / "src", "train.py",
                          "from azureml.core.run import Run\n"
                          "Run.get_context().fail(error_details='labels missing')\n")

    result, record = run_json(source, "--script", "train.py", "--executor", "process", [])

    assert result.exit_code == 1
    assert record["status"] == "Failed" and record["exit_code"] == 0
    assert "labels missing" in record["error"]


def test_outputs_of_a_failed_run_are_kept(amlocal_home, tmp_path):
    source = write_script(tmp_path / "src", "train.py",
                          "import os\nos.makedirs('outputs', exist_ok=True)\n"
                          "open('outputs/partial.txt', 'w').write('epoch 1')\nraise SystemExit(1)\n")

    _result, record = run_json(source, "--script", "train.py", "--executor", "process", [])

    assert record["status"] == "Failed"
    assert "outputs/partial.txt" in last_json(invoke("runs", "files", record["id"], "--json"))


def test_detached_run_is_followed_and_canceled_from_other_processes(amlocal_home, tmp_path):
    source = write_script(tmp_path / "src", "train.py", """
import signal, sys, time, os
def stop(signum, frame):
    os.makedirs('outputs', exist_ok=True)
    open('outputs/got-sigterm.txt', 'w').write('yes')
    sys.exit(143)
signal.signal(signal.SIGTERM, stop)
print('training started', flush=True)
time.sleep(120)
""")
    submitted = invoke("run", source, "--script", "train.py", "--executor", "process", "--detach",
                       "--json")
    assert submitted.exit_code == 0, submitted.output
    run_id = last_json(submitted)["id"]
    wait_for(lambda: "training started" in invoke("runs", "logs", run_id).stdout)

    canceled = subprocess.run([*AMLOCAL, "runs", "cancel", run_id, "--json"], capture_output=True,
                              text=True, timeout=60)

    assert canceled.returncode == 0, canceled.stderr
    details = json.loads(canceled.stdout.strip().splitlines()[-1])
    assert details["status"] == "Canceled"
    assert "outputs/got-sigterm.txt" in last_json(invoke("runs", "files", run_id, "--json"))
    from amlocal.backends.history.store import RunStore
    history = [status for status, _at in RunStore().status_history(run_id)]
    assert history[-2:] == ["CancelRequested", "Canceled"]


def test_logs_follow_attaches_to_a_detached_run_until_it_ends(amlocal_home, tmp_path):
    source = write_script(tmp_path / "src", "train.py",
                          "import time\nfor step in range(3):\n"
                          "    print(f'step {step}', flush=True)\n    time.sleep(0.3)\n")
    run_id = last_json(invoke("run", source, "--script", "train.py", "--executor", "process",
                              "--detach", "--json"))["id"]

    followed = invoke("runs", "logs", run_id, "-f")

    assert followed.exit_code == 0
    assert [line for line in followed.stdout.splitlines() if line.startswith("step")] == [
        "step 0", "step 1", "step 2"]
    assert "Completed" in followed.stderr


def test_default_executor_falls_back_to_process_when_no_engine_answers(amlocal_home, tmp_path,
                                                                        monkeypatch):
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-engine.sock")
    source = write_script(tmp_path / "src", "train.py", "print('hello')\n")

    result, record = run_json(source, "--script", "train.py", [])

    assert result.exit_code == 0
    assert record["executor"] == "process" and record["status"] == "Completed"


# -- bad input: one clear line, a non-zero exit, nothing half-written ---------------------------

def _bad_input_cases(tmp_path):
    source = write_script(tmp_path / "src", "train.py", "print('hi')\n")
    return {
        "missing source folder": (["run", tmp_path / "nope", "--script", "train.py"], 2,
                                  "source folder not found"),
        "missing script": (["run", source, "--script", "missing.py"], 2, "script missing.py not found"),
        "input path missing": (["run", source, "--script", "train.py", "--executor", "process",
                                "--input", f"data={tmp_path / 'absent'}"], 2, "path does not exist"),
        "malformed --input": (["run", source, "--script", "train.py", "--input", "data"], 2,
                              "--input expects NAME=PATH"),
        "argument names an input not given": (
            ["run", source, "--script", "train.py", "--executor", "process", "--",
             "--data-dir", "$AZUREML_DATAREFERENCE_mnist"], 2, "add --input mnist=PATH"),
        "bad experiment name": (["run", source, "--script", "train.py", "--experiment", "no spaces"],
                                2, "invalid experiment name"),
        "--pip on the process executor": (["run", source, "--script", "train.py", "--executor",
                                           "process", "--pip", "no-such-package-amlocal==1.0"], 2,
                                          "lacks no-such-package-amlocal==1.0: install them there"),
    }


@pytest.mark.parametrize("case", ["missing source folder", "missing script", "input path missing",
                                  "malformed --input", "argument names an input not given",
                                  "bad experiment name", "--pip on the process executor"])
def test_bad_run_requests_fail_cleanly_and_create_nothing(amlocal_home, tmp_path, case):
    args, exit_code, message = _bad_input_cases(tmp_path)[case]

    result = invoke(*args)

    assert result.exit_code == exit_code, result.output
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("Error: ")
    assert message in result.stderr
    assert not list((amlocal_home / "runs").glob("*"))
    assert last_json(invoke("runs", "list", "--json")) == []


def test_docker_executor_without_an_engine_says_how_to_start_one(amlocal_home, tmp_path,
                                                                 monkeypatch):
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-engine.sock")
    source = write_script(tmp_path / "src", "train.py", "print('hi')\n")

    result = invoke("run", source, "--script", "train.py", "--executor", "docker")

    assert result.exit_code == 3
    assert "Docker engine does not answer" in result.stderr
    assert "--executor process" in result.stderr
    assert not list((amlocal_home / "runs").glob("*"))


@pytest.mark.parametrize("command", [["show"], ["logs"], ["metrics"], ["files"], ["cancel"],
                                     ["download", "--prefix", "outputs/"]])
def test_unknown_run_id_is_a_clear_error(amlocal_home, command):
    result = invoke("runs", command[0], "exp_1_deadbeef", *command[1:])

    assert result.exit_code == 4
    assert "no run with id 'exp_1_deadbeef'" in result.stderr


@pytest.mark.parametrize("prefix", ["../", "snapshot/", "telemetry/", "outputs/nothing-here"])
def test_download_outside_the_run_files_writes_nothing(amlocal_home, tmp_path, prefix):
    source = write_script(tmp_path / "src", "train.py", "print('hi')\n")
    _result, record = run_json(source, "--script", "train.py", "--executor", "process", [])
    target = tmp_path / "downloads"

    result = invoke("runs", "download", record["id"], "--prefix", prefix, "-o", target)

    assert result.exit_code == 2
    assert "has no files under" in result.stderr
    assert not target.exists()


SLEEPER = "import time\nprint('training started', flush=True)\ntime.sleep(120)\n"


def start_foreground_run(source, executor="process"):
    """`amlocal run` as a user starts it in a terminal; returns the process once the script runs."""
    process = subprocess.Popen([*AMLOCAL, "run", source, "--script", "train.py", "--executor",
                                executor, "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)
    from amlocal.backends.history.store import RunStore
    store = RunStore()
    run_id = wait_for(lambda: [r["id"] for r in store.list_runs() if r["status"] == "Running"])[0]
    wait_for(lambda: "training started" in invoke("runs", "logs", run_id).stdout)
    return process, store, run_id


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_interrupting_a_foreground_run_cancels_it(amlocal_home, tmp_path, signum):
    process, store, run_id = start_foreground_run(write_script(tmp_path / "src", "train.py", SLEEPER))

    process.send_signal(signum)
    stdout, stderr = process.communicate(timeout=30)

    assert process.returncode == 1
    assert "Canceling run" in stderr
    assert json.loads(stdout.strip().splitlines()[-1])["status"] == "Canceled"
    assert not _alive(store.get_run(run_id)["script_pid"])


@pytest.mark.docker
def test_ctrl_c_cancels_a_docker_run(amlocal_home, docker_client, tmp_path):
    process, _store, run_id = start_foreground_run(
        write_script(tmp_path / "src", "train.py", SLEEPER), executor="docker")

    process.send_signal(signal.SIGINT)
    stdout, _stderr = process.communicate(timeout=60)

    assert json.loads(stdout.strip().splitlines()[-1])["status"] == "Canceled"
    assert not docker_client.containers.list(all=True, filters={"label": f"amlocal.run_id={run_id}"})


def test_second_ctrl_c_kills_a_script_that_ignores_sigterm(amlocal_home, tmp_path):
    stubborn = ("import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
                "print('training started', flush=True)\ntime.sleep(120)\n")
    process, _store, _run_id = start_foreground_run(write_script(tmp_path / "src", "train.py", stubborn))

    process.send_signal(signal.SIGINT)
    time.sleep(1)
    assert process.poll() is None  # still waiting out the 10 s grace period
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=5)

    assert "Killing run" in stderr
    assert json.loads(stdout.strip().splitlines()[-1])["status"] == "Canceled"


def test_runs_wait_attaches_from_another_process_and_reports_the_outcome(amlocal_home, tmp_path):
    source = write_script(tmp_path / "src", "train.py",
                          "import time\nprint('working', flush=True)\ntime.sleep(1)\n"
                          "raise SystemExit(2)\n")
    run_id = last_json(invoke("run", source, "--script", "train.py", "--executor", "process",
                              "--detach", "--json"))["id"]

    timed_out = subprocess.run([*AMLOCAL, "runs", "wait", run_id, "--timeout", "0.1"],
                               capture_output=True, text=True)
    waited = subprocess.run([*AMLOCAL, "runs", "wait", run_id], capture_output=True, text=True,
                            timeout=60)

    assert timed_out.returncode == 124 and "is still" in timed_out.stderr
    assert waited.returncode == 1
    assert "working" in waited.stdout and "Failed" in waited.stderr
    assert "exited with code 2" in waited.stderr


def test_a_killed_driver_is_adopted_and_its_script_goes_on(amlocal_home, tmp_path):
    process, store, run_id = start_foreground_run(write_script(tmp_path / "src", "train.py", SLEEPER))
    script_pid = store.get_run(run_id)["script_pid"]

    process.kill()
    process.wait()
    shown = last_json(invoke("runs", "show", run_id, "--json"))

    assert shown["status"] == "Running" and _alive(script_pid)
    assert wait_for(lambda: _alive(store.get_run(run_id)["driver_pid"]), timeout=15)
    assert last_json(invoke("runs", "cancel", run_id, "--json"))["status"] == "Canceled"
    assert wait_for(lambda: not _alive(script_pid), timeout=15)


def _alive(pid):
    from amlocal.backends.local.processes import process_alive
    return process_alive(pid)


def test_gpu_on_a_host_without_one_fails_early_with_what_to_do(amlocal_home, tmp_path):
    from amlocal.backends.local.compute import host_resources
    if host_resources().gpus:
        pytest.skip("this host has a GPU")
    source = write_script(tmp_path / "src", "train.py", "print('hi')\n")

    result = invoke("run", source, "--script", "train.py", "--executor", "process", "--gpu")

    assert result.exit_code == 2
    assert "asks for a GPU" in result.stderr and "--emulate-gpus" in result.stderr
    assert result.stderr.count("\n") == 1
    assert last_json(invoke("runs", "list", "--json")) == []
