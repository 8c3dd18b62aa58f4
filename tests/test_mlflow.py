"""MLflow in local runs and against the run history, with the real mlflow (mlflow-skinny) client.

Inside every local run MLFLOW_TRACKING_URI and MLFLOW_RUN_ID name the run's own endpoint (the
emulator its driver serves, service/mlflow.py), so `mlflow.log_*` lands in the same run as
`run.log`; outside a run, Workspace.get_mlflow_tracking_uri() names `amlocal serve`'s.
"""

import json
import os
import subprocess
import sys
import textwrap

import pytest

from amlocal.backends.history.store import RunStore
from conftest import write_script
from test_cli import invoke, last_json, run_json

mlflow = pytest.importorskip("mlflow", reason="mlflow-skinny (the test extra)")

SCRIPT = """\
import json, os, mlflow
from azureml.core.run import Run
run = Run.get_context()
for i in range(3):
    run.log("aml_metric", i * 0.5)
    mlflow.log_metric("mlflow_metric", i * 2.0, step=i)
mlflow.log_metrics({"loss": 0.25, "acc": 0.75})
mlflow.log_param("lr", 0.1)
mlflow.log_params({"batch": 64, "optimizer": "sgd"})
mlflow.set_tag("team", "vision")
mlflow.set_tags({"stage": "dev", "seed": "7"})
with open("note.txt", "w") as handle:
    handle.write("hello")
mlflow.log_artifact("note.txt")
mlflow.log_artifact("note.txt", artifact_path="outputs")
mlflow.log_text("some text", "texts/a.txt")
mlflow.log_dict({"k": 1}, "config.json")
active = mlflow.active_run().info.run_id
client = mlflow.tracking.MlflowClient()
seen = client.get_run(active)
print("READBACK " + json.dumps({
    "id": active, "env_id": os.environ.get("AZUREML_RUN_ID"),
    "metrics": seen.data.metrics, "params": seen.data.params,
    "history": [[m.step, m.value] for m in client.get_metric_history(active, "mlflow_metric")],
    "artifacts": [a.path for a in client.list_artifacts(active)]}), flush=True)
mlflow.end_run()
"""


def readback(run_id, home):
    log = (RunStore(home).run_dir(run_id) / "azureml-logs" / "70_driver_log.txt").read_text()
    assert "View run" not in log  # a link to the run's endpoint, where no UI answers
    line = next(line for line in log.splitlines() if line.startswith("READBACK "))
    return json.loads(line[len("READBACK "):])


def check_both_ways_landed(record, home):
    assert record["status"] == "Completed", record
    metrics = last_json(invoke("runs", "metrics", record["id"], "--json"))
    assert metrics["aml_metric"] == [0.0, 0.5, 1.0]
    assert metrics["mlflow_metric"] == [0.0, 2.0, 4.0]
    assert metrics["loss"] == [0.25] and metrics["acc"] == [0.75]
    shown = last_json(invoke("runs", "show", record["id"], "--json"))
    assert {"team": "vision", "stage": "dev", "seed": "7"}.items() <= shown["tags"].items()
    assert {"mlflow.param.lr": "0.1", "mlflow.param.batch": "64",
            "mlflow.param.optimizer": "sgd"}.items() <= shown["properties"].items()
    files = last_json(invoke("runs", "files", record["id"], "--json"))
    assert {"note.txt", "outputs/note.txt", "texts/a.txt", "config.json"} <= set(files)
    store = RunStore(home)
    with store.open_verified_file(record["id"], "config.json") as handle:
        assert json.loads(handle.read()) == {"k": 1}
    with store.open_verified_file(record["id"], "texts/a.txt") as handle:
        assert handle.read() == b"some text"
    seen = readback(record["id"], home)
    assert seen["id"] == seen["env_id"] == record["id"]  # start_run() got the run itself
    assert seen["params"] == {"lr": "0.1", "batch": "64", "optimizer": "sgd"}
    assert seen["metrics"]["mlflow_metric"] == 4.0 and seen["metrics"]["acc"] == 0.75
    assert seen["history"] == [[0, 0.0], [1, 2.0], [2, 4.0]]
    assert {"note.txt", "texts", "config.json", "outputs"} <= set(seen["artifacts"])


def test_mlflow_and_run_log_land_in_the_same_process_run(amlocal_home, tmp_path):
    source = write_script(tmp_path / "src", "train.py", SCRIPT)

    result, record = run_json(source, "--script", "train.py", "--executor", "process", [])

    assert result.exit_code == 0, result.output
    check_both_ways_landed(record, amlocal_home)
    text = invoke("runs", "metrics", record["id"]).output
    assert "aml_metric: 0, 0.5, 1" in text and "mlflow_metric: 0, 2, 4" in text


