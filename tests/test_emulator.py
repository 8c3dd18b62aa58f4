"""`amlocal serve`, the local Azure ML service: its front door (the listening line, config.json,
a clean stop, the request log, 501 for what is not emulated), its tokens, and the workspace,
experiment and compute operations, each with the real azureml-core 1.61 as the client against a
real `amlocal serve` subprocess over a real run history."""

import json
import os
import signal
import stat
import time

import pytest
import requests

from conftest import start_emulator

pytest.importorskip("azureml.core", reason="the azure extra (CI installs it)")

from azureml.core import Experiment, Workspace  # noqa: E402
from azureml.core.compute import AmlCompute, ComputeTarget  # noqa: E402
from azureml.exceptions import ComputeTargetException  # noqa: E402

import amlocal.emulator  # noqa: E402
from amlocal.backends.history.store import RunStore  # noqa: E402
from amlocal.backends.local.compute import ComputeTargets, TargetSpec  # noqa: E402
from amlocal.service.config import WORKSPACE_NAME  # noqa: E402
from amlocal.service.tokens import TokenIssuer  # noqa: E402

WS_PATH = ("/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/amlocal/providers"
           "/Microsoft.MachineLearningServices/workspaces/local")


def workspace_headers():
    return amlocal.emulator.auth().get_authentication_header()


# -- the front door ---------------------------------------------------------------------------

@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGINT])
def test_serve_announces_itself_keeps_a_private_config_and_stops_cleanly(tmp_path, stop_signal):
    running = start_emulator(tmp_path / "home", tmp_path)

    assert running.endpoint.startswith("http://127.0.0.1:")  # loopback unless told otherwise
    config = json.loads(running.config_path.read_text())
    blob_proxy = config.pop("blob_proxy")
    environment = config.pop("environment")
    assert config == {"subscription_id": "00000000-0000-0000-0000-000000000000",
                      "resource_group": "amlocal", "workspace_name": WORKSPACE_NAME,
                      "endpoint": running.endpoint}
    assert blob_proxy.startswith("http://127.0.0.1:") and blob_proxy != running.endpoint
    assert environment["HTTPS_PROXY"] == blob_proxy and environment["NO_PROXY"] == "127.0.0.1"
    assert stat.S_IMODE(running.config_path.stat().st_mode) == 0o600
    assert requests.get(f"{running.endpoint}/discovery", timeout=10).status_code == 200

    running.process.send_signal(stop_signal)

    assert running.process.wait(timeout=30) == 0
    assert not running.config_path.exists()
    assert running.process.stdout.read() == ""  # nothing after the first line
    logged = running.request_log().splitlines()
    assert len(logged) == 1 and logged[0].startswith("GET /discovery 200 ")
    assert logged[0] in running.stderr_path.read_text()


def test_serve_refuses_a_port_it_cannot_have_in_one_line(tmp_path):
    import subprocess
    import sys

    from conftest import emulator_environment

    result = subprocess.run([sys.executable, "-c", "from amlocal.cli.main import main; main()",
                             "serve", "--port", "70000"], capture_output=True, text=True,
                            env=emulator_environment(tmp_path / "home", tmp_path), timeout=60)

    assert result.returncode == 2
    assert result.stderr.startswith("Error: --port must be between 0 and 65535")
    assert len(result.stderr.splitlines()) == 1 and "Traceback" not in result.stderr


def test_serve_on_a_port_that_is_taken_says_so_in_one_line(tmp_path):
    import socket
    import subprocess
    import sys

    from conftest import emulator_environment

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run([sys.executable, "-c", "from amlocal.cli.main import main; main()",
                                 "serve", "--port", str(port)], capture_output=True, text=True,
                                env=emulator_environment(tmp_path / "home", tmp_path), timeout=60)

    assert result.returncode == 2
    assert result.stderr.startswith(f"Error: cannot listen on 127.0.0.1:{port}: ")
    assert len(result.stderr.splitlines()) == 1
    assert not (tmp_path / "home" / "emulator" / "config.json").exists()


def test_the_request_log_keeps_one_line_per_request_whatever_the_path(emulator):
    answer = requests.get(f"{emulator.endpoint}/odd%0Apath%1b[31m", timeout=10)
    wrong_method = requests.put(f"{emulator.endpoint}/discovery", timeout=10)

    assert answer.status_code == wrong_method.status_code == 501
    assert answer.json()["error"]["code"] == "NotImplemented"
    assert "PUT /discovery" in wrong_method.json()["error"]["message"]
    assert "GET /odd\\npath\\x1b[31m 501 " in emulator.request_log()


