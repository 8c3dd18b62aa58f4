"""`amlocal services ...` on the real Docker engine, each command a fresh process: a service
outlives the command (and the Python) that deployed it."""

import json
import subprocess
import sys

import pytest

from conftest import TRAINER_DIR, write_script
from service_fixtures import (accuracy, containers_of, model_home, test_digits,  # noqa: F401
                              trained_model)

pytestmark = pytest.mark.docker

AMLOCAL = [sys.executable, "-m", "amlocal"]


def amlocal(*args, check=True):
    done = subprocess.run([*AMLOCAL, *map(str, args)], capture_output=True, text=True, timeout=300)
    if check:
        assert done.returncode == 0, done.stderr
    return done


def as_json(*args):
    return json.loads(amlocal(*args, "--json").stdout.strip().splitlines()[-1])


def test_deploy_list_show_invoke_logs_keys_and_delete_from_fresh_processes(
        model_home, test_digits, docker_client, tmp_path):
    images, labels = test_digits
    request = tmp_path / "digits.json"
    request.write_text(json.dumps({"data": images}))
    deployed = as_json("services", "deploy", "digits", "--model", "mnist:1", "--entry-script",
                       "score.py", "--source-dir", TRAINER_DIR, "--kind", "aci", "--auth",
                       "--cpu-cores", "1", "--memory-gb", "1", "--tag", "team=vision")
    assert deployed["state"] == "Healthy" and deployed["models"] == ["mnist:1"]
    assert deployed["scoring_uri"] == f"http://127.0.0.1:{deployed['port']}/score"

    listed = as_json("services", "list")
    assert [(s["name"], s["kind"], s["state"]) for s in listed] == [("digits", "ACI", "Healthy")]
    shown = as_json("services", "show", "digits")
    assert shown["tags"] == {"team": "vision"} and shown["auth_enabled"] is True
    assert "keys" not in shown

    answered = as_json("services", "invoke", "digits", "--data", f"@{request}")
    assert answered["status"] == 200 and accuracy(answered["response"], labels) >= 0.8
    refused = amlocal("services", "invoke", "digits", "--data", "{}", "--key", "wrong", "--json",
                      check=False)
    assert refused.returncode == 1 and json.loads(refused.stdout)["status"] == 401

    keys = as_json("services", "keys", "digits")
    regenerated = as_json("services", "keys", "digits", "--regen", "Secondary")
    assert regenerated["primaryKey"] == keys["primaryKey"]
    assert regenerated["secondaryKey"] != keys["secondaryKey"]
    logs = as_json("services", "logs", "digits")["logs"]
    assert "init() completed" in logs and "POST /score" in logs
    assert "digits" in amlocal("services", "list").stdout

    assert as_json("services", "delete", "digits") == {"name": "digits", "deleted": True}
    assert as_json("services", "list") == []
    assert containers_of(docker_client, model_home) == []


def test_a_failing_init_fails_the_deploy_command_and_its_logs_say_why(model_home, tmp_path):
    source = write_script(tmp_path / "app", "score.py",
                          "def init():\n    raise ValueError('no weights here')\n\n"
                          "def run(raw):\n    return raw\n")
    failed = amlocal("services", "deploy", "broken", "--model", "mnist", "--entry-script",
                     "score.py", "--source-dir", source, check=False)

    assert failed.returncode == 1
    assert "Failed" in failed.stdout and "amlocal services logs broken" in failed.stderr
    assert as_json("services", "show", "broken")["state"] == "Failed"
    logs = amlocal("services", "logs", "broken").stdout
    assert "Traceback (most recent call last)" in logs and "ValueError: no weights here" in logs
    no_keys = amlocal("services", "keys", "broken", "--regen", "Primary", check=False)
    assert no_keys.returncode == 2 and "local services have no keys" in no_keys.stderr


def test_a_service_deployed_by_one_python_is_used_by_another(model_home, tmp_path):
    source = write_script(tmp_path / "app", "score.py",
                          "def init():\n    pass\n\ndef run(raw):\n    return {'got': raw}\n")
    deploy = (
        "from amlocal.core import Workspace\n"
        "from amlocal.core.model import InferenceConfig, Model\n"
        "from amlocal.core.webservice import LocalWebservice\n"
        "ws = Workspace.from_config()\n"
        f"config = InferenceConfig(entry_script='score.py', source_directory={str(source)!r})\n"
        "service = Model.deploy(ws, 'lasting', [Model(ws, 'mnist')], config,\n"
        "                       LocalWebservice.deploy_configuration())\n"
        "service.wait_for_deployment()\n")
    subprocess.run([sys.executable, "-c", deploy], check=True, capture_output=True, timeout=300)

    from amlocal.core import Workspace
    from amlocal.core.webservice import LocalWebservice, Webservice

    service = Webservice(Workspace.from_config(), "lasting")
    assert isinstance(service, LocalWebservice) and service.state == "Healthy"
    assert service.run('{"x": 1}') == {"got": '{"x": 1}'}
    assert as_json("services", "show", "lasting")["state"] == "Healthy"


@pytest.mark.parametrize("args, message, code", [
    (["deploy", "Bad_Name", "--model", "mnist", "--entry-script", "score.py"],
     "invalid service name", 2),
    (["deploy", "nomodel", "--model", "absent", "--entry-script", "score.py"],
     "no model named 'absent'", 4),
    (["deploy", "noscript", "--model", "mnist", "--entry-script", "absent.py"],
     "is not a file", 2),
    (["deploy", "local-auth", "--model", "mnist", "--entry-script", "score.py", "--auth"],
     "--auth needs --kind aci or aks", 2),
    (["deploy", "badport", "--model", "mnist", "--entry-script", "score.py", "--port", "0"],
     "--port", 2),
    (["show", "absent"], "no service named 'absent'", 4),
    (["invoke", "absent", "--data", "{"], "--data is not JSON", 2),
    (["invoke", "absent", "--data", "@/nonexistent/body.json"], "cannot read it", 2),
    (["logs", "absent"], "no service named 'absent'", 4),
    (["delete", "absent"], "no service named 'absent'", 4),
], ids=["name", "model", "script", "auth-local", "port", "show", "data", "data-file", "logs",
        "delete"])
def test_bad_input_is_one_line_with_its_exit_code_and_leaves_nothing(model_home, docker_client,
                                                                     args, message, code):
    done = amlocal("services", *args, "--source-dir", TRAINER_DIR, check=False) \
        if args[0] == "deploy" else amlocal("services", *args, check=False)

    assert done.returncode == code, done.stderr
    assert message in done.stderr and len(done.stderr.strip().splitlines()) == 1
    assert "Traceback" not in done.stderr
    assert as_json("services", "list") == [] and containers_of(docker_client, model_home) == []