@pytest.mark.docker
def test_mlflow_and_run_log_land_in_the_same_docker_run(amlocal_home, docker_client, tmp_path):
    source = write_script(tmp_path / "src", "train.py", SCRIPT)

    result, record = run_json(source, "--script", "train.py", "--executor", "docker",
                              "--pip", "mlflow-skinny", [])

    assert result.exit_code == 0, result.output
    check_both_ways_landed(record, amlocal_home)


INTRUDER = """\
import os, mlflow
from mlflow.exceptions import MlflowException
client = mlflow.tracking.MlflowClient()
other = os.environ["OTHER_RUN"]
for attempt in (lambda: client.log_metric(other, "stolen", 1.0),
                lambda: client.set_tag(other, "stolen", "yes"),
                lambda: client.get_run(other),
                lambda: client.log_text(other, "x", "stolen.txt")):
    try:
        attempt()
        print("ALLOWED", flush=True)
    except MlflowException as error:
        print("REFUSED", error.error_code, flush=True)
    except Exception as error:
        print("REFUSED", type(error).__name__, str(error)[:200], flush=True)
mlflow.log_metric("own", 1.0)
"""


def test_a_run_cannot_reach_another_run_through_mlflow(amlocal_home, tmp_path):
    victim_source = write_script(tmp_path / "victim", "train.py", "print('victim')\n")
    _, victim = run_json(victim_source, "--script", "train.py", "--executor", "process", [])
    source = write_script(tmp_path / "src", "train.py", INTRUDER)

    result, record = run_json(source, "--script", "train.py", "--executor", "process",
                              "--env", f"OTHER_RUN={victim['id']}", [])

    assert result.exit_code == 0, result.output
    log = (RunStore(amlocal_home).run_dir(record["id"]) / "azureml-logs" /
           "70_driver_log.txt").read_text()
    assert "ALLOWED" not in log and log.count("REFUSED") == 4, log
    assert "PERMISSION_DENIED" in log
    assert last_json(invoke("runs", "metrics", victim["id"], "--json")) == {}
    shown = last_json(invoke("runs", "show", victim["id"], "--json"))
    assert "stolen" not in shown["tags"]
    assert "stolen.txt" not in last_json(invoke("runs", "files", victim["id"], "--json"))
    assert last_json(invoke("runs", "metrics", record["id"], "--json")) == {"own": [1.0]}


OUTSIDE = """\
import json, sys, mlflow
from amlocal import Workspace
uri = Workspace.from_config().get_mlflow_tracking_uri()
mlflow.set_tracking_uri(uri)
mlflow.set_experiment("from-outside")
with mlflow.start_run(run_name="notebook") as run:
    for step in range(3):
        mlflow.log_metric("loss", 1.0 / (step + 1), step=step)
    mlflow.log_param("lr", 0.01)
    mlflow.set_tag("where", "outside")
    mlflow.log_text("report", "report.txt")
client = mlflow.tracking.MlflowClient()
found = client.search_runs([run.info.experiment_id], "metrics.loss < 0.5 and params.lr = '0.01'")
history = client.get_metric_history(sys.argv[1], "Accuracy")
unnamed = client.create_run("0")  # MLflow's default experiment, where no experiment is set
client.set_terminated(unnamed.info.run_id, "FAILED")
print(json.dumps({"run": run.info.run_id, "uri": uri, "found": [r.info.run_id for r in found],
                  "unnamed": unnamed.info.run_id,
                  "status": client.get_run(run.info.run_id).info.status,
                  "history": [[m.step, m.value] for m in history]}))
"""


def test_an_mlflow_client_outside_runs_logs_into_and_reads_the_history(emulator, tmp_path):
    source = write_script(tmp_path / "src", "train.py",
                          "from azureml.core.run import Run\n"
                          "run = Run.get_context()\n"
                          "for value in (0.5, 0.75):\n    run.log('Accuracy', value)\n")
    _, trained = run_json(source, "--script", "train.py", "--executor", "process", [])
    script = write_script(tmp_path / "client", "outside.py", OUTSIDE) / "outside.py"

    result = subprocess.run([sys.executable, str(script), trained["id"]], capture_output=True,
                            text=True, timeout=120, cwd=tmp_path)

    assert result.returncode == 0, result.stderr
    seen = json.loads(result.stdout.strip().splitlines()[-1])
    assert seen["uri"].startswith(emulator.endpoint + "/mlflow/v1.0/subscriptions/")
    assert seen["history"] == [[0, 0.5], [1, 0.75]]  # run.log's values, in logging order
    assert seen["found"] == [seen["run"]] and seen["status"] == "FINISHED"
    shown = last_json(invoke("runs", "show", seen["run"], "--json"))
    assert shown["status"] == "Completed" and shown["experiment"] == "from-outside"
    assert shown["executor"] == "interactive" and shown["tags"]["where"] == "outside"
    assert shown["properties"]["mlflow.param.lr"] == "0.01"
    assert last_json(invoke("runs", "metrics", seen["run"], "--json")) == {
        "loss": [1.0, 0.5, 1 / 3]}
    assert "report.txt" in last_json(invoke("runs", "files", seen["run"], "--json"))
    unnamed = last_json(invoke("runs", "show", seen["unnamed"], "--json"))
    assert unnamed["experiment"] == "Default" and unnamed["status"] == "Failed"