def test_an_operation_that_is_not_emulated_answers_501_naming_itself(emulator):
    path = f"/labeling/v1.0{WS_PATH}/projects"

    answer = requests.get(emulator.endpoint + path, headers=workspace_headers(), timeout=10)

    assert answer.status_code == 501
    assert answer.json() == {"error": {"code": "NotImplemented", "message":
                                       f"amlocal's emulator does not emulate GET {path} yet"}}
    assert f"GET {path} 501 " in emulator.request_log()


# -- tokens -----------------------------------------------------------------------------------

def _token_with(home, claims_change):
    """A workspace token of `home` whose payload is changed by claims_change, signed properly."""
    import base64
    import hashlib
    import hmac

    secret = (home / "emulator" / "token-secret").read_bytes()
    header, payload, _ = TokenIssuer(home / "emulator" / "token-secret").issue("workspace").split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=="))
    claims_change(claims)
    payload = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    signature = base64.urlsafe_b64encode(hmac.new(secret, f"{header}.{payload}".encode(),
                                                  hashlib.sha256).digest()).rstrip(b"=").decode()
    return f"{header}.{payload}.{signature}"


def test_a_request_without_a_valid_token_answers_401(emulator, tmp_path):
    url = f"{emulator.endpoint}/history/v1.0{WS_PATH}/experiments/anything"
    good = workspace_headers()["Authorization"]
    other_home = TokenIssuer(tmp_path / "other" / "token-secret").issue("workspace")
    expired = _token_with(emulator.home, lambda claims: claims.update(exp=int(time.time()) - 1))
    header, payload, signature = good.split()[1].split(".")
    forged = _token_with(emulator.home, lambda claims: None).split(".")[:2] + [signature[::-1]]

    for authorization, message in [(None, "the request has no bearer token"),
                                   ("Basic dXNlcjpwYXNz", "the request has no bearer token"),
                                   ("Bearer not-a-jwt", "the token is not a JWT"),
                                   ("Bearer a.b.\xff", "the token is not a JWT"),
                                   (f"Bearer {other_home}", "signature is not valid"),
                                   (f"Bearer {'.'.join(forged)}", "signature is not valid"),
                                   (f"Bearer {expired}", "the token has expired")]:
        headers = {"Authorization": authorization} if authorization else {}
        answer = requests.get(url, headers=headers, timeout=10)
        assert answer.status_code == 401, authorization
        assert answer.json()["error"]["code"] in ("AuthenticationFailed",
                                                  "InvalidAuthenticationToken")
        assert message in answer.json()["error"]["message"]
    assert requests.get(url, headers={"Authorization": good}, timeout=10).status_code == 404


def test_a_run_token_reaches_only_its_own_run(emulator):
    issuer = TokenIssuer(emulator.home / "emulator" / "token-secret")
    token = {"Authorization": f"Bearer {issuer.issue('run:exp_1_aaaa')}"}
    runs = f"{emulator.endpoint}/history/v1.0{WS_PATH}/experiments/exp/runs"

    own = requests.patch(f"{runs}/exp_1_aaaa", json={"tags": {"a": "1"}}, headers=token, timeout=10)
    other = requests.patch(f"{runs}/exp_1_bbbb", json={"tags": {"a": "1"}}, headers=token,
                           timeout=10)
    workspace_wide = requests.post(f"{emulator.endpoint}/history/v1.0{WS_PATH}/experiments:query",
                                   json={}, headers=token, timeout=10)

    assert own.status_code == 200  # allowed: a PATCH of a new id creates that run (start_logging)
    for refused in (other, workspace_wide):
        assert refused.status_code == 403
        assert refused.json()["error"]["code"] == "AuthorizationFailed"
        assert "run:exp_1_aaaa" in refused.json()["error"]["message"]


# -- the workspace ----------------------------------------------------------------------------

def test_workspace_is_a_real_azureml_workspace_bound_to_the_emulator(emulator):
    ws = amlocal.emulator.workspace()

    assert isinstance(ws, Workspace)
    assert (ws.subscription_id, ws.resource_group, ws.name) == \
        ("00000000-0000-0000-0000-000000000000", "amlocal", "local")
    assert ws.get_details()["discoveryUrl"] == f"{emulator.endpoint}/discovery"
    from_config = Workspace.from_config(str(emulator.config_path), auth=amlocal.emulator.auth())
    by_names = Workspace(ws.subscription_id, ws.resource_group, ws.name,
                         auth=amlocal.emulator.auth(emulator.endpoint))
    assert from_config.name == by_names.name == "local"
    assert f"GET {WS_PATH} 200" in emulator.request_log()


