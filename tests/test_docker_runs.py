"""End to end on a real Docker engine: image built once and cached, containers run, files kept.

Nothing here is mocked: runs go through the CLI or the backend against the engine that
`docker_client` connects to, and the run history is real files and SQLite.
"""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from amlocal.backends.base import LogLine, RunSpec
from amlocal.backends.local import LocalBackend
from conftest import write_script
from test_cli import invoke, last_json, run_json, train_mnist, wait_for

pytestmark = pytest.mark.docker
AMLOCAL = [sys.executable, "-m", "amlocal"]


def docker_run(source, *options, args=()):
    return run_json(source, "--script", "train.py", "--executor", "docker", *options, list(args))


def stage(record, name):
    return next(stage for stage in record["stages"] if stage["name"] == name)


def test_docker_run_trains_chainer_mnist(amlocal_home, docker_client, tmp_path):
    result, record = train_mnist(epochs=3, executor="docker")

    assert result.exit_code == 0, result.output
    assert record["status"] == "Completed" and record["executor"] == "docker"
    assert record["image"].startswith("amlocal/chainer:")
    assert all(stage["status"] == "Completed" for stage in record["stages"])
    metrics = last_json(invoke("runs", "metrics", record["id"], "--json"))
    assert len(metrics["Accuracy"]) == 3 and metrics["Accuracy"][-1] >= 0.88
    invoke("runs", "download", record["id"], "--prefix", "outputs/model.npz", "-o", tmp_path)
    with np.load(tmp_path / "outputs" / "model.npz") as model:
        assert model["predictor/l3/W"].shape == (10, 100)
    # The container is gone once the run has been post-processed.
    assert not docker_client.containers.list(all=True, filters={"label": f"amlocal.run_id={record['id']}"})


def test_unchanged_environment_is_not_rebuilt(amlocal_home, docker_client, tmp_path):
    source = write_script(tmp_path / "src", "train.py", "print('ok')\n")
    _first_result, first = docker_run(source)

    _second_result, second = docker_run(source)

    assert first["status"] == second["status"] == "Completed"
    assert second["image"] == first["image"]
    assert "found in cache" in stage(second, "Preparing")["detail"]
    assert stage(second, "Preparing")["duration_s"] < 1.0
    build_log = Path(second["run_dir"]) / "azureml-logs" / "20_image_build_log.txt"
    assert not build_log.exists()


def test_script_sees_azure_ml_environment_inputs_read_only_and_no_network(amlocal_home,
                                                                         docker_client, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "rows.csv").write_text("1,2,3\n")
    source = write_script(tmp_path / "src", "train.py", """
import json, os, socket, sys
report = {"argv": sys.argv[1:], "cwd": os.getcwd(),
          "env": {k: v for k, v in os.environ.items() if k.startswith("AZUREML_")},
          "data": open(os.path.join(os.environ["AZUREML_DATAREFERENCE_data"], "rows.csv")).read()}
try:
    open(os.path.join(os.environ["AZUREML_DATAREFERENCE_data"], "new.txt"), "w")
    report["input_writable"] = True
except OSError:
    report["input_writable"] = False
try:
    socket.create_connection(("1.1.1.1", 53), timeout=3)
    report["network"] = True
except OSError:
    report["network"] = False
os.makedirs("outputs", exist_ok=True)
json.dump(report, open("outputs/report.json", "w"))
""")

    _result, record = docker_run(source, "--experiment", "probe", "--input", f"data={data}",
                                 args=["--", "--data=$AZUREML_DATAREFERENCE_data", "plain"])

    assert record["status"] == "Completed", record["error"]
    report = json.loads((Path(record["run_dir"]) / "outputs" / "report.json").read_text())
    assert report["argv"] == ["--data=/amlocal/inputs/data", "plain"]
    assert report["env"]["AZUREML_RUN_ID"] == record["id"]
    assert report["env"]["AZUREML_ARM_PROJECT_NAME"] == "probe"
    assert report["env"]["AZUREML_DATAREFERENCE_data"] == "/amlocal/inputs/data"
    assert report["env"]["AZUREML_OUTPUT_DIRECTORY"] == "./outputs"
    assert report["data"] == "1,2,3\n"
    assert report["input_writable"] is False and report["network"] is False
    assert not (data / "new.txt").exists()


def test_failing_container_script_reports_exit_code_and_tail(amlocal_home, docker_client, tmp_path):
    source = write_script(tmp_path / "src", "train.py",
                          "print('epoch 1 done', flush=True)\nraise ValueError('bad batch')\n")

    result, record = docker_run(source)

    assert result.exit_code == 1
    assert record["status"] == "Failed" and record["exit_code"] == 1
    assert "ValueError: bad batch" in record["error"]


def test_cancel_stops_the_container(amlocal_home, docker_client, tmp_path):
    source = write_script(tmp_path / "src", "train.py",
                          "import time\nprint('started', flush=True)\ntime.sleep(300)\n")
    backend = LocalBackend()
    lines = []
    handle = backend.submit(RunSpec(source_dir=source, script="train.py", executor="docker"),
                            on_event=lambda event: isinstance(event, LogLine) and lines.append(event.line))
    wait_for(lambda: "started" in lines, timeout=120)

    canceled = subprocess.run([*AMLOCAL, "runs", "cancel", handle.id, "--no-wait"],
                              capture_output=True, text=True, timeout=60)
    details = handle.wait(timeout=60)

    assert canceled.returncode == 0, canceled.stderr
    assert details["status"] == "Canceled"
    assert stage(details, "Running")["status"] == "Canceled"
    assert not docker_client.containers.list(all=True, filters={"label": f"amlocal.run_id={handle.id}"})


def test_run_api_works_with_azureml_core_installed_in_the_image(amlocal_home, docker_client,
                                                                 tmp_path):
    source = write_script(tmp_path / "src", "train.py", """
import azureml.core
from azureml.core.run import Run
run = Run.get_context()
print("azureml-core", azureml.core.VERSION, flush=True)
run.log("Accuracy", 0.98)
run.log_list("losses", [0.5, 0.25])
""")

    result, record = docker_run(source, "--pip", "azureml-core")

    assert record["status"] == "Completed", record["error"]
    assert "azureml-core 1." in result.stdout
    assert last_json(invoke("runs", "metrics", record["id"], "--json")) == {
        "Accuracy": [0.98], "losses": [[0.5, 0.25]]}