def test_an_operation_mlflow_has_and_amlocal_does_not_answers_501_naming_it(emulator):
    from mlflow.exceptions import MlflowException

    from amlocal import Workspace

    client = mlflow.tracking.MlflowClient(Workspace.from_config().get_mlflow_tracking_uri())
    with pytest.raises(MlflowException) as refused:
        client.create_registered_model("m")

    assert refused.value.error_code == "NOT_IMPLEMENTED"
    assert "registered-models/create" in str(refused.value)


def test_without_amlocal_serve_the_tracking_uri_is_refused_in_one_line(amlocal_home, tmp_path):
    program = textwrap.dedent("""\
        from amlocal import Workspace
        from amlocal.errors import AmlocalError
        try:
            Workspace.from_config().get_mlflow_tracking_uri()
        except AmlocalError as error:
            print("ERROR", error)
        """)
    result = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True,
                            timeout=60, cwd=tmp_path)

    assert result.stdout.startswith("ERROR no amlocal emulator is running"), result
    assert "amlocal serve" in result.stdout and len(result.stdout.strip().splitlines()) == 1


def test_the_endpoints_answer_without_waiting_for_delayed_acks():
    """Each request of a script's MLflow client (or of the SDK's) took 40 ms or more while the
    listening sockets lacked TCP_NODELAY: uvicorn writes an answer's head and body apart, and
    the body waited for the client's delayed ACK. Accepted connections inherit the option."""
    import importlib.util
    import socket

    from amlocal.backends.local.lifecycle import RUNTIME_DIR
    from amlocal.backends.local.run_endpoint import loopback_listener
    from amlocal.service.server import bind

    spec = importlib.util.spec_from_file_location("amlocal_launch_under_test",
                                                  RUNTIME_DIR / "amlocal_launch.py")
    launcher = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(launcher)
    port = loopback_listener()
    free = port.getsockname()[1]
    port.close()
    for listener in (loopback_listener(), bind("127.0.0.1", 0),
                     launcher._listener(f"127.0.0.1:{free}")):
        with listener:
            assert listener.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)


def test_artifact_names_that_leave_the_run_or_exist_are_refused(emulator, tmp_path):
    import requests

    from amlocal import Workspace

    uri = Workspace.from_config().get_mlflow_tracking_uri()
    client = mlflow.tracking.MlflowClient(uri)
    run_id = client.create_run("0").info.run_id
    client.log_text(run_id, "first", "kept.txt")
    headers = {"Authorization": f"Bearer {os.environ['MLFLOW_TRACKING_TOKEN']}"}
    artifacts = f"{uri}/api/2.0/mlflow-artifacts/artifacts/{run_id}/"

    answers = {name: requests.put(artifacts + name, data=b"x", headers=headers, timeout=30)
               for name in ("..%2F..%2Fescaped.txt", "a/..%2F..%2F..%2Fescaped.txt",
                            "kept.txt", "%2Fabsolute.txt")}

    assert {name: answer.status_code for name, answer in answers.items()} == {
        "..%2F..%2Fescaped.txt": 400, "a/..%2F..%2F..%2Fescaped.txt": 400, "kept.txt": 409,
        "%2Fabsolute.txt": 400}, {name: answer.text for name, answer in answers.items()}
    assert all(answer.json()["error_code"] in ("INVALID_PARAMETER_VALUE",
                                               "RESOURCE_ALREADY_EXISTS")
               for answer in answers.values())
    assert not list(emulator.home.rglob("escaped.txt"))
    assert last_json(invoke("runs", "files", run_id, "--json")) == ["kept.txt"]
    with RunStore(emulator.home).open_verified_file(run_id, "kept.txt") as handle:
        assert handle.read() == b"first"