def test_workspace_without_a_running_emulator_says_how_to_start_one(tmp_path, monkeypatch):
    monkeypatch.setenv("AMLOCAL_HOME", str(tmp_path / "home"))
    with pytest.raises(amlocal.emulator.EmulatorNotRunningError, match="start one with `amlocal serve`"):
        amlocal.emulator.workspace()
    (tmp_path / "home" / "emulator").mkdir(parents=True)
    (tmp_path / "home" / "emulator" / "config.json").write_text(json.dumps(
        {"subscription_id": "s", "resource_group": "r", "workspace_name": "w",
         "endpoint": "http://127.0.0.1:9"}))  # a stale config: nothing listens there
    with pytest.raises(amlocal.emulator.EmulatorNotRunningError, match="does not answer"):
        amlocal.emulator.workspace()


# -- experiments ------------------------------------------------------------------------------

def test_experiments_get_or_create_and_list(emulator):
    ws = amlocal.emulator.workspace()

    first = Experiment(ws, "emulated-exp")
    again = Experiment(ws, "emulated-exp")
    Experiment(ws, "second-exp")

    assert first.id == again.id and first.name == "emulated-exp"
    listed = {experiment.name: experiment.id for experiment in Experiment.list(ws)}
    assert listed["emulated-exp"] == first.id and "second-exp" in listed
    assert [e.name for e in Experiment.list(ws, experiment_name="second-exp")] == ["second-exp"]
    bad = requests.post(f"{emulator.endpoint}/history/v1.0{WS_PATH}/experiments/-bad",
                        headers=workspace_headers(), timeout=10)
    assert bad.status_code == 400 and "invalid experiment name" in bad.json()["error"]["message"]


# -- compute ----------------------------------------------------------------------------------

def test_compute_targets_map_onto_amlocals(emulator):
    ws = amlocal.emulator.workspace()
    targets = ComputeTargets(RunStore(emulator.home))
    targets.create(TargetSpec(name="made-here", vm_size="STANDARD_D1_V2", max_nodes=1))

    existing = ComputeTarget(ws, "made-here")
    with pytest.raises(ComputeTargetException, match="not found"):
        ComputeTarget(ws, "cpu-cluster")
    created = AmlCompute.create(ws, "cpu-cluster", AmlCompute.provisioning_configuration(
        vm_size="STANDARD_D1_V2", min_nodes=0, max_nodes=2, idle_seconds_before_scaledown=120))
    created.wait_for_completion(show_output=False)

    assert isinstance(existing, AmlCompute) and existing.vm_size == "STANDARD_D1_V2"
    assert set(ws.compute_targets) == {"local", "made-here", "cpu-cluster"}
    spec = targets.get("cpu-cluster")  # what `amlocal compute list` shows
    assert (spec.vm_size, spec.min_nodes, spec.max_nodes, spec.idle_seconds_before_scaledown) == \
        ("STANDARD_D1_V2", 0, 2, 120)
    status = ComputeTarget(ws, "cpu-cluster").get_status().serialize()
    assert status["scaleSettings"] == {"minNodeCount": 0, "maxNodeCount": 2,
                                       "nodeIdleTimeBeforeScaleDown": "PT120S"}
    assert status["currentNodeCount"] == 0 and status["provisioningState"] == "Succeeded"
    with pytest.raises(ComputeTargetException, match="already exists"):
        AmlCompute.create(ws, "cpu-cluster", AmlCompute.provisioning_configuration(
            vm_size="STANDARD_D1_V2", max_nodes=2))

    created.delete()
    created.wait_for_completion(is_delete_operation=True)

    assert set(ws.compute_targets) == {"local", "made-here"}
    assert "cpu-cluster" not in targets.names()


def test_a_cluster_bigger_than_this_host_is_refused_with_amlocals_reason(emulator):
    ws = amlocal.emulator.workspace()
    if os.cpu_count() >= 6 * 4:
        pytest.skip("this host has room for four 6-core nodes")

    with pytest.raises(ComputeTargetException) as refused:
        AmlCompute.create(ws, "gpu-cluster", AmlCompute.provisioning_configuration(
            vm_size="STANDARD_NC6", max_nodes=4))

    assert "Response Code: 400" in str(refused.value)
    assert "--allow-overcommit" in str(refused.value) or "allow_overcommit" in str(refused.value)


def test_a_request_for_another_workspace_is_not_found(emulator):
    other = WS_PATH.replace("/workspaces/local", "/workspaces/elsewhere")

    answer = requests.get(f"{emulator.endpoint}/history/v1.0{other}/experiments/x",
                          headers=workspace_headers(), timeout=10)

    assert answer.status_code == 404
    assert answer.json()["error"]["code"] == "ResourceNotFound"
    assert "this emulator serves" in answer.json()["error"]["message"]
